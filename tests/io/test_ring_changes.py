"""Ring changes with streaming, against real processes: join, decommission and
replace under write load, and interrupted changes completing when re-run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from quorumkv import ALL, QUORUM, AsyncClient, Client
from quorumkv.core.ring import Ring
from quorumkv.core.ringchange import plan_moves

from helpers import wait_for

pytestmark = pytest.mark.integration

SETTINGS = {"settle_ms": 600}
KEYS = 600


def preload(cluster, n_keys: int = KEYS, value_bytes: int = 64) -> dict[str, bytes]:
    data = {f"r{i}": (f"{i}-" + "x" * value_bytes).encode() for i in range(n_keys)}

    async def go():
        async with AsyncClient(cluster.addresses()) as c:
            items = list(data.items())
            for start in range(0, len(items), 200):
                await asyncio.gather(*(c.put(k, v, w=ALL) for k, v in items[start:start + 200]))

    asyncio.run(go())
    return data


class Writer:
    """Writes at QUORUM in a thread; remembers the last acknowledged value per key."""

    def __init__(self, addresses, prefix="w", keys=100):
        self.addresses = addresses
        self.prefix = prefix
        self.keys = keys
        self.acked: dict[str, bytes] = {}
        self.failures: list[str] = []
        self.ops = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with Client(self.addresses, timeout_ms=5_000) as c:
            i = 0
            while not self._stop.is_set():
                key, value = f"{self.prefix}{i % self.keys}", f"gen{i}".encode()
                try:
                    c.put(key, value, w=QUORUM)
                    self.acked[key] = value
                    self.ops += 1
                except Exception as exc:
                    self.failures.append(repr(exc))
                i += 1

    def __enter__(self):
        self._thread.start()
        wait_for(lambda: self.ops > 20, 20, "writes flowing")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def node_state(address: str, node_id: str) -> str | None:
    try:
        with Client([address], timeout_ms=2_000) as c:
            return next((mb.state for mb in c.status().members if mb.node == node_id), None)
    except Exception:
        return None


def mid_stream(address: str, counter: str) -> bool:
    """The node's stream has moved some records (``counter``) and is not done yet."""
    try:
        with Client([address], timeout_ms=1_000) as c:
            st = c.status().stats
        return st[counter] > 0 and not st["stream_done"]
    except Exception:
        return False


def assert_placed(cluster, expected: dict[str, bytes], ring_nodes: list[str]) -> None:
    """Every key's value is the expected one on every primary of the final ring."""
    ring = Ring(ring_nodes, 3)
    with Client(cluster.addresses()) as c:
        for key, value in expected.items():
            info = c.inspect(key)
            assert list(info.preference_list) == list(ring.preference_list(key.encode())), key
            primaries = [r for r in info.replicas if r.role == "primary"]
            assert all(r.answered and r.version == info.newest for r in primaries), (key, info)
            assert c.get(key, r=ALL) == value, key


def test_join_under_write_load_loses_nothing_and_places_data(make_cluster):
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster)
    with Writer(cluster.addresses()) as w:
        new = cluster.add_node()
        cluster.start(new)
        cluster.wait_ready([new])
        t0 = time.monotonic()
        wait_for(lambda: node_state(new.address, new.id) == "up", 60, "the new node up")
        join_s = time.monotonic() - t0
        wait_for(lambda: all(node_state(n.address, new.id) == "up" for n in cluster.nodes), 10,
                 "everyone seeing the new node up")
        wait_for(lambda: w.ops > 50, 10, "writes after the join")
    assert not w.failures, w.failures[:3]
    with Client([new.address]) as c:
        stats = c.status().stats
    print(f"\nJOIN streamed={stats['stream_keys_received']} in {join_s:.2f}s (settle 0.6 s)")
    assert stats["stream_keys_received"] > 0
    assert_placed(cluster, {**data, **w.acked}, [n.id for n in cluster.nodes])


def test_decommission_under_write_load_loses_nothing(make_cluster):
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster)
    leaving = cluster.node("n2")
    others = [n for n in cluster.nodes if n.id != "n2"]
    with Writer([n.address for n in others]) as w:
        with Client([leaving.address]) as c:
            c.decommission()
        wait_for(lambda: node_state(leaving.address, "n2") == "left", 60, "n2 left")
        wait_for(lambda: all(node_state(n.address, "n2") == "left" for n in others), 10, "everyone knows")
        wait_for(lambda: w.ops > 50, 10, "writes after the leave")
    assert not w.failures, w.failures[:3]
    cluster.stop(leaving)
    cluster.remove_node("n2")
    assert_placed(cluster, {**data, **w.acked}, [n.id for n in cluster.nodes])


