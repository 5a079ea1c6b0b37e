"""Simulated clients (the workload) and the nemesis (the faults), both seeded.

Clients are Jepsen-style processes: each runs one operation at a time against a
coordinator picked at random, over a small key space so operations contend. Every
put writes a value never written before, so a read's value names its write. Each
client is one *session*, as ``quorumkv.Client`` is (``core.version.SessionContext``):
it sends the newest version it has seen (``Put.after_ts``, ``Get.floor``), as the
real client does.

The nemesis draws each enabled fault's knobs from the seed (FoundationDB's
BUGGIFY: every seed has its own personality), acts during the workload, and heals
everything when the workload is done.
"""

from __future__ import annotations

import random

from ..core import messages as m
from ..core.effects import Send, StoreHint, StoreWrite
from ..core.membership import LEFT, UP
from ..core.version import SessionContext
from .cluster import SimCluster, gc_clock_skew_ms
from .config import SimConfig
from .history import FAIL, OK, UNKNOWN, History, Op
from .network import Faults

#: Reply statuses that say "this definitely did not happen" for a write.
_NO_EFFECT = (m.INVALID, m.OVERLOADED)
#: Session guarantees, when the core has them (issue 10; the client's side of them).
#: Nodes the nemesis adds at most per run beyond the initial ones (joins).
JOINS_MAX = 3
#: Nemesis actions (the faults that act at moments, not all along), in draw order.
ACTIONS = ("partition", "crash", "crash-all", "skew", "join", "decommission", "replace", "cleanup")


