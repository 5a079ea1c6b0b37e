"""Simulated clients (the workload) and the nemesis (the faults), both seeded.

Clients are Jepsen-style processes: each runs one operation at a time against a
coordinator picked at random, over a small key space so operations contend. Every
put writes a value never written before, so a read's value names its write.

The nemesis draws each enabled fault's knobs from the seed (FoundationDB's
BUGGIFY: every seed has its own personality), acts during the workload, and heals
everything when the workload is done.
"""

from __future__ import annotations

import random

from ..core import messages as m
from ..core.node import Send, StoreWrite
from .cluster import SimCluster
from .config import SimConfig
from .history import FAIL, OK, UNKNOWN, History, Op
from .network import Faults

#: Reply statuses that say "this definitely did not happen" for a write.
_NO_EFFECT = (m.INVALID, m.OVERLOADED)


def write_version(effects: list, key: bytes):
    """The version a coordinator gave a client's put: in the RepWrite it fans out."""
    for eff in effects:
        t = type(eff)
        if t is Send and type(eff.msg) is m.RepWrite and eff.msg.key == key:
            return eff.msg.record.version
        if t is StoreWrite and eff.key == key:
            return eff.record.version
        if t.__name__ == "StoreHint" and eff.key == key:  # the coordinator is a fallback
            return eff.record.version
    return None


class Workload:
    def __init__(self, cfg: SimConfig, cluster: SimCluster, rng: random.Random, history: History) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.rng = rng
        self.history = history
        self.keys = [f"k{i}".encode() for i in range(cfg.keys)]
        self.issued = 0
        self.outstanding: dict[int, Op] = {}  # client -> its open op
        self.idle_clients = 0
        self._next_op_id = 1
        self.final: dict[bytes, Op] = {}
        for client in range(cfg.clients):
            cluster.client_handlers[client] = self._on_reply
        self._final_open: dict[int, Op] = {}
        cluster.client_handlers[-1] = self._on_final  # the final verification reader

    # --------------------------------------------------------------- workload
    def start(self) -> None:
        for client in range(self.cfg.clients):
            self.cluster.at(self.rng.randrange(self.cfg.think_us_max + 1), self._issue, client)

    @property
    def done(self) -> bool:
        return self.issued >= self.cfg.ops and not self.outstanding

    def _issue(self, client: int) -> None:
        if self.issued >= self.cfg.ops:
            return
        self.issued += 1
        rng = self.rng
        key = self.keys[rng.randrange(len(self.keys))]
        node = self.cluster.names[rng.randrange(len(self.cluster.names))]
        if rng.random() < self.cfg.read_fraction:
            self._send(client, "get", key, None, node, self.cfg.r)
        elif rng.random() < self.cfg.delete_fraction:
            self._send(client, "del", key, None, node, self.cfg.w)
        else:
            self._send(client, "put", key, b"c%d-op%d" % (client, self._next_op_id), node, self.cfg.w)

    def _send(self, client: int, kind: str, key: bytes, value, node: str, level: int) -> Op:
        op_id = self._next_op_id
        self._next_op_id += 1
        op = self.history.invoke(Op(op_id, client, kind, key, value, node, self.cluster.now_us, level))
        self.outstanding[client] = op
        extra = {"primary_only": True} if self.cfg.primary_only else {}
        if kind == "get":
            msg = m.Get(op_id, key, level, **extra)
            on_sent = None
        else:
            msg = m.Put(op_id, key, value, level, **extra)

            def on_sent(effects, op=op):
                op.version = write_version(effects, key)
        self.cluster.client_send(client, node, msg, on_sent)
        self.cluster.at(self.cfg.client_timeout_ms * 1000, self._client_timeout, client, op_id)
        return op

    def _on_reply(self, req_id: int, reply, reason: str) -> None:
        op = self._find(req_id)
        if op is None:
            return  # already timed out
        del self.outstanding[op.client]
        now = self.cluster.now_us
        if reply is None:
            # Refused before the coordinator saw it: no effect. Lost mid-request: unknown.
            outcome = FAIL if reason == "connection refused" else UNKNOWN
            self.history.complete(op, outcome, now, message=reason)
        elif op.kind == "get":
            if reply.status in (m.OK, m.NOT_FOUND):
                self.history.complete(op, OK, now, status=reply.status, value=reply.value,
                                      version=reply.version)
            else:
                self.history.complete(op, FAIL, now, status=reply.status, message=reply.message)
        else:
            outcome = OK if reply.status == m.OK else FAIL
            if reply.version is not None:  # the reply names the version written (a held write sent nothing yet)
                op.version = reply.version
            if reply.status in _NO_EFFECT:
                op.version = None  # nothing was written
            self.history.complete(op, outcome, now, status=reply.status, message=reply.message)
        self._after(op.client)

    def _find(self, req_id: int) -> Op | None:
        for op in self.outstanding.values():
            if op.op_id == req_id:
                return op
        return None

    def _client_timeout(self, client: int, op_id: int) -> None:
        op = self.outstanding.get(client)
        if op is not None and op.op_id == op_id:
            del self.outstanding[client]
            self.history.complete(op, UNKNOWN, self.cluster.now_us, message="client timeout")
            self._after(client)

    def _after(self, client: int) -> None:
        if client >= 0:
            self.cluster.at(self.rng.randrange(self.cfg.think_us_max + 1), self._issue, client)

    # ------------------------------------------------------- final reads (ALL)
    def read_all_keys(self) -> None:
        """After healing: read every key at R=ALL (what the lost-write checker judges)."""
        n = self.cfg.effective_n
        for key in self.keys:
            node = self.cluster.names[self.rng.randrange(len(self.cluster.names))]
            self.final[key] = self._send_final(key, node, n)

    def _send_final(self, key: bytes, node: str, n: int) -> Op:
        # Client -1 may have several reads open: one per key, tracked by op id.
        op_id = self._next_op_id
        self._next_op_id += 1
        op = self.history.invoke(Op(op_id, -1, "get", key, None, node, self.cluster.now_us, n))
        self._final_open[op_id] = op
        self.cluster.client_send(-1, node, m.Get(op_id, key, n))
        return op

    def _on_final(self, req_id: int, reply, reason: str) -> None:
        op = self._final_open.pop(req_id, None)
        if op is None:
            return
        now = self.cluster.now_us
        if reply is not None and reply.status in (m.OK, m.NOT_FOUND):
            self.history.complete(op, OK, now, status=reply.status, value=reply.value, version=reply.version)
        else:
            self.history.complete(op, FAIL, now, status=getattr(reply, "status", None),
                                  message=reason or reply.message)

    @property
    def final_done(self) -> bool:
        return not self._final_open


