"""Linearizable mode in the simulator, across ring changes: clients run linearizable
reads, writes and CAS (core/paxos.py) on a few keys through random coordinators while
a node joins, another is decommissioned and nodes crash and restart; every key's
history must be linearizable (the WGL checker of ``quorumkv verify``). Fixed seeds."""

from __future__ import annotations

import random

import pytest

from quorumkv.analysis import pbs
from quorumkv.core import messages as m
from quorumkv.core import messages_cas as mc
from quorumkv.core.membership import UP
from quorumkv.sim.cluster import SimCluster
from quorumkv.sim.config import SimConfig
from quorumkv.sim.network import LatencySampler
from quorumkv.verify.checker import INVALID, VALID, Op, check

CLIENTS = 6
KEYS = 2
RUN_US = 10_000_000  # virtual run
CLIENT_TIMEOUT_US = 5_000_000


class Driver:
    def __init__(self, seed: int):
        self.cfg = SimConfig(seed=seed, nodes=4, n=3, ops=0, primary_only=True)
        self.rng = random.Random(seed)
        self.cluster = SimCluster(self.cfg, self.rng, LatencySampler(pbs.get_profile(self.cfg.profile), self.rng),
                                  ae_interval_ms=0)
        self.history: list[Op] = []
        self.pending: dict[int, tuple[Op, int]] = {}  # req id -> (op, client)
        self.next_id = 1
        self.counter = 0
        self.stopped = False
        for c in range(CLIENTS):
            self.cluster.client_handlers[c] = self._on_reply

    def t(self) -> float:
        return self.cluster.now_us / 1e6

    def coordinators(self) -> list[str]:
        return [n for n in self.cluster.names if self.cluster.up(n) and self.cluster.status(n) == UP]

    def issue(self, client: int) -> None:
        if self.stopped:
            return
        nodes = self.coordinators()
        if not nodes:
            self.cluster.at(50_000, self.issue, client)
            return
        key = f"k{self.rng.randrange(KEYS)}"
        roll = self.rng.random()
        rid = self.next_id
        self.next_id += 1
        if roll < 0.4:
            op, msg = Op(client, "read", key, None, self.t()), mc.Atomic(rid, key.encode(), mc.OP_GET)
        elif roll < 0.7:
            v = str(self.rng.randrange(3))  # few values, so CAS often matches
            op, msg = Op(client, "write", key, v, self.t()), mc.Atomic(rid, key.encode(), mc.OP_SET, v.encode())
        else:
            e, n = str(self.rng.randrange(3)), str(self.rng.randrange(3))
            op = Op(client, "cas", key, (e, n), self.t())
            msg = mc.Atomic(rid, key.encode(), mc.OP_CAS, n.encode(), e.encode())
        self.pending[rid] = (op, client)
        self.cluster.client_send(client, self.rng.choice(nodes), msg)
        self.cluster.at(CLIENT_TIMEOUT_US, self._timeout, rid)

    def _finish(self, rid: int, typ: str, result=None, error="") -> None:
        op, client = self.pending.pop(rid)
        op.type, op.result, op.error = typ, result, error
        op.complete_s = self.t() if typ != "info" else None
        self.history.append(op)
        self.cluster.at(self.rng.randrange(1_000, 30_000), self.issue, client)

    def _timeout(self, rid: int) -> None:
        if rid in self.pending:
            self._finish(rid, "fail" if self.pending[rid][0].f == "read" else "info", error="client timeout")

    def _on_reply(self, rid: int, reply, reason: str) -> None:
        if rid not in self.pending:
            return
        op = self.pending[rid][0]
        if reply is None or reply.status == m.TIMEOUT:  # connection died / outcome unknown
            self._finish(rid, "fail" if op.f == "read" else "info", error=reason or reply.message)
        elif reply.status in (m.OK, m.NOT_FOUND):
            result = None
            if op.f == "read":
                result = reply.value.decode() if reply.value is not None else None
            elif op.f == "cas":
                result = reply.applied
            self._finish(rid, "ok", result)
        else:  # UNAVAILABLE, OVERLOADED, INVALID: certainly not applied
            self._finish(rid, "fail", error=reply.message)

    def nemesis(self) -> list[str]:
        """Join a node, decommission n1 once the join is done, crash and restart nodes."""
        cl = self.cluster
        events = []
        joined: list[str] = []

        def join():
            joined.append(cl.join())
            events.append(f"join {joined[0]} @{self.t():.2f}s")

        def decommission():
            if joined and cl.status(joined[0]) == UP and cl.ring_settled():
                cl.decommission("n1")
                events.append(f"decommission n1 @{self.t():.2f}s")
            else:
                cl.at(200_000, decommission)

        def crash(node):
            if cl.up(node):
                cl.crash(node)
                events.append(f"crash {node} @{self.t():.2f}s")
                cl.at(self.rng.randrange(300_000, 1_500_000), restart, node)

        def restart(node):
            if node not in cl.left and node not in cl.retired:
                cl.restart(node)

        cl.at(500_000, join)
        cl.at(1_500_000, decommission)
        for i in range(4):
            cl.at(1_000_000 + i * 2_000_000 + self.rng.randrange(500_000), crash, f"n{2 + i % 3}")
        return events


