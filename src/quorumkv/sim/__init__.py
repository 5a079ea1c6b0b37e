"""Deterministic simulation of a quorumkv cluster (issue 5, part 4).

N real :class:`quorumkv.core.node.NodeCore` state machines run under one virtual
clock; the simulator plays the shell (network, disk, time, faults) and the clients,
records a history and checks it. Everything follows one seed: the same seed gives
a byte-identical history. See docs/simulator.md.

    >>> from quorumkv.sim import SimConfig, run
    >>> result = run(SimConfig(seed=1, ops=200))
    >>> result.failed, result.summary()["stale_reads"]
    (False, 0)
"""

from .config import BUGS, FAULTS, SimConfig, parse_faults
from .pbs_check import measure_staleness
from .runner import SimResult, repro_command, run

__all__ = ["BUGS", "FAULTS", "SimConfig", "SimResult", "measure_staleness", "parse_faults",
           "repro_command", "run"]
