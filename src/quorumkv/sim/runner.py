"""One simulated run, start to verdict: workload + nemesis, heal, verify, check."""

from __future__ import annotations

import random
import shlex
import time
from dataclasses import dataclass

from ..analysis import pbs
from .checker import Verdict, check, convergence_expected, strict_reads_promised
from .cluster import SimCluster
from .config import SimConfig
from .history import FAIL, OK, UNKNOWN, History
from .network import LatencySampler
from .workload import Nemesis, Workload

#: Upper bound on virtual time for any phase (µs): a run that has not finished by
#: then is stuck, and says so instead of spinning.
PHASE_US_MAX = 3_600 * 1_000_000
#: Virtual time after the faults heal for the recovery protocols to converge the
#: replicas (hinted handoff, anti-entropy every SIM_AE_INTERVAL_MS per node).
RECOVERY_WINDOW_US = 12 * 1_000_000
#: Virtual time after healing for ring changes in flight (a join streaming, a node
#: leaving) to finish; one that has not by then is reported (``ring_changes_unfinished``).
RING_CHANGE_US_MAX = 120 * 1_000_000


@dataclass
class SimResult:
    cfg: SimConfig
    verdict: Verdict
    history: History
    cluster: SimCluster
    nemesis_knobs: dict
    wall_s: float
    faults_injected: dict
    ring_changes_unfinished: bool = False

    @property
    def failed(self) -> bool:
        v = self.verdict
        return bool(
            v.lost_acked_writes
            or v.resurrections
            or self.strict_stale_reads
            or v.final_reads_failed
            or v.unknown_values
            or self.ring_changes_unfinished
            or (convergence_expected(self.cfg) and not v.converged)
        )

    @property
    def strict_stale_reads(self) -> int:
        """Stale reads that break a promise (strict, primary-only quorums)."""
        return self.verdict.stale_reads if strict_reads_promised(self.cfg) else 0

    def command(self) -> str:
        return repro_command(self.cfg)

    def summary(self) -> dict:
        cfg, v, h = self.cfg, self.verdict, self.history
        client_ops = [op for op in h.ops if op.client >= 0]
        writes = [op for op in client_ops if op.is_write]
        out = {
            "seed": cfg.seed,
            "ok": not self.failed,
            "nodes": cfg.nodes, "n": cfg.effective_n, "r": cfg.r, "w": cfg.w, "strict": cfg.strict,
            "profile": cfg.profile, "faults": list(cfg.faults), "bug": cfg.bug,
            "primary_only": cfg.primary_only,
            "ops": len(client_ops),
            "writes": len(writes),
            "acked_writes": v.acked_writes,
            "failed_writes": sum(op.outcome == FAIL for op in writes),
            "unknown_writes": sum(op.outcome == UNKNOWN for op in writes),
            "lost_acked_writes": v.lost_acked_writes,
            "reads": v.reads,
            "failed_reads": sum(op.outcome != OK for op in client_ops if not op.is_write),
            "stale_reads": v.stale_reads,
            "strict_stale_reads": self.strict_stale_reads,
            "resurrections": v.resurrections,
            "lost_cross_session": v.lost_cross_session,
            "resurrections_cross_session": v.resurrections_cross_session,
            "stale_cross_session": v.stale_cross_session,
            "unknown_values": v.unknown_values,
            "converged": v.converged,
            "convergence_expected": convergence_expected(cfg),
            "divergent_keys": v.divergent_keys,
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "ring_changes_unfinished": self.ring_changes_unfinished,
            "ring": list(self.cluster.ring_view().nodes),
            # decommissioned nodes the final ring still has (a restart forgot they left)
            "departed_in_ring": [n for n in self.cluster.ring_view().nodes if n in self.cluster.left],
            "core": self.cluster.totals(),
            "final_reads_failed": v.final_reads_failed,
            "virtual_ms": self.cluster.now_us // 1000,
            "events": self.cluster.events_run,
            "wall_s": round(self.wall_s, 3),
            "ops_per_wall_s": round(len(client_ops) / self.wall_s) if self.wall_s > 0 else None,
            "history_sha256": h.sha256(),
            "knobs": self.nemesis_knobs,
            "network": dict(self.cluster.net.stats),
            "cluster": dict(self.cluster.stats),
            "examples": v.examples,
            "command": self.command(),
        }
        return out


def repro_command(cfg: SimConfig) -> str:
    parts = ["quorumkv", "sim", "--seed", str(cfg.seed), "--nodes", str(cfg.nodes), "--n", str(cfg.n),
             "--r", str(cfg.r), "--w", str(cfg.w), "--ops", str(cfg.ops),
             "--clients", str(cfg.clients), "--keys", str(cfg.keys),
             "--faults", ",".join(cfg.faults) or "none", "--profile", cfg.profile]
    if cfg.bug:
        parts += ["--bug", cfg.bug]
    if cfg.primary_only:
        parts.append("--primary-only")
    if cfg.swarm:
        parts.append("--swarm")
    if "skew" in cfg.faults and cfg.skew_ms_max != SimConfig.skew_ms_max:
        parts += ["--skew-ms-max", str(cfg.skew_ms_max)]
    return shlex.join(parts)


def run(cfg: SimConfig) -> SimResult:
    started = time.perf_counter()
    rng = random.Random(cfg.seed)  # the only source of randomness in the run
    sampler = LatencySampler(pbs.get_profile(cfg.profile), rng)
    history = History()
    nemesis = Nemesis(cfg, rng)
    cluster = SimCluster(cfg, rng, sampler, history, gc_grace_ms=nemesis.gc_grace_ms)
    nemesis.attach(cluster)
    workload = Workload(cfg, cluster, rng, history)
    nemesis.start()
    workload.start()
    if not cluster.run_until(lambda: workload.done, PHASE_US_MAX):
        raise RuntimeError(f"seed {cfg.seed}: workload did not finish within {PHASE_US_MAX} µs")
    # Heal, let the network go quiet, then read every key at ALL and let that settle.
    nemesis.heal_all()
    # Ring changes in flight (a join streaming, a node leaving) finish first.
    unfinished = not cluster.run_until(lambda: not cluster.ring_change_in_progress(),
                                       cluster.now_us + RING_CHANGE_US_MAX)
    # Recovery window: detectors see everyone up again, hints are replayed and
    # anti-entropy sessions run (virtual time; a few seconds of it).
    cluster.run_until(lambda: False, cluster.now_us + RECOVERY_WINDOW_US)
    cluster.run_until(cluster.quiet, cluster.now_us + PHASE_US_MAX)
    workload.read_all_keys()
    cluster.run_until(lambda: workload.final_done and cluster.quiet(), cluster.now_us + PHASE_US_MAX)
    verdict = check(history, workload.final, cluster.replica_versions, judge_reads=strict_reads_promised(cfg))
    injected = dict(nemesis.injected)
    purged = cluster.totals()["tombstones_purged"]
    if purged:
        injected["tombstones_purged"] = purged
    return SimResult(cfg, verdict, history, cluster, dict(nemesis.knobs), time.perf_counter() - started,
                     injected, unfinished)
