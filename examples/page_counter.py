"""A page-view counter (a PN-counter) that counts every acknowledged view, a node killed mid-run.

    python examples/page_counter.py              # starts a 3-node cluster itself, kills a node mid-run
    python examples/page_counter.py HOST:PORT... # uses your nodes (nothing is killed)

Several web servers (threads, each with its own client talking first to a different
node) count views of one page with ``Client.counter_incr``. Increments made through
different nodes at the same moment are all kept (the counter merges, it is not
last-writer-wins). Halfway through, one node is SIGKILLed. At the end the counter
must hold at least every acknowledged increment; an increment whose connection
died mid-request may or may not have been applied (the client does not resend a
typed update: a resend could count it twice), so the count is at most acknowledged
+ those.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading

from quorumkv import Client
from quorumkv.errors import ConnectionFailedError, QuorumKVError

SERVERS = 3
VIEWS_PER_SERVER = 40
PAGE = "views:/index.html"


def web_server(addresses: list[str], halfway: threading.Barrier, tally: dict, lock: threading.Lock) -> None:
    acked = ambiguous = failed = 0
    with Client(addresses, w="QUORUM") as c:
        for i in range(VIEWS_PER_SERVER):
            if i == VIEWS_PER_SERVER // 2:
                halfway.wait()
            try:
                c.counter_incr(PAGE)
                acked += 1
            except ConnectionFailedError:
                ambiguous += 1  # sent, no answer: maybe applied
            except QuorumKVError:
                ambiguous += 1  # e.g. W not confirmed: it may still have landed
    with lock:
        tally["acked"] += acked
        tally["ambiguous"] += ambiguous
        tally["failed"] += failed


def run(addresses: list[str], kill=None) -> dict:
    tally = {"acked": 0, "ambiguous": 0, "failed": 0}
    lock = threading.Lock()
    halfway = threading.Barrier(SERVERS, action=kill)
    threads = [threading.Thread(target=web_server, args=(addresses[i:] + addresses[:i], halfway, tally, lock))
               for i in range(SERVERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Client(addresses[1:] + addresses[:1], r="QUORUM") as c:
        tally["value"] = c.counter_value(PAGE)
    tally["ok"] = tally["acked"] <= tally["value"] <= tally["acked"] + tally["ambiguous"]
    return tally


def main(argv: list[str]) -> int:
    if argv:
        result = run(argv)
    else:
        from quorumkv.cli.localcluster import LocalCluster
        from quorumkv.cli.testing import free_base_port

        with tempfile.TemporaryDirectory(prefix="counter-") as tmp:
            cluster = LocalCluster(tmp)
            cluster.create(3, base_port=free_base_port(6), replicas=3)
            cluster.up()
            try:
                victim = cluster.nodes[2]
                result = run(cluster.addresses(), kill=lambda: cluster.signal(victim, signal.SIGKILL))
            finally:
                cluster.down()
    print(f"counter = {result['value']}; acknowledged increments = {result['acked']}, "
          f"unacknowledged (maybe applied) = {result['ambiguous']}; consistent: {result['ok']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
