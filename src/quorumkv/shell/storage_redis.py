"""A storage engine that keeps a node's data in a real ``redis-server``.

Layout (shared with ``quorumkv.redis_quorum``, so the two read each other's data)::

    qkv:d:<key>    hash  ver = 16 hex digits of the HLC ts + node id   (the LWW order)
                         val = the value          (field absent: tombstone)
                         ctx = msgpack causal ctx (field absent: none)
                         exp = absolute expiry, wall-clock ms (0: never)
    qkv:m:maxts    string, 16 hex digits: the largest ts ever stored (seeds the HLC)
    qkv:m:count    integer: number of data keys (tombstones included)
    qkv:m:hlcceil  string, 16 hex digits: the node's durable HLC ceiling (core/clock.py)

**Write only if newer, atomically on the Redis side.** Every write is one Lua script
(``WRITE_IF_NEWER_LUA``, sent as EVALSHA; on NOSCRIPT — a restarted or flushed server —
the script is loaded again and the write re-sent, which is safe because it is
idempotent). It compares ``ver`` bytewise — a fixed-width hex ts followed by the
node id orders exactly like ``Version``'s ``(ts, node)`` — and replaces the whole
hash only when the incoming version is newer. The comparison is a byte loop rather
than Lua's ``<`` because Redis calls ``setlocale(LC_COLLATE, "")`` and Lua's string
``<`` goes through ``strcoll``. Timestamps are never turned into Lua numbers
(doubles: HLC values exceed 2^53).

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
import hashlib
import threading
from collections.abc import Iterator

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from .batching import BatchQueue, call_in_loop
from ..core.typed import is_typed, resolve
from ..core.version import Record, Version
from .storage_base import Done, StorageEngine

REDIS_URL_DEFAULT = "redis://127.0.0.1:6379/0"
KEY_PREFIX_DEFAULT = b"qkv:"

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

# KEYS[1] data key, KEYS[2] max-ts key, KEYS[3] count key
# ARGV[1] ver (16 hex ts .. node), ARGV[2] exp, ARGV[3] "1" value / "0" tombstone,
# ARGV[4] value, ARGV[5] ctx ("" = none).  Returns 1 when applied, 0 when that very
# version is there already (a retransmit), else the stored newer ``ver`` that kept
# it out (the replica reports it: RepWriteAck.newer).
WRITE_IF_NEWER_LUA = """
local function newer(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local cur = redis.call('HGET', KEYS[1], 'ver')
if cur then
  if cur == ARGV[1] then return 0 end
  if not newer(ARGV[1], cur) then return cur end
  redis.call('DEL', KEYS[1])
else
  redis.call('INCR', KEYS[3])
end
redis.call('HSET', KEYS[1], 'ver', ARGV[1], 'exp', ARGV[2])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'val', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'ctx', ARGV[5]) end
local ts = string.sub(ARGV[1], 1, 16)
local m = redis.call('GET', KEYS[2])
if (not m) or newer(ts, m) then redis.call('SET', KEYS[2], ts) end
return 1
"""

# Typed records: replace the stored record unconditionally (the caller merged it under
# WATCH). KEYS/ARGV as WRITE_IF_NEWER_LUA. Returns 1.
REPLACE_LUA = """
local function newer(a, b)
  if a == b then return false end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[1]) else redis.call('INCR', KEYS[3]) end
redis.call('HSET', KEYS[1], 'ver', ARGV[1], 'exp', ARGV[2])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'val', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'ctx', ARGV[5]) end
local ts = string.sub(ARGV[1], 1, 16)
local m = redis.call('GET', KEYS[2])
if (not m) or newer(ts, m) then redis.call('SET', KEYS[2], ts) end
return 1
"""

# Tombstone GC: KEYS[1] data key, KEYS[2] count key; ARGV[1] ver. Deletes the record
# only if it is exactly that tombstone (same version, no value). Returns 1 when deleted.
PURGE_IF_TOMBSTONE_LUA = """
if redis.call('HGET', KEYS[1], 'ver') == ARGV[1] and redis.call('HEXISTS', KEYS[1], 'val') == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
"""

# Cleanup: KEYS[1] data key, KEYS[2] count key; ARGV[1] ver. Deletes the record only
# if it is exactly that version (value or tombstone). Returns 1 when deleted.
DROP_IF_VERSION_LUA = """
if redis.call('HGET', KEYS[1], 'ver') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DECR', KEYS[2])
  return 1
end
return 0
"""

_ctx_encode = msgspec.msgpack.Encoder().encode
_ctx_decode = msgspec.msgpack.Decoder(dict[str, int]).decode


class RedisLayout:
    """How records map onto Redis keys and script arguments (engine and client share it)."""

    def __init__(self, prefix: bytes = KEY_PREFIX_DEFAULT) -> None:
        self.prefix = prefix
        self.data_prefix = prefix + b"d:"
        self.maxts_key = prefix + b"m:maxts"
        self.count_key = prefix + b"m:count"
        self.ceiling_key = prefix + b"m:hlcceil"
        # SCAN MATCH is a glob: escape the prefix's special characters.
        escaped = bytearray()
        for byte in self.data_prefix:
            if byte in b"*?[]\\":
                escaped += b"\\"
            escaped.append(byte)
        self.scan_pattern = bytes(escaped) + b"*"

    def data_key(self, key: bytes) -> bytes:
        return self.data_prefix + key

    def write_command(self, sha: str, key: bytes, record: Record) -> tuple:
        """The EVALSHA command (as ``execute_command`` arguments) writing ``record`` if newer."""
        v = record.version
        return ("EVALSHA", sha, 3, self.data_prefix + key, self.maxts_key, self.count_key,
                b"%016x" % v.ts + v.node.encode(), record.expires_ms,
                b"0" if record.value is None else b"1", record.value or b"",
                b"" if v.ctx is None else _ctx_encode(v.ctx))


def decode_record(fields: dict | list | None) -> Record | None:
    """A ``HGETALL`` reply (dict, or flat list from a raw RESP2 reply) to a Record."""
    if not fields:
        return None
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2]))
    ver = fields[b"ver"]
    ctx = fields.get(b"ctx")
    return Record(Version(int(ver[:16], 16), ver[16:].decode(), _ctx_decode(ctx) if ctx is not None else None),
                  fields.get(b"val"), int(fields.get(b"exp", b"0")))


def decode_version(ver: bytes) -> Version:
    """A stored ``ver`` field (16 hex digits of the ts, then the node id) to a Version."""
    return Version(int(ver[:16], 16), ver[16:].decode())


def script_sha(lua: str = WRITE_IF_NEWER_LUA) -> str:
    return hashlib.sha1(lua.encode()).hexdigest()


WRITE_IF_NEWER_SHA = script_sha()


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
