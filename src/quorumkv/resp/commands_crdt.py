"""Redis commands on typed keys: sets, hashes, counters, causal siblings (issue 15).

Handlers follow ``resp/commands.py``'s contract (generators yielding ops). Besides
``ReadOp`` they yield ``UpdateOp``: a typed update the connection submits as a
``core.messages_typed.Update`` (the node has a primary apply it and replicates the
result; core/typed_coord.py). ``register(COMMANDS)`` adds them to the command table.

Reply counts (SADD's "members added", SREM's "removed", HSET's "fields added", HDEL's
"removed") come from a read at R before the update, as DEL's count does: two
quorum rounds, not atomic, so a concurrent writer can make a count off by its
changes. The update itself never loses a concurrent one (the types merge).

``INCRBY``/``INCR``/``DECRBY``/``DECR`` act on a *counter-typed* key (a PN-counter).
When another handler for them is already registered (resp/atomic.py: CASPaxos on
plain strings), a key that is not counter-typed — a missing one included — goes to
that handler; without one, a missing key becomes a counter. ``QKV.CINCRBY key
delta`` always makes or updates a counter.

``GET`` of a typed key (``typed_get``): a counter's value as a string, a causal
key's value when it has one sibling, else the error ``SIBLINGS ... QKV.SIBLINGS``;
a set or hash gives ``WRONGTYPE``. ``QKV.SIBLINGS key`` answers ``[context,
[value, ...]]``; ``QKV.PUTCTX key context value`` writes with that context (an
empty context adds a sibling); ``QKV.DELCTX key context`` deletes what it saw.
"""

from __future__ import annotations

from typing import NamedTuple

from ..core import crdt, dvv, typed
from ..core import messages as m
from ..core.messages_typed import Update
from ..core.version import Record
from .common import CommandError, ReadOp, _c, _check, _int_arg
from .parser import encode_array, encode_bulk, encode_error, encode_int, encode_map, encode_null, encode_set


class UpdateOp(NamedTuple):
    key: bytes
    kind: int
    action: str
    args: tuple = ()
    delta: int = 0
    ctx: bytes | None = None

    def to_msg(self, rid: int, session) -> Update:
        return Update(rid, self.key, self.kind, self.action, list(self.args), self.delta, self.ctx, session.w_wire)


def _cmd_error():
    return CommandError


def _state(reply, kind: int):
    """The ``kind`` state a read found (empty when missing); WRONGTYPE otherwise."""
    reply = _check(reply)
    if reply.status != m.OK:
        return typed.empty(kind)
    try:
        return typed.state_of(Record(reply.version, reply.value), kind, now_ms=0)
    except typed.WrongTypeError:
        raise _cmd_error()("WRONGTYPE Operation against a key holding the wrong kind of value") from None
    except ValueError as exc:
        raise _cmd_error()(f"ERR {exc}") from None


def _applied(reply):
    """An update's reply (the new state's record is in it); refusals as Redis errors."""
    if type(reply) is m.Reply and reply.status == m.INVALID and reply.message.startswith("WRONGTYPE"):
        raise _cmd_error()(reply.message)
    return _check(reply)


def typed_get(s, reply: m.Reply) -> bytes:
    """``GET`` of a key whose record is typed (see the module doc)."""
    kind = typed.kind_of(Record(reply.version, reply.value))
    state = _state(reply, kind)
    if kind == typed.COUNTER:
        return encode_bulk(str(crdt.counter_value(state)))
    if kind == typed.CAUSAL:
        values = dvv.values(state)
        if not values:
            return encode_null(s.proto)
        if len(values) == 1:
            return encode_bulk(values[0])
        return encode_error(f"SIBLINGS key has {len(values)} concurrent values: read them with QKV.SIBLINGS "
                            "and write a resolution with QKV.PUTCTX")
    return encode_error("WRONGTYPE Operation against a key holding the wrong kind of value")


def redis_type(reply: m.Reply) -> bytes:
    """``TYPE`` of a found key."""
    return b"+" + typed.REDIS_TYPES[typed.kind_of(Record(reply.version, reply.value))].encode() + b"\r\n"


