"""Cross-check the PBS/WARS math with the simulator (``quorumkv sim --pbs-t MS``).

The WARS model (``quorumkv.analysis.pbs``) predicts the probability that a read
started ``t`` ms after a write committed sees that write. Here the *real* NodeCores
run the same experiment, trial by trial:

1. a client writes a fresh key at level W to a coordinator that is *not* one of
   the key's N replicas (the cluster has N+1 nodes), so all N replicas are remote,
   exactly as in WARS, where every replica has its own W/A/R/S delays;
2. the write's ack reaches the client at the coordinator's commit time ``c`` (the
   client link has zero delay), the client waits ``t`` ms and reads at level R;
3. the read is stale if it does not return the write's version.

Same latency semantics on both sides: every RepWrite takes a W delay, its ack an
A delay, every RepRead an R delay and its response an S delay, each drawn
independently per message from the profile; storage takes zero time; round
deadlines are far away (WARS has no timeouts). Delays are rounded to whole µs.

Tolerance: the simulated fraction is a binomial estimate, standard error
``sqrt(p(1-p)/trials)``; we accept ``|sim - math| <= 4 * that + 0.005`` (the
0.005 covers the math's own Monte Carlo error and µs rounding). Tests also pin the
absolute bound 0.03 at 4,000 trials.
"""

from __future__ import annotations

import math
import random
import time

from ..analysis import pbs
from ..core import messages as m
from ..core.membership import DetectorSettings
from .cluster import SimCluster
from .config import SimConfig
from .network import LatencySampler
from .workload import write_version

#: Trials in flight at once (independent keys; more only means fewer idle gaps).
PARALLEL_TRIALS = 32
#: Monte Carlo trials on the math side (its error is then ~0.001).
MATH_TRIALS = 400_000
#: Round deadlines in this mode: effectively never (WARS has no timeouts).
NO_TIMEOUT_MS = 10**9


def tolerance(p: float, trials: int) -> float:
    return 4.0 * math.sqrt(max(p * (1.0 - p), 0.0) / trials) + 0.005


class _Trials:
    def __init__(self, cluster: SimCluster, r: int, w: int, t_us: int, trials: int) -> None:
        self.cluster = cluster
        self.r, self.w, self.t_us = r, w, t_us
        self.trials = trials
        self.started = 0
        self.finished = 0
        self.stale = 0
        self.errors = 0
        self.state: dict[int, tuple] = {}  # slot -> (phase, key, coordinator, version)
        for slot in range(PARALLEL_TRIALS):
            cluster.client_handlers[slot] = self._reply_handler(slot)

    def start(self) -> None:
        for slot in range(min(PARALLEL_TRIALS, self.trials)):
            self._next(slot)

    def _next(self, slot: int) -> None:
        if self.started >= self.trials:
            return
        i = self.started
        self.started += 1
        key = b"pbs-%d" % i
        replicas = self.cluster.ring.preference_list(key)
        coordinator = next(name for name in self.cluster.names if name not in replicas)
        self.state[slot] = ("write", key, coordinator, None)

        def on_sent(effects, slot=slot, key=key, coordinator=coordinator):
            self.state[slot] = ("write", key, coordinator, write_version(effects, key))
        self.cluster.client_send(slot, coordinator, m.Put(i * 2 + 1, key, b"x", self.w), on_sent)

    def _reply_handler(self, slot: int):
        def handle(req_id: int, reply, reason: str) -> None:
            phase, key, coordinator, version = self.state[slot]
            if reply is None or reply.status not in (m.OK, m.NOT_FOUND):
                self.errors += 1
                self.finished += 1
                self._next(slot)
            elif phase == "write":
                version = reply.version or version  # the reply names it (a held write sent nothing yet)
                self.state[slot] = ("read", key, coordinator, version)
                get = m.Get(req_id + 1, key, self.r)
                self.cluster.at(self.t_us, self.cluster.client_send, slot, coordinator, get)
            else:
                if reply.version is None or reply.version.key() != version.key():
                    self.stale += 1
                self.finished += 1
                self._next(slot)
        return handle


def measure_staleness(profile: str, n: int, r: int, w: int, t_ms: float, trials: int = 4_000,
                      seed: int = 1, math_trials: int = MATH_TRIALS) -> dict:
    """Simulated vs WARS-predicted probability of a consistent read ``t_ms`` after commit."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1 (got {trials})")
    if not (t_ms >= 0 and math.isfinite(t_ms)):
        raise ValueError(f"t must be a non-negative number of ms (got {t_ms})")
    started = time.perf_counter()
    cfg = SimConfig(seed=seed, nodes=n + 1, n=n, r=r, w=w, ops=0, profile=profile, client_delay=False,
                    sync_us=0, read_us=0, timeout_ms=NO_TIMEOUT_MS, tick_ms=1_000)
    rng = random.Random(seed)
    prof = pbs.get_profile(profile)
    # WARS reads go to all N replicas and use the first R answers; no retries, no repair,
    # and no failures: the detector never suspects a replica (with the protocol tick at
    # 1 s here, SWIM's probes are sparse and a replica could look suspect, and a read
    # sent to fewer than N replicas is staler than WARS predicts).
    wars_core = dict(read_all_replicas=True, speculative_retry_ms=0, read_repair=False,
                     detector=DetectorSettings(phi_suspect=1e12, acceptable_pause_ms=1e12,
                                               suspect_to_down_ms=10**12))
    cluster = SimCluster(cfg, rng, LatencySampler(prof, rng), core_settings=wars_core)
    driver = _Trials(cluster, r, w, round(t_ms * 1000), trials)
    driver.start()
    if not cluster.run_until(lambda: driver.finished >= trials, 10**15):
        raise RuntimeError("PBS measurement did not finish")
    wall_s = time.perf_counter() - started
    judged = trials - driver.errors
    p_sim = (judged - driver.stale) / judged if judged else float("nan")
    p_math = float(pbs.simulate(prof, n, r, w, trials=math_trials, seed=seed).p_consistent(t_ms))
    tol = tolerance(p_math, max(judged, 1))
    diff = abs(p_sim - p_math)
    return {
        "mode": "pbs", "seed": seed, "profile": profile, "n": n, "r": r, "w": w, "t_ms": t_ms,
        "trials": trials, "errors": driver.errors, "stale_reads": driver.stale,
        "p_consistent_sim": round(p_sim, 6), "p_consistent_math": round(p_math, 6),
        "math_trials": math_trials, "abs_diff": round(diff, 6), "tolerance": round(tol, 6),
        "agrees": bool(diff <= tol), "events": cluster.events_run, "wall_s": round(wall_s, 3),
    }
