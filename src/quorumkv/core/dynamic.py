"""Dynamic quorums: choose R (or W) from a freshness (or latency) target.

A read may state a target instead of R — "a consistent read with probability at
least ``p_fresh`` when it starts ``within_ms`` after the write committed" — and the
coordinator picks the *smallest* R that meets it; a write may state a latency bound
and get the *largest* W whose predicted write latency (``WRITE_LATENCY_PERCENTILE``)
stays within it.

The decision is pure and cheap: a lookup in a :class:`LatencyTable` that the shell
rebuilds every few seconds, off the request path, by PBS Monte Carlo
(``quorumkv.analysis.pbs``) over the WARS delays this node measured on its own
internode traffic (``shell/latency.py``). The table holds, for every (R, W) with
1 <= R, W <= N, P(consistent read) on a fixed grid of read delays ``t`` after
commit; a lookup between grid points uses the grid point at or below
``within_ms`` (P grows with t, so this never overstates freshness).

Model assumptions, stated where the choice is made:

* W is the node's default W, not the W of the key's last write (that W is not
  recorded with the value, and R must be chosen before anything is read).
* Reads go to R replicas and every replica behaves like the measured ones; a
  strict quorum (R + W > N) is consistent with probability 1.
* A non-strict R is only trusted for a target the Monte Carlo can resolve:
  ``p_fresh <= 1 - RESOLUTION_TRIALS / trials`` (with 20,000 trials, 0.9995);
  stricter targets need a strict quorum.
* R is capped at the key's live primaries: a read cannot count on a replica the
  failure detector says is down.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError

#: Samples of each kind (W, A, R, S) a node needs before it builds a model; below
#: this a dynamic request is refused with the counts it has.
PBS_SAMPLES_MIN = 100
#: Monte Carlo trials per model refresh (all (R, W) pairs share them).
MODEL_TRIALS = 20_000
#: Stale trials the estimate must have room for before a non-strict R may be chosen.
RESOLUTION_TRIALS = 10
#: The write-latency percentile a write's ``target_latency_ms`` bounds.
WRITE_LATENCY_PERCENTILE = "p99"


def _t_grid() -> tuple[float, ...]:
    mantissas = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    grid = {0.0, 10_000.0}
    for exp in range(-2, 4):
        grid.update(round(mant * 10.0**exp, 6) for mant in mantissas)
    return tuple(sorted(grid))


#: Read delays after commit (ms) at which the table stores P(consistent).
T_GRID_MS: tuple[float, ...] = _t_grid()


@dataclass(frozen=True)
class Target:
    """A freshness target for a read: P(consistent) >= ``p_fresh`` for a read that
    starts ``within_ms`` after the write it should see committed."""

    p_fresh: float
    within_ms: float = 0.0

    def __post_init__(self) -> None:
        validate_target(self.p_fresh, self.within_ms)


def validate_target(p_fresh: float, within_ms: float) -> None:
    if not (isinstance(p_fresh, (int, float)) and 0.0 < p_fresh <= 1.0):
        raise InvalidRequestError(f"target p_fresh must be in (0, 1], got {p_fresh!r}")
    if not (isinstance(within_ms, (int, float)) and within_ms >= 0 and math.isfinite(within_ms)):
        raise InvalidRequestError(f"target within_ms must be a non-negative number of ms, got {within_ms!r}")


def validate_latency_bound(latency_ms: float) -> None:
    if not (isinstance(latency_ms, (int, float)) and latency_ms > 0 and math.isfinite(latency_ms)):
        raise InvalidRequestError(f"target_latency_ms must be a positive number of ms, got {latency_ms!r}")


@dataclass(frozen=True)
class LatencyTable:
    """What the coordinator knows about its latencies. ``curves`` empty: not ready yet."""

    n: int
    samples: dict[str, int]  # samples of each WARS kind the model was (or would be) built from
    trials: int = 0
    computed_ms: int = 0
    t_grid_ms: tuple[float, ...] = T_GRID_MS
    #: (R, W) -> P(consistent) at each t of ``t_grid_ms``
    curves: dict[tuple[int, int], tuple[float, ...]] = field(default_factory=dict)
    #: W -> {"p50": ms, "p99": ms, "p99.9": ms}
    write_latency_ms: dict[int, dict[str, float]] = field(default_factory=dict)
    #: R -> {"p50": ms, "p99": ms, "p99.9": ms}
    read_latency_ms: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.curves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "samples": dict(self.samples), "trials": self.trials,
            "computed_ms": self.computed_ms, "ready": self.ready,
            "write_latency_ms": {str(w): v for w, v in self.write_latency_ms.items()},
            "read_latency_ms": {str(r): v for r, v in self.read_latency_ms.items()},
        }


def p_fresh(table: LatencyTable, r: int, w: int, within_ms: float) -> float:
    """P(consistent read) for (R, W) at ``within_ms`` after commit (grid point at or below)."""
    if r + w > table.n:
        return 1.0
    curve = table.curves[(r, w)]
    i = bisect_right(table.t_grid_ms, within_ms) - 1
    return curve[max(i, 0)]


def resolution_limit(table: LatencyTable) -> float:
    """The largest p_fresh a non-strict R can be trusted with."""
    return 1.0 - RESOLUTION_TRIALS / table.trials if table.trials else 0.0


def choose_r(table: LatencyTable, target: Target, w: int, r_max: int | None = None) -> int | None:
    """The smallest R in 1..min(N, r_max) meeting ``target`` for writes at W, or None."""
    n = table.n
    if not table.ready or not 1 <= w <= n:
        return None
    top = n if r_max is None else min(n, r_max)
    trusted = target.p_fresh <= resolution_limit(table)
    for r in range(1, top + 1):
        if r + w > n:
            return r
        if trusted and p_fresh(table, r, w, target.within_ms) >= target.p_fresh:
            return r
    return None


def choose_w(table: LatencyTable, latency_ms: float, w_max: int | None = None,
             percentile: str = WRITE_LATENCY_PERCENTILE) -> int | None:
    """The largest W in 1..min(N, w_max) whose predicted write latency percentile
    is at most ``latency_ms``, or None."""
    if not table.ready:
        return None
    top = table.n if w_max is None else min(table.n, w_max)
    for w in range(top, 0, -1):
        if table.write_latency_ms[w][percentile] <= latency_ms:
            return w
    return None


def _not_ready(table: LatencyTable | None, n: int) -> str | None:
    if table is None:
        return "no latency model on this node yet (it builds one from its internode traffic)"
    if not table.ready:
        counts = ", ".join(f"{k.upper()}={table.samples.get(k, 0)}" for k in ("w", "a", "r", "s"))
        return (f"no latency model yet: at its last refresh (every few seconds) this node had {counts} "
                f"samples of the internode traffic it coordinated and needs {PBS_SAMPLES_MIN} of each; "
                "send traffic through it first, or give R/W explicitly")
    if table.n != n:
        return f"latency model is for N={table.n} but the ring has N={n}; it is rebuilt within seconds"
    return None


def read_level(table: LatencyTable | None, p_target: float, within_ms: float, w: int, n: int,
               live: int) -> tuple[int | None, str]:
    """R for a dynamic read, or (None, why). Raises InvalidRequestError for a bad target."""
    target = Target(p_target, within_ms)
    why = _not_ready(table, n)
    if why:
        return None, f"cannot choose R for target P(fresh) >= {p_target:g} within {within_ms:g} ms: {why}"
    assert table is not None  # _not_ready said so
    r = choose_r(table, target, w, live)
    if r is not None:
        return r, ""
    parts = []
    for rr in range(1, min(n, live) + 1):
        parts.append(f"R={rr}: {p_fresh(table, rr, w, within_ms):.6g}")
    if live < n:
        parts.append(f"R>{live} needs more live replicas than the {live} up")
    lim = resolution_limit(table)
    note = (f"; non-strict R is trusted only up to p_fresh={lim:g} ({table.trials:,} trials)"
            if p_target > lim else "")
    return None, (f"no R meets target P(fresh) >= {p_target:g} within {within_ms:g} ms "
                  f"(N={n}, W={w}; {', '.join(parts) or 'no replica up'}{note})")


def write_level(table: LatencyTable | None, latency_ms: float, n: int) -> tuple[int | None, str]:
    """W for a write with a latency bound, or (None, why). Raises InvalidRequestError."""
    validate_latency_bound(latency_ms)
    why = _not_ready(table, n)
    if why:
        return None, f"cannot choose W for target latency {latency_ms:g} ms: {why}"
    assert table is not None  # _not_ready said so
    w = choose_w(table, latency_ms)
    if w is not None:
        return w, ""
    pct = WRITE_LATENCY_PERCENTILE
    fastest = table.write_latency_ms[1][pct]
    return None, (f"no W meets target latency {latency_ms:g} ms: even W=1 has predicted "
                  f"{pct} write latency {fastest:.3g} ms")


def wants_target(msg: object) -> bool:
    """True when a Get/Put states a target instead of a fixed R/W."""
    return bool(getattr(msg, "target_p_fresh", 0.0) or getattr(msg, "target_within_ms", 0.0)
                or getattr(msg, "target_latency_ms", 0.0))


def level_for(msg: Any, table: LatencyTable | None, n: int, default_w: int, live: int) -> tuple[int | None, str]:
    """The R (Get) or W (Put) a dynamic request gets, or (None, why).

    Raises InvalidRequestError when the request is malformed (both a level and a
    target, or a bad target)."""
    if hasattr(msg, "target_p_fresh"):
        if msg.r:
            raise InvalidRequestError("give either R or a freshness target, not both")
        if not msg.target_p_fresh:
            raise InvalidRequestError("a freshness target needs target_p_fresh in (0, 1]")
        return read_level(table, msg.target_p_fresh, msg.target_within_ms, default_w, n, live)
    if msg.w:
        raise InvalidRequestError("give either W or a latency target, not both")
    return write_level(table, msg.target_latency_ms, n)
