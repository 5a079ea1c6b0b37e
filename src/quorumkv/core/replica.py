"""The replica side: a coordinator's RepWrite/RepRead/RepPeek, served from storage.

Persist-before-ack: a replica's answer is produced only when its storage effect is
done (``on_store_done`` with the token ``(kind, conn, request id[, owner])``):

====  =====================================  ==================================
kind  effect                                 answer
====  =====================================  ==================================
w     StoreWrite (our own copy)              RepWriteAck (``newer``: a newer
                                             version kept this one out)
hw    StoreHint (a copy for ``hint_for``)    RepWriteAck
h     StoreHint this coordinator keeps       none (nobody waits for it)
r     StoreRead, or ReadHint (``hint_for``)  RepReadResp
p     Peek (inspect)                         RepPeekResp
====  =====================================  ==================================

The local replica is served the same way: a round's request to this node enters
through the core's request table with connection ``SELF`` and its answer comes
back through ``NodeCore.respond`` to the op's owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as m
from .effects import Peek, ReadHint, StoreRead, StoreWrite
from .rounds import Out
from .version import Version

if TYPE_CHECKING:
    from .handoff import Handoff
    from .node import NodeCore


class Replica:
    def __init__(self, core: NodeCore, handoff: Handoff) -> None:
        self.core = core
        self.handoff = handoff
        self.stats = core.stats
        self.node_id = core.node_id
        self.stats.update({"replica_writes": 0, "replica_reads": 0})
        core.handle_requests({m.RepWrite: self.on_write, m.RepRead: self.on_read, m.RepPeek: self.on_peek})
        for kind, handler in (("w", self._written), ("hw", self._hint_written), ("h", self._hint_written),
                              ("r", self._read), ("p", self._peeked)):
            core.handle_stored(kind, handler)

    # --------------------------------------------------------------- requests
    def on_write(self, conn: Any, msg: m.RepWrite, now_ms: int, out: Out) -> None:
        self.stats["replica_writes"] += 1
        core = self.core
        core.hlc.observe(msg.record.version.ts, now_ms + core.wall_offset_ms)
        owner = msg.hint_for
        if not owner or owner == self.node_id:
            out.append(StoreWrite(("w", conn, msg.id), msg.key, msg.record))
            return
        handoff = self.handoff
        refused = handoff.refused(owner)
        if refused:
            self.stats["hints_refused_target"] += 1
        else:
            refused = handoff.keep(owner, msg.key, msg.record, ("hw", conn, msg.id, owner), now_ms, out)
        if refused:
            core.respond(conn, m.RepWriteAck(msg.id, False, refused), now_ms, out)

    def on_read(self, conn: Any, msg: m.RepRead, now_ms: int, out: Out) -> None:
        self.stats["replica_reads"] += 1
        if msg.hint_for and msg.hint_for != self.node_id:
            out.append(ReadHint(("r", conn, msg.id), msg.key))
        else:
            out.append(StoreRead(("r", conn, msg.id), msg.key))

    def on_peek(self, conn: Any, msg: m.RepPeek, now_ms: int, out: Out) -> None:
        out.append(Peek(("p", conn, msg.id), msg.key))

    # ----------------------------------------------------------- store done
    def _written(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        # ok: result is None, or the newer version that kept this one out
        _kind, conn, req_id = token[:3]
        self.core.respond(conn, m.RepWriteAck(req_id, ok, "" if ok else str(result),
                                              newer=result if ok and type(result) is Version else None),
                          now_ms, out)

    def _hint_written(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        self.handoff.stored(token[3], ok, result, out)
        if token[0] == "hw":  # a peer's hint: it waits for the ack ("h": our own, nobody waits)
            self._written(token, ok, result, now_ms, out)

    def _read(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        _kind, conn, req_id = token[:3]
        self.core.respond(conn, m.RepReadResp(req_id, ok, result if ok else None, "" if ok else str(result)),
                          now_ms, out)

    def _peeked(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        _kind, conn, req_id = token[:3]
        record, hints = result if ok else (None, [])
        self.core.respond(conn, m.RepPeekResp(req_id, record, list(hints)), now_ms, out)
