"""A web session store with TTL (Dynamo's own use case), a node killed mid-run.

    python examples/session_store.py              # starts a 3-node cluster itself, kills a node mid-run
    python examples/session_store.py HOST:PORT... # uses your nodes (nothing is killed)

Several web servers (threads, each with its own client talking first to a different
node) log users in (``put`` with ``ttl_ms``: the session expires on its own), refresh
some sessions (a new ``put`` with a fresh TTL: sliding expiry), log some out
(``delete``) and create a few short-lived sessions meant to expire. Halfway through,
one node is SIGKILLed. A session has one writer at a time, so last-writer-wins is the
right model here (no siblings needed); the client's session guarantees give each
server read-your-writes whichever node answers.

At the end, read at QUORUM through a client that starts on another node:

* every acknowledged login that was not logged out reads back with its latest value;
* every acknowledged logout reads as missing;
* every acknowledged short-lived session reads as missing once its TTL has passed.

A request whose connection died mid-way may or may not have landed: such keys are
left out of the checks (an honest client cannot know either).
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time

from quorumkv import Client
from quorumkv.errors import QuorumKVError

SERVERS = 3
USERS_PER_SERVER = 20
#: Sessions that must outlive the run.
SESSION_TTL_MS = 600_000
#: Sessions meant to expire during the run (they are checked after this has passed).
SHORT_TTL_MS = 300


def web_server(name: str, addresses: list[str], halfway: threading.Barrier, out: dict, lock: threading.Lock) -> None:
    live: dict[str, bytes] = {}  # acknowledged, not logged out: session id -> latest value
    gone: set[str] = set()  # acknowledged logouts
    short: set[str] = set()  # acknowledged short-lived sessions
    unsure: set[str] = set()  # a request that may or may not have landed
    with Client(addresses, w="QUORUM", r="QUORUM") as c:
        for i in range(USERS_PER_SERVER):
            if i == USERS_PER_SERVER // 2:
                halfway.wait()
            sid = f"session:{name}:{i}"
            value = json.dumps({"user": f"u{i}", "server": name, "cart": [], "seen": 1}).encode()
            try:
                c.put(sid, value, ttl_ms=SESSION_TTL_MS)
                live[sid] = value
                assert c.get(sid) == value  # read-your-writes, whichever node answers
                if i % 3 == 0:  # the user clicks on: refresh the session (sliding expiry)
                    value = json.dumps({"user": f"u{i}", "server": name, "cart": ["book"], "seen": 2}).encode()
                    c.put(sid, value, ttl_ms=SESSION_TTL_MS)
                    live[sid] = value
                if i % 4 == 1:  # the user logs out
                    c.delete(sid)
                    del live[sid]
                    gone.add(sid)
                if i % 5 == 2:  # a guest session that should simply expire
                    guest = f"session:{name}:guest{i}"
                    c.put(guest, b"{}", ttl_ms=SHORT_TTL_MS)
                    short.add(guest)
            except QuorumKVError:
                live.pop(sid, None)
                gone.discard(sid)
                unsure.add(sid)
    with lock:
        out["live"].update(live)
        out["gone"] |= gone
        out["short"] |= short
        out["unsure"] |= unsure


def run(addresses: list[str], kill=None) -> dict:
    out: dict = {"live": {}, "gone": set(), "short": set(), "unsure": set()}
    lock = threading.Lock()
    halfway = threading.Barrier(SERVERS, action=kill)
    threads = [threading.Thread(target=web_server,
                                args=(f"w{i}", addresses[i:] + addresses[:i], halfway, out, lock))
               for i in range(SERVERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(SHORT_TTL_MS / 1000 * 2)  # let the short sessions' TTL pass (this is the point, not a race)
    lost, resurrected, not_expired = [], [], []
    with Client(addresses[1:] + addresses[:1], r="QUORUM", session=False) as c:
        for sid, value in out["live"].items():
            if c.get(sid, default=None) != value:
                lost.append(sid)
        for sid in out["gone"]:
            if c.get(sid, default=None) is not None:
                resurrected.append(sid)
        for sid in out["short"]:
            if c.get(sid, default=None) is not None:
                not_expired.append(sid)
    out.update(lost=lost, resurrected=resurrected, not_expired=not_expired)
    out["ok"] = not (lost or resurrected or not_expired)
    return out


def main(argv: list[str]) -> int:
    if argv:
        result = run(argv)
    else:
        from quorumkv.cli.localcluster import LocalCluster
        from quorumkv.cli.testing import free_base_port

        with tempfile.TemporaryDirectory(prefix="sessions-") as tmp:
            cluster = LocalCluster(tmp)
            cluster.create(3, base_port=free_base_port(6), replicas=3)
            cluster.up()
            try:
                victim = cluster.nodes[2]
                result = run(cluster.addresses(), kill=lambda: cluster.signal(victim, signal.SIGKILL))
            finally:
                cluster.down()
    print(f"{len(result['live'])} live sessions, {len(result['gone'])} logged out, "
          f"{len(result['short'])} expired guests, {len(result['unsure'])} unsure; "
          f"lost {len(result['lost'])}, back after logout {len(result['resurrected'])}, "
          f"not expired {len(result['not_expired'])}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
