"""The storage engine interface every engine implements (shared by ``storage.py``:
SQLite, ``storage_memory.py``: memory, ``storage_redis.py``: Redis). The contract is
described in ``storage.py``'s docstring; the default hint table and HLC ceiling here
live in memory (right for the memory engine; durable engines override them).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.hints import HintTable
from ..core.version import Record, Version

Done = Callable[[bool, object], None]


class StorageEngine:
    name = "abstract"

    def write(self, key: bytes, record: Record, done: Done) -> None:
        raise NotImplementedError

    def read(self, key: bytes, done: Done) -> None:
        raise NotImplementedError

    def get_now(self, key: bytes) -> Record | None:
        """Synchronous read (startup, tools, tests)."""
        raise NotImplementedError

    def max_timestamp(self) -> int:
        """Largest version timestamp stored, to seed the HLC after a restart."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    # -- the HLC ceiling (core/clock.py) -------------------------------------------
    # The default keeps it in memory: right for the memory engine (nothing survives a
    # restart anyway). Durable engines override both (SQLite: the meta table).
    def hlc_ceiling(self) -> int:
        """The last ceiling saved (0: none), read once at start."""
        return getattr(self, "_hlc_ceiling", 0)

    def save_hlc_ceiling(self, ts: int, done: Done) -> None:
        """Durably record ``ts``, then ``done(ok, error)``."""
        self._hlc_ceiling = ts
        done(True, None)

    def scan_all(self):
        """Iterate every (key, record), tombstones included (anti-entropy, tools)."""
        raise NotImplementedError

    #: Whether ``purge`` is implemented (tombstone GC is skipped on engines without it).
    supports_purge = False

    def purge(self, key: bytes, version: Version, done: Done) -> None:
        """Tombstone GC: delete ``key`` only if its record is exactly the tombstone at
        ``version`` (compare-and-delete); ``done(ok, purged: bool | error)``."""
        done(False, f"{self.name} engine cannot purge")

    def drop(self, key: bytes, version: Version, done: Done) -> None:
        """Cleanup: delete ``key`` only if its record is exactly at ``version`` (value
        or tombstone; compare-and-delete); ``done(ok, dropped: bool | None | error)``."""
        done(False, f"{self.name} engine cannot drop records")

    def close(self) -> None:
        pass

    # -- CASPaxos acceptor state (core/paxos.py) -------------------------------------
    #: Whether ``paxos`` is implemented: CAS, INCR and linearizable writes need it.
    supports_paxos = False

    def paxos(self, op: str, key: bytes, ballot: Version | None, record: Record | None, done: Done) -> None:
        """One acceptor step, atomic with every other write to ``key`` and durable
        before ``done(ok, result)`` (core/paxos.py ``PaxosStore`` for ``result``)."""
        done(False, f"the {self.name} storage engine does not support linearizable operations (CAS, INCR, "
                    "SETNX, linearizable reads and writes): run the node with storage = \"sqlite\" or \"memory\"")

    def scan_range(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]:
        """Up to ``limit`` (key, record) with key > ``after``, in key order (streaming).

        Generic and O(n) per call; engines with ordered storage override it.
        """
        items = sorted((k, r) for k, r in self.scan_all() if after is None or k > after)
        return items[:limit]

    def scan_keys(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]:
        """As ``scan_range`` but without values (a live record's value is b""): the
        cluster-wide key scan (core/scan.py) needs keys and versions only."""
        return [(k, Record(r.version, None if r.value is None else b"", r.expires_ms))
                for k, r in self.scan_range(after, limit)]

    # -- hints (hinted handoff) ----------------------------------------------------
    # The default keeps hints in memory: right for the memory engine; an engine with
    # durable storage overrides these (SQLite does) so hints survive a restart.
    hints_durable = False

    def _hint_table(self) -> HintTable:
        table = getattr(self, "_hints", None)
        if table is None:
            table = self._hints = HintTable()
        return table

    def write_hint(self, owner: str, key: bytes, record: Record, created_ms: int, done: Done) -> None:
        self._hint_table().add(owner, key, record, created_ms)
        done(True, None)

    def peek_hints(self, key: bytes) -> list[tuple[str, Record]]:
        """Every hint held for ``key``: ``[(owner, record)]`` (inspect, fallback reads)."""
        return self._hint_table().peek(key)

    def load_hints(self, owner: str, limit: int) -> list:
        """Oldest first: ``[(hint_id, key, record, created_ms)]``."""
        return self._hint_table().load(owner, limit)

    def delete_hint(self, hint_id) -> None:
        self._hint_table().delete(hint_id)

    def hint_summary(self) -> dict[str, tuple[int, int]]:
        """Per target: (hints, bytes) — seeds the core's bounds after a restart."""
        return self._hint_table().summary()

