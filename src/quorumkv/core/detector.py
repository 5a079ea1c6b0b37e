"""Phi-accrual failure detection (Hayashibara et al. 2004; Akka's and Cassandra's
variant): one ``PhiDetector`` per peer, fed by the heartbeats heard from it
(core/membership.py decides when a peer is suspect, down or up again)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

#: Heartbeat intervals remembered per peer by the detector (Akka: 1000; fewer
#: adapts faster after a change of load, 100 is plenty on a LAN).
PHI_WINDOW = 100
#: Slack (ms) of ``PhiDetector.may_cross``: the precomputed crossing time is exact to
#: far below a millisecond (a bisection to float precision), phi itself decides.
CROSSING_SLACK_MS = 1.0


class DetectorSettings(NamedTuple):
    heartbeat_interval_ms: int = 200
    phi_suspect: float = 8.0
    #: Floor on the interval deviation, so a perfectly regular peer is not
    #: suspected after one late beat (Akka min-std-deviation, default 100 ms).
    min_std_ms: float = 50.0
    #: Pause tolerated before phi starts rising (GC, scheduling; Akka default 3 s,
    #: far too slow for a quorum store on a LAN).
    acceptable_pause_ms: float = 300.0
    suspect_to_down_ms: int = 1_000


def _phi_of(y: float) -> float:
    """phi for a silence ``y`` deviations past the mean: -log10(1 - F(y)) with Akka's
    logistic approximation of the normal CDF, computed without overflow."""
    z = y * (1.5976 + 0.070566 * y * y)
    softplus = z if z > 30 else math.log1p(math.exp(z))
    return softplus / math.log(10)


@lru_cache(maxsize=16)
def crossing_deviations(phi_suspect: float) -> float:
    """The ``y`` at which ``_phi_of(y)`` reaches ``phi_suspect`` (it is increasing in
    ``y``): found once per threshold by bisection, so a detector can tell when phi
    will cross without evaluating it on every tick."""
    lo, hi = -50.0, 50.0  # phi(-50) ~ 0, phi(50) ~ 3900: any sane threshold lies between
    for _ in range(100):  # halves a 100-wide interval to below float resolution
        mid = (lo + hi) / 2
        if _phi_of(mid) < phi_suspect:
            lo = mid
        else:
            hi = mid
    return lo


class PhiDetector:
    __slots__ = ("intervals", "last_ms", "settings", "_mean_ms", "_std_ms", "_sum", "_sumsq", "_cross_ms")

    def __init__(self, settings: DetectorSettings, now_ms: int, expected_ms: int | None = None) -> None:
        self.settings = settings
        # Seed with the expected interval so phi is meaningful from the start (with
        # SWIM probing a peer is heard from once per probe cycle at least, not every
        # period: seeding with the period would suspect it before it learns better,
        # and intervals are not learned while suspect).
        self.intervals: list[float] = [float(expected_ms or settings.heartbeat_interval_ms)] * 2
        self.last_ms = now_ms
        self._sum = sum(self.intervals)
        self._sumsq = sum(x * x for x in self.intervals)
        self._stats()

    def _stats(self) -> None:
        """Mean and deviation of the window from running sums, kept from one heartbeat
        to the next: the window changes only when a heartbeat arrives. Also the
        silence after which phi crosses ``phi_suspect`` (``may_cross``)."""
        n = len(self.intervals)
        mean = self._sum / n
        var = max(self._sumsq / n - mean * mean, 0.0)  # intervals are ~1e2..1e4 ms: no cancellation trouble
        self._mean_ms = mean + self.settings.acceptable_pause_ms
        self._std_ms = max(math.sqrt(var), self.settings.min_std_ms)
        self._cross_ms = self._mean_ms + crossing_deviations(self.settings.phi_suspect) * self._std_ms

    def heartbeat(self, now_ms: int) -> None:
        interval = now_ms - self.last_ms
        # A silence that made the peer suspect (an outage, a long pause) is not a
        # sample of its rhythm: learning it would blind the detector to the next
        # failure for minutes (Akka records intervals only while the peer is available).
        available = not self.suspicious(now_ms)
        self.last_ms = now_ms
        if interval <= 0 or not available:
            return
        x = float(interval)
        self.intervals.append(x)
        self._sum += x
        self._sumsq += x * x
        if len(self.intervals) > PHI_WINDOW:
            old = self.intervals.pop(0)
            self._sum -= old
            self._sumsq -= old * old
        self._stats()

    def may_cross(self, now_ms: int) -> bool:
        """False when phi is certainly below ``phi_suspect`` at ``now_ms`` (one
        comparison: the failure detector's check runs every period for every peer)."""
        return now_ms - self.last_ms >= self._cross_ms - CROSSING_SLACK_MS

    def suspicious(self, now_ms: int) -> bool:
        """phi has reached ``phi_suspect`` (exactly as ``phi``, cheaper when far from it)."""
        return self.may_cross(now_ms) and self.phi(now_ms) >= self.settings.phi_suspect

    def phi(self, now_ms: int) -> float:
        return _phi_of((now_ms - self.last_ms - self._mean_ms) / self._std_ms)
