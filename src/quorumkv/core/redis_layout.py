"""How quorumkv records are laid out in a Redis server: keys, hash fields, and the Lua
scripts that write them.

Shared by the node's Redis storage engine (``shell/storage_redis.py``) and the
client-side quorum over plain Redis servers (``contrib/redis_quorum.py``), so each
reads the other's data — and neither imports the other. Pure: it builds command
arguments and decodes replies; the callers do the I/O.

Layout::

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
"""

from __future__ import annotations

import hashlib

import msgspec

from .version import Record, Version

KEY_PREFIX_DEFAULT = b"qkv:"

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

    def write_command(self, sha: str, key: bytes, record: Record) -> tuple[object, ...]:
        """The EVALSHA command (as ``execute_command`` arguments) writing ``record`` if newer."""
        v = record.version
        return ("EVALSHA", sha, 3, self.data_prefix + key, self.maxts_key, self.count_key,
                b"%016x" % v.ts + v.node.encode(), record.expires_ms,
                b"0" if record.value is None else b"1", record.value or b"",
                b"" if v.ctx is None else _ctx_encode(v.ctx))


def decode_record(fields: dict[bytes, bytes] | list[bytes] | None) -> Record | None:
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