# --------------------------------------------------------------------- sets
def cmd_sadd(s, node, args):
    key, members = args[1], list(dict.fromkeys(args[2:]))
    (old,) = yield (ReadOp(key),)
    had = set(crdt.set_members(_state(old, typed.SET)))
    (reply,) = yield (UpdateOp(key, typed.SET, "add", tuple(members)),)
    _applied(reply)
    return encode_int(sum(1 for x in members if x not in had))


def cmd_srem(s, node, args):
    key, members = args[1], list(dict.fromkeys(args[2:]))
    (old,) = yield (ReadOp(key),)
    had = set(crdt.set_members(_state(old, typed.SET)))
    (reply,) = yield (UpdateOp(key, typed.SET, "rem", tuple(members)),)
    _applied(reply)
    return encode_int(sum(1 for x in members if x in had))


def cmd_smembers(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    return encode_set([encode_bulk(x) for x in crdt.set_members(_state(reply, typed.SET))], s.proto)


def cmd_scard(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    return encode_int(len(_state(reply, typed.SET).entries))


def cmd_sismember(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    return encode_int(int(args[2] in crdt.set_members(_state(reply, typed.SET))))


# ------------------------------------------------------------------- hashes
def cmd_hset(s, node, args):
    if len(args) % 2 != 0:
        raise _cmd_error()("ERR wrong number of arguments for 'hset' command")
    key = args[1]
    pairs = dict(zip(args[2::2], args[3::2]))  # the last value of a repeated field wins, as in Redis
    (old,) = yield (ReadOp(key),)
    had = {f for f, _ in crdt.map_items(_state(old, typed.MAP))}
    (reply,) = yield (UpdateOp(key, typed.MAP, "hset", tuple(x for kv in pairs.items() for x in kv)),)
    _applied(reply)
    return encode_int(sum(1 for f in pairs if f not in had))


def cmd_hdel(s, node, args):
    key, fields = args[1], list(dict.fromkeys(args[2:]))
    (old,) = yield (ReadOp(key),)
    had = {f for f, _ in crdt.map_items(_state(old, typed.MAP))}
    (reply,) = yield (UpdateOp(key, typed.MAP, "hdel", tuple(fields)),)
    _applied(reply)
    return encode_int(sum(1 for f in fields if f in had))


def cmd_hget(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    value = crdt.map_get(_state(reply, typed.MAP), args[2])
    return encode_bulk(value) if value is not None else encode_null(s.proto)


def cmd_hgetall(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    items = crdt.map_items(_state(reply, typed.MAP))
    return encode_map([(encode_bulk(f), encode_bulk(v)) for f, v in items], s.proto)


def cmd_hlen(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    return encode_int(len(crdt.map_items(_state(reply, typed.MAP))))


# ----------------------------------------------------------------- counters
def _delta(raw: bytes) -> int:
    value = _int_arg(raw)
    if not -crdt.INT64_MAX - 1 <= value <= crdt.INT64_MAX:
        raise _cmd_error()("ERR value is not an integer or out of range")
    return value


def _counter_update(key: bytes, delta: int):
    (reply,) = yield (UpdateOp(key, typed.COUNTER, "incr", (), delta),)
    reply = _applied(reply)
    return encode_int(crdt.counter_value(typed.decode(typed.COUNTER, reply.value)))


def _incr_family(fallback, sign: int, fixed: int | None):
    """INCR/INCRBY/DECR/DECRBY: a counter-typed key (or, without ``fallback``, a missing
    one) is updated as a PN-counter; anything else goes to ``fallback`` when there is one."""
    def handler(s, node, args):
        delta = sign * (fixed if fixed is not None else _delta(args[2]))
        (reply,) = yield (ReadOp(args[1]),)
        reply = _check(reply)
        kind = typed.kind_of(Record(reply.version, reply.value)) if reply.status == m.OK else typed.LWW
        if kind == typed.COUNTER or (fallback is None and reply.status != m.OK):
            return (yield from _counter_update(args[1], delta))
        if fallback is not None:
            res = fallback(s, node, args)
            return res if isinstance(res, bytes) else (yield from res)
        if kind != typed.LWW:
            raise _cmd_error()("WRONGTYPE Operation against a key holding the wrong kind of value")
        raise _cmd_error()("ERR value is not a counter: INCRBY here works on counter-typed keys "
                           "(create one with QKV.CINCRBY)")
    return handler


def cmd_qkv_cincrby(s, node, args):
    return (yield from _counter_update(args[1], _delta(args[2])))


# ------------------------------------------------------------ causal siblings
def cmd_qkv_siblings(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    state = _state(reply, typed.CAUSAL)
    return encode_array([encode_bulk(dvv.encode_context(dvv.context(state))),
                         encode_array([encode_bulk(v) for v in dvv.values(state)])])


def _ctx_arg(raw: bytes) -> bytes | None:
    try:
        dvv.decode_context(raw)
    except ValueError as exc:
        raise _cmd_error()(f"ERR {exc}") from None
    return raw or None


def cmd_qkv_putctx(s, node, args):
    (reply,) = yield (UpdateOp(args[1], typed.CAUSAL, "put", (args[3],), 0, _ctx_arg(args[2])),)
    _applied(reply)
    from .parser import OK

    return OK


def cmd_qkv_delctx(s, node, args):
    (reply,) = yield (UpdateOp(args[1], typed.CAUSAL, "del", (), 0, _ctx_arg(args[2])),)
    _applied(reply)
    return encode_int(1)


def register(commands: dict) -> None:
    """Add this module's commands to ``commands`` (resp/commands.py's table)."""
    key1 = (1, 1, 1)
    table = [
        _c("sadd", cmd_sadd, -3, ["write", "fast"], key1, "set", "Adds members to an OR-set (add wins)."),
        _c("srem", cmd_srem, -3, ["write", "fast"], key1, "set", "Removes the members this replica has seen."),
        _c("smembers", cmd_smembers, 2, ["readonly"], key1, "set", "The members, merged from R replicas."),
        _c("scard", cmd_scard, 2, ["readonly", "fast"], key1, "set", "How many members."),
        _c("sismember", cmd_sismember, 3, ["readonly", "fast"], key1, "set", "1 if a member, else 0."),
        _c("hset", cmd_hset, -4, ["write", "fast"], key1, "hash", "Sets fields of an LWW-map.", "2.0.0"),
        _c("hdel", cmd_hdel, -3, ["write", "fast"], key1, "hash", "Removes fields (tombstoned).", "2.0.0"),
        _c("hget", cmd_hget, 3, ["readonly", "fast"], key1, "hash", "One field's value.", "2.0.0"),
        _c("hgetall", cmd_hgetall, 2, ["readonly"], key1, "hash", "Every live field.", "2.0.0"),
        _c("hlen", cmd_hlen, 2, ["readonly", "fast"], key1, "hash", "How many live fields.", "2.0.0"),
        _c("qkv.cincrby", cmd_qkv_cincrby, 3, ["write", "fast"], key1, "quorumkv",
           "Adds to a PN-counter (made if missing); the value after.", "0.1.0"),
        _c("qkv.siblings", cmd_qkv_siblings, 2, ["readonly"], key1, "quorumkv",
           "[context, [values...]] of a causal-mode key.", "0.1.0"),
        _c("qkv.putctx", cmd_qkv_putctx, 4, ["write"], key1, "quorumkv",
           "Causal write superseding what the context saw (empty context: add a sibling).", "0.1.0"),
        _c("qkv.delctx", cmd_qkv_delctx, 3, ["write"], key1, "quorumkv",
           "Causal delete of what the context saw; concurrent writes survive.", "0.1.0"),
    ]
    for name, sign, fixed, arity in (("incr", 1, 1, 2), ("decr", -1, 1, 2), ("incrby", 1, None, 3),
                                     ("decrby", -1, None, 3)):
        old = commands.get(name)
        handler = _incr_family(old.handler if old is not None else None, sign, fixed)
        table.append(_c(name, handler, arity, ["write", "fast"], key1, "string",
                        (old.summary + " " if old is not None else "") + "On a counter-typed key: a PN-counter."))
    for cmd in table:
        commands[cmd.name] = cmd
