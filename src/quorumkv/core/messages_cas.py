"""Wire messages of the linearizable family (``core/paxos.py``); tags 60-69 (frozen
once released). ``wire.py`` folds them into its unions.

client -> node  Atomic       one linearizable operation on one key (read, write,
                             CAS, INCR, GETDEL, SET NX/XX/GET)
node -> client  AtomicReply
coordinator -> replica (the key's primaries, current and future during a ring change)::

    PxRead     / PxReadResp   a linearizable read's first round: the stored record
    PxPrepare  / PxPromise    CASPaxos phase 1: promise ballot, answer the record
    PxAccept   / PxAccepted   CASPaxos phase 2 (and a read's write-back): store the
                              record if its version is above the stored one and not
                              below the promise
"""

from __future__ import annotations

from .messages import _Msg
from .version import Record, Version

# Atomic.op
OP_GET = 0  # linearizable read
OP_SET = 1  # linearizable write (value None: delete); flags NX/XX/GET/KEEPTTL
OP_CAS = 2  # set to ``value`` iff the current value is ``expected`` (absent: expect_absent)
OP_INCR = 3  # add ``delta`` to the integer value (absent: 0)
OP_GETDEL = 4  # delete, answering the old value
OP_NAMES = {OP_GET: "get", OP_SET: "set", OP_CAS: "cas", OP_INCR: "incr", OP_GETDEL: "getdel"}

# Atomic.flags (OP_SET)
FLAG_NX = 1  # only if absent
FLAG_XX = 2  # only if present
FLAG_KEEPTTL = 4  # keep the current expiry


class Atomic(_Msg, tag=60, frozen=True):
    id: int
    key: bytes
    op: int
    value: bytes | None = None
    expected: bytes | None = None
    expect_absent: bool = False
    delta: int = 0
    flags: int = 0
    ttl_ms: int = 0
    #: sent on by another node to the key's home (core/paxos.py): run it here, never
    #: forward it again (views of who is up may differ)
    forwarded: bool = False
    #: a plain Get/Put turned linearizable by the node's default (``consistency =
    #: "linearizable"``): answer with a plain ``Reply``, as the client expects
    plain: bool = False


class AtomicReply(_Msg, tag=61, frozen=True):
    """``status`` as ``Reply``'s (OK, NOT_FOUND, UNAVAILABLE, TIMEOUT, INVALID ...).
    TIMEOUT means *outcome unknown* (the change may or may not have taken effect);
    UNAVAILABLE means it did not."""

    id: int
    status: int
    applied: bool = False  # SET/CAS/GETDEL: the change was made
    value: bytes | None = None  # GET: the value; CAS not applied: the current value
    old: bytes | None = None  # SET ... GET, GETDEL: the value before
    number: int = 0  # INCR: the new value
    version: Version | None = None  # the version read or written
    message: str = ""
    expires_ms: int = 0
    found: bool = False  # GET/CAS/SET GET/GETDEL: the key had a live value before


class PxRead(_Msg, tag=62, frozen=True):
    id: int
    key: bytes


class PxReadResp(_Msg, tag=63, frozen=True):
    id: int
    ok: bool
    record: Record | None = None
    error: str = ""


class PxPrepare(_Msg, tag=64, frozen=True):
    id: int
    key: bytes
    ballot: Version


class PxPromise(_Msg, tag=65, frozen=True):
    id: int
    ok: bool
    promised: bool = False
    record: Record | None = None
    promise: Version | None = None  # the acceptor's promise now (ours when promised)
    error: str = ""


class PxAccept(_Msg, tag=66, frozen=True):
    id: int
    key: bytes
    record: Record


class PxAccepted(_Msg, tag=67, frozen=True):
    id: int
    ok: bool
    applied: bool = False  # stored (or that very version was there already)
    stored: Version | None = None  # not applied: the acceptor's record version
    promise: Version | None = None  # not applied: the acceptor's promise
    error: str = ""


CAS_REQUESTS: tuple[type[_Msg], ...] = (Atomic, PxRead, PxPrepare, PxAccept)
CAS_RESPONSES: tuple[type[_Msg], ...] = (AtomicReply, PxReadResp, PxPromise, PxAccepted)
