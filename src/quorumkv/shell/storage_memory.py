"""``MemoryEngine``: a dict behind the storage interface — for tests and the
in-memory benchmark. Not durable (``storage.py`` describes the contract)."""

from __future__ import annotations

from ..core.casops import paxos_step
from ..core.typed import resolve
from ..core.version import Record, Version
from .storage_base import StorageEngine


class MemoryEngine(StorageEngine):
    name = "memory"

    def __init__(self) -> None:
        self.data: dict[bytes, Record] = {}
        self.promises: dict[bytes, Version] = {}  # CASPaxos promises above the record's version

    def write(self, key, record, done):
        cur = self.data.get(key)
        promise = self.promises.get(key)
        if promise is not None and promise.newer_than(record.version):  # a CAS in flight fences it
            done(True, promise if cur is None or promise.newer_than(cur.version) else cur.version)
            return
        try:
            keep, newer = resolve(cur, record)
        except ValueError as exc:  # a corrupt typed state: refuse it, keep what we have
            done(False, f"storage error: {exc}")
            return
        if keep is not None:
            self.data[key] = keep
        done(True, newer)

    supports_paxos = True

    def paxos(self, op, key, ballot, record, done):
        done(True, paxos_step(op, ballot, record, self.data.get(key), self.promises.get(key),
                              lambda rec: self.data.__setitem__(key, rec),
                              lambda b: self.promises.__setitem__(key, b) if b else self.promises.pop(key, None)))

    def read(self, key, done):
        done(True, self.data.get(key))

    def get_now(self, key):
        return self.data.get(key)

    def max_timestamp(self):
        return max((r.version.ts for r in self.data.values()), default=0)

    def count(self):
        return len(self.data)

    def scan_all(self):
        """Every (key, record), tombstones included (for anti-entropy)."""
        return iter(list(self.data.items()))

    supports_purge = True

    def purge(self, key, version, done):
        cur = self.data.get(key)
        hit = cur is not None and cur.value is None and cur.version.key() == version.key()
        if hit:
            del self.data[key]
        done(True, hit)

    def drop(self, key, version, done):
        cur = self.data.get(key)
        hit = cur is not None and cur.version.key() == version.key()
        if hit:
            del self.data[key]
        done(True, hit)
