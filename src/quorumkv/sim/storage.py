"""Per-node simulated storage with a durability delay, and a crash that loses
whatever was not yet synced.

Correct engine (the contract of ``shell/storage.py``): a ``StoreWrite`` becomes
durable ``sync_us`` later (the fsync of its group commit) and only *then* is it
acknowledged — persist, then ack. A crash in between loses the write, but nobody
was told it happened.

``ack-before-persist`` (a seeded bug, ``--bug``): the engine acknowledges at once,
makes the write visible from a volatile cache, and syncs lazily every
``lazy_sync_us``. A crash throws the cache away — acknowledged writes vanish, which
the lost-write checker must catch.

The apply rule is the real engines' newer-wins (``Version.newer_than``): a replica
never replaces a newer version with an older one, and reports the newer version
that kept a write out (``RepWriteAck.newer``; the same version again is "applied"),
and, as they do, never stores a write below a key's CASPaxos promise (core/paxos.py).
"""

from __future__ import annotations

from ..core.hints import HintTable
from ..core.casops import paxos_step
from ..core.typed import resolve
from ..core.version import Record, Version


def _newer(cur: Record | None, record: Record) -> Version | None:
    """The stored version that keeps ``record`` out (None: it is newer, or the same)."""
    if cur is None or not cur.version.newer_than(record.version):
        return None
    return cur.version


def _apply(data: dict[bytes, Record], key: bytes, record: Record) -> Version | None:
    """Newer wins (typed records merge: ``core.typed.resolve``, as in the real engines);
    returns the stored version that kept ``record`` out (None: applied)."""
    keep, newer = resolve(data.get(key), record)
    if keep is not None:
        data[key] = keep
    return newer


class SimStorage:
    def __init__(self, node: str) -> None:
        self.node = node
        self.durable: dict[bytes, Record] = {}
        self.cache: dict[bytes, Record] = {}  # ack-before-persist: acked, not yet synced
        self.unsynced: list[tuple[bytes, Record]] = []
        self.writes_lost = 0  # writes a crash threw away (acked or not)
        #: hinted handoff (issue 3): hint id -> (owner, key, record, created_ms), oldest first
        self.hints = HintTable()  # durable as soon as stored (the sim acks after sync_us)
        self.hlc_ceiling = 0  # the node's saved HLC ceiling (core/clock.py): survives a crash
        #: CASPaxos promises (core/paxos.py), durable like the engines' (survive a crash)
        self.promises: dict[bytes, Version] = {}

    # A correct write: the caller schedules ``persist`` sync_us later, then acks.
    def persist(self, key: bytes, record: Record) -> Version | None:
        promise = self.promises.get(key)
        if promise is not None and promise.newer_than(record.version):  # fenced by a CAS in flight
            cur = self.durable.get(key)
            return cur.version if cur is not None and cur.version.newer_than(promise) else promise
        return _apply(self.durable, key, record)

    def paxos(self, op: str, key: bytes, ballot, record):
        """An acceptor step (core/paxos.py ``paxos_step``) on the durable state."""
        return paxos_step(op, ballot, record, self.durable.get(key), self.promises.get(key),
                          lambda rec: self.durable.__setitem__(key, rec),
                          lambda b: self.promises.__setitem__(key, b) if b else self.promises.pop(key, None))

    def newer_than(self, key: bytes, record: Record) -> Version | None:
        """A version newer than ``record`` this node serves for ``key`` (None: none)."""
        return _newer(self.read(key), record)

    # ack-before-persist: visible and acked now, durable at the next lazy sync.
    def write_cached(self, key: bytes, record: Record) -> None:
        _apply(self.cache, key, record)
        self.unsynced.append((key, record))

    def sync(self) -> None:
        for key, record in self.unsynced:
            _apply(self.durable, key, record)
        self.unsynced.clear()
        self.cache.clear()

    def read(self, key: bytes) -> Record | None:
        rec = self.durable.get(key)
        cached = self.cache.get(key)
        if cached is not None and (rec is None or cached.version.newer_than(rec.version)):
            return cached
        return rec

    def crash(self) -> int:
        """Power loss: the volatile cache is gone. Returns how many writes vanished."""
        lost = len(self.unsynced)
        self.writes_lost += lost
        self.unsynced.clear()
        self.cache.clear()
        return lost

    # ---------------------------------------------------------------- hints
    def store_hint(self, owner: str, key: bytes, record: Record, created_ms: int) -> None:
        self.hints.add(owner, key, record, created_ms)

    def peek_hints(self, key: bytes) -> list[tuple[str, Record]]:
        return self.hints.peek(key)

    def load_hints(self, owner: str, limit: int) -> list:
        return self.hints.load(owner, limit)

    def delete_hint(self, hint_id) -> None:
        self.hints.delete(hint_id)

    def hint_summary(self) -> dict[str, tuple[int, int]]:
        return self.hints.summary()

    # ------------------------------------------------- streaming, tombstone GC
    def scan_range(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]:
        """``ScanRange``: up to ``limit`` records with key > ``after``, in key order
        (what ``shell/storage.py`` ``scan_range`` returns)."""
        snap = self.snapshot()
        keys = sorted(k for k in snap if after is None or k > after)
        return [(k, snap[k]) for k in keys[:max(limit, 0)]]

    def purge(self, key: bytes, version) -> bool:
        """Tombstone GC's compare-and-delete (as every real engine's ``purge``):
        delete ``key`` only if its record is exactly the tombstone at ``version``."""
        hit = False
        for data in (self.durable, self.cache):
            cur = data.get(key)
            if cur is not None and cur.value is None and cur.version.key() == version.key():
                del data[key]
                hit = True
        return hit

    def drop(self, key: bytes, version) -> bool:
        """Cleanup's compare-and-delete (``DropMany``): delete ``key`` only if its
        record is exactly at ``version``, value or tombstone."""
        hit = False
        for data in (self.durable, self.cache):
            cur = data.get(key)
            if cur is not None and cur.version.key() == version.key():
                del data[key]
                hit = True
        return hit

    def max_timestamp(self) -> int:
        """What the real engines report at start-up, to seed the node's HLC."""
        return max((rec.version.ts for rec in self.durable.values()), default=0)

    def snapshot(self) -> dict[bytes, Record]:
        """The newest record per key this node would serve (for convergence checks)."""
        out = dict(self.durable)
        for key, rec in self.cache.items():
            _apply(out, key, rec)
        return out

    # ------------------------------------------- the runtime's Reader (queries)
    def get_now(self, key: bytes) -> Record | None:
        return self.read(key)

    def scan_keys(self, after: bytes | None, limit: int) -> list[tuple[bytes, Record]]:
        """As ``scan_range`` with values left out (a live record's value is b"")."""
        return [(k, Record(r.version, None if r.value is None else b"", r.expires_ms))
                for k, r in self.scan_range(after, limit)]

    def scan_all(self):
        """Every (key, record) this node serves, in key order, as of now."""
        return iter(sorted(self.snapshot().items()))
