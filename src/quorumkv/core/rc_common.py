"""The vocabulary of ring changes (``core/ringchange.py`` tells the story): bounds,
the stages and their transition table, the records streaming keeps, and the pure
planning functions (what moves where, whom a joining node pulls from)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import NamedTuple

from .ring import Ring
from .version import Record

#: Keys a source scans per StreamRequest (bounds one batch's memory and latency).
STREAM_SCAN_KEYS = 512
#: Records a decommissioning node has in flight to new owners at once.
STREAM_PUSH_WINDOW = 256
#: Records a decommissioning node holds waiting for delivery (queued, in flight or
#: waiting for a retry) before it stops scanning for more: a down new owner makes
#: the leaving node wait, not grow without bound. One scan adds at most
#: ``STREAM_SCAN_KEYS`` x N entries, so this leaves room for several scans.
STREAM_BACKLOG_MAX = 16 * STREAM_SCAN_KEYS
#: ... and the bytes of their records (keys + values) at most.
STREAM_BACKLOG_BYTES_MAX = 64 * 1024 * 1024
#: A stream request or push without an answer after this long has failed.
STREAM_TIMEOUT_MS = 5_000
#: Back-off between attempts on a failed source or push: doubles from the minimum up
#: to the maximum and keeps trying (a down node is waited for, never skipped) — the
#: bound is on the rate, like Cassandra's hint replay after a node returns.
STREAM_RETRY_MS_MIN = 500
STREAM_RETRY_MS_MAX = 30_000
#: With ``force``, attempts per record before it is given up and counted undelivered.
STREAM_FORCE_ATTEMPTS_MAX = 3
#: Rings of member sets kept built (current, target, future): a change uses two or three.
RINGS_CACHED_MAX = 8


class RingChangeMode(StrEnum):
    JOIN = "join"  # a new node pulls the ranges it will own
    REPLACE = "replace"  # a node takes a dead one's id and pulls its ranges
    DECOMMISSION = "decommission"  # a leaving node pushes its ranges to their new owners


class RingChangeStage(StrEnum):
    """``RingChange.state``. A ``StrEnum``: code that compares with the strings works."""

    IDLE = "idle"  # nothing started since this node started
    SETTLING = "settling"  # waiting settle_ms, so every coordinator sees the change
    STREAMING = "streaming"  # pulling (join/replace) or pushing (decommission)
    DONE = "done"  # finished: the node is up (pulled) or left (pushed)


#: Every move a ring change makes (``RingChange.to`` asserts it). A finished change
#: may be followed by a decommission (DONE -> SETTLING); nothing goes back to IDLE.
STAGE_TRANSITIONS: dict[RingChangeStage, frozenset[RingChangeStage]] = {
    RingChangeStage.IDLE: frozenset({RingChangeStage.SETTLING}),
    RingChangeStage.SETTLING: frozenset({RingChangeStage.STREAMING}),
    RingChangeStage.STREAMING: frozenset({RingChangeStage.DONE}),
    RingChangeStage.DONE: frozenset({RingChangeStage.SETTLING}),
}


class PushEntry(NamedTuple):
    """A record a leaving node hands to one new owner, and its failed attempts so far."""

    peer: str
    key: bytes
    record: Record
    tries: int


class InflightPush(NamedTuple):
    """A push sent and not yet acked (``entry[0]`` is the peer, as before)."""

    peer: str
    key: bytes
    record: Record
    tries: int
    deadline_ms: int


class SourceScanToken(NamedTuple):
    """Storage token of a source's scan for a StreamRequest (``StoreKind.STREAM_SOURCE``)."""

    kind: str
    conn: object
    req_id: int
    target: str
    members: tuple[str, ...]
    limit: int


def retry_delay_ms(failures: int) -> int:
    """Back-off after ``failures`` consecutive failures (>= 1)."""
    return min(STREAM_RETRY_MS_MIN << min(max(failures - 1, 0), 16), STREAM_RETRY_MS_MAX)


def _intervals(old: Ring, new: Ring) -> Iterator[tuple[float, tuple[str, ...], tuple[str, ...]]]:
    """(share of the token space, old preference list, new preference list) per
    elementary interval of the union of both rings' tokens."""
    points = sorted(set(old.tokens) | set(new.tokens))
    space = float(1 << 64)
    prev = points[-1] - (1 << 64)
    for tok in points:
        yield (tok - prev) / space, old.preference_list_of_token(tok), new.preference_list_of_token(tok)
        prev = tok


def plan_moves(old_members: Iterable[str], new_members: Iterable[str], n: int,
               vnodes: int) -> list[tuple[str, str, float]]:
    """Share of the token space (0..1) whose replica moves ``from`` -> ``to``.

    Exact for the ring: walks every elementary interval of the union of both rings'
    tokens. ``from`` is the old replica the new owner would typically stream from
    (the first old replica that is also kept), or "-" when none is kept.
    """
    moves: dict[tuple[str, str], float] = {}
    for length, before, after in _intervals(Ring(old_members, n, vnodes), Ring(new_members, n, vnodes)):
        gained = [x for x in after if x not in before]
        if not gained:
            continue
        kept = [x for x in before if x in after]
        source = kept[0] if kept else (before[0] if before else "-")
        for g in gained:
            moves[(source, g)] = moves.get((source, g), 0.0) + length
    return sorted(((a, b, round(f, 6)) for (a, b), f in moves.items()), key=lambda x: (-x[2], x[0], x[1]))


def under_replicated_share(members: Iterable[str], n: int, vnodes: int) -> float:
    """Share of the key space (0..1) with fewer than ``n`` replicas in the ring of
    ``members`` (the ring clamps N to its size)."""
    members = list(members)
    if not members:
        return 1.0
    return 0.0 if len(set(members)) >= n else 1.0


def pull_sources(current: Ring, target: Ring, me: str) -> list[str]:
    """The nodes a joining/replacing ``me`` must stream from: every current replica
    of every key ``me`` replicates in ``target`` (a source sends only keys it
    replicates, so any other node would have nothing to send)."""
    needed: set[str] = set()
    for _, before, after in _intervals(current, target):
        if me in after:
            needed.update(x for x in before if x != me)
    return sorted(needed)
