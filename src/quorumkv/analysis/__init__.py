"""Quorum mathematics: exact intersection / availability figures and PBS staleness.

* :mod:`quorumkv.analysis.quorum` — closed forms (strict quorums, binomial
  availability, PBS k-staleness).
* :mod:`quorumkv.analysis.pbs` — PBS t-visibility by Monte Carlo over the WARS
  latency model (Bailis et al., VLDB 2012), with built-in and empirical profiles.
* :mod:`quorumkv.analysis.plot` — matplotlib plots (imported lazily).
"""

from .pbs import (
    PROFILES,
    Constant,
    Distribution,
    Empirical,
    Exponential,
    Mixture,
    Pareto,
    PbsResult,
    WarsProfile,
    WarsSamples,
    evaluate_wars,
    get_profile,
    load_latency_file,
    pbs_report,
    profile_from_samples,
    sample_wars,
    simulate,
    simulate_many,
)
from .quorum import (
    KOfNReport,
    QuorumReport,
    is_strict,
    k_of_n_report,
    k_staleness,
    p_stale_immediate,
    quorum_availability,
    quorum_report,
    quorum_unavailability,
    writes_overlap,
)

__all__ = [
    "PROFILES",
    "Constant",
    "Distribution",
    "Empirical",
    "Exponential",
    "KOfNReport",
    "Mixture",
    "Pareto",
    "PbsResult",
    "QuorumReport",
    "WarsProfile",
    "WarsSamples",
    "evaluate_wars",
    "get_profile",
    "is_strict",
    "k_of_n_report",
    "k_staleness",
    "load_latency_file",
    "p_stale_immediate",
    "pbs_report",
    "profile_from_samples",
    "quorum_availability",
    "quorum_report",
    "quorum_unavailability",
    "sample_wars",
    "simulate",
    "simulate_many",
    "writes_overlap",
]
