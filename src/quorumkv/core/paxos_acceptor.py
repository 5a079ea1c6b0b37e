"""The acceptor of the linearizable family (``core/paxos.py`` tells the story).

An acceptor keeps, per key, its record (the ordinary LWW record: version + value)
and a *promise* (a ballot). The rules (``casops.paxos_step``), each executed
atomically by the storage engine and durable before the answer:

* ``prepare(b)``: if ``b`` is above both the promise and the record's version, promise
  ``b``. Answer the record and the promise either way.
* ``accept(rec)``: store ``rec`` iff its version is above the record's version and not
  below the promise ("applied"; the very same version again also counts as applied).
* A *plain* replica write (RepWrite: client writes, read repair, hints, streaming,
  anti-entropy) obeys the same rule: a version below the promise is not stored and
  is reported as ``newer`` (the coordinator re-stamps above it, core/node.py).

Here the acceptor turns ``PxRead`` / ``PxPrepare`` / ``PxAccept`` into storage steps
(``StoreRead``, the ``PaxosStore`` effect) and their completions into answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from . import messages_cas as mc
from .effects import StoreRead
from .tokens import StoreKind
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore

# Module names for the token kinds (a global is read faster than an enum member).
_READ, _PREPARE, _ACCEPT = StoreKind.PAXOS_READ, StoreKind.PAXOS_PREPARE, StoreKind.PAXOS_ACCEPT


class PaxosStore(NamedTuple):
    """Effect: run an acceptor step atomically and durably on ``key``, then
    ``on_store_done(token, ok, result)``. ``op`` "prepare" (``ballot``): result
    ``(promised: bool, record | None, promise | None)``. ``op`` "accept" (``record``):
    result ``(applied: bool, stored version | None, promise | None)``."""

    token: object
    op: str
    key: bytes
    ballot: Version | None
    record: Record | None


class Acceptor:
    def __init__(self, core: NodeCore) -> None:
        self.core = core
        core.handle_requests({mc.PxRead: self.on_read, mc.PxPrepare: self.on_prepare, mc.PxAccept: self.on_accept})
        for kind in (_READ, _PREPARE, _ACCEPT):
            core.handle_stored(kind, self.on_stored)

    def on_read(self, conn: object, msg: mc.PxRead, now_ms: int, out: list[Any]) -> None:
        out.append(StoreRead((_READ, conn, msg.id), msg.key))

    def on_prepare(self, conn: object, msg: mc.PxPrepare, now_ms: int, out: list[Any]) -> None:
        self.core.stats["paxos_prepares"] += 1
        self.core.clock.observe_remote(msg.ballot.ts, now_ms)
        out.append(PaxosStore((_PREPARE, conn, msg.id), "prepare", msg.key, msg.ballot, None))

    def on_accept(self, conn: object, msg: mc.PxAccept, now_ms: int, out: list[Any]) -> None:
        self.core.stats["paxos_accepts"] += 1
        self.core.clock.observe_remote(msg.record.version.ts, now_ms)
        out.append(PaxosStore((_ACCEPT, conn, msg.id), "accept", msg.key, None, msg.record))

    def on_stored(self, token: tuple[Any, ...], ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        kind, conn, req_id = token[:3]
        reply: mc.PxReadResp | mc.PxPromise | mc.PxAccepted
        refused = False
        if kind == _READ:
            reply = mc.PxReadResp(req_id, ok, result if ok else None, "" if ok else str(result))
        elif kind == _PREPARE:
            if ok:
                promised, record, promise = result
                reply = mc.PxPromise(req_id, True, promised, record, promise)
                refused = not promised
            else:
                reply = mc.PxPromise(req_id, False, error=str(result))
        else:
            assert kind == _ACCEPT, kind
            if ok:
                applied, stored, promise = result
                reply = mc.PxAccepted(req_id, True, applied, stored, promise)
                refused = not applied
            else:
                reply = mc.PxAccepted(req_id, False, error=str(result))
        if refused:
            self.core.stats["paxos_refused"] += 1
        self.core.respond(conn, reply, now_ms, out)
