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
"""

from __future__ import annotations

import random

from ..analysis import pbs
from ..core import messages as m
from ..core.membership import LEFT, UP
from ..core.ring import Ring
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


__all__ = ["Scenario", "acked", "find_key", "m"]
