"""PBS t-visibility: Monte Carlo over the WARS latency model.

Bailis, Venkataraman, Franklin, Hellerstein, Stoica, *Probabilistically Bounded
Staleness for Practical Partial Quorums*, VLDB 2012 (the "WARS" model).

For every trial and every one of the N replicas we draw four one-way delays (ms):

* ``W`` — the write request from the coordinator reaching the replica,
* ``A`` — the replica's acknowledgement travelling back,
* ``R`` — a read request reaching the replica,
* ``S`` — the replica's read response travelling back.

The write is sent at time 0 and *commits* at ``c``, the W-th smallest
``W_i + A_i``.  A read starts at ``c + t``, goes to all N replicas and uses the
first R responses (the R smallest ``R_i + S_i``; ties broken by replica index).
It is consistent iff some replica ``j`` among those R had already received the
write when the read request reached it: ``W_j <= c + t + R_j``.

The set of the first R responders does not depend on ``t``, so each trial has a
single threshold ``t_needed = max(0, min_j (W_j - R_j) - c)`` and
``P(consistent at t) = P(t_needed <= t)``; the t-visibility for a target
probability is a quantile of ``t_needed``.  One batch of samples therefore answers
every ``t`` (and, with common random numbers, every (R, W) pair).

Distributions are sampled by inverse CDF from a single uniform per draw, in place,
in fixed-size chunks: this keeps the simulator well above a million trials per
second on a laptop core (see ``benchmarks/bench_pbs.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .quorum import p_stale_immediate, validate_probability, validate_size

FloatArray = NDArray[np.float64]

#: Trials simulated per vectorised chunk (fits comfortably in L2/L3 for small N).
DEFAULT_CHUNK_TRIALS = 32_768
#: Default Monte Carlo trials for a report.
DEFAULT_TRIALS = 1_000_000
#: Default target probability for t-visibility.
DEFAULT_TARGET = 0.999
#: Latency percentiles reported for reads and writes.
LATENCY_PERCENTILES: tuple[float, ...] = (50.0, 99.0, 99.9)
#: Order of the four WARS delay kinds in the sample buffer.
WARS_KINDS: tuple[str, ...] = ("w", "a", "r", "s")
#: Largest float64 strictly below 1.0 (keeps inverse CDFs finite).
_MAX_UNIFORM = float(np.nextafter(1.0, 0.0))


# --------------------------------------------------------------------------- #
# Distributions (all in milliseconds)                                          #
# --------------------------------------------------------------------------- #
class Distribution(Protocol):
    """A non-negative delay distribution sampled by inverse CDF."""

    def transform(self, u: FloatArray) -> None:
        """Replace uniform variates in ``[0, 1)`` held in ``u`` by samples, in place."""
        ...

    def describe(self) -> str:
        """Short human-readable description, e.g. ``Exp(1.66)``."""
        ...


def sample(dist: Distribution, rng: np.random.Generator, size: int | tuple[int, ...]) -> FloatArray:
    """Draw an array of samples from ``dist`` using ``rng``."""
    u = rng.random(size)
    dist.transform(u)
    return u


@dataclass(frozen=True)
class Exponential:
    """Exponential with rate ``rate`` per ms (mean ``1/rate`` ms)."""

    rate: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"exponential rate must be positive and finite (got {self.rate})")

    def transform(self, u: FloatArray) -> None:
        np.negative(u, out=u)
        np.log1p(u, out=u)  # log(1 - u) <= 0
        np.multiply(u, -1.0 / self.rate, out=u)

    def describe(self) -> str:
        return f"Exp(λ={self.rate:g})"


@dataclass(frozen=True)
class Pareto:
    """Pareto with scale ``xm`` ms and shape ``alpha``: ``xm * (1 - U) ** (-1 / alpha)``."""

    xm: float
    alpha: float

    def __post_init__(self) -> None:
        if not (self.xm > 0 and math.isfinite(self.xm)):
            raise ValueError(f"pareto xm must be positive and finite (got {self.xm})")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"pareto alpha must be positive and finite (got {self.alpha})")

    def transform(self, u: FloatArray) -> None:
        np.negative(u, out=u)
        np.log1p(u, out=u)
        np.multiply(u, -1.0 / self.alpha, out=u)
        np.exp(u, out=u)
        np.multiply(u, self.xm, out=u)

    def describe(self) -> str:
        return f"Pareto(xm={self.xm:g}, α={self.alpha:g})"


@dataclass(frozen=True)
class Constant:
    """A degenerate (deterministic) delay — handy for tests and what-if questions."""

    value: float

    def __post_init__(self) -> None:
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"constant delay must be non-negative and finite (got {self.value})")

    def transform(self, u: FloatArray) -> None:
        u.fill(self.value)

    def describe(self) -> str:
        return f"Const({self.value:g})"


@dataclass(frozen=True)
class Mixture:
    """``first`` with probability ``p_first``, else ``second`` (one uniform per draw)."""

    p_first: float
    first: Distribution
    second: Distribution

    def __post_init__(self) -> None:
        validate_probability("mixture weight", self.p_first)

    def transform(self, u: FloatArray) -> None:
        p = self.p_first
        if p >= 1.0:
            self.first.transform(u)
            return
        if p <= 0.0:
            self.second.transform(u)
            return
        chosen = u < p
        # Rescale the same uniform for whichever component it selects.
        u_first = np.multiply(u, 1.0 / p)
        np.minimum(u_first, _MAX_UNIFORM, out=u_first)
        np.subtract(u, p, out=u)
        np.multiply(u, 1.0 / (1.0 - p), out=u)
        np.maximum(u, 0.0, out=u)
        self.first.transform(u_first)
        self.second.transform(u)
        np.copyto(u, u_first, where=chosen)

    def describe(self) -> str:
        return f"mix({self.p_first:g}: {self.first.describe()}, else {self.second.describe()})"


@dataclass(frozen=True, eq=False)
class Empirical:
    """Resample (with replacement) from measured delays in ms."""

    samples: FloatArray = field(repr=False)

    def __post_init__(self) -> None:
        arr = np.array(self.samples, dtype=np.float64).ravel()
        if arr.size == 0:
            raise ValueError("empirical latency samples must not be empty")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("empirical latency samples must be finite and non-negative (ms)")
        arr.setflags(write=False)
        object.__setattr__(self, "samples", arr)

    def transform(self, u: FloatArray) -> None:
        size = self.samples.size
        idx = np.multiply(u, size).astype(np.intp)
        np.minimum(idx, size - 1, out=idx)
        np.take(self.samples, idx, out=u)

    def describe(self) -> str:
        return f"Empirical({self.samples.size} samples, median {np.median(self.samples):g})"


# --------------------------------------------------------------------------- #
# Profiles                                                                     #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class WarsProfile:
    """The four WARS delay distributions (ms) applied independently to each replica."""

    name: str
    w: Distribution
    a: Distribution
    r: Distribution
    s: Distribution

    def distributions(self) -> tuple[Distribution, Distribution, Distribution, Distribution]:
        return (self.w, self.a, self.r, self.s)

    def describe(self) -> dict[str, str]:
        return {kind: d.describe() for kind, d in zip(WARS_KINDS, self.distributions())}


# Production fits (LinkedIn / Yammer) as published by Bailis et al., VLDB 2012.
_LNKD_SSD = Mixture(0.0878, Exponential(1.66), Pareto(0.235, 10.0))
_LNKD_DISK_W = Mixture(0.62, Exponential(0.183), Pareto(1.05, 1.51))
_YMMR_W = Mixture(0.061, Exponential(0.0028), Pareto(3.0, 3.35))
_YMMR_ARS = Mixture(0.018, Exponential(0.0217), Pareto(1.5, 3.8))

PROFILES: dict[str, WarsProfile] = {
    "lnkd-ssd": WarsProfile("lnkd-ssd", _LNKD_SSD, _LNKD_SSD, _LNKD_SSD, _LNKD_SSD),
    "lnkd-disk": WarsProfile("lnkd-disk", _LNKD_DISK_W, _LNKD_SSD, _LNKD_SSD, _LNKD_SSD),
    "ymmr": WarsProfile("ymmr", _YMMR_W, _YMMR_ARS, _YMMR_ARS, _YMMR_ARS),
}
PARAMETRIC_PROFILES = ("exponential:LAMBDA", "pareto:XM,ALPHA", "constant:MS")


def uniform_profile(name: str, dist: Distribution) -> WarsProfile:
    """A profile using ``dist`` for all four of W, A, R and S."""
    return WarsProfile(name, dist, dist, dist, dist)


def _parse_floats(spec: str, text: str, count: int) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise ValueError(f"profile {spec!r} needs {count} comma-separated number(s)")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"profile {spec!r}: parameters must be numbers") from None


def get_profile(spec: str) -> WarsProfile:
    """Look up a built-in profile or parse ``exponential:L`` / ``pareto:XM,A`` / ``constant:MS``."""
    key = spec.strip().lower()
    if key in PROFILES:
        return PROFILES[key]
    kind, sep, params = key.partition(":")
    if sep:
        if kind in ("exponential", "exp"):
            (rate,) = _parse_floats(spec, params, 1)
            return uniform_profile(key, Exponential(rate))
        if kind == "pareto":
            xm, alpha = _parse_floats(spec, params, 2)
            return uniform_profile(key, Pareto(xm, alpha))
        if kind in ("constant", "const"):
            (value,) = _parse_floats(spec, params, 1)
            return uniform_profile(key, Constant(value))
    known = ", ".join([*PROFILES, *PARAMETRIC_PROFILES])
    raise ValueError(f"unknown latency profile {spec!r}; known: {known}")


def profile_from_samples(
    w: Sequence[float] | FloatArray,
    a: Sequence[float] | FloatArray,
    r: Sequence[float] | FloatArray,
    s: Sequence[float] | FloatArray,
    name: str = "empirical",
) -> WarsProfile:
    """Build a profile that resamples measured one-way delays (ms), e.g. from a live cluster."""
    return WarsProfile(name, Empirical(w), Empirical(a), Empirical(r), Empirical(s))


def load_latency_file(path: str | Path) -> WarsProfile:
    """Read ``{"w": [...], "a": [...], "r": [...], "s": [...]}`` (ms) and build a profile."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read latency file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"latency file {path} must hold a JSON object with keys w, a, r, s")
    missing = [k for k in WARS_KINDS if k not in data]
    if missing:
        raise ValueError(f"latency file {path} lacks key(s) {', '.join(missing)} (need w, a, r, s)")
    arrays = {}
    for kind in WARS_KINDS:
        values = data[kind]
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f"latency file {path}: {kind!r} must be a list of numbers (ms)")
        arrays[kind] = values
    try:
        return profile_from_samples(**arrays, name=f"empirical:{path.name}")
    except ValueError as exc:
        raise ValueError(f"latency file {path}, {exc}") from None


