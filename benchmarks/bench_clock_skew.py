"""Sequential writes lost to clock skew, with and without a session (issue 10, hole 2).

Starts a 5-node SQLite cluster (N=3) whose n1 runs ``--offset-ms`` fast (the
test-only ``clock_offset_ms``; the max-offset rule off so n1 keeps coordinating).
The key is one neither n1 nor n2 replicates, so n2 learns n1's timestamps only from
heartbeats, as in the issue's scenario. For ``--writes`` rounds, one write goes
through n1 and, right after its ack, the next through n2; after every ack a read at
ALL (through n3, no session) checks that the write just acknowledged is the value
kept. A write that is
not is *lost*: a later acked write that an earlier one (from the fast node) beat.

Two modes, same cluster: ``plain`` (two clients, no sessions: ordering across
clients rests on the HLCs that heartbeats and replica writes carry) and ``session``
(the two clients share one SessionContext). Also prints the clock counters of the
nodes: ceiling saves, writes that had to wait for one, n3's measured offset of n1.

    PYTHONPATH=src python benchmarks/bench_clock_skew.py [--writes 200] [--offset-ms 1000]
        [--gap-ms 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from quorumkv import Client
from quorumkv.core.ring import Ring
from quorumkv.core.version import SessionContext
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port


NODES = 5


def key_outside(prefix: str, nodes: tuple[str, ...]) -> str:
    ring = Ring([f"n{i}" for i in range(1, NODES + 1)], 3)
    return next(k for k in (f"{prefix}{i}" for i in range(10_000))
                if not set(nodes) & set(ring.preference_list(k.encode())))


def run(cluster: LocalCluster, writes: int, gap_ms: float, session: SessionContext | None, key: str) -> int:
    fast, slow, other = (cluster.node(x).address for x in ("n1", "n2", "n3"))
    lost = 0
    mode = session if session is not None else False
    with Client([fast], session=mode) as a, Client([slow], session=mode) as b, \
            Client([other], session=False) as reader:
        for i in range(writes):
            value = f"{key}-{i}"
            (a if i % 2 == 0 else b).put(key, value)
            if reader.get(key, r="ALL") != value.encode():
                lost += 1
            if gap_ms:
                time.sleep(gap_ms / 1000)
    return lost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--offset-ms", type=int, default=1_000)
    ap.add_argument("--gap-ms", type=float, default=0.0, help="pause between rounds")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="qkv-skew-")
    cluster = LocalCluster(root)
    overrides = {f"n{i}": {"max_clock_skew_ms": 0} for i in range(1, NODES + 1)}
    overrides["n1"]["clock_offset_ms"] = args.offset_ms
    try:
        cluster.create(NODES, base_port=free_base_port(2 * NODES), replicas=3, node_overrides=overrides)
        cluster.up()
        time.sleep(1)  # a few heartbeats: offsets measured
        result = {"writes": args.writes, "offset_ms": args.offset_ms, "gap_ms": args.gap_ms}
        result["lost_plain"] = run(cluster, args.writes, args.gap_ms, None, key_outside("plain", ("n1", "n2")))
        result["lost_session"] = run(cluster, args.writes, args.gap_ms, SessionContext(),
                                     key_outside("session", ("n1", "n2")))
        with Client([cluster.node("n3").address]) as c:
            st = c.status()
            result["n3_sees_n1_offset_ms"] = {v.node: v.clock_offset_ms for v in st.members}["n1"]
        for node in ("n1", "n2"):
            with Client([cluster.node(node).address]) as c:
                stats = c.status().stats
            result[node] = {k: stats[k] for k in ("hlc_ceiling_saves", "clock_writes_held", "writes",
                                                 "hlc_remote_ignored")}
        print(json.dumps(result))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
