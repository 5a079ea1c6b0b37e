"""Scripted scenarios: a fixed event script against real NodeCores in the simulator.

The swarm runs (``runner.run``) find bugs by chance; a scenario pins one down. It
drives a ``SimCluster`` by hand — constant link delays, per-link rules that slow or
drop chosen messages, clients issuing chosen operations at chosen moments, ring
changes and crashes exactly when the script says — and judges the history with
the same real-time checker (``checker.check``)::

    sc = Scenario(nodes=5)
    sc.slow(src="n1", dst="n3", types=(m.RepWrite,), by_ms=500)
    w = sc.put("n1", b"k", b"v1", level=2)         # runs until the client has its answer
    r = sc.get("n6", b"k", level=2)
    verdict = sc.check()                             # final reads at ALL, then the checkers

Everything is deterministic: the seed only feeds the cores' own PRNGs.

``CoreMesh`` is the smaller tool for unit-level scripts of a handful of cores
(``tests/io/test_clock_safety.py``, ``tests/core/test_write_order.py``): no network model,
no history — messages are delivered in FIFO order the moment ``settle`` runs, each
node's "disk" is a dict with the engines' newer-wins rule, and a test holds back a
node's traffic, refuses connections to it, shifts its clock or restarts it.
"""

from __future__ import annotations

import random
from collections import deque

from ..analysis import pbs
from ..core import messages as m
from ..core.effects import Respond, SaveHlcCeiling, Send, StoreRead, StoreWrite
from ..core.membership import LEFT, UP
from ..core.node import NodeCore, NodeSettings
from ..core.ring import Ring
from ..core.version import Record, Version
from .checker import Verdict, check
from .cluster import SimCluster
from .config import SimConfig
from .history import INVOKE, OK, History, Op
from .network import DROP, LatencySampler
from .workload import Workload

#: Virtual time a scripted step may take at most before the scenario says it is stuck.
STEP_US_MAX = 120 * 1_000_000
#: One-way delay of every message and storage step unless a rule says otherwise.
LINK_MS = 1