# --------------------------------------------------------------------------- #
# Simulation                                                                   #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class WarsSamples:
    """One batch of WARS delays, each of shape ``(trials, n)``."""

    w: FloatArray
    a: FloatArray
    r: FloatArray
    s: FloatArray


@dataclass(frozen=True)
class TrialOutcomes:
    """Per-trial results for one (R, W) pair."""

    t_needed: FloatArray  # smallest t (ms after commit) at which the read is consistent
    read_latency: FloatArray  # R-th smallest R_i + S_i
    write_latency: FloatArray  # commit time c


def sample_wars(
    profile: WarsProfile,
    n: int,
    trials: int,
    rng: np.random.Generator,
    out: FloatArray | None = None,
) -> WarsSamples:
    """Draw W, A, R, S for ``trials`` trials of ``n`` replicas.

    ``out`` (shape ``(4, trials, n)``, C-contiguous) may be given to reuse a buffer.
    """
    buf = np.empty((len(WARS_KINDS), trials, n)) if out is None else out
    rng.random(out=buf)
    dists = profile.distributions()
    start = 0
    while start < len(dists):  # transform runs of identical distributions in one call
        stop = start + 1
        while stop < len(dists) and dists[stop] == dists[start]:
            stop += 1
        dists[start].transform(buf[start:stop])
        start = stop
    return WarsSamples(buf[0], buf[1], buf[2], buf[3])


