"""A storage engine that keeps a node's data in a real ``redis-server``.

The record layout on the Redis side — keys, fields, and the Lua scripts that write
only if newer — is ``core/redis_layout.py`` (pure; shared with
``quorumkv.contrib.redis_quorum``, so the two read each other's data).

**Typed records** (counters, sets, maps, causal siblings: ``core/typed.py``) are
merged, not compared, which Lua cannot do: the I/O thread reads the stored record
under ``WATCH``, calls ``core.typed.resolve`` and writes the result in a
``MULTI``/``EXEC`` (``REPLACE_LUA``); when another writer changed the key in between,
it tries again, at most ``TYPED_CAS_ATTEMPTS`` times, then fails the write (the
coordinator's round decides, nothing is half-written).

**TTL.** ``exp`` is kept as data, not as a Redis ``PEXPIREAT``: an expired record
must keep outranking older versions on other replicas (otherwise read repair would
resurrect them), so liveness is judged by the reader (``Record.live_at``), exactly as
with the SQLite engine. Tombstones and expired records are not garbage-collected yet.

**Threading: one I/O thread, pipelined.** ``write``/``read`` queue the operation;
the I/O thread sends everything queued as one pipeline (at most
``REDIS_BATCH_MAX`` operations), so operations that arrive while a round trip is in
flight go out together in the next one — the same group-commit shape as
``SqliteEngine``, and the same completion path (``loop.call_soon_threadsafe`` onto
the node's event loop, or on the I/O thread when there is no loop). A thread rather
than ``redis.asyncio`` because the engine interface also has synchronous calls
(``get_now``, ``max_timestamp``, ``count`` — the node calls ``count`` while answering
a ping) that cannot wait for the event loop they run on, it works with and without
a loop like the other engines, and a pipeline of many commands per wake-up costs the
event loop one callback per batch instead of one task per command. Reads go through
the same FIFO as writes, so a read queued after a write sees it.

**Durability** is the server's: an acknowledgement means Redis executed the script;
it survives a ``kill -9`` of the Redis server only when the server runs with
``appendonly yes`` and ``appendfsync always`` (Redis fsyncs the AOF before it
replies). The engine checks the server's settings at open and records them in
``durability``; with ``fsync=True`` and anything weaker it logs a warning.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from .batching import BatchQueue, call_in_loop
from ..core.redis_layout import (  # noqa: F401 - KEY_PREFIX_DEFAULT, RedisLayout, decode_record: the engine's API
    DROP_IF_VERSION_LUA,
    KEY_PREFIX_DEFAULT,
    PURGE_IF_TOMBSTONE_LUA,
    REPLACE_LUA,
    WRITE_IF_NEWER_LUA,
    RedisLayout,
    decode_record,
    decode_version,
)
from ..core.typed import is_typed, resolve
from ..core.version import Record, Version
from .storage_base import Done, StorageEngine

REDIS_URL_DEFAULT = "redis://127.0.0.1:6379/0"

#: Operations queued for the I/O thread before new ones are refused (the node then
#: fails that replica write or read, and the quorum round decides).
REDIS_QUEUE_MAX = 100_000
#: Operations per pipeline (one round trip) at most.
REDIS_BATCH_MAX = 1_024
#: A Redis round trip (or a connect) that takes longer fails the batch.
REDIS_SOCKET_TIMEOUT_MS = 5_000
REDIS_CONNECT_TIMEOUT_MS = 2_000
#: Reconnect-and-resend attempts after a connection error (a restarted server).
REDIS_RETRIES = 1
#: Optimistic read-merge-write attempts for one typed record before the write fails:
#: only another writer of the same key (another node sharing this Redis) retries it.
TYPED_CAS_ATTEMPTS = 8
#: Keys per SCAN step (and per HGETALL pipeline) in ``scan_all``.
SCAN_BATCH_KEYS = 512

def _log():
    import structlog

    return structlog.get_logger("quorumkv.storage")


class RedisEngine(StorageEngine):
    name = "redis"

    def __init__(self, url: str = REDIS_URL_DEFAULT, *, loop: asyncio.AbstractEventLoop | None = None,
                 prefix: bytes = KEY_PREFIX_DEFAULT, fsync: bool = True) -> None:
        self.url = url
        self.layout = RedisLayout(prefix)
        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_SOCKET_TIMEOUT_MS / 1000,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_MS / 1000,
            retry=Retry(NoBackoff(), REDIS_RETRIES),
        )
        try:
            self.sha = self.client.script_load(WRITE_IF_NEWER_LUA)
        except RedisError as exc:
            self.client.close()
            raise ConnectionError(f"redis storage engine: cannot use {url}: {exc}") from exc
        self.durability = self._probe_durability()
        if fsync and self.durability != "aof-always":
            _log().warning("redis_not_durable", url=url, durability=self.durability,
                           hint="run redis-server with appendonly yes, appendfsync always")
        self._loop = loop
        self._queue = BatchQueue(REDIS_BATCH_MAX)
        self.batches = 0
        self.batched_ops = 0
        self._io = threading.Thread(target=self._io_main, name="redis-io", daemon=True)
        self._io.start()

    def _probe_durability(self) -> str:
        try:
            cfg = self.client.config_get("append*")
        except RedisError:  # CONFIG disabled (managed Redis): unknown
            return "unknown"
        if cfg.get("appendonly") != "yes":
            return "none"
        return f"aof-{cfg.get('appendfsync', 'unknown')}"

    # -- asynchronous interface: queued for the I/O thread --------------------------
    def _submit(self, op: tuple, done: Done) -> None:
        if self._queue.closing:
            done(False, "storage engine is closed")
            return
        if len(self._queue) >= REDIS_QUEUE_MAX:
            done(False, f"storage queue full (REDIS_QUEUE_MAX={REDIS_QUEUE_MAX})")
            return
        self._queue.put((op, done))

    def write(self, key, record, done):
        if is_typed(record.version):  # typed: merged on the I/O thread (_typed_write)
            self._submit(("TYPED", key, record), done)
            return
        self._submit(self.layout.write_command(self.sha, key, record), done)

    def _typed_write(self, key: bytes, record: Record):
        """Read, ``resolve``, write under WATCH: the stored newer version that kept an
        incoming record of another type out, 1 when written or nothing to do, or an
        exception."""
        dkey = self.layout.data_key(key)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for _ in range(TYPED_CAS_ATTEMPTS):
                    try:
                        pipe.watch(dkey)
                        keep, newer = resolve(decode_record(pipe.hgetall(dkey)), record)
                        if keep is None:
                            pipe.unwatch()
                            return newer if newer is not None else 1
                        pipe.multi()
                        args = self.layout.write_command("", key, keep)[2:]
                        pipe.execute_command("EVAL", REPLACE_LUA, *args)
                        pipe.execute()
                        return 1
                    except redis.WatchError:
                        continue
            return RedisError(f"typed write of {key!r} raced TYPED_CAS_ATTEMPTS={TYPED_CAS_ATTEMPTS} times")
        except (RedisError, ValueError, KeyError, msgspec.DecodeError) as exc:
            return exc

    def read(self, key, done):
        self._submit(("HGETALL", self.layout.data_key(key)), done)

    supports_purge = True

    def purge(self, key, version, done):
        self._submit(("EVAL", PURGE_IF_TOMBSTONE_LUA, 2, self.layout.data_key(key), self.layout.count_key,
                      b"%016x" % version.ts + version.node.encode()), done)

    def drop(self, key, version, done):
        self._submit(("EVAL", DROP_IF_VERSION_LUA, 2, self.layout.data_key(key), self.layout.count_key,
                      b"%016x" % version.ts + version.node.encode()), done)

    def _io_main(self) -> None:
        while True:
            batch = self._queue.take()
            if batch is None:
                break
            results = self._run_batch([op for op, _ in batch])
            self.batches += 1
            self.batched_ops += len(batch)
            self._complete(batch, results)

    def _pipeline(self, ops: list[tuple]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            pipe.execute_command(*op)
        return pipe.execute(raise_on_error=False)

    def _run_batch(self, ops: list[tuple]) -> list:
        typed = [i for i, op in enumerate(ops) if op[0] == "TYPED"]
        if typed:  # rare next to plain writes: each is its own WATCH/MULTI round trip
            plain = [i for i, op in enumerate(ops) if op[0] != "TYPED"]
            results: list = [None] * len(ops)
            for i, res in zip(plain, self._run_batch([ops[i] for i in plain]) if plain else []):
                results[i] = res
            for i in typed:
                results[i] = self._typed_write(ops[i][1], ops[i][2])
            return results
        try:
            results = self._pipeline(ops)
            missing = [i for i, res in enumerate(results) if isinstance(res, NoScriptError)]
            if missing:  # the server lost its script cache (restart, SCRIPT FLUSH): load, resend
                self.client.script_load(WRITE_IF_NEWER_LUA)
                for i, res in zip(missing, self._pipeline([ops[i] for i in missing])):
                    results[i] = res
            return results
        except RedisError as exc:  # unreachable after the retry: fail the batch, keep serving
            return [exc] * len(ops)

    def _complete(self, batch, results) -> None:
        def run():
            for (op, done), res in zip(batch, results):
                if isinstance(res, Exception):
                    done(False, f"storage error: redis: {res}")
                elif op[0] == "HGETALL":
                    try:
                        done(True, decode_record(res))
                    except (KeyError, ValueError, msgspec.DecodeError) as exc:
                        done(False, f"storage error: bad record in redis: {exc!r}")
                elif type(res) is bytes and op[0] == "EVALSHA":  # a write kept out by this newer ver
                    done(True, decode_version(res))
                elif type(res) is Version:  # a typed write kept out by a newer record of another type
                    done(True, res)
                else:
                    done(True, None)

        call_in_loop(self._loop, run)

    # -- synchronous interface: caller's thread, its own pooled connection ----------
    def get_now(self, key):
        return decode_record(self.client.hgetall(self.layout.data_key(key)))

    def max_timestamp(self):
        raw = self.client.get(self.layout.maxts_key)
        return int(raw, 16) if raw else 0

    def hlc_ceiling(self):
        raw = self.client.get(self.layout.ceiling_key)
        return int(raw, 16) if raw else 0

    def save_hlc_ceiling(self, ts, done):
        self._submit(("SET", self.layout.ceiling_key, b"%016x" % ts), done)

    def count(self):
        try:
            return int(self.client.get(self.layout.count_key) or 0)
        except RedisError:
            return -1  # a ping must not fail because the Redis server is down

    def scan_all(self) -> Iterator[tuple[bytes, Record]]:
        """Every (key, record), tombstones included, in Redis SCAN order (for anti-entropy).

        Keys written during the scan may or may not appear; each key appears once.
        """
        cut = len(self.layout.data_prefix)
        seen: set[bytes] = set()
        cursor = 0
        while True:
            cursor, keys = self.client.scan(cursor, match=self.layout.scan_pattern, count=SCAN_BATCH_KEYS)
            keys = [k for k in keys if k not in seen]
            seen.update(keys)
            if keys:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hgetall(k)
                for k, fields in zip(keys, pipe.execute()):
                    rec = decode_record(fields)
                    if rec is not None:
                        yield k[cut:], rec
            if cursor == 0:
                return

    def close(self) -> None:
        self._queue.close()
        self._io.join(timeout=10)
        self.client.close()
