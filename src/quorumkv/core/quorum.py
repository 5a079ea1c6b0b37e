"""Quorum rounds: judge replica replies as they arrive (riak_kv get/put core shape).

A round is sent to a set of replicas and needs ``needed`` successes.
``add_ok`` / ``add_failure`` record one reply per replica (duplicates and replies
after the decision are ignored), and ``status`` is

* ``PENDING`` while success is still possible and not yet reached,
* ``WON`` as soon as ``needed`` replicas succeeded,
* ``LOST`` as soon as success is impossible (too many failures, or ``expire()``
  at the deadline).

Like riak's ``enough()``, "stop waiting" is true on success *and* on hopeless
failure, so a caller never waits for a timeout it already knows it cannot beat.

**Joint rounds** (a ring change in progress for the key): ``groups`` names the
current and the future replica sets, each with its own count; the round is WON
only when every group has its count of successes and LOST as soon as one group
cannot get there — the joint consensus of Raft's membership changes, applied to
quorums (docs/failures.md, "Ring changes" has the argument).
"""

from __future__ import annotations

from .version import Record, newest

PENDING = "pending"
WON = "won"
LOST = "lost"


class QuorumRound:
    __slots__ = ("kind", "replicas", "needed", "oks", "failures", "records", "status", "groups")

    def __init__(self, kind: str, replicas: tuple[str, ...], needed: int,
                 groups: tuple[tuple[str, frozenset[str], int], ...] | None = None) -> None:
        if not 1 <= needed <= len(replicas):
            raise ValueError(f"needed={needed} must be within 1..{len(replicas)}")
        self.kind = kind  # "read" or "write"
        self.replicas = replicas
        self.needed = needed
        #: joint round: ((name, members, needed), ...), every one must be met
        self.groups = groups
        self.oks: list[str] = []
        self.failures: dict[str, str] = {}  # replica -> reason
        self.records: dict[str, Record | None] = {}  # reads: replica -> its record
        self.status = PENDING

    # -- inputs ---------------------------------------------------------------
    def _answered(self, replica: str) -> bool:
        return replica in self.failures or replica in self.records or replica in self.oks

    def add_ok(self, replica: str, record: Record | None = None) -> str:
        if replica not in self.replicas or self._answered(replica):
            return self.status  # unknown or duplicate reply: ignored
        self.oks.append(replica)
        if self.kind != "write":
            self.records[replica] = record
        if self.status == PENDING and len(self.oks) >= self.needed and (
                self.groups is None or all(self._got(members) >= n for _, members, n in self.groups)):
            self.status = WON
        return self.status

    def _got(self, members: frozenset[str]) -> int:
        return sum(1 for r in self.oks if r in members)

    def _possible(self, members: frozenset[str]) -> int:
        return sum(1 for r in members if r not in self.failures)

    def wanting(self, exclude: str | None = None) -> list[frozenset[str]]:
        """Joint rounds: the groups that cannot reach their count from the replicas
        that succeeded or are still outstanding (not counting ``exclude``, one that
        is failing): a spare from one of them must be brought in."""
        if self.groups is None:
            return []
        live = [r for r in self.replicas if r != exclude and r not in self.failures]
        return [members for _, members, n in self.groups if sum(1 for r in live if r in members) < n]

    def short_of(self, replica: str) -> bool:
        """Joint rounds: ``replica`` belongs to a group still short of successes
        (what a spare should help with). Plain rounds: always True."""
        if self.groups is None:
            return True
        return any(replica in members and self._got(members) < n for _, members, n in self.groups)

    def add_replica(self, replica: str) -> None:
        """Widen the round (a spare for a speculative retry or a failed replica)."""
        if replica not in self.replicas:
            self.replicas = self.replicas + (replica,)

    def add_failure(self, replica: str, reason: str) -> str:
        if replica not in self.replicas or self._answered(replica):
            return self.status
        self.failures[replica] = reason
        if self.status == PENDING and (len(self.replicas) - len(self.failures) < self.needed or (
                self.groups is not None and any(self._possible(members) < n for _, members, n in self.groups))):
            self.status = LOST
        return self.status

    def expire(self) -> str:
        """The deadline passed: every replica still silent has timed out."""
        for replica in self.replicas:
            if not self._answered(replica):
                self.failures[replica] = "timed out"
        if self.status == PENDING:
            self.status = LOST
        return self.status

    # -- outputs --------------------------------------------------------------
    @property
    def outstanding(self) -> list[str]:
        return [r for r in self.replicas if not self._answered(r)]

    @property
    def complete(self) -> bool:
        return len(self.oks) + len(self.failures) == len(self.replicas)

    def result(self) -> Record | None:
        """Reads: the newest record among the successful replies (None: no copy)."""
        return newest(self.records.values())

    @property
    def timed_out(self) -> bool:
        return any(reason == "timed out" for reason in self.failures.values())

    def error_message(self) -> str:
        noun = "acks" if self.kind == "write" else "replies"
        detail = ", ".join(f"{r} {reason}" for r, reason in sorted(self.failures.items()))
        if self.groups is not None:
            sets = "; ".join(f"{n} of {name} replicas {', '.join(sorted(members))}: got {self._got(members)}"
                             for name, members, n in self.groups)
            msg = f"{self.kind} during a ring change needed {noun} from both replica sets ({sets})"
            return f"{msg} ({detail})" if detail else msg
        pending = len(self.outstanding)
        if pending:  # decided early: say what is still possible, not a partial count
            msg = f"{self.kind} needed {self.needed} {noun}, at most {len(self.oks) + pending} possible"
        else:
            msg = f"{self.kind} needed {self.needed} {noun}, got {len(self.oks)}"
        return f"{msg} ({detail})" if detail else msg