class _Evaluator:
    """Shares per-W commit times and per-R responder choices across (R, W) pairs."""

    def __init__(self, samples: WarsSamples) -> None:
        self.samples = samples
        self.n = samples.w.shape[1]
        self._ack = samples.w + samples.a
        self._resp = samples.r + samples.s
        self._slack = samples.w - samples.r
        self._commit: dict[int, FloatArray] = {}
        self._read: dict[int, tuple[FloatArray, FloatArray]] = {}

    def commit(self, w: int) -> FloatArray:
        if w not in self._commit:
            if w == 1:
                c = self._ack.min(axis=1)
            elif w == self.n:
                c = self._ack.max(axis=1)
            else:
                c = np.partition(self._ack, w - 1, axis=1)[:, w - 1]
            self._commit[w] = c
        return self._commit[w]

    def read(self, r: int) -> tuple[FloatArray, FloatArray]:
        """(read latency, min over first-R responders of W_j - R_j)."""
        if r not in self._read:
            if r == self.n:
                lat, best = self._resp.max(axis=1), self._slack.min(axis=1)
            elif r == 1:
                j = self._resp.argmin(axis=1)[:, None]
                lat = np.take_along_axis(self._resp, j, axis=1)[:, 0]
                best = np.take_along_axis(self._slack, j, axis=1)[:, 0]
            else:
                idx = np.argpartition(self._resp, r - 1, axis=1)[:, :r]
                lat = np.take_along_axis(self._resp, idx[:, r - 1 :], axis=1)[:, 0]
                best = np.take_along_axis(self._slack, idx, axis=1).min(axis=1)
            self._read[r] = (lat, best)
        return self._read[r]

    def outcomes(self, r: int, w: int) -> TrialOutcomes:
        c = self.commit(w)
        lat, best = self.read(r)
        t_needed = best - c
        np.maximum(t_needed, 0.0, out=t_needed)
        return TrialOutcomes(t_needed, lat, c)


