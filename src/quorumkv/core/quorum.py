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
"""

from __future__ import annotations

from .version import Record, newest

PENDING = "pending"
WON = "won"
LOST = "lost"


class QuorumRound:
    __slots__ = ("kind", "replicas", "needed", "oks", "failures", "records", "status")

    def __init__(self, kind: str, replicas: tuple[str, ...], needed: int) -> None:
        if not 1 <= needed <= len(replicas):
            raise ValueError(f"needed={needed} must be within 1..{len(replicas)}")
        self.kind = kind  # "read" or "write"
        self.replicas = replicas
        self.needed = needed
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
        if self.status == PENDING and len(self.oks) >= self.needed:
            self.status = WON
        return self.status

    def add_replica(self, replica: str) -> None:
        """Widen the round (a spare for a speculative retry or a failed replica)."""
        if replica not in self.replicas:
            self.replicas = self.replicas + (replica,)

    def add_failure(self, replica: str, reason: str) -> str:
        if replica not in self.replicas or self._answered(replica):
            return self.status
        self.failures[replica] = reason
        if self.status == PENDING and len(self.replicas) - len(self.failures) < self.needed:
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
        pending = len(self.outstanding)
        if pending:  # decided early: say what is still possible, not a partial count
            msg = f"{self.kind} needed {self.needed} {noun}, at most {len(self.oks) + pending} possible"
        else:
            msg = f"{self.kind} needed {self.needed} {noun}, got {len(self.oks)}"
        return f"{msg} ({detail})" if detail else msg
