"""The pure pieces of the linearizable family that need no node: what each atomic
operation does to a key's state (``apply_op``, the change functions of CASPaxos), the
acceptor's rules (``paxos_step``, run by every storage engine inside its atomic,
durable step), request validation, and the small rules the proposer applies
(``agree``, ``parent_of``, ...). ``core/paxos.py`` runs the protocol.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Final, Literal, NamedTuple, Union

from ..errors import InvalidRequestError
from . import messages as m
from . import messages_cas as mc
from .validation import validate_key, validate_value
from .version import Record, Version

#: INCR works on signed 64-bit integers, as in Redis.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

class _Keep(Enum):
    KEEP = "keep"


_KEEP: Final = _Keep.KEEP  # apply_op: the change function leaves the state as it is
#: What a change function does to the state: ``_KEEP``, or the new (value | None, expires_ms).
Change = Union[tuple[bytes | None, int], Literal[_Keep.KEEP]]


class OpResult(NamedTuple):
    """What a change function answers the client (AtomicReply fields)."""

    applied: bool = False
    value: bytes | None = None
    old: bytes | None = None
    number: int = 0
    found: bool = False
    error: str = ""  # a refusal the client caused (INCR of a non-integer): INVALID


def apply_op(msg: mc.Atomic, cur: Record | None, now_ms: int) -> tuple[Change, OpResult]:
    """The change function of ``msg`` on the current state ``cur``: ``(new, result)``
    where ``new`` is ``_KEEP`` or ``(value | None, expires_ms)``. Pure."""
    live = cur is not None and cur.live_at(now_ms)
    value = cur.value if cur is not None and live else None
    expires = cur.expires_ms if cur is not None and live else 0
    op = msg.op
    if op == mc.OP_SET:
        if (msg.flags & mc.FLAG_NX and live) or (msg.flags & mc.FLAG_XX and not live):
            return _KEEP, OpResult(False, old=value, found=live)
        if msg.value is None:
            new_expires = 0
        elif msg.flags & mc.FLAG_KEEPTTL:
            new_expires = expires
        else:
            new_expires = now_ms + msg.ttl_ms if msg.ttl_ms > 0 else 0
        return (msg.value, new_expires), OpResult(True, old=value, found=live)
    if op == mc.OP_CAS:
        matches = (not live) if msg.expect_absent else (live and value == msg.expected)
        if not matches:
            return _KEEP, OpResult(False, value=value, found=live)
        new_expires = now_ms + msg.ttl_ms if msg.ttl_ms > 0 and msg.value is not None else 0
        return (msg.value, new_expires), OpResult(True, value=msg.value, found=live)
    if op == mc.OP_INCR:
        current: int | None = 0
        if live:
            current = parse_int64(value) if value is not None else None
            if current is None:
                return _KEEP, OpResult(False, found=True, error="value is not an integer or out of range")
        assert current is not None
        total = current + msg.delta
        if not INT64_MIN <= total <= INT64_MAX:
            return _KEEP, OpResult(False, found=live, error="increment or decrement would overflow")
        return (str(total).encode(), expires), OpResult(True, number=total, found=live)
    if op == mc.OP_GETDEL:
        if not live:
            return _KEEP, OpResult(False, found=False)
        return (None, 0), OpResult(True, old=value, found=True)
    return _KEEP, OpResult(False, value=value, found=live)  # OP_GET through a proposal


def paxos_step(op: str, ballot: Version | None, record: Record | None, cur: Record | None,
               promise: Version | None, store: Callable[[Record], object],
               set_promise: Callable[[Version | None], object]) -> tuple[bool, Record | Version | None, Version | None]:
    """The acceptor's rules (module doc), given the stored record and promise;
    ``store(record)`` and ``set_promise(ballot | None)`` make the changes. Storage
    engines (and the simulator's) call it inside their atomic, durable step."""
    if op == "prepare":
        assert ballot is not None, "prepare carries a ballot"
        if ballot.newer_than(promise) and (cur is None or ballot.newer_than(cur.version)):
            set_promise(ballot)
            return (True, cur, ballot)
        return (False, cur, promise)
    assert op == "accept" and record is not None, op
    v = record.version
    if cur is not None and cur.version.key() == v.key():
        return (True, None, None)  # that very version is here: applied
    if (cur is None or v.newer_than(cur.version)) and (promise is None or not promise.newer_than(v)):
        store(record)
        if promise is not None:
            set_promise(None)  # the record's version now fences as much as the promise did
        return (True, None, None)
    return (False, cur.version if cur is not None else None, promise)


def parse_int64(raw: bytes) -> int | None:
    """Redis's rule for INCR: a base-10 signed 64-bit integer, no spaces or '+'."""
    if not raw or len(raw) > 20 or raw[:1] == b"+" or raw != raw.strip():
        return None
    try:
        n = int(raw)
    except ValueError:
        return None
    if not INT64_MIN <= n <= INT64_MAX or str(n).encode() != raw:
        return None
    return n


def validate_atomic(msg: mc.Atomic) -> None:
    validate_key(msg.key)
    if msg.op not in mc.OP_NAMES:
        raise InvalidRequestError(f"unknown atomic operation code {msg.op}")
    validate_value(msg.value)
    validate_value(msg.expected)
    if msg.ttl_ms < 0:
        raise InvalidRequestError(f"ttl_ms must be >= 0, got {msg.ttl_ms}")
    if msg.op == mc.OP_INCR and not INT64_MIN <= msg.delta <= INT64_MAX:
        raise InvalidRequestError("delta must be a signed 64-bit integer")


def atomic_from_plain(msg: m.Get | m.Put) -> mc.Atomic:
    """A client's plain Get/Put as a linearizable operation (the node's default mode,
    ``consistency = "linearizable"``); answered with a plain Reply (``plain_reply``).
    Levels, targets and session floors are moot: a majority of primaries decides."""
    if type(msg) is m.Get:
        return mc.Atomic(msg.id, msg.key, mc.OP_GET, plain=True)
    assert type(msg) is m.Put, type(msg)
    return mc.Atomic(msg.id, msg.key, mc.OP_SET, msg.value, ttl_ms=msg.ttl_ms, plain=True)


def plain_reply(reply: mc.AtomicReply) -> m.Reply:
    return m.Reply(reply.id, reply.status, reply.value, reply.version, reply.message, "", reply.expires_ms)


def agree(records: list[Record | None]) -> bool:
    """Every answer carried the same version (or none had a record)."""
    keys = {r.version.key() if r is not None else None for r in records}
    return len(keys) <= 1


_PARENT_PREFIX = "^"  # Version.ctx key of a CASPaxos record's parent: "^" + node -> ts


def parent_ctx(cur: Record | None) -> dict[str, int] | None:
    if cur is None:
        return None
    return {_PARENT_PREFIX + cur.version.node: cur.version.ts}


def parent_of(version: Version) -> tuple[int, str] | None:
    """The (ts, node) of the state a CASPaxos record was derived from; None when
    unknown (a plain write, or a state derived from no record)."""
    ctx = version.ctx
    if not ctx or len(ctx) != 1:
        return None
    (name, ts), = ctx.items()
    if not name.startswith(_PARENT_PREFIX):
        return None
    return (ts, name[len(_PARENT_PREFIX):])


def newest_version(a: Version | None, b: Version | None) -> Version | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.newer_than(a) else a