def evaluate_wars(samples: WarsSamples, r: int, w: int) -> TrialOutcomes:
    """Per-trial ``t_needed``, read latency and write latency for one (R, W) pair."""
    n = samples.w.shape[1]
    validate_size("R", r, n)
    validate_size("W", w, n)
    return _Evaluator(samples).outcomes(r, w)


def _percentiles(values: FloatArray) -> dict[str, float]:
    qs = np.percentile(values, LATENCY_PERCENTILES)
    return {f"p{q:g}": float(v) for q, v in zip(LATENCY_PERCENTILES, qs)}


class PbsResult:
    """Monte Carlo result for one (N, R, W, profile): query ``p_consistent`` / ``t_visibility``."""

    def __init__(
        self,
        *,
        profile: str,
        n: int,
        r: int,
        w: int,
        trials: int,
        seed: int,
        t_needed: FloatArray,
        read_latency_ms: dict[str, float],
        write_latency_ms: dict[str, float],
    ) -> None:
        self.profile = profile
        self.n, self.r, self.w = n, r, w
        self.trials = trials
        self.seed = seed
        self.t_needed = t_needed
        self.read_latency_ms = read_latency_ms
        self.write_latency_ms = write_latency_ms
        self._sorted: FloatArray | None = None

    def sorted_t_needed(self) -> FloatArray:
        """Per-trial thresholds in ascending order (computed once)."""
        if self._sorted is None:
            self._sorted = np.sort(self.t_needed)
        return self._sorted

    def p_consistent(self, t: float | FloatArray = 0.0) -> float | FloatArray:
        """Fraction of trials whose read, started ``t`` ms after commit, sees the write."""
        counts = np.searchsorted(self.sorted_t_needed(), t, side="right")
        if np.ndim(counts) == 0:
            return int(counts) / self.trials
        return counts / self.trials

    def t_visibility(self, target: float = DEFAULT_TARGET) -> float:
        """Smallest simulated ``t`` (ms) with ``p_consistent(t) >= target``."""
        validate_probability("target", target)
        needed = max(1, math.ceil(target * self.trials))
        while needed > 1 and (needed - 1) / self.trials >= target:  # guard float rounding
            needed -= 1
        while needed < self.trials and needed / self.trials < target:
            needed += 1
        return float(self.sorted_t_needed()[needed - 1])


