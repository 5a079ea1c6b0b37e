"""Live WARS latency samples and the dynamic-quorum model built from them.

Timing is I/O, so it lives in the shell. A coordinator stamps ``t0`` (wall clock, µs)
when it hands a RepWrite/RepRead to a peer link; the replica stamps ``t_us`` into its
RepWriteAck/RepReadResp when it sends it; when the answer arrives (``t_now``):

* W = t_replica − t0: write request delay, *including* the replica's durable apply
  (the write is visible on that replica from then on),
* A = t_now − t_replica: the ack's trip back,
* R = t_replica − t0 for a read (request delay plus the replica's storage read),
* S = t_now − t_replica for the response.

W and R compare two hosts' clocks: they assume synchronised clocks (the same host,
or NTP-disciplined hosts whose offset is small against the delays measured). A
negative difference (clock skew) is clamped to 0. Reads and writes a coordinator
serves from its own storage are not network traffic and give no samples, so the
model treats every replica like a remote one (slightly pessimistic).

A link stamps the first RepWrite/RepRead of each batch it writes (one per event-loop
turn): every request of a lightly loaded node, one of ~40 at saturation — enough
samples for the model, without timing every request.

Each kind keeps the newest ``PBS_SAMPLES_MAX`` samples (a ring buffer). Requests
in flight per peer link are bounded by ``PENDING_MAX`` (the oldest stamps are
dropped past it: a peer that never answers costs no memory).
"""

from __future__ import annotations

import time
from collections import deque

from ..core.dynamic import MODEL_TRIALS, PBS_SAMPLES_MIN, T_GRID_MS, LatencyTable
from ..core.limits import PBS_SAMPLES_MAX

#: Outstanding RepWrite/RepRead stamps kept per peer link.
PENDING_MAX = 65_536
#: How often a node rebuilds its dynamic-quorum model (when new samples arrived)
#: while it is in use: until it is first ready, and for MODEL_IN_USE_MS after the
#: last request with a dynamic target.
MODEL_REFRESH_MS = 2_000
MODEL_IN_USE_MS = 60_000
#: How often otherwise: the build is a Monte Carlo run in a worker thread that takes
#: the GIL from the request path (~3% of a loaded node's CPU at 2 s); a model nobody
#: asks for is kept roughly current for ``latencies`` / ``math pbs --dir`` only.
MODEL_REFRESH_MS_IDLE = 30_000
KINDS = ("w", "a", "r", "s")


def now_us() -> int:
    return time.time_ns() // 1_000


class LatencyRecorder:
    """Bounded ring buffers of W, A, R, S one-way delays (ms)."""

    def __init__(self, maxlen: int = PBS_SAMPLES_MAX) -> None:
        self.maxlen = maxlen
        self.buffers: dict[str, deque[float]] = {k: deque(maxlen=maxlen) for k in KINDS}
        self.recorded: dict[str, int] = dict.fromkeys(KINDS, 0)

    def add(self, is_write: bool, t0_us: int, t_replica_us: int, t_now_us: int) -> None:
        out_ms = max(0, t_replica_us - t0_us) / 1000.0
        back_ms = max(0, t_now_us - t_replica_us) / 1000.0
        first, second = ("w", "a") if is_write else ("r", "s")
        self.buffers[first].append(out_ms)
        self.buffers[second].append(back_ms)
        self.recorded[first] += 1
        self.recorded[second] += 1

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.buffers.items()}

    def snapshot(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.buffers.items()}


class PendingStamps:
    """Send times of requests in flight on one link, keyed by (request id, write?)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent: dict[int, int] = {}

    def stamp(self, req_id: int, is_write: bool) -> None:
        sent = self.sent
        if len(sent) >= PENDING_MAX:
            del sent[next(iter(sent))]  # the oldest: its answer is long overdue
        sent[req_id * 2 + is_write] = now_us()

    def take(self, req_id: int, is_write: bool) -> int | None:
        return self.sent.pop(req_id * 2 + is_write, None)

    def clear(self) -> None:
        self.sent.clear()


def build_table(samples: dict[str, list[float]], n: int, now_ms: int, *, trials: int = MODEL_TRIALS,
                seed: int = 0, samples_min: int = PBS_SAMPLES_MIN) -> LatencyTable:
    """PBS Monte Carlo for every (R, W) of N over ``samples``; not ready when too few."""
    counts = {k: len(samples.get(k, ())) for k in KINDS}
    if min(counts.values()) < samples_min or n < 1:
        return LatencyTable(n=n, samples=counts, computed_ms=now_ms)
    from ..analysis import pbs  # noqa: PLC0415 - numpy only once there is something to model

    profile = pbs.profile_from_samples(samples["w"], samples["a"], samples["r"], samples["s"], name="live")
    pairs = [(r, w) for r in range(1, n + 1) for w in range(1, n + 1)]
    results = pbs.simulate_many(profile, n, pairs, trials=trials, seed=seed)
    curves = {}
    write_lat: dict[int, dict[str, float]] = {}
    read_lat: dict[int, dict[str, float]] = {}
    for (r, w), res in zip(pairs, results):
        curves[(r, w)] = tuple(float(p) for p in res.p_consistent(list(T_GRID_MS)))
        write_lat[w] = dict(res.write_latency_ms)
        read_lat[r] = dict(res.read_latency_ms)
    return LatencyTable(n=n, samples=counts, trials=trials, computed_ms=now_ms, curves=curves,
                        write_latency_ms=write_lat, read_latency_ms=read_lat)
