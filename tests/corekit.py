"""Shared helpers for the core tests (``tests/core``): fake connections, core
construction, effect filters, and ``Solo`` — one core on the shared harness with
the test playing its peers.

Two ways to drive a ``NodeCore`` in these tests, and only two:

* **By hand, one core** (table-driven): call ``on_request``/``on_store_done``/…
  with chosen tokens and assert on the effects returned (``of``, ``sends``,
  ``only_reply``). Nothing is executed; the test *is* the storage and the peers.
* **On the one runtime** (``quorumkv.runtime.Executor``) through
  ``quorumkv.sim.scenario.CoreMesh`` — several cores, or one core (``Solo``)
  whose peers the test plays. No test executes effects itself.
"""

from __future__ import annotations

from quorumkv.core import messages as m
from quorumkv.core.effects import Respond, Send
from quorumkv.core.node import NodeCore, NodeSettings
from quorumkv.sim.scenario import CoreMesh, MeshClient

NOW = 1_700_000_000_000

#: Heartbeat interval ``Solo.run_without`` feeds the core with (ms): well inside the
#: detector's defaults, so a beating peer never looks suspect.
BEAT_EVERY_MS = 200


class Conn:
    """A fake inbound connection: the core only uses it as an opaque token."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Conn({self.name})"


def new_core(node_id: str, members: dict, now_ms: int = NOW, **kw) -> NodeCore:
    """A core as the shell builds one without a durable HLC ceiling."""
    return NodeCore(NodeSettings(node_id, **kw), members, now_ms=now_ms)


def of(effects, cls):
    """The effects of type ``cls``, in order."""
    return [e for e in effects if type(e) is cls]


def sends(effects, msg_type=None):
    """The ``Send`` effects (of ``msg_type`` messages, when given)."""
    return [e for e in effects if type(e) is Send and (msg_type is None or type(e.msg) is msg_type)]


def replies(effects, conn):
    """The messages the effects answer ``conn`` with."""
    return [e.msg for e in effects if type(e) is Respond and e.conn is conn]


def only_reply(effects, conn):
    """The one message the effects answer ``conn`` with (fails on none or several)."""
    out = replies(effects, conn)
    assert len(out) == 1, effects
    return out[0]


def sole_reply(effects, conn):
    """The step's only ``Respond``: a ``Reply`` to ``conn`` (fails on anything else)."""
    responds = of(effects, Respond)
    assert len(responds) == 1, effects
    assert responds[0].conn is conn
    reply = responds[0].msg
    assert type(reply) is m.Reply
    return reply


class _OnceEach(dict):
    """Replies by request id that refuse a second reply to the same request."""

    def __setitem__(self, key, value):
        assert key not in self, f"a second reply to request {key}: {value!r} after {self[key]!r}"
        super().__setitem__(key, value)


class Client(MeshClient):
    """A ``CoreMesh`` client connection that fails the test on a second reply to one request."""

    def __init__(self, name: str = "client") -> None:
        super().__init__(name)
        self.replies = _OnceEach()


class Solo(CoreMesh):
    """One core (``node``) on the shared harness; the other ``members`` are
    scripted: the test plays them (``from_peer``, ``answer``) and reads what the
    core sent them (``sent``). Every step's effects are executed by the one
    runtime — storage on a dict disk and a hint table — and also kept in
    ``effects`` (``take`` hands them over) for the test to assert on.
    ``time_ms`` is the core's clock; ``at(t)`` moves it and ticks."""

    def __init__(self, node: str, members, time_ms: int = NOW, **settings) -> None:
        self.node = node
        self.effects: list = []
        settings.setdefault("ceiling", False)
        super().__init__((node,), scripted=[x for x in members if x != node], time_ms=time_ms, **settings)

    @property
    def core(self) -> NodeCore:
        return self.cores[self.node]

    def run(self, node: str, effects) -> None:
        self.effects.extend(effects)
        super().run(node, effects)

    def take(self) -> list:
        """The effects executed since the last ``take``."""
        out, self.effects = self.effects, []
        return out

    def sent(self, msg_type=None) -> list:
        """``(peer, msg)`` for what the core sent or answered to scripted peers since
        the last call (only ``msg_type`` messages, when given); the outbox is emptied."""
        out, self.outbox = self.outbox, []
        return [(dst, msg) for _src, dst, msg in out if msg_type is None or type(msg) is msg_type]

    def from_peer(self, peer: str, msg) -> None:
        """``peer`` sends ``msg`` to the core; run to quiescence."""
        self.executors[self.node].request(("peer", peer), msg)
        self.settle()

    def answer(self, peer: str, msg) -> None:
        """``peer`` answers the core with ``msg``; run to quiescence."""
        self.executors[self.node].response(peer, msg)
        self.settle()

    def send_failed(self, peer: str, msg, reason: str) -> None:
        self.executors[self.node].send_failed(peer, msg, reason)
        self.settle()

    def at(self, t: int, beats=()) -> None:
        """Move the clock to ``t``, feed a heartbeat from each of ``beats``, tick."""
        self.time_ms = t
        for p in beats:
            self.from_peer(p, m.Heartbeat(0, p, 1))
        self.executors[self.node].tick()
        self.settle()

    def run_without(self, dead, ms: int = 2_500, step_ms: int = 100) -> int:
        """Advance ``ms``, ticking every ``step_ms``, with heartbeats from every peer
        except ``dead`` every ``BEAT_EVERY_MS``: the detector declares ``dead`` down.
        Returns the time reached."""
        t0 = t = self.time_ms
        while t < t0 + ms:
            t += step_ms
            beats = [p for p in self.core.membership.peers() if p not in dead] if (t - t0) % BEAT_EVERY_MS == 0 else ()
            self.at(t, beats)
        return t

    def hint_count(self, owner: str) -> int:
        """Hints the node's storage holds for ``owner``."""
        return len(self.executors[self.node].storage.hints.load(owner, 1 << 30))
