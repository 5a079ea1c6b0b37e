"""The pure pieces of the linearizable family that need no node: what each atomic
operation does to a key's state (``apply_op``, the change functions of CASPaxos), the
acceptor's rules (``paxos_step``, run by every storage engine inside its atomic,
durable step) and request validation. ``core/paxos.py`` runs the protocol.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InvalidRequestError
from . import messages_cas as mc
from .validation import validate_key, validate_value
from .version import Record, Version

#: INCR works on signed 64-bit integers, as in Redis.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_KEEP = object()  # apply_op: the change function leaves the state as it is


class OpResult(NamedTuple):
    """What a change function answers the client (AtomicReply fields)."""

    applied: bool = False
    value: bytes | None = None
    old: bytes | None = None
    number: int = 0
    found: bool = False
    error: str = ""  # a refusal the client caused (INCR of a non-integer): INVALID


def apply_op(msg: mc.Atomic, cur: Record | None, now_ms: int):
    """The change function of ``msg`` on the current state ``cur``: ``(new, result)``
    where ``new`` is ``_KEEP`` or ``(value | None, expires_ms)``. Pure."""
    live = cur is not None and cur.live_at(now_ms)
    value = cur.value if live else None
    expires = cur.expires_ms if live else 0
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
        current = 0
        if live:
            current = parse_int64(value)
            if current is None:
                return _KEEP, OpResult(False, found=True, error="value is not an integer or out of range")
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
               promise: Version | None, store, set_promise):
    """The acceptor's rules (module doc), given the stored record and promise;
    ``store(record)`` and ``set_promise(ballot | None)`` make the changes. Storage
    engines (and the simulator's) call it inside their atomic, durable step."""
    if op == "prepare":
        if ballot.newer_than(promise) and (cur is None or ballot.newer_than(cur.version)):
            set_promise(ballot)
            return (True, cur, ballot)
        return (False, cur, promise)
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
