"""Hinted-handoff policy: what a fallback keeps, for how long, and how fast it replays.

Decisions only; the shell stores hints durably. Defaults follow Cassandra
(``max_hint_window``: 3 h; hints throttled on replay) with a byte cap per target
so one long outage cannot fill the disk.
"""

from __future__ import annotations

from typing import NamedTuple

from .version import Record


class HintSettings(NamedTuple):
    #: Hints for one target past this many bytes are refused (and counted).
    bytes_max_per_target: int = 64 * 1024 * 1024
    #: A hint whose record is older than this (by its version's wall time, not by
    #: when the hint was stored) is dropped instead of replayed (Cassandra: 3 h).
    age_ms_max: int = 3 * 3600 * 1000
    #: Replay rate towards a recovered node, hints per second (token bucket).
    replay_per_s: int = 2_000
    #: Hints loaded from storage and sent in one replay batch.
    replay_batch_max: int = 256


def admit(settings: HintSettings, bytes_held: int, size: int) -> bool:
    return bytes_held + size <= settings.bytes_max_per_target


def expired(settings: HintSettings, record: Record, wall_ms: int) -> bool:
    """Too old to replay: the hinted record's version (its HLC wall time) is older
    than ``age_ms_max``. Not the hint's creation time: a coordinator stores a hint at
    its write deadline, a departed node's hint is re-hinted when handed over, so a
    hint can be much younger than the value it carries — and it is the value's age
    that tombstone GC's grace must outlast (``safe_with_gc``)."""
    return wall_ms - record.version.wall_ms > settings.age_ms_max


def safe_with_gc(gc_grace_ms: int, hint_age_ms_max: int, max_clock_skew_ms: int) -> bool:
    """No hint can bring back a key whose tombstone GC purged (docs/antientropy.md,
    "Tombstone GC"). A hint replays a record R older than the tombstone T only while
    the holder's clock reads at most ``wall(R) + age <= wall(T) + age``; GC purges T
    only once the driver's clock reads at least ``wall(T) + grace``. With any two
    clocks within ``max_clock_skew_ms``, ``grace > age + skew`` puts every such replay
    strictly before the purge (by ``grace - age - skew``, which must also cover the
    replay's time in flight)."""
    return gc_grace_ms > hint_age_ms_max + max_clock_skew_ms


class TokenBucket:
    """Rate limit in tokens per second with a burst of one second's worth."""

    __slots__ = ("rate", "tokens", "last_ms")

    def __init__(self, rate_per_s: int, now_ms: int) -> None:
        self.rate = rate_per_s
        self.tokens = float(rate_per_s)
        self.last_ms = now_ms

    def take(self, want: int, now_ms: int) -> int:
        # A wall clock stepped back refills nothing (it must not drain the bucket
        # below zero and hand out a negative count); refill resumes from the new time.
        elapsed = max(now_ms - self.last_ms, 0)
        self.tokens = min(float(self.rate), self.tokens + elapsed * self.rate / 1000)
        self.last_ms = now_ms
        got = min(want, int(self.tokens))
        self.tokens -= got
        return got


def record_size(key: bytes, value: bytes | None) -> int:
    return len(key) + (len(value) if value is not None else 0) + 64  # + version/metadata


class HintTable:
    """Hints held in memory, oldest first: the memory engine's (and the simulator's)
    hint store. Durable engines keep the same shape on disk."""

    __slots__ = ("_hints", "_next_id")

    def __init__(self) -> None:
        self._hints: dict[int, tuple[str, bytes, Record, int]] = {}  # hint id -> (owner, key, record, created_ms)
        self._next_id = 1

    def add(self, owner: str, key: bytes, record: Record, created_ms: int) -> int:
        hint_id = self._next_id
        self._hints[hint_id] = (owner, key, record, created_ms)
        self._next_id += 1
        return hint_id

    def peek(self, key: bytes) -> list[tuple[str, Record]]:
        """Every hint for ``key``: ``[(owner, record)]``."""
        return [(o, r) for o, k, r, _ in self._hints.values() if k == key]

    def load(self, owner: str, limit: int) -> list[tuple[int, bytes, Record, int]]:
        """Oldest first: ``[(hint_id, key, record, created_ms)]``."""
        out: list[tuple[int, bytes, Record, int]] = []
        for hint_id, (o, k, r, created) in self._hints.items():
            if o == owner:
                out.append((hint_id, k, r, created))
                if len(out) >= limit:
                    break
        return out

    def delete(self, hint_id: int) -> None:
        self._hints.pop(hint_id, None)

    def summary(self) -> dict[str, tuple[int, int]]:
        """Per target: (hints, bytes)."""
        out: dict[str, list[int]] = {}
        for o, k, r, _ in self._hints.values():
            entry = out.setdefault(o, [0, 0])
            entry[0] += 1
            entry[1] += record_size(k, r.value)
        return {o: (c, b) for o, (c, b) in out.items()}