def test_replace_a_killed_node_receives_everything_it_owned(make_cluster):
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster)
    dead = cluster.node("n3")
    cluster.signal(dead, signal.SIGKILL)
    wait_for(lambda: not dead.running(), 10, "n3 dead")
    ring = Ring([n.id for n in cluster.nodes], 3)
    owned = [k for k in data if "n3" in ring.preference_list(k.encode())]
    new = cluster.replace_node("n3")
    cluster.start(new)
    cluster.wait_ready([new])
    wait_for(lambda: node_state(new.address, "n3") == "up", 60, "the replacement up")
    with Client([new.address]) as c:
        assert c.ping().keys >= len(owned)
    with Client([new.address], timeout_ms=5_000) as c:
        status = c.status()
        for key in owned:  # the replacement's own copy, read without repair
            info = c.inspect(key)
            mine = [r for r in info.replicas if r.node == "n3"][0]
            assert mine.answered and mine.value_bytes == len(data[key]) and mine.version == info.newest, (key, mine)
    assert status.stats["stream_keys_received"] >= len(owned)


def test_interrupted_join_completes_when_rerun(make_cluster):
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster, n_keys=2_000, value_bytes=256)
    new = cluster.add_node()
    cluster.start(new)
    cluster.wait_ready([new])

    wait_for(lambda: mid_stream(new.address, "stream_keys_received"), 30, "the join streaming")
    cluster.signal(new, signal.SIGKILL)  # mid-stream
    wait_for(lambda: not new.running(), 10, "the joiner dead")
    cluster.start(new)  # re-run: same config, it joins again and streams what it lacks
    cluster.wait_ready([new])
    wait_for(lambda: node_state(new.address, new.id) == "up", 60, "the re-run join up")
    wait_for(lambda: all(node_state(n.address, new.id) == "up" for n in cluster.nodes if n.running()), 10,
             "everyone seeing it up")
    sample = dict(list(data.items())[::20])
    assert_placed(cluster, sample, [n.id for n in cluster.nodes])


def test_interrupted_decommission_completes_when_rerun(make_cluster):
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster, n_keys=2_000, value_bytes=256)
    leaving = cluster.node("n4")
    # Freeze one new owner so the stream cannot finish before it is interrupted (on an
    # idle machine 2,000 records stream between two polls): its pushes stay unacked,
    # the others' are acked, so the stream is certainly caught mid-way.
    frozen = cluster.node("n5")
    moves = [(src, dst) for src, dst, _ in plan_moves(["n1", "n2", "n3", "n4", "n5"],
                                                      ["n1", "n2", "n3", "n5"], 3, 256)]
    assert any(dst == "n5" for _, dst in moves), moves
    with Client([leaving.address]) as c:
        c.decommission()
    assert cluster.signal(frozen, signal.SIGSTOP)
    try:
        wait_for(lambda: mid_stream(leaving.address, "stream_keys_sent"), 30, "the decommission streaming")
        cluster.signal(leaving, signal.SIGKILL)
        wait_for(lambda: not leaving.running(), 10, "n4 dead")
    finally:
        cluster.signal(frozen, signal.SIGCONT)
    cluster.start(leaving)  # back as a member (up); the operator runs decommission again
    cluster.wait_ready([leaving])
    wait_for(lambda: node_state(leaving.address, "n4") == "up", 10, "n4 back up")
    with Client([leaving.address]) as c:
        c.decommission()
    wait_for(lambda: node_state(leaving.address, "n4") == "left", 60, "n4 left")
    others = [n for n in cluster.nodes if n.id != "n4"]
    wait_for(lambda: all(node_state(n.address, "n4") == "left" for n in others), 10, "everyone knows")
    cluster.stop(leaving)
    cluster.remove_node("n4")
    sample = dict(list(data.items())[::20])
    assert_placed(cluster, sample, [n.id for n in cluster.nodes])


# ----------------------------------------------- issue 10: cleanup, decommission
def qkv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True, text=True,
                          timeout=timeout)


def stats_of(address: str) -> dict:
    with Client([address], timeout_ms=2_000) as c:
        return dict(c.status().stats)