def write_version(effects: list, key: bytes):
    """The version a coordinator gave a client's put: in the RepWrite it fans out."""
    for eff in effects:
        t = type(eff)
        if t is Send and type(eff.msg) is m.RepWrite and eff.msg.key == key:
            return eff.msg.record.version
        if t is StoreWrite and eff.key == key:
            return eff.record.version
        if t is StoreHint and eff.key == key:  # the coordinator is a fallback
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
        self.sessions = {client: SessionContext()
                         for client in range(cfg.clients)}
        for client in range(cfg.clients):
            cluster.client_handlers[client] = self._on_reply
        self._final_open: dict[int, Op] = {}
        cluster.client_handlers[-1] = self._on_final  # the final verification reader

    # --------------------------------------------------------------- workload
    def start(self) -> None:
        for client in range(self.cfg.clients):
            self.cluster.at(self.rng.randrange(self.cfg.think_us + 1), self._issue, client)

    @property
    def done(self) -> bool:
        return self.issued >= self.cfg.ops and not self.outstanding

    def _issue(self, client: int) -> None:
        if self.issued >= self.cfg.ops:
            return
        self.issued += 1
        rng = self.rng
        key = self.keys[rng.randrange(len(self.keys))]
        nodes = self.cluster.in_service()
        node = nodes[rng.randrange(len(nodes))]
        if rng.random() < self.cfg.read_fraction:
            self._send(client, "get", key, None, node, self.cfg.r)
        elif rng.random() < self.cfg.delete_fraction:
            self._send(client, "del", key, None, node, self.cfg.w)
        else:
            self._send(client, "put", key, b"c%d-op%d" % (client, self._next_op_id), node, self.cfg.w)

    def request(self, client: int, kind: str, key: bytes, value: bytes | None, node: str, level: int) -> Op:
        """One scripted operation (scenarios): recorded in the history like any other."""
        self.cluster.client_handlers.setdefault(client, self._on_reply)
        if client not in self.sessions:
            self.sessions[client] = SessionContext()
        return self._send(client, kind, key, value, node, level)

    def _send(self, client: int, kind: str, key: bytes, value, node: str, level: int) -> Op:
        op_id = self._next_op_id
        self._next_op_id += 1
        op = self.history.invoke(Op(op_id, client, kind, key, value, node, self.cluster.now_us, level))
        self.outstanding[client] = op
        extra = {"primary_only": True} if self.cfg.primary_only else {}
        session = self.sessions.get(client)
        if kind == "get":
            if session is not None:
                extra["floor"] = session.floor(key)
            msg = m.Get(op_id, key, level, **extra)
            on_sent = None
        else:
            if session is not None:
                extra["after_ts"] = session.floor_ts
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
        session = self.sessions.get(op.client)
        if reply is None:
            # Refused before the coordinator saw it: no effect. Lost mid-request: unknown.
            refused = reason == "connection refused"
            self.history.complete(op, FAIL if refused else UNKNOWN, now, message=reason,
                                  no_effect=op.is_write and refused)
        elif op.kind == "get":
            if reply.status in (m.OK, m.NOT_FOUND):
                self.history.complete(op, OK, now, status=reply.status, value=reply.value,
                                      version=reply.version)
                if session is not None:
                    session.saw(op.key, reply.version)
            else:
                self.history.complete(op, FAIL, now, status=reply.status, message=reply.message)
        else:
            outcome = OK if reply.status == m.OK else FAIL
            no_effect = reply.status in _NO_EFFECT
            if no_effect:
                op.version = None  # nothing was written
            elif reply.version is not None:  # write replies carry the version (issue 10)
                op.version = reply.version
            if session is not None and outcome == OK:
                session.saw(op.key, reply.version)  # what a real client learns: the reply
            self.history.complete(op, outcome, now, status=reply.status, message=reply.message,
                                  no_effect=no_effect)
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
            self.cluster.at(self.rng.randrange(self.cfg.think_us + 1), self._issue, client)

    # ------------------------------------------------------- final reads (ALL)
    def read_all_keys(self) -> None:
        """After healing: read every key at R=ALL (what the lost-write checker judges)."""
        n = self.cfg.effective_n
        ring = self.cluster.ring_view()
        nodes = [name for name in ring.nodes if self.cluster.status(name) == UP] or self.cluster.live()
        for key in self.keys:
            node = nodes[self.rng.randrange(len(nodes))]
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
    """Turns ``cfg.faults`` into actions on the cluster, all drawn from the seed.

    Swarm testing (TigerBeetle's VOPR, FoundationDB): with ``swarm`` each seed
    first draws *which* of the enabled faults are on at all, then each one's
    strength; so one seed hammers joins under packet loss, the next mixes skew
    and crashes.
    """

    def __init__(self, cfg: SimConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.cluster: SimCluster | None = None  # attach() once the cluster exists
        self.rng = rng
        self.active = True
        self.knobs: dict[str, float] = {}
        faults = set(cfg.faults)
        if cfg.swarm and len(faults) > 1:
            # Each fault is on with probability 3/4, and at least one stays on.
            drawn = [f for f in sorted(faults) if rng.random() < 0.75]
            faults = set(drawn or [sorted(faults)[rng.randrange(len(faults))]])
        self.faults = faults
        self.knobs["on"] = ",".join(sorted(faults))
        # Swarm testing: the strength of each enabled fault is itself random.
        self.knobs["loss"] = round(rng.uniform(0.01, 0.10), 4) if "loss" in faults else 0.0
        self.knobs["dup"] = round(rng.uniform(0.01, 0.10), 4) if "dup" in faults else 0.0
        self.knobs["reorder"] = round(rng.uniform(0.05, 0.30), 4) if "reorder" in faults else 0.0
        #: tombstone GC's grace (0: GC off): the drawn value is the hint age, and the
        #: grace exceeds it by the clock spread (core.hints.safe_with_gc)
        self.gc_grace_ms = rng.randint(*cfg.gc_grace_ms) + gc_clock_skew_ms(cfg) + 1 if "gc" in faults else 0
        self.knobs["gc_grace_ms"] = self.gc_grace_ms
        self._partition_epoch = 0
        self.actions = [f for f in ACTIONS if f in faults]
        # Relative frequency of each action this seed (swarm: some seeds are all joins).
        self.weights = [rng.randint(1, 4) for _ in self.actions]
        for action, weight in zip(self.actions, self.weights):
            self.knobs[f"w_{action}"] = weight
        self.injected: dict[str, int] = {}

    def attach(self, cluster: SimCluster) -> None:
        self.cluster = cluster

    def start(self) -> None:
        cl = self.cluster
        if "skew" in self.faults:
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

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def _act(self) -> None:
        if not self.active:
            return
        action = self.rng.choices(self.actions, self.weights)[0]
        getattr(self, "_do_" + action.replace("-", "_"))()
        self.cluster.at(self._gap_us(), self._act)

    # ------------------------------------------------------------ the actions
    def _do_partition(self) -> None:
        cl, rng = self.cluster, self.rng
        names = cl.in_service()
        if len(names) < 2:
            return
        shuffled = names[:]
        rng.shuffle(shuffled)
        cut = rng.randint(1, len(names) - 1)
        cl.partition({name: (0 if i < cut else 1) for i, name in enumerate(shuffled)})
        self._count("partition")
        self._partition_epoch += 1
        cl.at(self._len_us(), self._heal_partition, self._partition_epoch)

    def _do_crash(self) -> None:
        cl, rng = self.cluster, self.rng
        live = [name for name in cl.live() if cl.status(name) != LEFT]
        if len(live) > 1:
            victim = live[rng.randrange(len(live))]
            cl.crash(victim)
            self._count("crash")
            cl.at(self._len_us(), cl.restart, victim, cl.incarnation[victim])

    def _do_crash_all(self) -> None:  # power loss of the whole cluster
        cl = self.cluster
        for name in cl.live():
            cl.crash(name)
        self._count("crash-all")
        down_us = self.rng.randint(10, 300) * 1000
        for name in cl.in_service():
            cl.at(down_us, cl.restart, name, cl.incarnation[name])

    def _do_skew(self) -> None:
        """Step one node's clock (NTP stepping, a VM pause): within +-skew_ms_max."""
        cl, rng = self.cluster, self.rng
        names = cl.in_service()
        node = names[rng.randrange(len(names))]
        cl.set_skew(node, rng.randint(-self.cfg.skew_ms_max, self.cfg.skew_ms_max))
        self._count("skew")

    def _do_join(self) -> None:
        cl = self.cluster
        if not cl.ring_settled() or len(cl.names) >= self.cfg.nodes + JOINS_MAX:
            return
        cl.join()
        self._count("join")

    def _do_decommission(self) -> None:
        cl, rng = self.cluster, self.rng
        if not cl.ring_settled():
            return
        ring = cl.ring_view()
        # Never below N ring members (N replicas per key), and only a live, up
        # member can be asked.
        candidates = [name for name in ring.nodes if cl.status(name) == UP]
        if len(ring.nodes) <= self.cfg.n or not candidates:
            return
        cl.decommission(candidates[rng.randrange(len(candidates))])
        self._count("decommission")

    def _do_cleanup(self) -> None:
        """``quorumkv cleanup`` on a live member once the ring is settled (the node
        refuses while a ring change is in progress)."""
        cl, rng = self.cluster, self.rng
        if not cl.ring_settled():
            return
        live = [name for name in cl.ring_view().nodes if cl.status(name) == UP]
        if live:
            cl.cleanup(live[rng.randrange(len(live))])
            self._count("cleanup")

    def _do_replace(self) -> None:
        """Replace a dead ring member; if none is dead, kill one now and replace it later."""
        cl, rng = self.cluster, self.rng
        if not cl.ring_settled():
            return
        ring = cl.ring_view()
        dead = [name for name in ring.nodes if not cl.up(name) and cl.last_status.get(name) == UP
                and name not in cl.retired]
        if dead:
            cl.replace(dead[rng.randrange(len(dead))])
            self._count("replace")
            return
        live = [name for name in ring.nodes if cl.status(name) == UP]
        if len(live) > 1:
            victim = live[rng.randrange(len(live))]
            cl.crash(victim)
            self._count("crash")
            cl.at(self._len_us(), self._replace_dead, victim, cl.incarnation[victim])

    def _replace_dead(self, node: str, incarnation: int) -> None:
        cl = self.cluster
        if cl.up(node) or cl.incarnation[node] != incarnation or node in cl.retired:
            return
        if cl.ring_change_in_progress():  # one ring change at a time: just restart it
            cl.restart(node, incarnation)
            return
        cl.replace(node)
        self._count("replace")

    def _heal_partition(self, epoch: int) -> None:
        if epoch == self._partition_epoch:  # a newer partition has its own heal
            self.cluster.heal_partition()

    def heal_all(self) -> None:
        """End of the workload: restart every node, heal the network, stop faults.

        With ``crash-all`` enabled the cluster is power-cycled once more first (as
        Jepsen's durability tests end): every acknowledged write must survive it.
        Clock skew stays (clocks are not healed by the end of a test).
        """
        self.active = False
        cl = self.cluster
        cl.heal_partition()
        if "crash-all" in self.faults:
            for name in cl.live():
                cl.crash(name)
        for name in cl.in_service():
            cl.restart(name)
        if cl.net.faults != Faults():
            cl.net.faults = Faults()
            cl.history.nemesis(cl.now_us, "network faults off")
