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
(``tests/core``'s multi-core scripts, ``tests/corekit.py``'s ``Solo``,
``tests/io/test_clock_safety.py``): no network model,
no history — messages are delivered in FIFO order the moment ``settle`` runs, each
node's "disk" is a dict with the engines' newer-wins rule, and a test holds back a
node's traffic, refuses connections to it, shifts its clock or restarts it.
"""

from __future__ import annotations

import random
from collections import deque

from ..analysis import pbs
from ..core import messages as m
from ..core.casops import paxos_step
from ..core.hints import HintTable
from ..core.membership import LEFT, UP
from ..core.node import SEED_PREFIX, NodeCore, NodeSettings
from ..core.ring import Ring
from ..core.version import Record, Version
from ..runtime import Executor
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
#: A ``CoreMesh`` node's monotonic clock starts at its index times this (ms): far
#: from the wall clock and from every other node's, as on separate machines (see
#: ``sim/cluster.py``'s ``MONO_SPACING_MS``).
MESH_MONO_SPACING_MS = 1_000_000_000


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


class _MeshStorage:
    """A ``CoreMesh`` node's disk as the runtime's Storage: records in the mesh's
    ``disk[node]`` dict (the engines' newer-wins rule, ``store``), hints in a
    ``HintTable``, the ceiling in ``saved_ceiling``. Every operation completes in
    FIFO order on the mesh's queue; the completion goes to the core that asked only
    if it still runs (a restarted node's old requests change the disk, nothing more)."""

    def __init__(self, mesh: "CoreMesh", node: str, core: NodeCore) -> None:
        self.mesh, self.node, self.core = mesh, node, core
        self.hints = HintTable()

    def _fail(self, error: str, done) -> None:
        def complete() -> None:
            if self.mesh.cores.get(self.node) is self.core:
                done(False, error)
        self.mesh.queue.append(complete)

    def _later(self, apply, done) -> None:
        def complete() -> None:
            result = apply()
            if self.mesh.cores.get(self.node) is self.core:
                done(True, result)
        self.mesh.queue.append(complete)

    def write(self, key, record, done) -> None:
        mesh = self.mesh
        error = mesh.write_error(self.node, key)
        if error is not None:
            self._fail(error, done)
            return

        def apply():
            newer = mesh.apply_write(self.node, key, record)
            return newer if mesh.report_newer else None
        self._later(apply, done)

    def read(self, key, done) -> None:
        self._later(lambda: self.mesh.disk[self.node].get(key), done)

    def save_hlc_ceiling(self, ts, done) -> None:
        self._later(lambda: self.mesh.saved_ceiling.__setitem__(self.node, ts), done)

    def write_hint(self, owner, key, record, created_ms, done) -> None:
        self._later(lambda: self.hints.add(owner, key, record, created_ms), done)

    def paxos(self, op, key, ballot, record, done) -> None:
        disk, promises = self.mesh.disk[self.node], self.mesh.promises[self.node]
        self._later(lambda: paxos_step(op, ballot, record, disk.get(key), promises.get(key),
                                       lambda rec: disk.__setitem__(key, rec),
                                       lambda b: promises.__setitem__(key, b) if b else promises.pop(key, None)),
                    done)

    def purge(self, key, version, done) -> None:
        self._later(lambda: self._delete(key, version, tombstone_only=True), done)

    def drop(self, key, version, done) -> None:
        self._later(lambda: self._delete(key, version, tombstone_only=False), done)

    def _delete(self, key, version, tombstone_only: bool) -> bool:
        disk = self.mesh.disk[self.node]
        cur = disk.get(key)
        hit = (cur is not None and cur.version.key() == version.key()
               and (cur.value is None or not tombstone_only))
        if hit:
            del disk[key]
        return hit

    def delete_hint(self, hint_id) -> None:
        self.hints.delete(hint_id)

    def save_members(self, members) -> None:
        self.mesh.known[self.node] = members  # kept for tests; a mesh restart keeps its member list

    def save_bootstrapped(self, members) -> None:
        pass

    def query(self, read, done) -> None:
        self._later(lambda: read(self), done)

    query_soon = query

    # -- Reader
    def get_now(self, key):
        return self.mesh.disk[self.node].get(key)

    def peek_hints(self, key):
        return self.hints.peek(key)

    def load_hints(self, owner, limit):
        return self.hints.load(owner, limit)

    def scan_range(self, after, limit):
        disk = self.mesh.disk[self.node]
        return [(k, disk[k]) for k in sorted(k for k in disk if after is None or k > after)[:max(limit, 0)]]

    def scan_keys(self, after, limit):
        return [(k, Record(r.version, None if r.value is None else b"", r.expires_ms))
                for k, r in self.scan_range(after, limit)]

    def scan_all(self):
        return iter(sorted(self.mesh.disk[self.node].items()))


class _MeshTransport:
    """Sends and answers wait in the mesh's FIFO queue; ``settle`` delivers them."""

    def __init__(self, mesh: "CoreMesh", node: str) -> None:
        self.mesh, self.node = mesh, node

    def send(self, peer, msg) -> None:
        self.mesh.sending(self.node, peer, msg)
        self.mesh.queue.append(lambda: self.mesh._deliver_send(self.node, peer, msg))

    def respond(self, conn, msg) -> None:
        self.mesh.queue.append(lambda: self.mesh._deliver_respond(self.node, conn, msg))


class _MeshClock:
    def __init__(self, mesh: "CoreMesh", node: str) -> None:
        self.mesh, self.node = mesh, node

    def now_ms(self) -> int:
        return self.mesh.mono(self.node)

    def wall_ms(self) -> int:
        return self.mesh.clock(self.node)


class _MeshExecutor(Executor):
    """The runtime, with every step routed through ``CoreMesh.run`` (a test may wrap
    it to watch a node's effects)."""

    __slots__ = ("mesh", "node")

    def run(self, effects: list) -> None:
        self.mesh.run(self.node, effects)


class CoreMesh:
    """A tiny deterministic harness for pure cores — unit-level clock and
    write-order scripts on the one runtime (``runtime/executor.py``) with FIFO edges.

    * ``settle()`` runs queued work in FIFO order until none is left: a ``Send`` is
      delivered (``on_request`` with conn ``("peer", src)``), a ``Respond`` goes
      back to the peer's ``on_response`` or into the ``MeshClient``'s replies; a
      storage operation applies to the node's ``disk`` (``store``: newer wins) and
      answers ``on_store_done`` (``report_newer=False``: always None, storage that
      does not say which newer version kept a write out); ``SaveHlcCeiling`` is kept
      in ``saved_ceiling``; hints in a per-incarnation table; logs are dropped.
    * ``held_to``: messages towards these nodes — and their answers — wait in
      ``held`` (a slow link) until ``release(node)`` or the test clears them.
    * ``down``: a ``Send`` to these nodes fails at once (``on_send_failed``,
      connection refused).
    * ``time_ms``: true (wall) time; ``clock(node)``: the node's wall clock, off
      by ``offset_ms[node]``; ``mono(node)``: its monotonic clock (time since the
      mesh started, from a base of its own: ``MESH_MONO_SPACING_MS``), which
      ``offset_ms`` never moves. ``tick(ms)`` advances time and ticks every core.
    * ``restart(node)``: a new core as the shell builds one — HLC from the disk's
      newest timestamp, the last saved ceiling (``ceiling=False``: none kept).
    * ``acks``: every ``RepWriteAck`` a replica sent, in order; ``logs``: every
      ``Log`` as (node, event, fields); ``known``: each node's last ``SaveMembers``.
    * ``add_node(node, seeds)``: a new node that knows only itself and its seeds
      (a join); seed peers (``seed:ADDRESS``) are resolved by address.
    * ``scripted``: members the test plays by hand — they have no core; what the
      mesh's nodes send them (requests, and answers to their connections
      ``("peer", name)``) collects in ``outbox`` as ``(src, dst, msg)``, and the test
      answers through ``executors[node].response(name, msg)`` (then ``settle``).
    * ``cut``: messages between nodes to or from these are lost without a word (a
      silent link; a client's connection is not affected).
    * Hooks a test may override: ``apply_write`` (the disk's write rule),
      ``write_error`` (a replica write that fails), ``settings_of`` (one node's
      ``NodeSettings`` keywords), ``sending`` (sees every ``Send`` as the
      transport takes it, before delivery).
    """

    def __init__(self, names, n: int = 3, r: int = 2, w: int = 2, ceiling: bool = True,
                 report_newer: bool = True, time_ms: int = MESH_T0_MS, scripted=(), **settings) -> None:
        self.names = tuple(names)
        self.scripted = tuple(scripted)
        self.members = {x: f"mesh://{x}" for x in self.names + self.scripted}
        self.kw = {"read_repair": False, "speculative_retry_ms": 0, **settings, "n": n, "r": r, "w": w}
        self.ceiling = ceiling
        self.report_newer = report_newer
        self.time_ms = self._mono_seen_ms = time_ms
        self._mono_elapsed_ms = 0  # how far time_ms moved forwards (mono)
        self.offset_ms = {x: 0 for x in self.names}
        self.mono_base_ms: dict[str, int] = {}  # node -> its monotonic clock's base (mono)
        self.disk: dict[str, dict[bytes, Record]] = {x: {} for x in self.names}
        self.promises: dict[str, dict[bytes, Version]] = {x: {} for x in self.names}
        self.saved_ceiling: dict[str, int] = {x: 0 for x in self.names}
        self.held_to: set[str] = set()
        self.held: list = []
        self.down: set[str] = set()
        self.cut: set[str] = set()
        self.outbox: list[tuple[str, str, object]] = []
        self.queue: deque = deque()
        self.acks: list[m.RepWriteAck] = []
        self.logs: list[tuple[str, str, dict]] = []
        self.known: dict[str, dict] = {}
        self.boot_overrides: dict[str, tuple[dict, dict[str, str]]] = {}  # node -> (settings, members)
        self.cores: dict[str, NodeCore] = {}
        self.executors: dict[str, _MeshExecutor] = {}
        for x in self.names:
            self.restart(x)

    def clock(self, node: str) -> int:
        """``node``'s wall clock."""
        return self.time_ms + self.offset_ms[node]

    def mono(self, node: str) -> int:
        """``node``'s monotonic clock: it follows ``time_ms`` forwards only (a test
        that sets ``time_ms`` back steps the wall clocks back, not this)."""
        if self.time_ms > self._mono_seen_ms:
            self._mono_elapsed_ms += self.time_ms - self._mono_seen_ms
        self._mono_seen_ms = self.time_ms
        base = self.mono_base_ms.get(node)
        if base is None:
            base = self.mono_base_ms[node] = len(self.mono_base_ms) * MESH_MONO_SPACING_MS
        return base + self._mono_elapsed_ms

    def apply_write(self, node: str, key: bytes, record: Record) -> Version | None:
        """A replica write reaching ``node``'s disk: the engines' newer-wins rule
        (``store``). A test whose storage merges (typed records) overrides this."""
        return store(self.disk[node], key, record)

    def write_error(self, node: str, key: bytes) -> str | None:
        """Why a replica write of ``key`` on ``node`` fails (None: it does not)."""
        return None

    def settings_of(self, node: str) -> dict:
        """The ``NodeSettings`` keywords ``node`` boots with (a test may add its own,
        e.g. a per-node ``rng_seed``)."""
        return self.boot_overrides.get(node, (self.kw, None))[0]

    def sending(self, node: str, peer: str, msg) -> None:
        """``node`` hands a ``Send`` of ``msg`` to ``peer`` to the transport (nothing
        is delivered yet); a test may override this to watch the traffic."""

    def add_node(self, node: str, seeds: tuple[str, ...], **settings) -> NodeCore:
        """Boot a new node that knows only itself and ``seeds`` (nodes of the mesh)."""
        self.names += (node,)
        self.members[node] = f"mesh://{node}"
        self.offset_ms[node] = 0
        self.disk[node], self.promises[node], self.saved_ceiling[node] = {}, {}, 0
        kw = {**self.kw, **settings, "address": self.members[node],
              "seeds": tuple(self.members[x] for x in seeds)}
        self.boot_overrides[node] = (kw, {node: self.members[node]})
        self.restart(node)
        return self.cores[node]

    def resolve(self, peer: str) -> str:
        """A peer name as the core uses it: a node, or ``seed:ADDRESS`` before a
        seed's node id is known."""
        if peer.startswith(SEED_PREFIX):
            address = peer[len(SEED_PREFIX):]
            return next(x for x, a in self.members.items() if a == address)
        return peer

    def boot(self, node: str) -> NodeCore:
        hlc_last = max((r.version.ts for r in self.disk[node].values()), default=0)
        members = self.boot_overrides.get(node, (None, self.members))[1]
        return NodeCore(NodeSettings(node, **self.settings_of(node)), members, hlc_last=hlc_last, now_ms=self.mono(node),
                        hlc_ceiling=self.saved_ceiling[node] if self.ceiling else None, wall_ms=self.clock(node))

    def restart(self, node: str) -> None:
        core = self.cores[node] = self.boot(node)
        ex = self.executors[node] = _MeshExecutor(core, _MeshStorage(self, node, core),
                                                  _MeshTransport(self, node), _MeshClock(self, node),
                                                  on_log=lambda eff: self.logs.append((node, eff.event, eff.fields)))
        ex.mesh, ex.node = self, node

    # -- effects ------------------------------------------------------------------
    def run(self, node: str, effects) -> None:
        """Execute one step's effects of ``node`` (every step of the mesh comes here)."""
        Executor.run(self.executors[node], effects)

    def settle(self) -> None:
        while self.queue:
            self.queue.popleft()()

    def _deliver_send(self, node: str, peer: str, msg) -> None:
        to = self.resolve(peer)
        if node in self.cut or to in self.cut:
            return
        if to in self.scripted:
            self.outbox.append((node, to, msg))
        elif to in self.down:
            self.executors[node].send_failed(peer, msg, "unreachable")
        elif to in self.held_to:
            self.held.append(lambda: self._deliver_send(node, peer, msg))
        else:
            self.executors[to].request(("peer", node), msg)

    def _deliver_respond(self, node: str, conn, msg) -> None:
        if isinstance(conn, MeshClient):
            conn.replies[msg.id] = msg
        elif conn is not None:
            if node in self.held_to:
                self.held.append(lambda: self._deliver_respond(node, conn, msg))
                return
            if node in self.cut or conn[1] in self.cut:
                return
            if type(msg) is m.RepWriteAck:
                self.acks.append(msg)
            if conn[1] in self.scripted:
                self.outbox.append((node, conn[1], msg))
            else:
                self.executors[conn[1]].response(node, msg)

    def release(self, node: str) -> None:
        """Deliver what was held for ``node`` and stop holding it."""
        self.held_to.discard(node)
        held, self.held = self.held, []
        self.queue.extend(held)
        self.settle()

    def tick(self, ms: int = 5) -> None:
        self.time_ms += ms
        for name in self.names:
            self.executors[name].tick()
        self.settle()

    # -- clients --------------------------------------------------------------------
    def request(self, client: MeshClient, node: str, msg) -> m.Reply | None:
        """Send ``msg`` to coordinator ``node`` and settle; the reply, or None while
        the request waits (held messages, a ceiling save, a clock guard)."""
        self.executors[node].request(client, msg)
        self.settle()
        return client.replies.get(msg.id)


__all__ = ["CoreMesh", "MeshClient", "Scenario", "acked", "find_key", "m", "store"]