class Scenario:
    def __init__(self, nodes: int = 5, n: int = 3, seed: int = 1, gc_grace_ms: int = 0,
                 ae_interval_ms: int = 0, primary_only: bool = True, core_settings: dict | None = None) -> None:
        self.cfg = SimConfig(seed=seed, nodes=nodes, n=n, r=min(2, n), w=min(2, n), ops=0,
                             profile=f"constant:{LINK_MS}", primary_only=primary_only)
        rng = random.Random(seed)
        self.history = History()
        self.cluster = SimCluster(self.cfg, rng, LatencySampler(pbs.get_profile(self.cfg.profile), rng),
                                  self.history, core_settings=core_settings, gc_grace_ms=gc_grace_ms,
                                  ae_interval_ms=ae_interval_ms)
        self.workload = Workload(self.cfg, self.cluster, rng, self.history)
        self.keys: list[bytes] = []

    # ------------------------------------------------------------------ time
    @property
    def now_ms(self) -> int:
        return self.cluster.now_us // 1000

    def run_for(self, ms: int) -> None:
        self.cluster.run_until(lambda: False, self.cluster.now_us + ms * 1000)

    def run_until(self, done, limit_ms: int = STEP_US_MAX // 1000, what: str = "condition") -> None:
        if not self.cluster.run_until(done, self.cluster.now_us + limit_ms * 1000):
            raise AssertionError(f"scenario stuck: {what} not reached within {limit_ms} virtual ms")

    # ----------------------------------------------------------------- links
    def rule(self, fn) -> object:
        """Add a link rule ``fn(src, dst, msg) -> extra µs | DROP | None``; returns it."""
        self.cluster.net.rules.append(fn)
        return fn

    def unrule(self, fn) -> None:
        self.cluster.net.rules.remove(fn)

    def slow(self, src: str, dst: str, types: tuple, by_ms: int):
        """Messages of ``types`` from ``src`` to ``dst`` arrive ``by_ms`` later."""
        return self.rule(lambda s, d, msg: by_ms * 1000 if s == src and d == dst and type(msg) in types else None)

    def drop(self, types: tuple, to: str | None = None, src: str | None = None):
        """Drop messages of ``types`` (to ``to`` and/or from ``src``, when given)."""
        return self.rule(lambda s, d, msg: DROP if (type(msg) in types and (to is None or d == to)
                                                     and (src is None or s == src)) else None)

    # --------------------------------------------------------------- clients
    def _do(self, client: int, kind: str, node: str, key: bytes, value, level: int) -> Op:
        if key not in self.keys:
            self.keys.append(key)
        op = self.workload.request(client, kind, key, value, node, level)
        self.run_until(lambda: op.outcome != INVOKE, what=f"answer to {kind} {key!r} via {node}")
        return op

    def put(self, node: str, key: bytes, value: bytes, level: int, client: int = 0) -> Op:
        return self._do(client, "put", node, key, value, level)

    def delete(self, node: str, key: bytes, level: int, client: int = 0) -> Op:
        return self._do(client, "del", node, key, None, level)

    def get(self, node: str, key: bytes, level: int, client: int = 0) -> Op:
        return self._do(client, "get", node, key, None, level)

    # ----------------------------------------------------------- ring changes
    def join(self) -> str:
        """Start a joining node and run until every live node sees it up."""
        name = self.cluster.join()
        self.run_until(lambda: self.cluster.status(name) == UP and self.cluster.ring_settled(),
                       what=f"join of {name}")
        return name

    def decommission(self, node: str) -> None:
        self.cluster.decommission(node)
        self.run_until(lambda: self.cluster.status(node) in (LEFT, None) and node in self.cluster.left,
                       what=f"decommission of {node}")

    def ring(self, members) -> Ring:
        return Ring(sorted(members), self.cfg.n)

    # ------------------------------------------------------------------ check
    def check(self) -> Verdict:
        """Heal every rule, let the cluster settle, read every key at ALL, judge."""
        cl = self.cluster
        cl.net.rules.clear()
        for name in cl.in_service():
            cl.restart(name)
        self.run_for(3_000)
        final: dict[bytes, Op] = {}
        ring = cl.ring_view()
        coordinators = [n for n in ring.nodes if cl.status(n) == UP]
        for i, key in enumerate(self.keys):
            final[key] = self.workload._send_final(key, coordinators[i % len(coordinators)], self.cfg.n)
        self.run_until(lambda: self.workload.final_done, what="final reads")
        self.workload.final.update(final)
        return check(self.history, final, cl.replica_versions, judge_reads=True)

    def holders(self, key: bytes, value: bytes | None) -> list[str]:
        """Nodes whose storage has ``key`` with ``value`` (None: a tombstone)."""
        out = []
        for name in self.cluster.names:
            rec = self.cluster.storage[name].read(key)
            if rec is not None and rec.value == value:
                out.append(name)
        return out


def acked(op: Op) -> bool:
    return op.outcome == OK


def find_key(pred, prefix: str = "k", limit: int = 100_000) -> bytes:
    """The first key ``prefix<i>`` for which ``pred(key)`` holds (deterministic: the ring is a hash)."""
    for i in range(limit):
        key = f"{prefix}{i}".encode()
        if pred(key):
            return key
    raise LookupError(f"no key among {limit} satisfies the scenario's placement")


#: Virtual wall clock of a ``CoreMesh`` at its start (ms).
MESH_T0_MS = 1_700_000_000_000


class MeshClient:
    """A client connection of a ``CoreMesh``: the replies it got, by request id."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.replies: dict[int, m.Reply] = {}


def store(disk: dict, key: bytes, record: Record) -> Version | None:
    """The engines' contract for a replica write: apply ``record`` if it is newer
    than what ``disk`` holds; return the stored version that kept it out (None when
    applied, or when it is the same version again — a retransmit)."""
    cur = disk.get(key)
    if cur is None or record.version.newer_than(cur.version):
        disk[key] = record
        return None
    return None if cur.version.key() == record.version.key() else cur.version


class CoreMesh:
    """A tiny deterministic shell for pure cores — the one effect executor of the
    unit-level clock and write-order tests.

    * ``settle()`` executes queued effects in FIFO order until none is left: a
      ``Send`` is delivered at once (``on_request`` with conn ``("peer", src)``),
      a ``Respond`` goes back to the peer's ``on_response`` or into the
      ``MeshClient``'s replies; ``StoreWrite`` applies ``store`` to the node's disk
      and answers ``on_store_done`` with its result (``report_newer=False``: always
      None, storage that does not say which newer version kept a write out);
      ``StoreRead`` reads the disk; ``SaveHlcCeiling`` is kept in
      ``saved_ceiling``. Anything else (logs, hints, gossip tables) is dropped:
      these scripts do not need it.
    * ``held_to``: messages towards these nodes — and their answers — wait in
      ``held`` (a slow link) until ``release(node)`` or the test clears them.
    * ``down``: a ``Send`` to these nodes fails at once (``on_send_failed``,
      connection refused).
    * ``offset_ms[node]``: the node's clock is off by that much; ``tick(ms)``
      advances time and ticks every core.
    * ``restart(node)``: a new core as the shell builds one — HLC from the disk's
      newest timestamp, the last saved ceiling (``ceiling=False``: none kept).
    * ``acks``: every ``RepWriteAck`` a replica sent, in order.
    """

    def __init__(self, names, n: int = 3, r: int = 2, w: int = 2, ceiling: bool = True,
                 report_newer: bool = True, **settings) -> None:
        self.names = tuple(names)
        self.members = {x: f"mesh://{x}" for x in self.names}
        self.kw = dict(n=n, r=r, w=w, read_repair=False, speculative_retry_ms=0, **settings)
        self.ceiling = ceiling
        self.report_newer = report_newer
        self.time_ms = MESH_T0_MS
        self.offset_ms = {x: 0 for x in self.names}
        self.disk: dict[str, dict[bytes, Record]] = {x: {} for x in self.names}
        self.saved_ceiling: dict[str, int] = {x: 0 for x in self.names}
        self.held_to: set[str] = set()
        self.held: list = []
        self.down: set[str] = set()
        self.queue: deque = deque()
        self.acks: list[m.RepWriteAck] = []
        self.cores = {x: self.boot(x) for x in self.names}

    def clock(self, node: str) -> int:
        return self.time_ms + self.offset_ms[node]

    def boot(self, node: str) -> NodeCore:
        hlc_last = max((r.version.ts for r in self.disk[node].values()), default=0)
        return NodeCore(NodeSettings(node, **self.kw), self.members, hlc_last=hlc_last, now_ms=self.clock(node),
                        hlc_ceiling=self.saved_ceiling[node] if self.ceiling else None)

    def restart(self, node: str) -> None:
        self.cores[node] = self.boot(node)

    # -- effects ------------------------------------------------------------------
    def run(self, node: str, effects) -> None:
        self.queue.extend((node, eff) for eff in effects)

    def settle(self) -> None:
        while self.queue:
            node, eff = self.queue.popleft()
            core, now = self.cores[node], self.clock(node)
            t = type(eff)
            if t is Send:
                if eff.peer in self.down:
                    self.run(node, core.on_send_failed(eff.peer, eff.msg, "unreachable", now))
                elif eff.peer in self.held_to:
                    self.held.append((node, eff))
                else:
                    self.run(eff.peer, self.cores[eff.peer].on_request(("peer", node), eff.msg,
                                                                       self.clock(eff.peer)))
            elif t is Respond:
                if isinstance(eff.conn, MeshClient):
                    eff.conn.replies[eff.msg.id] = eff.msg
                elif eff.conn is not None:
                    if node in self.held_to:
                        self.held.append((node, eff))
                        continue
                    if type(eff.msg) is m.RepWriteAck:
                        self.acks.append(eff.msg)
                    src = eff.conn[1]
                    self.run(src, self.cores[src].on_response(node, eff.msg, self.clock(src)))
            elif t is StoreWrite:
                newer = store(self.disk[node], eff.key, eff.record)
                self.run(node, core.on_store_done(eff.token, True, newer if self.report_newer else None, now))
            elif t is StoreRead:
                self.run(node, core.on_store_done(eff.token, True, self.disk[node].get(eff.key), now))
            elif t is SaveHlcCeiling:
                self.saved_ceiling[node] = eff.ts
                self.run(node, core.on_store_done(eff.token, True, None, now))

    def release(self, node: str) -> None:
        """Deliver what was held for ``node`` and stop holding it."""
        self.held_to.discard(node)
        held, self.held = self.held, []
        self.queue.extend(held)
        self.settle()

    def tick(self, ms: int = 5) -> None:
        self.time_ms += ms
        for name in self.names:
            self.run(name, self.cores[name].tick(self.clock(name)))
        self.settle()

    # -- clients --------------------------------------------------------------------
    def request(self, client: MeshClient, node: str, msg) -> m.Reply | None:
        """Send ``msg`` to coordinator ``node`` and settle; the reply, or None while
        the request waits (held messages, a ceiling save, a clock guard)."""
        self.run(node, self.cores[node].on_request(client, msg, self.clock(node)))
        self.settle()
        return client.replies.get(msg.id)


__all__ = ["CoreMesh", "MeshClient", "Scenario", "acked", "find_key", "m", "store"]
