"""Atomic and linearizable Redis commands, on CASPaxos and ABD reads (core/paxos.py).

Handlers follow ``commands.py``'s protocol but yield ``AtomicOp``s, which the
connection turns into ``messages_cas.Atomic`` requests. Every command here is
linearizable per key, whatever the connection's R/W:

* ``QKV.CAS key expected new``: 1 when applied, 0 when the current value differs.
  ``expected`` = ``:absent:`` (``ABSENT_TOKEN``) means "only if the key is absent"
  (so QKV.CAS cannot compare against a value that is literally ``:absent:``; the
  Python client's ``cas(key, None, new)`` has no such token).
* ``INCR``/``INCRBY``/``DECR``/``DECRBY``, ``SETNX``, ``GETDEL``, ``SET ... NX|XX|GET|KEEPTTL``.
* ``QUORUM MODE LINEARIZABLE`` (or the node's ``consistency = "linearizable"``) makes
  GET/SET/DEL/MGET/MSET/EXISTS of this connection linearizable too (per key; MSET
  and multi-key DEL are still not atomic across keys). ``QUORUM MODE LWW`` goes back.
"""

from __future__ import annotations

from typing import NamedTuple

from ..core import messages as m
from ..core import messages_cas as mc
from .common import CommandError, _int_arg, check_status
from .parser import OK, encode_array, encode_bulk, encode_int, encode_null

#: The ``expected`` argument of QKV.CAS that means "the key must be absent".
ABSENT_TOKEN = b":absent:"
#: The connection modes of ``QUORUM MODE``.
MODES = ("LWW", "LINEARIZABLE")


class AtomicOp(NamedTuple):
    """One linearizable operation; fields as ``messages_cas.Atomic`` after ``id``."""

    key: bytes
    op: int
    value: bytes | None = None
    expected: bytes | None = None
    expect_absent: bool = False
    delta: int = 0
    flags: int = 0
    ttl_ms: int = 0

    def to_msg(self, rid: int) -> mc.Atomic:
        return mc.Atomic(rid, *self)


def _error():
    return CommandError


def check(reply) -> mc.AtomicReply:
    """A finished atomic operation's reply, or a CommandError in Redis's conventions.
    TIMEOUT means the outcome is unknown (it may have been applied)."""
    if type(reply) is not mc.AtomicReply:
        raise CommandError(f"ERR {getattr(reply, 'message', 'unexpected reply')}")
    return check_status(reply)


def _int(raw: bytes) -> int:
    return _int_arg(raw)


# ------------------------------------------------------------------ commands
def cmd_qkv_cas(s, node, args):
    key, expected, new = args[1], args[2], args[3]
    absent = expected == ABSENT_TOKEN
    (reply,) = yield (AtomicOp(key, mc.OP_CAS, new, None if absent else expected, absent),)
    return encode_int(1 if check(reply).applied else 0)


def _incr(key: bytes, delta: int):
    (reply,) = yield (AtomicOp(key, mc.OP_INCR, delta=delta),)
    return encode_int(check(reply).number)


def cmd_incr(s, node, args):
    return (yield from _incr(args[1], 1))


def cmd_decr(s, node, args):
    return (yield from _incr(args[1], -1))


def cmd_incrby(s, node, args):
    return (yield from _incr(args[1], _int(args[2])))


def cmd_decrby(s, node, args):
    delta = _int(args[2])
    if delta == -(2**63):
        raise _error()("ERR decrement would overflow")
    return (yield from _incr(args[1], -delta))


def cmd_setnx(s, node, args):
    (reply,) = yield (AtomicOp(args[1], mc.OP_SET, args[2], flags=mc.FLAG_NX),)
    return encode_int(1 if check(reply).applied else 0)


def cmd_getdel(s, node, args):
    (reply,) = yield (AtomicOp(args[1], mc.OP_GETDEL),)
    reply = check(reply)
    return encode_bulk(reply.old) if reply.applied else encode_null(s.proto)


def atomic_set(s, key: bytes, value: bytes, ttl_ms: int, nx: bool, xx: bool, get: bool, keepttl: bool):
    """SET with NX/XX/GET/KEEPTTL (or any SET in linearizable mode), in one proposal."""
    flags = (mc.FLAG_NX if nx else 0) | (mc.FLAG_XX if xx else 0) | (mc.FLAG_KEEPTTL if keepttl else 0)
    (reply,) = yield (AtomicOp(key, mc.OP_SET, value, flags=flags, ttl_ms=ttl_ms),)
    reply = check(reply)
    old = (encode_bulk(reply.old) if reply.found else encode_null(s.proto)) if get else None
    if not reply.applied:
        return old if get else encode_null(s.proto)
    return old if get else OK


# ------------------------------------------- linearizable mode of plain commands
def lin_get(s, node, args):
    (reply,) = yield (AtomicOp(args[1], mc.OP_GET),)
    reply = check(reply)
    return encode_bulk(reply.value) if reply.status == m.OK else encode_null(s.proto)


def lin_mget(s, node, args):
    replies = yield tuple(AtomicOp(k, mc.OP_GET) for k in args[1:])
    out = []
    for reply in replies:
        reply = check(reply)
        out.append(encode_bulk(reply.value) if reply.status == m.OK else encode_null(s.proto))
    return encode_array(out)


def lin_mset(s, node, args):
    replies = yield tuple(AtomicOp(args[i], mc.OP_SET, args[i + 1]) for i in range(1, len(args), 2))
    for reply in replies:
        check(reply)
    return OK


def lin_del(s, node, args):
    keys = list(dict.fromkeys(args[1:]))
    replies = yield tuple(AtomicOp(k, mc.OP_GETDEL) for k in keys)
    return encode_int(sum(1 for reply in replies if check(reply).applied))


def lin_exists(s, node, args):
    replies = yield tuple(AtomicOp(k, mc.OP_GET) for k in args[1:])
    return encode_int(sum(1 for reply in replies if check(reply).status == m.OK))


def set_mode(s, raw: bytes) -> bytes:
    mode = raw.decode("utf-8", "replace").strip().upper()
    if mode not in MODES:
        raise _error()(f"ERR syntax error: QUORUM MODE {'|'.join(MODES)}")
    s.linearizable = mode == "LINEARIZABLE"
    return OK
