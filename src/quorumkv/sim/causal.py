"""Causal mode under the simulator: clients write siblings with contexts, faults
act, and ``checker.check_causal`` judges that no acknowledged write was lost.

Each client remembers, per key, the context and sibling values of its last read.
A put carries that context with probability ``CONTEXT_PROBABILITY`` (else none: a
blind write adds a sibling); a delete always carries it. The run's shape (heal,
recovery window, final reads at ALL) is ``runner.run``'s.

    from quorumkv.sim.causal import run_causal
    result = run_causal(SimConfig(seed=7, faults=("partition", "crash")))
    assert result.verdict.ok, result.verdict.examples
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..analysis import pbs
from ..core import dvv, typed
from ..core import messages as m
from ..core.messages_typed import Update
from ..core.version import Record
from .checker import CausalVerdict, check_causal
from .cluster import SimCluster
from .config import SimConfig
from .history import OK, History, Op
from .network import LatencySampler
from .runner import PHASE_US_MAX, RECOVERY_WINDOW_US, RING_CHANGE_US_MAX
from .workload import Nemesis, Workload

#: How often a put carries the client's last context for the key (the rest are blind
#: writes, which must become siblings).
CONTEXT_PROBABILITY = 0.7


class CausalWorkload(Workload):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.contexts: dict[tuple[int, bytes], tuple[bytes, frozenset]] = {}
        self.saw: dict[int, frozenset] = {}  # write op id -> the values its context had seen

    def _send(self, client: int, kind: str, key: bytes, value, node: str, level: int) -> Op:
        if kind == "get":
            return super()._send(client, kind, key, value, node, level)
        op_id = self._next_op_id
        self._next_op_id += 1
        op = self.history.invoke(Op(op_id, client, kind, key, value, node, self.cluster.now_us, level))
        self.outstanding[client] = op
        ctx, seen = self.contexts.get((client, key), (None, frozenset()))
        if kind == "put" and self.rng.random() >= CONTEXT_PROBABILITY:
            ctx, seen = None, frozenset()
        self.saw[op_id] = seen
        args = [value] if kind == "put" else []
        msg = Update(op_id, key, typed.CAUSAL, "put" if kind == "put" else "del", args, 0, ctx, level)
        self.cluster.client_send(client, node, msg, None)
        self.cluster.at(self.cfg.client_timeout_ms * 1000, self._client_timeout, client, op_id)
        return op

    def _on_reply(self, req_id: int, reply, reason: str) -> None:
        op = self._find(req_id)
        super()._on_reply(req_id, reply, reason)
        if op is not None and op.kind == "get" and op.outcome == OK:
            state = dvv.EMPTY
            if op.value is not None:
                state = typed.state_of(Record(op.version, op.value), typed.CAUSAL, 0)
            self.contexts[(op.client, op.key)] = (dvv.encode_context(dvv.context(state)),
                                                  frozenset(dvv.values(state)))


@dataclass
class CausalResult:
    cfg: SimConfig
    verdict: CausalVerdict
    history: History
    faults_injected: dict
    wall_s: float

    @property
    def failed(self) -> bool:
        return not self.verdict.ok

    def summary(self) -> dict:
        v = self.verdict
        return {"seed": self.cfg.seed, "faults": list(self.cfg.faults), "acked_writes": v.acked_writes,
                "superseded": v.superseded, "lost_acked_writes": v.lost_acked_writes,
                "resurrections": v.resurrections, "unknown_values": v.unknown_values,
                "final_reads_failed": v.final_reads_failed, "divergent_keys": v.divergent_keys,
                "siblings_max": v.siblings_max, "keys_with_siblings": v.keys_with_siblings,
                "faults_injected": self.faults_injected, "ok": v.ok}


def _run_workload(cfg: SimConfig, workload_class, what: str):
    """Run one seed's workload under the nemesis, heal, let the cluster settle, read
    every key back: (workload, cluster, history, nemesis), ready to be checked."""
    rng = random.Random(cfg.seed)
    sampler = LatencySampler(pbs.get_profile(cfg.profile), rng)
    history = History()
    nemesis = Nemesis(cfg, rng)
    cluster = SimCluster(cfg, rng, sampler, history, gc_grace_ms=nemesis.gc_grace_ms)
    nemesis.attach(cluster)
    workload = workload_class(cfg, cluster, rng, history)
    nemesis.start()
    workload.start()
    if not cluster.run_until(lambda: workload.done, PHASE_US_MAX):
        raise RuntimeError(f"seed {cfg.seed}: {what} workload did not finish within {PHASE_US_MAX} µs")
    nemesis.heal_all()
    cluster.run_until(lambda: not cluster.ring_change_in_progress(), cluster.now_us + RING_CHANGE_US_MAX)
    cluster.run_until(lambda: False, cluster.now_us + RECOVERY_WINDOW_US)
    cluster.run_until(cluster.quiet, cluster.now_us + PHASE_US_MAX)
    workload.read_all_keys()
    cluster.run_until(lambda: workload.final_done and cluster.quiet(), cluster.now_us + PHASE_US_MAX)
    return workload, cluster, history, nemesis


def run_causal(cfg: SimConfig) -> CausalResult:
    started = time.perf_counter()
    workload, cluster, history, nemesis = _run_workload(cfg, CausalWorkload, "causal")
    verdict = check_causal(history, workload.final, workload.saw, cluster.replica_versions)
    return CausalResult(cfg, verdict, history, dict(nemesis.injected), time.perf_counter() - started)


def statuses(history: History) -> dict[str, int]:
    """How the causal writes ended (for reports): status name -> count."""
    names = {m.OK: "ok", m.INVALID: "invalid", m.UNAVAILABLE: "unavailable", m.TIMEOUT: "timeout",
             m.OVERLOADED: "overloaded"}
    out: dict[str, int] = {}
    for op in history.ops:
        if op.is_write:
            name = names.get(op.status, op.outcome)
            out[name] = out.get(name, 0) + 1
    return out


# ------------------------------------------------------------ CRDTs (counter, set)
class CrdtWorkload(Workload):
    """Half the keys are PN-counters (every write increments by 1), half OR-sets
    (every write adds a member never added before). Reads are plain gets."""

    def _send(self, client: int, kind: str, key: bytes, value, node: str, level: int) -> Op:
        if kind == "get":
            return super()._send(client, kind, key, value, node, level)
        op_id = self._next_op_id
        self._next_op_id += 1
        counter = self.keys.index(key) % 2 == 0
        if value is None:  # the base workload's deletes: here one more unique add
            value = b"c%d-op%d" % (client, op_id)
        op = self.history.invoke(Op(op_id, client, "put", key, None if counter else value, node,
                                    self.cluster.now_us, level))
        self.outstanding[client] = op
        msg = (Update(op_id, key, typed.COUNTER, "incr", [], 1, None, level) if counter
               else Update(op_id, key, typed.SET, "add", [value], 0, None, level))
        self.cluster.client_send(client, node, msg, None)
        self.cluster.at(self.cfg.client_timeout_ms * 1000, self._client_timeout, client, op_id)
        return op


@dataclass
class CrdtVerdict:
    acked_increments: int = 0
    counters_wrong: int = 0  # final value outside [acked, acked + maybe-landed]
    acked_adds: int = 0
    adds_lost: int = 0
    unknown_members: int = 0
    final_reads_failed: int = 0
    divergent_keys: int = 0
    examples: dict = None

    @property
    def ok(self) -> bool:
        return not (self.counters_wrong or self.adds_lost or self.unknown_members or self.final_reads_failed
                    or self.divergent_keys)


def check_crdt(history: History, final: dict, replica_versions) -> CrdtVerdict:
    from ..core import crdt

    v = CrdtVerdict(examples={})
    writes: dict[bytes, list[Op]] = {}
    for op in history.ops:
        if op.is_write and not op.no_effect:
            writes.setdefault(op.key, []).append(op)
    for key, fin in sorted(final.items()):
        if fin.outcome != OK:
            v.final_reads_failed += 1
            continue
        ops = writes.get(key, [])
        acked = [op for op in ops if op.outcome == OK]
        rec = Record(fin.version, fin.value) if fin.value is not None else None
        if any(op.value is None for op in ops):  # a counter key
            value = crdt.counter_value(typed.state_of(rec, typed.COUNTER, 0))
            v.acked_increments += len(acked)
            if not len(acked) <= value <= len(ops):
                v.counters_wrong += 1
                v.examples.setdefault("counter", []).append({"key": key.decode(), "value": value,
                                                             "acked": len(acked), "attempted": len(ops)})
        elif ops:
            members = set(crdt.set_members(typed.state_of(rec, typed.SET, 0)))
            v.acked_adds += len(acked)
            lost = [op.value for op in acked if op.value not in members]
            v.adds_lost += len(lost)
            v.unknown_members += len(members - {op.value for op in ops})
            if lost:
                v.examples.setdefault("lost_add", []).append({"key": key.decode(), "lost": lost[:5]})
        states = {(x.key(), (x.ctx or {}).get("h")) if x else None for x in replica_versions(key).values()}
        v.divergent_keys += len(states) > 1
    return v


def run_crdt(cfg: SimConfig) -> tuple[CrdtVerdict, dict]:
    """A CRDT run: (verdict, faults injected)."""
    workload, cluster, history, nemesis = _run_workload(cfg, CrdtWorkload, "CRDT")
    return check_crdt(history, workload.final, cluster.replica_versions), dict(nemesis.injected)


#: The faults a causal sweep draws from (swarm: each seed picks its own subset).
SWEEP_FAULTS = ("partition", "crash", "crash-all", "skew", "join", "decommission", "replace")


def main(argv: list[str] | None = None) -> int:
    """``python -m quorumkv.sim.causal --seeds 1-30 [--ops N] [--faults a,b]``: a seed sweep,
    one JSON line per seed, the failing seeds last; exit status 1 when any failed."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m quorumkv.sim.causal")
    ap.add_argument("--seeds", default="1-20", help="a range lo-hi (inclusive) or a comma list")
    ap.add_argument("--ops", type=int, default=2_000)
    ap.add_argument("--faults", default=",".join(SWEEP_FAULTS))
    ap.add_argument("--no-swarm", action="store_true", help="every fault on in every seed")
    ap.add_argument("--crdt", action="store_true", help="counters and sets instead of causal siblings")
    args = ap.parse_args(argv)
    if "-" in args.seeds:
        lo, hi = map(int, args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    faults = tuple(f for f in args.faults.split(",") if f)
    failed = []
    totals = {"acked_writes": 0, "superseded": 0, "lost_acked_writes": 0, "resurrections": 0}
    if args.crdt:
        for seed in seeds:
            verdict, injected = run_crdt(SimConfig(seed=seed, ops=args.ops, faults=faults, swarm=not args.no_swarm))
            line = {k: getattr(verdict, k) for k in ("acked_increments", "counters_wrong", "acked_adds", "adds_lost",
                                                     "unknown_members", "final_reads_failed", "divergent_keys")}
            print(json.dumps({"seed": seed, "ok": verdict.ok, "faults_injected": injected, **line,
                              "examples": verdict.examples}, sort_keys=True), flush=True)
            if not verdict.ok:
                failed.append(seed)
        print(json.dumps({"seeds": len(seeds), "failed_seeds": failed}))
        return 1 if failed else 0
    for seed in seeds:
        res = run_causal(SimConfig(seed=seed, ops=args.ops, faults=faults, swarm=not args.no_swarm))
        line = res.summary()
        print(json.dumps(line, sort_keys=True), flush=True)
        for k in totals:
            totals[k] += line[k]
        if res.failed:
            failed.append(seed)
    print(json.dumps({"seeds": len(seeds), "failed_seeds": failed, **totals}, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
