"""Exact quorum arithmetic: intersection, availability and k-staleness.

This replaces the seed article's formulas (which are not probabilities) with the
standard ones:

* **Strict quorums.** A read quorum of size R and a write quorum of size W drawn
  from the same N replicas always intersect iff ``R + W > N`` (pigeonhole), so a
  read is guaranteed to see the latest *completed* write.  Two write quorums always
  intersect iff ``2W > N``, which is what lets concurrent writes be ordered.
* **Availability.** If every replica is independently unavailable with probability
  ``p``, a k-of-n quorum can be formed with probability
  ``sum_{i=k..n} C(n, i) (1-p)^i p^(n-i)`` (binomial tail).
* **Partial quorums** (``R + W <= N``).  Immediately after a write reaches exactly
  W replicas, a read quorum chosen uniformly at random misses all of them with
  probability ``C(N-W, R) / C(N, R)``.  With independent, uniformly chosen
  quorums per write, the probability that a read returns a value that is *not
  among the k most recent committed versions* is that quantity to the power k —
  "PBS k-staleness", Bailis, Venkataraman, Franklin, Hellerstein, Stoica,
  *Probabilistically Bounded Staleness for Practical Partial Quorums*,
  VLDB 2012.

All functions accept either ``float`` or :class:`fractions.Fraction` for
probabilities; pass fractions to get exact rational answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb
from typing import TypeVar

Prob = TypeVar("Prob", float, Fraction)

#: Default per-replica unavailability used by the CLI (1 %).
DEFAULT_UNAVAILABILITY = 0.01
#: Default number of k-staleness entries (k = 1..3) in a report.
DEFAULT_K_VERSIONS = 3


def validate_size(name: str, value: int, n: int) -> None:
    """Raise ``ValueError`` unless ``1 <= value <= n`` (and ``n >= 1``)."""
    if n < 1:
        raise ValueError(f"N must be >= 1 (got {n})")
    if not 1 <= value <= n:
        raise ValueError(f"{name} must be between 1 and N={n} (got {value})")


def validate_probability(name: str, p: float | Fraction) -> None:
    """Raise ``ValueError`` unless ``0 <= p <= 1``."""
    if not 0 <= p <= 1:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1 (got {p})")


def is_strict(n: int, r: int, w: int) -> bool:
    """True iff every R-subset meets every W-subset of N replicas (``R + W > N``)."""
    validate_size("R", r, n)
    validate_size("W", w, n)
    return r + w > n


def writes_overlap(n: int, w: int) -> bool:
    """True iff any two write quorums share a replica (``2W > N``)."""
    validate_size("W", w, n)
    return 2 * w > n


def quorum_availability(n: int, k: int, p: Prob) -> Prob:
    """Probability that at least ``k`` of ``n`` replicas are up.

    Each replica is independently *unavailable* with probability ``p``:
    ``sum_{i=k..n} C(n, i) (1-p)^i p^(n-i)``.  Exact when ``p`` is a Fraction.
    """
    validate_size("K", k, n)
    validate_probability("p", p)
    q = 1 - p
    return sum((comb(n, i) * q**i * p ** (n - i) for i in range(k, n + 1)), start=0 * p)


def quorum_unavailability(n: int, k: int, p: Prob) -> Prob:
    """``1 - quorum_availability(n, k, p)``, summed directly so tiny values keep precision."""
    validate_size("K", k, n)
    validate_probability("p", p)
    q = 1 - p
    return sum((comb(n, i) * q**i * p ** (n - i) for i in range(0, k)), start=0 * p)


def p_stale_immediate(n: int, r: int, w: int) -> Fraction:
    """Probability a uniformly random R-quorum misses a W-quorum: ``C(N-W, R) / C(N, R)``.

    This is zero exactly when ``R + W > N`` (``C(N-W, R) = 0`` when ``R > N-W``).
    Bailis et al., VLDB 2012.
    """
    validate_size("R", r, n)
    validate_size("W", w, n)
    return Fraction(comb(n - w, r), comb(n, r))


def k_staleness(n: int, r: int, w: int, k: int) -> Fraction:
    """PBS k-staleness: P(read returns none of the k latest committed versions).

    ``(C(N-W, R) / C(N, R)) ** k`` for independent uniformly chosen quorums
    (Bailis et al., VLDB 2012).  ``k = 1`` equals
    :func:`p_stale_immediate`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    return p_stale_immediate(n, r, w) ** k


@dataclass(frozen=True)
class KStaleness:
    """One row of the k-staleness table."""

    k: int
    p_stale: float


@dataclass(frozen=True)
class QuorumReport:
    """Everything ``quorumkv math quorum --n --r --w`` prints."""

    n: int
    r: int
    w: int
    p: float
    strict: bool
    write_overlap: bool
    read_failures_tolerated: int
    write_failures_tolerated: int
    read_available: float
    write_available: float
    read_unavailable: float
    write_unavailable: float
    p_stale_immediate: float
    p_stale_immediate_exact: str
    k_staleness: tuple[KStaleness, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (k_staleness as a list of ``{"k", "p_stale"}`` objects)."""
        out = asdict(self)
        out["k_staleness"] = [asdict(row) for row in self.k_staleness]
        return out


@dataclass(frozen=True)
class KOfNReport:
    """Everything ``quorumkv math quorum --n --k`` prints."""

    n: int
    k: int
    p: float
    available: float
    unavailable: float
    failures_tolerated: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def quorum_report(
    n: int,
    r: int,
    w: int,
    p: float = DEFAULT_UNAVAILABILITY,
    k_versions: int = DEFAULT_K_VERSIONS,
) -> QuorumReport:
    """Compute every figure for an (N, R, W) configuration at unavailability ``p``."""
    validate_size("R", r, n)
    validate_size("W", w, n)
    validate_probability("p", p)
    if k_versions < 1:
        raise ValueError(f"k_versions must be >= 1 (got {k_versions})")
    stale = p_stale_immediate(n, r, w)
    return QuorumReport(
        n=n,
        r=r,
        w=w,
        p=float(p),
        strict=is_strict(n, r, w),
        write_overlap=writes_overlap(n, w),
        read_failures_tolerated=n - r,
        write_failures_tolerated=n - w,
        read_available=float(quorum_availability(n, r, p)),
        write_available=float(quorum_availability(n, w, p)),
        read_unavailable=float(quorum_unavailability(n, r, p)),
        write_unavailable=float(quorum_unavailability(n, w, p)),
        p_stale_immediate=float(stale),
        p_stale_immediate_exact=str(stale),
        k_staleness=tuple(KStaleness(k, float(stale**k)) for k in range(1, k_versions + 1)),
    )


def k_of_n_report(n: int, k: int, p: float = DEFAULT_UNAVAILABILITY) -> KOfNReport:
    """Availability of a K-of-N quorum at unavailability ``p``."""
    validate_size("K", k, n)
    validate_probability("p", p)
    return KOfNReport(
        n=n,
        k=k,
        p=float(p),
        available=float(quorum_availability(n, k, p)),
        unavailable=float(quorum_unavailability(n, k, p)),
        failures_tolerated=n - k,
    )