class Nemesis:
    """Turns ``cfg.faults`` into actions on the cluster, all drawn from the seed."""

    def __init__(self, cfg: SimConfig, cluster: SimCluster, rng: random.Random) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.rng = rng
        self.active = True
        self.knobs: dict[str, float] = {}
        faults = set(cfg.faults)
        # Swarm testing: the strength of each enabled fault is itself random.
        self.knobs["loss"] = round(rng.uniform(0.01, 0.10), 4) if "loss" in faults else 0.0
        self.knobs["dup"] = round(rng.uniform(0.01, 0.10), 4) if "dup" in faults else 0.0
        self.knobs["reorder"] = round(rng.uniform(0.05, 0.30), 4) if "reorder" in faults else 0.0
        self._partition_epoch = 0
        self.actions = [f for f in ("partition", "crash", "crash-all") if f in faults]

    def start(self) -> None:
        cl = self.cluster
        if "skew" in self.cfg.faults:
            for name in cl.names:
                cl.skew_ms[name] = self.rng.randint(-self.cfg.skew_ms_max, self.cfg.skew_ms_max)
            cl.history.nemesis(cl.now_us, "skew " + " ".join(f"{n}:{cl.skew_ms[n]:+d}ms" for n in cl.names))
        faults = Faults(self.knobs["loss"], self.knobs["dup"], self.knobs["reorder"])
        if faults != Faults():
            cl.net.faults = faults
            cl.history.nemesis(cl.now_us, f"network loss={faults.loss} dup={faults.dup} "
                                          f"reorder={faults.reorder}")
        if self.actions:
            cl.at(self._gap_us(), self._act)

    def _gap_us(self) -> int:
        lo, hi = self.cfg.fault_gap_ms
        return self.rng.randint(lo, hi) * 1000

    def _len_us(self) -> int:
        lo, hi = self.cfg.fault_len_ms
        return self.rng.randint(lo, hi) * 1000

    def _act(self) -> None:
        if not self.active:
            return
        cl = self.cluster
        rng = self.rng
        action = self.actions[rng.randrange(len(self.actions))]
        names = cl.names
        if action == "partition" and len(names) > 1:
            shuffled = names[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(names) - 1)
            cl.partition({name: (0 if i < cut else 1) for i, name in enumerate(shuffled)})
            self._partition_epoch += 1
            cl.at(self._len_us(), self._heal_partition, self._partition_epoch)
        elif action == "crash":
            live = [name for name in names if cl.up(name)]
            if len(live) > 1:
                victim = live[rng.randrange(len(live))]
                cl.crash(victim)
                cl.at(self._len_us(), cl.restart, victim)
        elif action == "crash-all":  # power loss of the whole cluster
            for name in names:
                cl.crash(name)
            down_us = rng.randint(10, 300) * 1000
            for name in names:
                cl.at(down_us, cl.restart, name)
        cl.at(self._gap_us(), self._act)

    def _heal_partition(self, epoch: int) -> None:
        if epoch == self._partition_epoch:  # a newer partition has its own heal
            self.cluster.heal_partition()

    def heal_all(self) -> None:
        """End of the workload: restart every node, heal the network, stop faults.

        With ``crash-all`` enabled the cluster is power-cycled once more first (as
        Jepsen's durability tests end): every acknowledged write must survive it.
        """
        self.active = False
        cl = self.cluster
        cl.heal_partition()
        if "crash-all" in self.cfg.faults:
            for name in cl.names:
                cl.crash(name)
        for name in cl.names:
            cl.restart(name)
        if cl.net.faults != Faults():
            cl.net.faults = Faults()
            cl.history.nemesis(cl.now_us, "network faults off")