def test_cleanup_drops_exactly_the_leftovers_of_a_join(make_cluster):
    cluster = make_cluster(nodes=4, settings=SETTINGS)
    data = preload(cluster, n_keys=400, value_bytes=16)
    new = cluster.add_node()
    cluster.start(new)
    cluster.wait_ready([new])
    wait_for(lambda: node_state(new.address, new.id) == "up", 60, "the new node up")
    wait_for(lambda: all(node_state(n.address, new.id) == "up" for n in cluster.nodes), 10, "everyone sees it")
    ring = Ring([n.id for n in cluster.nodes], 3)
    replicated = {n.id: sum(1 for k in data if n.id in ring.preference_list(k.encode())) for n in cluster.nodes}
    before = {}
    for n in cluster.nodes:
        with Client([n.address]) as c:
            before[n.id] = c.ping().keys
    leftovers = {nid: before[nid] - replicated[nid] for nid in before}
    assert sum(leftovers.values()) > 0 and leftovers[new.id] == 0, (before, replicated)

    dry = qkv("cleanup", "--dir", cluster.root, "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    rows = {r["node"]: r for r in json.loads(dry.stdout)}
    assert {nid: r["not_replicated"] for nid, r in rows.items()} == leftovers
    assert all(r["dropped"] == 0 for r in rows.values())
    with Client([cluster.node("n1").address]) as c:
        assert c.ping().keys == before["n1"]  # a dry run drops nothing

    run = qkv("cleanup", "--dir", cluster.root, "-o", "json", "--keys-per-s", "20000")
    assert run.returncode == 0, run.stderr
    rows = {r["node"]: r for r in json.loads(run.stdout)}
    assert {nid: r["dropped"] for nid, r in rows.items()} == leftovers
    for n in cluster.nodes:
        with Client([n.address]) as c:
            assert c.ping().keys == replicated[n.id], n.id
    assert_placed(cluster, dict(list(data.items())[::10]), [n.id for n in cluster.nodes])


def test_decommission_waits_for_a_down_new_owner_then_delivers_everything(make_cluster):
    """Issue 10 hole 5 against real processes: n2 down while n4 leaves. The old code
    reached "left, stream_failures 49" with n2 holding none of the keys it gained."""
    cluster = make_cluster(nodes=5, settings=SETTINGS)
    data = preload(cluster, n_keys=300, value_bytes=16)
    after = ["n1", "n2", "n3", "n5"]
    gains = [k for k in data if "n2" in Ring(after, 3).preference_list(k.encode())
             and "n2" not in Ring([n.id for n in cluster.nodes], 3).preference_list(k.encode())]
    assert gains
    down, leaving = cluster.node("n2"), cluster.node("n4")
    cluster.stop(down)
    wait_for(lambda: node_state(leaving.address, "n2") == "down", 20, "n4 sees n2 down")
    with Client([leaving.address]) as c:
        c.decommission()
    # every record for n2 failed at least twice, and n4 has not left
    wait_for(lambda: stats_of(leaving.address)["stream_failures"] >= 2 * len(gains), 60, "pushes to n2 failing")
    st = stats_of(leaving.address)
    assert node_state(leaving.address, "n4") == "leaving", st
    assert st["stream_pending"] == len(gains) and st["stream_undelivered"] == 0, st
    cluster.start(down)
    cluster.wait_ready([down])
    wait_for(lambda: node_state(leaving.address, "n4") == "left", 90, "n4 left once n2 is back")
    st = stats_of(leaving.address)
    assert st["stream_undelivered"] == 0 and st["stream_pending"] == 0
    others = [n for n in cluster.nodes if n.id != "n4"]
    wait_for(lambda: all(node_state(n.address, "n4") == "left" for n in others), 10, "everyone knows")
    with Client([down.address]) as c:
        for key in gains:  # n2's own copy, read without repair
            mine = [r for r in c.inspect(key).replicas if r.node == "n2"][0]
            assert mine.answered and mine.value_bytes == len(data[key]), (key, mine)
    cluster.stop(leaving)
    cluster.remove_node("n4")
    assert_placed(cluster, {k: data[k] for k in gains}, after)


def test_whole_cluster_restart_keeps_a_decommissioned_node_out_of_the_ring(make_cluster):
    """Found by the simulator (issue 10): 'left' was not persisted, so when every node
    restarted at once — their configs still listing the departed node, nobody left
    to gossip that it had gone — it was back in every ring and reads at ALL failed.
    Now each node keeps what it knows of every member, departures included, in
    node-state.json (``SaveMembers``)."""
    cluster = make_cluster(nodes=4, settings=SETTINGS)
    data = preload(cluster, n_keys=60, value_bytes=8)
    leaving = cluster.node("n4")
    others = [n for n in cluster.nodes if n.id != "n4"]
    with Client([leaving.address]) as c:
        c.decommission()
    wait_for(lambda: all(node_state(n.address, "n4") == "left" for n in others), 60, "everyone knows n4 left")
    cluster.stop(leaving)
    for n in others:
        cluster.stop(n)
    for n in others:
        cluster.start(n)
    cluster.wait_ready(others)
    for n in others:
        with Client([n.address]) as c:
            st = c.status()
        assert "n4" not in st.ring and len(st.ring) == 3, (n.id, st.ring)
        assert next(mb.state for mb in st.members if mb.node == "n4") == "left", n.id
    with Client([n.address for n in others]) as c:
        for key, value in data.items():
            assert c.get(key, r=ALL) == value, key


def test_node_state_keeps_the_members_a_node_knew_across_a_restart(tmp_path):
    """The shell's half of ``SaveMembers`` (soak seeds 72, 218, 906): what gossip
    taught a node — a member that joined after the config was written, a
    replacement's new address, a member leaving — is in node-state.json, and a
    server started again on the same directory (same config, listing only the
    initial members) routes by that ring before it hears from anyone."""
    from quorumkv.core import messages as m
    from quorumkv.core.membership import LEAVING, REPLACING, UP, Endpoint
    from quorumkv.shell.config import NodeConfig
    from quorumkv.shell.server import NodeServer
    from quorumkv.cli.testing import free_base_port

    async def main():
        port = free_base_port(1)
        members = {f"n{i}": f"127.0.0.1:{port + i - 1}" for i in (1, 2, 3)}
        cfg = NodeConfig(node_id="n1", listen=members["n1"], data_dir=str(tmp_path), storage="memory",
                         members=members, n=2)
        first = NodeServer(cfg)
        told = [Endpoint("n4", "127.0.0.1:9", 5, 3, UP), Endpoint("n2", "127.0.0.1:8", 6, 1, REPLACING),
                Endpoint("n3", members["n3"], 7, 2, LEAVING)]
        first.run(first.core.on_response("n2", m.GossipAck(0, told, 0), 1_700_000_000_000))
        assert first.core.ring.nodes == ("n1", "n2", "n3", "n4")
        with open(tmp_path / "data" / "node-state.json") as fh:
            assert json.load(fh)["known"]["n4"] == ["127.0.0.1:9", 5, 3, UP]
        again = NodeServer(cfg)
        assert again.core.ring.nodes == ("n1", "n2", "n3", "n4")
        assert again.core.future_ring is not None and again.core.future_ring.nodes == ("n1", "n2", "n4")
        assert again.core.address_of("n2") == "127.0.0.1:8"
        assert again.core.membership.state_of("n3") == LEAVING
    asyncio.run(main())


def test_decommission_below_n_is_refused_and_the_dry_run_says_why(make_cluster):
    cluster = make_cluster(nodes=3, settings=SETTINGS)
    dry = qkv("decommission", "n3", "--dir", cluster.root, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "under-replication" in dry.stdout and "N=3" in dry.stdout and "100.00%" in dry.stdout, dry.stdout
    refused = qkv("decommission", "n3", "--dir", cluster.root)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "refusing to decommission n3" in refused.stderr and "--force" in refused.stderr
    assert node_state(cluster.node("n3").address, "n3") == "up"
    forced = qkv("decommission", "n3", "--dir", cluster.root, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "n3 has left" in forced.stdout


def test_engines_drop_only_exactly_the_scanned_version(tmp_path):
    """Cleanup's storage half: ``drop`` is compare-and-delete on the version (value
    or tombstone), so a write that lands between the scan and the drop is kept."""
    from quorumkv.core.version import Record, Version
    from quorumkv.shell.storage import MemoryEngine, SqliteEngine

    def call(fn, *args):
        got, ev = [], threading.Event()
        fn(*args, lambda ok, result: (got.append((ok, result)), ev.set()))
        assert ev.wait(10)
        return got[0]

    for eng in (MemoryEngine(), SqliteEngine(str(tmp_path / "kv.sqlite3"), fsync=False)):
        try:
            call(eng.write, b"v", Record(Version(100, "n1"), b"value"))
            call(eng.write, b"t", Record(Version(100, "n1"), None))
            call(eng.write, b"raced", Record(Version(200, "n2"), b"newer"))
            for key, version in [(b"v", Version(100, "n2")), (b"v", Version(99, "n1")),
                                 (b"raced", Version(100, "n1")), (b"missing", Version(1, "n1"))]:
                assert call(eng.drop, key, version)[0]
            assert eng.get_now(b"v").value == b"value" and eng.get_now(b"raced").value == b"newer"
            assert call(eng.drop, b"v", Version(100, "n1"))[0] and call(eng.drop, b"t", Version(100, "n1"))[0]
            assert eng.get_now(b"v") is None and eng.get_now(b"t") is None and eng.count() == 1
        finally:
            eng.close()
