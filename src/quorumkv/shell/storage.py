"""Storage engines behind one callback interface.

``write(key, record, done)`` applies ``record`` only if it is newer than what the
engine holds (never overwrite a newer version with an older one) — or, for a typed
record (counter, set, map, causal siblings) of the same type as the stored one,
stores the *merge* of both (``core.typed.resolve``, the one rule all engines
call) — and calls
``done(ok, error)`` once the write is *durable* — the node acks a replica write only
from that callback (persist before ack). On success the second argument is
``None`` when the record was applied (or that very version was there already: a
retransmit), else the stored *newer* version that kept it out: the replica reports
it (``RepWriteAck.newer``) so the coordinator of a client write can re-stamp it
(core/node.py, ``RESTAMPS_MAX``). ``read(key, done)`` calls
``done(ok, record_or_error)``. Callbacks run on the event loop thread; an engine may
call them synchronously (memory) or later (SQLite group commit, Redis).

Engines:

* ``MemoryEngine`` — a dict; for tests and the in-memory benchmark. Not durable.
* ``SqliteEngine`` — the embedded durable default: SQLite in WAL mode, one writer
  thread doing group commit (every write queued while a commit is in flight goes into
  the next transaction), ``synchronous=FULL`` so an acked write survives kill -9 and
  power loss (``fsync=False`` keeps kill -9 safety only). Reads run on the loop thread
  on their own connection; WAL lets them proceed during a commit.
* ``RedisEngine`` (``storage_redis.py``) — records in a real ``redis-server``.

``engines.open_engine`` picks one by name (config ``storage``). This module holds
the SQLite engine; the interface is ``storage_base.py``, the memory engine
``storage_memory.py`` (both importable from here too).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading

import msgspec

from ..core.hints import record_size
from ..core.casops import paxos_step
from ..core.typed import is_typed, resolve
from ..core.version import Record, Version
from .batching import BatchQueue, call_in_loop
from .metrics_hist import BATCH_SIZE_BUCKETS, Buckets
from .storage_base import Done, StorageEngine
from .storage_memory import MemoryEngine

__all__ = ["Done", "MemoryEngine", "SqliteEngine", "StorageEngine"]

#: Writes queued for the SQLite writer thread before new ones are refused (the
#: node then fails that replica write, and the quorum round decides).
WRITE_QUEUE_MAX = 100_000
#: Writes per SQLite transaction at most: bounds commit latency of one batch.
WRITE_BATCH_MAX = 2_048
#: Rows per page of ``scan_all`` (one short SELECT each).
SCAN_PAGE_ROWS = 1_000

_ctx_encode = msgspec.msgpack.Encoder().encode
_ctx_decode = msgspec.msgpack.Decoder(dict[str, int]).decode


class _Failed(str):
    """The error of one write in a batch that otherwise committed."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key   BLOB PRIMARY KEY,
    ts    INTEGER NOT NULL,   -- HLC timestamp of the version
    node  TEXT NOT NULL,      -- node id tie-break
    value BLOB,               -- NULL: tombstone
    ctx   BLOB,               -- msgpack causal context, NULL when none
    expires INTEGER NOT NULL DEFAULT 0  -- absolute expiry, wall-clock ms (0: never)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hints (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    owner   TEXT NOT NULL,    -- the primary this write is meant for
    key     BLOB NOT NULL,
    ts      INTEGER NOT NULL,
    node    TEXT NOT NULL,
    value   BLOB,
    ctx     BLOB,
    expires INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL, -- wall-clock ms when this fallback stored it
    size    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hints_by_owner ON hints (owner, id);
CREATE INDEX IF NOT EXISTS hints_by_key ON hints (key);
-- CASPaxos promises (core/paxos.py) above the key's record version; a row goes once
-- a record at or above it is stored, so the table holds only CAS rounds in flight.
CREATE TABLE IF NOT EXISTS paxos (
    key  BLOB PRIMARY KEY,
    ts   INTEGER NOT NULL,
    node TEXT NOT NULL
) WITHOUT ROWID;
"""

# "Write only if newer", atomically inside SQLite: the same (ts, node) order as
# core.version.Version.newer_than (TEXT compares as UTF-8 bytes = code point order).
# And never below a CASPaxos promise (core/paxos.py): a CAS in flight fences older writes.
_UPSERT = """
INSERT INTO kv (key, ts, node, value, ctx, expires) SELECT ?1, ?2, ?3, ?4, ?5, ?6
WHERE NOT EXISTS (SELECT 1 FROM paxos p WHERE p.key = ?1 AND (p.ts > ?2 OR (p.ts = ?2 AND p.node > ?3)))
ON CONFLICT(key) DO UPDATE SET ts = excluded.ts, node = excluded.node,
    value = excluded.value, ctx = excluded.ctx, expires = excluded.expires
WHERE excluded.ts > kv.ts OR (excluded.ts = kv.ts AND excluded.node > kv.node)
"""


# Typed records (record.version.typed: core/typed.py) are merged, not compared: the
# writer thread reads the stored row, calls ``resolve`` and writes the result, inside
# the same transaction as the rest of the batch (it is the only writer, so nothing
# can slip in between). ``_MERGE`` marks such rows in the queue.
_MERGE = "-- merge typed record"
_REPLACE = "INSERT OR REPLACE INTO kv (key, ts, node, value, ctx, expires) VALUES (?, ?, ?, ?, ?, ?)"

_PAXOS = "-- paxos acceptor step (SqliteEngine._paxos_step)"

# The same without the promise check, used while the paxos table is empty (almost
# always: it holds only CAS rounds in flight): a plain write pays nothing for CAS.
_UPSERT_UNFENCED = """
INSERT INTO kv (key, ts, node, value, ctx, expires) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET ts = excluded.ts, node = excluded.node,
    value = excluded.value, ctx = excluded.ctx, expires = excluded.expires
WHERE excluded.ts > kv.ts OR (excluded.ts = kv.ts AND excluded.node > kv.node)
"""

_HINT_INSERT = """
INSERT INTO hints (owner, key, ts, node, value, ctx, expires, created, size)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _row_to_record(row) -> Record | None:
    if row is None:
        return None
    ts, node, value, ctx, expires = row
    return Record(Version(ts, node, _ctx_decode(ctx) if ctx is not None else None), value, expires)


class SqliteEngine(StorageEngine):
    name = "sqlite"

    def __init__(self, path: str, *, fsync: bool = True, loop: asyncio.AbstractEventLoop | None = None):
        self.path = path
        self.fsync = fsync
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._reader = self._connect()
        self._reader.executescript(_SCHEMA)
        self._loop = loop
        self._queue = BatchQueue(WRITE_BATCH_MAX)
        self._hint_deletes_pending: set[int] = set()
        # Rows in the paxos table; only the writer thread changes it (_paxos_step).
        self._fences = self._reader.execute("SELECT COUNT(*) FROM paxos").fetchone()[0]
        self.batches = 0
        self.batched_writes = 0
        self.batch_sizes = Buckets(BATCH_SIZE_BUCKETS)  # writes per transaction (metrics)
        self._writer = threading.Thread(target=self._writer_main, name="sqlite-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    # -- writes: group commit on a dedicated thread -------------------------------
    def write(self, key, record, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        if len(self._queue) >= WRITE_QUEUE_MAX:
            done(False, f"storage write queue full (WRITE_QUEUE_MAX={WRITE_QUEUE_MAX})")
            return
        v = record.version
        row = (key, v.ts, v.node, record.value, _ctx_encode(v.ctx) if v.ctx is not None else None,
               record.expires_ms)
        self._enqueue(_MERGE if is_typed(v) else _UPSERT, row, done)

    def _enqueue(self, sql: str, row: tuple, done: Done | None) -> None:
        self._queue.put((sql, row, done))

    def _writer_main(self) -> None:
        conn = self._connect()
        while True:
            batch = self._queue.take()
            if batch is None:
                break
            error = None
            # batch index -> the stored newer version that kept a write out, or a paxos step's result
            newer: dict[int, object] = {}
            try:
                conn.execute("BEGIN")
                start = 0
                while start < len(batch):  # runs of the same statement: one executemany each
                    sql = batch[start][0]
                    end = start
                    while end < len(batch) and batch[end][0] == sql:
                        end += 1
                    if sql is _MERGE:
                        self._merge_rows(conn, batch, start, end, newer)
                        start = end
                        continue
                    if sql is _PAXOS:  # acceptor steps: read, decide, write, in this transaction
                        for i in range(start, end):
                            newer[i] = self._paxos_step(conn, *batch[i][1])
                        start = end
                        continue
                    run_sql = sql if sql is not _UPSERT or self._fences else _UPSERT_UNFENCED
                    cur = conn.executemany(run_sql, [row for _, row, _ in batch[start:end]])
                    if sql is _UPSERT and cur.rowcount < end - start:  # some were not newer
                        self._find_newer(conn, batch, start, end, newer)
                    start = end
                conn.execute("COMMIT")
            except Exception as exc:  # disk full, I/O error: fail these writes, keep serving
                error = f"storage error: {exc}"
                try:
                    conn.execute("ROLLBACK")
                    self._fences = conn.execute("SELECT COUNT(*) FROM paxos").fetchone()[0]  # undone too
                except sqlite3.Error:
                    self._fences = max(self._fences, 1)  # unknown: keep checking promises
            self.batches += 1
            self.batched_writes += len(batch)
            self.batch_sizes.observe(len(batch))
            self._complete(batch, error, newer)
        conn.close()

    supports_paxos = True

    def paxos(self, op, key, ballot, record, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        if len(self._queue) >= WRITE_QUEUE_MAX:
            done(False, f"storage write queue full (WRITE_QUEUE_MAX={WRITE_QUEUE_MAX})")
            return
        # On the writer thread, in its group commit: atomic with every other write of
        # the key, and durable (fsync) before done — a promise or accept is answered
        # only once it would survive a crash.
        self._enqueue(_PAXOS, (op, key, ballot, record), done)

    def _paxos_step(self, conn, op, key, ballot, record):
        row = conn.execute("SELECT ts, node, value, ctx, expires FROM kv WHERE key = ?", (key,)).fetchone()
        fence = conn.execute("SELECT ts, node FROM paxos WHERE key = ?", (key,)).fetchone()

        def store(rec):
            v = rec.version
            conn.execute("INSERT OR REPLACE INTO kv (key, ts, node, value, ctx, expires) VALUES (?, ?, ?, ?, ?, ?)",
                         (key, v.ts, v.node, rec.value, _ctx_encode(v.ctx) if v.ctx is not None else None,
                          rec.expires_ms))

        def set_promise(b):
            if b is None:
                conn.execute("DELETE FROM paxos WHERE key = ?", (key,))
                self._fences -= 1 if fence else 0
            else:
                conn.execute("INSERT OR REPLACE INTO paxos (key, ts, node) VALUES (?, ?, ?)", (key, b.ts, b.node))
                self._fences += 0 if fence else 1

        return paxos_step(op, ballot, record, _row_to_record(row), Version(*fence) if fence else None,
                          store, set_promise)

    @staticmethod
    def _find_newer(conn, batch, start: int, end: int, newer: dict) -> None:
        """Some upserts of ``batch[start:end]`` changed no row: find which, by the
        version stored now (rare: a write older than the replica's copy)."""
        for i in range(start, end):
            key, ts, node = batch[i][1][:3]
            row = conn.execute("SELECT ts, node FROM kv WHERE key = ?", (key,)).fetchone()
            fence = conn.execute("SELECT ts, node FROM paxos WHERE key = ?", (key,)).fetchone()
            best = max((r for r in (row, fence) if r is not None), default=None)
            if best is not None and (best[0], best[1]) > (ts, node):
                newer[i] = Version(best[0], best[1])

    @staticmethod
    def _merge_rows(conn, batch, start: int, end: int, newer: dict) -> None:
        """Typed records: stored row + incoming merged by ``resolve`` (writer thread).
        A corrupt state fails only its own write (``newer[i]`` holds the error)."""
        for i in range(start, end):
            key, ts, node, value, ctx, expires = batch[i][1]
            incoming = _row_to_record((ts, node, value, ctx, expires))
            stored = _row_to_record(conn.execute(
                "SELECT ts, node, value, ctx, expires FROM kv WHERE key = ?", (key,)).fetchone())
            try:
                keep, kept_out_by = resolve(stored, incoming)
            except ValueError as exc:
                newer[i] = _Failed(f"storage error: {exc}")
                continue
            if keep is not None:
                v = keep.version
                conn.execute(_REPLACE, (key, v.ts, v.node, keep.value,
                                        _ctx_encode(v.ctx) if v.ctx is not None else None, keep.expires_ms))
            if kept_out_by is not None:
                newer[i] = kept_out_by

    def _complete(self, batch, error, newer=None) -> None:
        def run():
            for i, (_, _, done) in enumerate(batch):
                if done is not None:
                    result = error if error is not None or not newer else newer.get(i)
                    if type(result) is _Failed:  # this write alone failed (a corrupt typed state)
                        done(False, str(result))
                    else:
                        done(error is None, result)

        call_in_loop(self._loop, run)

    # -- reads: on the caller's thread, own connection -------------------------------
    def read(self, key, done):
        try:
            rec = self.get_now(key)
        except sqlite3.Error as exc:
            done(False, f"storage error: {exc}")
            return
        done(True, rec)

    def get_now(self, key):
        row = self._reader.execute("SELECT ts, node, value, ctx, expires FROM kv WHERE key = ?", (key,)).fetchone()
        return _row_to_record(row)

    def max_timestamp(self):
        return self._reader.execute("SELECT COALESCE(MAX(ts), 0) FROM kv").fetchone()[0]

    def hlc_ceiling(self):
        row = self._reader.execute("SELECT value FROM meta WHERE name = 'hlc_ceiling'").fetchone()
        return int(row[0]) if row else 0

    def save_hlc_ceiling(self, ts, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        # Through the writer's group commit: durable (fsync) before done, like a write.
        self._enqueue("INSERT OR REPLACE INTO meta (name, value) VALUES ('hlc_ceiling', ?)", (str(ts),), done)

    def count(self):
        return self._reader.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    def scan_all(self):
        """Every (key, record) in key order, tombstones included (for anti-entropy).

        Pages of ``SCAN_PAGE_ROWS`` by key (keyset pagination): no statement stays
        open between pages, so a long scan never pins an old read snapshot on the
        reader connection that client reads share. Keys written during the scan may
        or may not appear; each key appears at most once.
        """
        sql = "SELECT key, ts, node, value, ctx, expires FROM kv WHERE key > ? ORDER BY key LIMIT ?"
        after = b""
        while True:
            rows = self._reader.execute(sql, (after, SCAN_PAGE_ROWS)).fetchall()
            for key, *row in rows:
                yield key, _row_to_record(row)
            if len(rows) < SCAN_PAGE_ROWS:
                return
            after = rows[-1][0]

    supports_purge = True

    def purge(self, key, version, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        # Compare-and-delete inside SQLite: only exactly this tombstone goes.
        self._enqueue("DELETE FROM kv WHERE key = ? AND ts = ? AND node = ? AND value IS NULL",
                      (key, version.ts, version.node), done)

    def drop(self, key, version, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        self._enqueue("DELETE FROM kv WHERE key = ? AND ts = ? AND node = ?", (key, version.ts, version.node), done)

    # -- hints: durable, in the same database and the same group commit ------------
    hints_durable = True

    def write_hint(self, owner, key, record, created_ms, done):
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        v = record.version
        row = (owner, key, v.ts, v.node, record.value, _ctx_encode(v.ctx) if v.ctx is not None else None,
               record.expires_ms, created_ms, record_size(key, record.value))
        self._enqueue(_HINT_INSERT, row, done)

    def scan_range(self, after, limit):
        if after is None:
            rows = self._reader.execute(
                "SELECT key, ts, node, value, ctx, expires FROM kv ORDER BY key LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._reader.execute(
                "SELECT key, ts, node, value, ctx, expires FROM kv WHERE key > ? ORDER BY key LIMIT ?",
                (after, limit)).fetchall()
        return [(key, _row_to_record(rest)) for key, *rest in rows]

    def scan_keys(self, after, limit):
        # The value column stays on disk: only whether it is NULL (a tombstone) is read.
        cols = "key, ts, node, CASE WHEN value IS NULL THEN NULL ELSE x'' END, ctx, expires"
        if after is None:
            rows = self._reader.execute(f"SELECT {cols} FROM kv ORDER BY key LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._reader.execute(f"SELECT {cols} FROM kv WHERE key > ? ORDER BY key LIMIT ?",
                                        (after, limit)).fetchall()
        return [(key, _row_to_record(rest)) for key, *rest in rows]

    def peek_hints(self, key):
        rows = self._reader.execute(
            "SELECT owner, ts, node, value, ctx, expires FROM hints WHERE key = ? ORDER BY id", (key,)).fetchall()
        return [(owner, _row_to_record(rest)) for owner, *rest in rows]

    def load_hints(self, owner, limit):
        # Deletes still queued for the writer are not visible to the reader yet: skip
        # them, or a replayed hint would be replayed (and counted) twice.
        pending = self._hint_deletes_pending
        rows = self._reader.execute(
            "SELECT id, key, ts, node, value, ctx, expires, created FROM hints WHERE owner = ? "
            "ORDER BY id LIMIT ?", (owner, limit + len(pending))).fetchall()
        return [(hid, key, _row_to_record((ts, node, value, ctx, expires)), created)
                for hid, key, ts, node, value, ctx, expires, created in rows if hid not in pending][:limit]

    def delete_hint(self, hint_id):
        if not self._queue.closing:
            self._hint_deletes_pending.add(hint_id)
            self._enqueue("DELETE FROM hints WHERE id = ?", (hint_id,),
                          lambda ok, err: self._hint_deletes_pending.discard(hint_id))

    def hint_summary(self):
        rows = self._reader.execute("SELECT owner, COUNT(*), SUM(size) FROM hints GROUP BY owner").fetchall()
        return {owner: (count, size or 0) for owner, count, size in rows}

    def close(self) -> None:
        self._queue.close()
        self._writer.join(timeout=10)
        self._reader.close()
