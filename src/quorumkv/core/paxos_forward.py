"""Forwarding a key's linearizable changes to its *home* (``core/paxos.py``).

A key's changes go to one proposer, its home — the first primary that is up —
which runs them one at a time: proposers on different nodes would otherwise duel
(each prepare voiding the other's accept), and a proposer that loses a duel after an
uncertain phase 2 can only answer "outcome unknown". Safety never depends on it: two
nodes that both think they are home are two proposers, which Paxos allows. Reads are
not forwarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from msgspec.structs import replace as msgspec_replace

from . import messages as m
from . import messages_cas as mc
from .effects import Send

if TYPE_CHECKING:
    from .node import NodeCore

#: Requests this node has forwarded to their key's home and awaits answers for.
FORWARDS_INFLIGHT_MAX = 10_000


class Forward(NamedTuple):
    """A client's request forwarded to the key's home, awaiting its answer."""

    conn: object
    client_id: int
    deadline_ms: int
    home: str


class Forwarder:
    def __init__(self, core: NodeCore, answer: Any) -> None:
        self.core = core
        self.answer = answer  # Paxos._answer_conn(conn, reply, now_ms, out)
        self.forwards: dict[int, Forward] = {}  # forwarded id -> its request

    def home(self, key: bytes) -> str | None:
        core = self.core
        assert core.ring is not None
        for node in core.ring.preference_list(key):
            if node == core.node_id or core.membership.is_alive(node):
                return node
        return None

    def forward(self, conn: object, msg: mc.Atomic, now_ms: int, out: list[Any]) -> bool:
        """Send ``msg`` to its key's home; False: we are home (or cannot forward), run it here."""
        home = self.home(msg.key)
        if home is None or home == self.core.node_id or len(self.forwards) >= FORWARDS_INFLIGHT_MAX:
            return False
        fid = self.core.new_op_id()
        # Our deadline is later than the home's own (it answers at its timeout_ms_write).
        self.forwards[fid] = Forward(conn, msg.id, now_ms + 2 * self.core.settings.timeout_ms_write, home)
        self.core.stats["cas_forwarded"] += 1
        out.append(Send(home, msgspec_replace(msg, id=fid, forwarded=True)))
        return True

    def on_reply(self, peer: str, msg: mc.AtomicReply, now_ms: int, out: list[Any]) -> None:
        entry = self.forwards.get(msg.id)
        if entry is None or entry.home != peer:
            return  # unknown, or not from the node it went to: ignored
        del self.forwards[msg.id]
        self.answer(entry.conn, msgspec_replace(msg, id=entry.client_id), now_ms, out)

    def tick(self, now_ms: int, out: list[Any]) -> None:
        for fid, (conn, client_id, deadline, home) in list(self.forwards.items()):
            if now_ms >= deadline:
                del self.forwards[fid]
                self.core.stats["cas_unknown"] += 1
                self.answer(conn, mc.AtomicReply(client_id, m.TIMEOUT, message=(
                    f"outcome unknown: forwarded to the key's home {home}, which did not answer")), now_ms, out)