def _resolve_seed(seed: int | None) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    return int(seed)


def simulate_many(
    profile: WarsProfile,
    n: int,
    pairs: Sequence[tuple[int, int]],
    *,
    trials: int = DEFAULT_TRIALS,
    seed: int | None = None,
    chunk_trials: int = DEFAULT_CHUNK_TRIALS,
) -> list[PbsResult]:
    """Simulate several (R, W) pairs over the *same* WARS samples (common random numbers).

    ``seed`` feeds ``numpy.random.default_rng``; ``None`` draws fresh entropy, which is
    recorded in each result's ``seed`` so the run can be repeated.
    """
    if n < 1:
        raise ValueError(f"N must be >= 1 (got {n})")
    if trials < 1:
        raise ValueError(f"trials must be >= 1 (got {trials})")
    if chunk_trials < 1:
        raise ValueError(f"chunk_trials must be >= 1 (got {chunk_trials})")
    if not pairs:
        raise ValueError("need at least one (R, W) pair")
    for r, w in pairs:
        validate_size("R", r, n)
        validate_size("W", w, n)
    seed = _resolve_seed(seed)
    rng = np.random.default_rng(seed)

    t_needed = [np.empty(trials) for _ in pairs]
    read_lat = {r: np.empty(trials) for r, _ in pairs}
    write_lat = {w: np.empty(trials) for _, w in pairs}
    buf = np.empty((len(WARS_KINDS), min(chunk_trials, trials), n))
    for start in range(0, trials, chunk_trials):
        size = min(chunk_trials, trials - start)
        chunk_buf = buf if size == buf.shape[1] else np.empty((len(WARS_KINDS), size, n))
        ev = _Evaluator(sample_wars(profile, n, size, rng, out=chunk_buf))
        stop = start + size
        for i, (r, w) in enumerate(pairs):
            out = ev.outcomes(r, w)
            t_needed[i][start:stop] = out.t_needed
            read_lat[r][start:stop] = out.read_latency
            write_lat[w][start:stop] = out.write_latency

    read_pct = {r: _percentiles(v) for r, v in read_lat.items()}
    write_pct = {w: _percentiles(v) for w, v in write_lat.items()}
    return [
        PbsResult(
            profile=profile.name,
            n=n,
            r=r,
            w=w,
            trials=trials,
            seed=seed,
            t_needed=t_needed[i],
            read_latency_ms=read_pct[r],
            write_latency_ms=write_pct[w],
        )
        for i, (r, w) in enumerate(pairs)
    ]


def simulate(
    profile: WarsProfile,
    n: int,
    r: int,
    w: int,
    *,
    trials: int = DEFAULT_TRIALS,
    seed: int | None = None,
    chunk_trials: int = DEFAULT_CHUNK_TRIALS,
) -> PbsResult:
    """Simulate one (N, R, W) configuration under ``profile`` (see module docstring)."""
    return simulate_many(profile, n, [(r, w)], trials=trials, seed=seed, chunk_trials=chunk_trials)[0]


def pbs_report(result: PbsResult, t: float = 0.0, target: float = DEFAULT_TARGET) -> dict[str, object]:
    """JSON-ready summary of a :class:`PbsResult` at read delay ``t`` and visibility ``target``."""
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError(f"t must be a non-negative number of ms (got {t})")
    validate_probability("target", target)
    return {
        "n": result.n,
        "r": result.r,
        "w": result.w,
        "profile": result.profile,
        "trials": result.trials,
        "seed": result.seed,
        "t": t,
        "target": target,
        "strict": result.r + result.w > result.n,
        "p_consistent": result.p_consistent(t),
        "t_visibility_ms": result.t_visibility(target),
        "p_stale_immediate": float(p_stale_immediate(result.n, result.r, result.w)),
        "read_latency_ms": dict(result.read_latency_ms),
        "write_latency_ms": dict(result.write_latency_ms),
    }