def _no_home(monkeypatch):
    """Every coordinator proposes itself (no forwarding to the key's home): proposers
    duel, so safety rests on the ballots and promises alone."""
    from quorumkv.core.paxos import Paxos

    monkeypatch.setattr(Paxos, "_forward", lambda self, conn, msg, now_ms, out: False)


@pytest.mark.parametrize("seed,home", [(1, True), (2, True), (3, True), (4, False), (5, False)])
def test_linearizable_ops_stay_linearizable_across_join_decommission_and_crashes(seed, home, monkeypatch):
    if not home:
        _no_home(monkeypatch)
    d = Driver(seed)
    events = d.nemesis()
    for c in range(CLIENTS):
        d.cluster.at(c * 1_000, d.issue, c)
    d.cluster.run_until(lambda: False, RUN_US)
    d.stopped = True
    d.cluster.run_until(lambda: not d.pending, RUN_US + 2 * CLIENT_TIMEOUT_US)
    assert not d.pending
    assert any(e.startswith("join") for e in events) and any(e.startswith("decommission") for e in events)
    assert d.cluster.stats["joins_completed"] >= 1, events
    assert d.cluster.stats["decommissions_completed"] >= 1, events
    ok = [o for o in d.history if o.type == "ok"]
    assert len(ok) > 300 and any(o.f == "cas" and o.result for o in ok)
    verdicts = check(d.history, "cas-register", budget_s=60)
    bad = [v for v in verdicts if v.verdict != VALID]
    assert not bad, (seed, events, [(v.key, v.verdict, [o.to_dict() for o in v.counterexample]) for v in bad])


def test_the_sim_check_catches_a_broken_acceptor(monkeypatch):
    """The same harness fails when acceptors forget promises (a seeded bug): the check can fail."""
    from quorumkv.sim import storage as sim_storage

    real = sim_storage.paxos_step

    def forgetful(op, ballot, record, cur, promise, store, set_promise):
        return real(op, ballot, record, cur, None, store, lambda b: None)  # no promise is ever kept

    monkeypatch.setattr(sim_storage, "paxos_step", forgetful)
    _no_home(monkeypatch)
    found = []
    for seed in range(1, 9):
        d = Driver(seed)
        d.nemesis()
        for c in range(CLIENTS):
            d.cluster.at(c * 1_000, d.issue, c)
        d.cluster.run_until(lambda: False, RUN_US // 2)
        d.stopped = True
        d.cluster.run_until(lambda: not d.pending, RUN_US // 2 + 2 * CLIENT_TIMEOUT_US)
        if any(v.verdict == INVALID for v in check(d.history, "cas-register", budget_s=30)):
            found.append(seed)
            break
    assert found, "forgetting promises went unnoticed on 8 seeds"
