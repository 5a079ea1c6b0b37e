"""What the metrics cost on the hot path: one request's latency observation.

The only per-request instrumentation metrics added is the request-latency histogram
(``shell/metrics_hist.py``): at receipt ``RequestLatency.start`` (label the request,
read the clock) and a dict insert on the connection; at reply a dict pop and
``done`` (clock, bisect, two additions). Everything else is collected at scrape
time. This times exactly that sequence, with the process's CPU clock, and, for
scale, one full scrape of a snapshot (``families``) of a 5-node view.

    PYTHONPATH=src python benchmarks/bench_metrics_cost.py [--ops 1000000]
"""

from __future__ import annotations

import argparse
import json
import time

from quorumkv.core import messages as m
from quorumkv.shell.metrics import families
from quorumkv.shell.metrics_hist import Buckets, RequestLatency, BATCH_SIZE_BUCKETS


def per_request_ns(ops: int) -> float:
    lat = RequestLatency()
    timing: dict[int, tuple] = {}
    msgs = [m.Get(i, b"key:%d" % i, m.LEVEL_DEFAULT) if i % 2 else m.Put(i, b"key:%d" % i, b"v") for i in range(1000)]
    t0 = time.process_time()
    for i in range(ops):
        msg = msgs[i % 1000]
        timing[msg.id] = lat.start(msg)
        started = timing.pop(msg.id, None)
        if started is not None:
            lat.done(started)
    return (time.process_time() - t0) / ops * 1e9


def baseline_ns(ops: int) -> float:
    """The same loop without the observation (dict insert/pop only)."""
    timing: dict[int, tuple] = {}
    msgs = [m.Get(i, b"key:%d" % i, m.LEVEL_DEFAULT) for i in range(1000)]
    t0 = time.process_time()
    for i in range(ops):
        msg = msgs[i % 1000]
        timing[msg.id] = None
        timing.pop(msg.id, None)
    return (time.process_time() - t0) / ops * 1e9


def scrape_us(rounds: int) -> float:
    lat = RequestLatency()
    for op in (m.Get(1, b"k", -1), m.Get(1, b"k", -2), m.Put(1, b"k", b"v"), m.Put(1, b"k", None)):
        lat.done(lat.start(op))
    batch = Buckets(BATCH_SIZE_BUCKETS)
    peers = [(f"n{i}", "up", True, 0.5, 3) for i in range(2, 6)]
    snap = {"node": "n1", "stats": {}, "shell": {}, "hints": {"n2": (3, 300)}, "peers": peers, "status": "up",
            "ring_nodes": [f"n{i}" for i in range(1, 6)],
            "ownership": {f"n{i}": {"effective": 0.6} for i in range(1, 6)}, "storage": "sqlite", "keys": 10,
            "bytes": 4096, "resp": {"connected_clients": 3}, "inbound": 4, "links_up": 4,
            "latency": {k: (b.cumulative(), b.sum) for k, b in lat.series.items()},
            "batch": (batch.cumulative(), batch.sum), "serving": True}
    t0 = time.process_time()
    for _ in range(rounds):
        list(families(snap))
    return (time.process_time() - t0) / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=1_000_000)
    args = ap.parse_args()
    with_obs = per_request_ns(args.ops)
    base = baseline_ns(args.ops)
    print(json.dumps({"observe_ns_per_request": round(with_obs - base), "loop_with_observe_ns": round(with_obs),
                      "loop_without_ns": round(base), "families_us_per_scrape": round(scrape_us(2_000), 1)}))


if __name__ == "__main__":
    main()
