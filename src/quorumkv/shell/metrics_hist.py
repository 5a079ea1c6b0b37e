"""Histograms cheap enough for the hot path, exposed by ``shell/metrics.py``.

prometheus_client's ``Histogram.observe`` takes a lock and looks labels up per call;
these are plain lists bumped on the event-loop thread (or, for batch sizes, the
storage writer thread: an int increment under the GIL), read at scrape time by a
custom collector. ``benchmarks/bench_metrics_cost.py`` measures what one request's
observation costs.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter

#: Request latency bucket bounds, seconds (Prometheus's defaults, plus the sub-ms
#: buckets a local quorum round falls in).
LATENCY_BUCKETS_S = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0)
#: Group-commit batch size bucket bounds (writes per transaction; WRITE_BATCH_MAX is 2,048).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
#: (op, level) label pairs kept at most: levels are ONE/QUORUM/ALL/default/target or an
#: integer <= REPLICAS_MAX, ops get/put/delete — far fewer; a bound all the same.
LATENCY_SERIES_MAX = 256

_LEVEL_NAMES = {0: "default", -1: "ONE", -2: "QUORUM", -3: "ALL"}


class Buckets:
    """Counts per bucket (the last one is +Inf), their sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count)]`` with ``+Inf`` last, as Prometheus wants it."""
        out = []
        total = 0
        for bound, count in zip(self.bounds + (float("inf"),), list(self.counts)):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


def request_label(msg) -> tuple[str, str]:
    """(op, level) of a Get or Put: op get/put/delete; level as the client asked."""
    if hasattr(msg, "value"):
        op = "delete" if msg.value is None else "put"
        level = msg.w
        dynamic = msg.target_latency_ms > 0
    else:
        op = "get"
        level = msg.r
        dynamic = msg.target_p_fresh > 0
    if dynamic:
        return op, "target"
    return op, _LEVEL_NAMES.get(level) or str(level)


class RequestLatency:
    """Client request latency by (op, level), from receipt to the reply being queued."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Buckets] = {}

    def start(self, msg) -> tuple:
        return request_label(msg), perf_counter()

    def done(self, started: tuple) -> None:
        label, t0 = started
        b = self.series.get(label)
        if b is None:
            if len(self.series) >= LATENCY_SERIES_MAX:
                return
            b = self.series[label] = Buckets(LATENCY_BUCKETS_S)
        b.observe(perf_counter() - t0)
