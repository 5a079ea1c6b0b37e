"""Swarm runs with ring changes, tombstone GC and clock skew (issue 9/10).

The simulator executes every effect, so join, decommission and replace stream
through ``ScanRange`` and tombstone GC purges through compare-and-delete while
crashes, partitions and packet loss go on. Fixed seeds plus fresh ones per run;
every assertion prints the seed and the command that reproduces it. The full
swarm over 1,000 seeds is ``benchmarks/soak_sim.py``.
"""

from __future__ import annotations

import random

import pytest

from quorumkv.sim import SimConfig, parse_faults, run

FRESH = [random.SystemRandom().randrange(2**32) for _ in range(2)]
RING = parse_faults("join,decommission,replace,crash,partition,loss")
GC = parse_faults("gc,crash,partition,loss,dup")
ALL = parse_faults("all")


def _why(result) -> str:
    s = result.summary()
    return (f"seed {s['seed']}: lost={s['lost_acked_writes']} resurrected={s['resurrections']} "
            f"strict_stale={s['strict_stale_reads']} converged={s['converged']} "
            f"final_failed={s['final_reads_failed']} departed_in_ring={s['departed_in_ring']} "
            f"unfinished={s['ring_changes_unfinished']} faults={s['faults_injected']} "
            f"examples={s['examples']}\nreproduce: {result.command()}")


def _safe(result) -> None:
    s = result.summary()
    assert s["lost_acked_writes"] == 0, _why(result)
    assert s["resurrections"] == 0, _why(result)
    assert s["strict_stale_reads"] == 0, _why(result)
    assert s["final_reads_failed"] == 0 and s["converged"], _why(result)
    assert not s["ring_changes_unfinished"], _why(result)
    assert not result.failed, _why(result)


@pytest.mark.parametrize("seed", [1] + FRESH[:1])
def test_ring_changes_under_crashes_partitions_and_loss(seed: int) -> None:
    result = run(SimConfig(seed=seed, ops=500, faults=RING, primary_only=True))
    _safe(result)
    s = result.summary()
    changes = s["cluster"]
    assert changes["joins"] + changes["decommissions"] + changes["replaces"] > 0, _why(result)


# Seed 1328494741 of this test found the hint-outlives-grace resurrection that
# test_sim_safety.py::test_hint_replayed_after_tombstone_gc_does_not_resurrect pins
# down (fixed: hints age by their record's version, and the grace outlasts it).
@pytest.mark.parametrize("seed", [1, 1328494741] + FRESH[1:])
def test_tombstone_gc_under_faults_never_resurrects(seed: int) -> None:
    result = run(SimConfig(seed=seed, ops=500, faults=GC, primary_only=True, delete_fraction=0.3))
    _safe(result)
    if seed not in FRESH:
        # GC rightly pauses while any member is down or cut off, so a fresh seed heavy in
        # partitions may purge nothing (seed 1276286687: 23 partitions, 0 purged); the
        # fixed seeds are known to reach a purge and keep the probe honest.
        assert result.summary()["core"]["tombstones_purged"] > 0, _why(result)


def test_streaming_and_gc_effects_really_run() -> None:
    """Code probes (FoundationDB's): the rare paths ran, records moved, tombstones went."""
    joined = run(SimConfig(seed=1, ops=400, faults=("join",)))
    assert joined.summary()["cluster"]["joins_completed"] > 0 and joined.summary()["core"]["stream_keys_received"] > 0
    left = run(SimConfig(seed=1, ops=400, faults=("decommission",)))
    assert left.summary()["cluster"]["decommissions_completed"] > 0
    assert left.summary()["core"]["stream_keys_sent"] > 0 and len(left.summary()["ring"]) < 5
    replaced = run(SimConfig(seed=1, ops=400, faults=("replace",)))
    assert replaced.summary()["cluster"]["replaces_completed"] > 0
    for result in (joined, left, replaced):
        _safe(result)


@pytest.mark.parametrize("seed", [3])
def test_every_fault_at_once_fixed_seeds(seed: int) -> None:
    """Seeds of the full swarm that the core survives: they must keep passing."""
    _safe(run(SimConfig(seed=seed, ops=1000, faults=ALL, swarm=True, primary_only=seed % 2 == 0)))


@pytest.mark.parametrize("seed", [5, 16])
def test_every_fault_at_once_seeds_that_found_holes(seed: int) -> None:
    """Full-swarm seeds that failed on the core of issue 10 (run with the simulator of
    commit 3422acc: seed 5 lost a write to clock skew, seed 16 lost two and read stale
    under a strict quorum) and pass on main with its fixes. (The fault draw has grown
    since, so the same seed now injects a different mix.)"""
    _safe(run(SimConfig(seed=seed, ops=1000, faults=ALL, swarm=True, primary_only=seed % 2 == 0)))


@pytest.mark.parametrize("seed", [72, 218, 906])
def test_every_fault_at_once_primary_only_seeds_of_the_soak(seed: int) -> None:
    """The three primary-only seeds the 1,000-seed soak failed (strict stale reads
    after a whole-cluster restart: a restarted node had forgotten a member that
    joined after its config was written — test_sim_safety.py::
    test_a_full_restart_keeps_the_ring_every_node_knew pins it down). They pass now
    that every node persists what it knows of the others (``SaveMembers``). (With the
    fix the seeds' histories differ from the failing ones: the restarted nodes know
    n6, so routing and timing change from the first power cycle on.)"""
    _safe(run(SimConfig(seed=seed, ops=1000, faults=ALL, swarm=True, primary_only=True)))


# The full swarm over 1,000 seeds (benchmarks/soak_sim.py) is not in CI; its
# figures and what it found are in docs/simulator.md, "What the swarm finds".
