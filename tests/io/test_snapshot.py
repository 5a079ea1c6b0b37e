"""Backup and restore (issue 13 part 4): snapshots taken while serving, restored into
wiped nodes, against real node processes.

The claim under test: every write acknowledged before ``quorumkv snapshot`` started
is readable after the whole cluster was wiped and restored from that snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from redis_fixtures import redis_servers  # noqa: F401 - a fixture

from quorumkv.client import Client
from quorumkv.errors import QuorumKVError
from quorumkv.shell.snapshot import (
    Progress, SnapshotError, backup_sqlite, dump_records, finish, read_manifest, restore_node_dir, validate_tag,
)
from quorumkv.shell.storage import SqliteEngine
from quorumkv.core.version import Record, Version

pytestmark = pytest.mark.integration


def qkv(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"quorumkv {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


class Writer(threading.Thread):
    """Writes k0, k1, ... (value v<i>) through every node in turn; records when each was acked."""

    def __init__(self, addresses):
        super().__init__(daemon=True)
        self.addresses = addresses
        self.acked: list[tuple[int, float]] = []  # (i, monotonic time of the ack)
        self.stop = threading.Event()
        self.errors = 0

    def run(self):
        i = 0
        with Client(self.addresses, w="QUORUM") as c:
            while not self.stop.is_set():
                try:
                    c.put(f"k{i}", f"v{i}")
                    self.acked.append((i, time.monotonic()))
                except QuorumKVError:
                    self.errors += 1
                i += 1


def test_snapshot_under_load_wipe_restore_every_acked_write_back(make_cluster):
    cl = make_cluster(nodes=3, replicas=3)
    writer = Writer(cl.addresses())
    writer.start()
    while len(writer.acked) < 300:  # a store worth copying before the snapshot starts
        time.sleep(0.05)
    started = time.monotonic()
    out = qkv("snapshot", "--dir", cl.root, "--tag", "before-wipe", "-o", "json")
    finished = time.monotonic()
    n_after = len(writer.acked)
    while len(writer.acked) < n_after + 50:  # writes after every snapshot completed
        time.sleep(0.05)
    writer.stop.set()
    writer.join()
    report = json.loads(out.stdout)
    assert [r["ok"] for r in report["nodes"]] == [True] * 3, report
    before = [i for i, t in writer.acked if t < started]
    after = [i for i, t in writer.acked if t > finished]
    assert before and after
    for r in report["nodes"]:  # each node's snapshot holds at least every key acked before it began
        assert r["keys"] >= len(before) * 2 // 3, r  # W=2 of 3: each key is on >= 2 nodes

    cl.down()
    for node in cl.nodes:  # wipe: the data directory goes, the snapshots (next to it) stay
        shutil.rmtree(os.path.join(node.dir, "data"))
    refused = qkv("restore", "--dir", cl.root, "--tag", "no-such-tag", check=False)
    assert refused.returncode == 2 and "no manifest.json" in refused.stderr
    qkv("restore", "--dir", cl.root, "--tag", "before-wipe")
    cl.up()

    with Client(cl.addresses(), r="QUORUM") as c:
        missing = [i for i in before if c.get(f"k{i}", default=None) != f"v{i}".encode()]
        assert missing == [], f"{len(missing)} of {len(before)} writes acked before the snapshot lost: {missing[:10]}"
        # Writes acked after every snapshot finished are not there: the data really came from the snapshot.
        assert all(c.get(f"k{i}", default=None) is None for i in after[-20:])


def test_restore_refuses_running_node_and_foreign_snapshot(make_cluster):
    cl = make_cluster(nodes=2, replicas=2)
    with Client(cl.addresses()) as c:
        c.put("a", "1")
    qkv("snapshot", "--dir", cl.root, "--tag", "t1")
    again = qkv("snapshot", "--dir", cl.root, "--tag", "t1", check=False)
    assert again.returncode == 3 and "already exists" in again.stderr
    bad = qkv("snapshot", "--dir", cl.root, "--tag", "../etc", check=False)
    assert bad.returncode == 2 and "bad snapshot tag" in bad.stderr
    running = qkv("restore", "--dir", cl.root, "--tag", "t1", "n1", check=False)
    assert running.returncode == 2 and "n1 still running" in running.stderr
    cl.down()
    n1, n2 = cl.nodes
    foreign = qkv("restore", "--data-dir", n1.dir, "--from", os.path.join(n2.dir, "snapshots", "t1"),
                  "--node-id", "n1", check=False)
    assert foreign.returncode == 2 and "snapshot of 'n2', not of 'n1'" in foreign.stderr


def test_sqlite_backup_is_one_point_in_time_under_writes(tmp_path):
    """The stepwise online backup under a steady writer finishes, and holds exactly
    the rows committed when it began (not a mix, not a restart loop)."""
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"), fsync=False)
    conn = sqlite3.connect(eng.path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO kv (key, ts, node, value) VALUES (?, ?, 'n1', ?)",
                     [(b"k%06d" % i, i + 1, b"x" * 300) for i in range(20_000)])
    conn.execute("COMMIT")
    stop = threading.Event()

    def write():
        i = 10**6
        while not stop.is_set():
            conn.execute("INSERT INTO kv (key, ts, node, value) VALUES (?, ?, 'n1', ?)", (b"w%d" % i, i, b"y"))
            i += 1

    t = threading.Thread(target=write)
    t.start()
    progress = Progress()
    try:
        backup_sqlite(eng.path, str(tmp_path / "snap.sqlite3"), progress)
    finally:
        stop.set()
        t.join()
    snap = sqlite3.connect(tmp_path / "snap.sqlite3")
    assert snap.execute("SELECT COUNT(*) FROM kv WHERE key < ?", (b"l",)).fetchone()[0] == 20_000
    assert progress.total > 0 and progress.done == progress.total
    eng.close()


def test_dump_and_restore_round_trip(tmp_path):
    records = [(b"a", Record(Version(5, "n1", {"n1": 5}), b"1", 0)), (b"b", Record(Version(6, "n2"), None, 0))]
    snap = tmp_path / "snap"
    snap.mkdir()
    dump_records(iter(records), str(snap / "kv.sqlite3"), Progress(), 2)
    man = finish(str(snap), {"node": "n1", "tag": "t", "storage": "memory", "taken_ms": 1}, None)
    assert man["keys"] == 2 and read_manifest(str(snap))["node"] == "n1"
    restore_node_dir(str(snap), str(tmp_path / "node"), node_id="n1")
    eng = SqliteEngine(str(tmp_path / "node" / "data" / "kv.sqlite3"))
    assert eng.get_now(b"a") == records[0][1] and eng.get_now(b"b") == records[1][1]
    eng.close()
    with pytest.raises(SnapshotError, match="not of 'n2'"):
        restore_node_dir(str(snap), str(tmp_path / "node"), node_id="n2")
    for bad in ("", "../x", ".hidden", "a/b", "x" * 65):
        with pytest.raises(SnapshotError):
            validate_tag(bad)


def test_memory_node_snapshot_is_a_dump_that_restores_into_sqlite(make_cluster, tmp_path):
    cl = make_cluster(nodes=1, replicas=1, storage="memory")
    with Client(cl.addresses()) as c:
        for i in range(50):
            c.put(f"m{i}", f"v{i}")
        c.delete("m0")
    out = json.loads(qkv("snapshot", "--node", cl.addresses()[0], "--tag", "mem", "-o", "json").stdout)
    (row,) = out["nodes"]
    assert row["ok"] and row["keys"] == 50  # 49 values and a tombstone
    man = read_manifest(row["path"])
    assert man["storage"] == "memory" and man["node"] == "n1"
    qkv("restore", "--data-dir", str(tmp_path / "restored"), "--from", row["path"], "--node-id", "n1")
    eng = SqliteEngine(str(tmp_path / "restored" / "data" / "kv.sqlite3"))
    try:
        assert eng.get_now(b"m7").value == b"v7" and eng.get_now(b"m0").value is None  # the tombstone kept
    finally:
        eng.close()


def test_one_node_restored_then_repaired_gets_the_later_writes(make_cluster):
    """Cassandra's recipe: restore one node from an older snapshot, then repair — the
    writes made after the snapshot come back to it from the other replicas."""
    cl = make_cluster(nodes=3, replicas=3)
    with Client(cl.addresses(), w="ALL") as c:
        for i in range(40):
            c.put(f"a{i}", "old")
    qkv("snapshot", "--dir", cl.root, "--tag", "t0")
    with Client(cl.addresses(), w="ALL") as c:
        for i in range(40):
            c.put(f"a{i}", "new")
    n1 = cl.nodes[0]
    cl.stop(n1)
    qkv("restore", "--dir", cl.root, "--tag", "t0", "n1")
    cl.up()

    def behind() -> list[str]:
        """Keys whose copy on n1 is not the newest version (inspect: no read repair)."""
        with Client([n1.address]) as c:
            out = []
            for i in range(40):
                rep = c.inspect(f"a{i}")
                mine = [r for r in rep.replicas if r.node == "n1"]
                if not mine or mine[0].version != rep.newest:
                    out.append(f"a{i}")
            return out

    assert len(behind()) == 40  # restored: n1 is back at the snapshot
    qkv("repair", "--node", n1.address)
    assert behind() == []


def test_redis_node_snapshot_dumps_its_records(make_cluster, redis_servers):
    """A node on the Redis engine snapshots by a SCAN dump on a worker thread while
    it serves; the dump holds every record (tombstones too)."""
    (srv,) = redis_servers(1)
    cl = make_cluster(nodes=1, replicas=1, storage="redis", fsync=False,
                      node_overrides={"n1": {"redis_url": srv.url}})
    with Client(cl.addresses()) as c:
        for i in range(30):
            c.put(f"r{i}", f"v{i}")
        c.delete("r0")
    out = json.loads(qkv("snapshot", "--node", cl.addresses()[0], "--tag", "rd", "-o", "json").stdout)
    (row,) = out["nodes"]
    assert row["ok"] and row["keys"] == 30 and read_manifest(row["path"])["storage"] == "redis"
    snap = sqlite3.connect(os.path.join(row["path"], "kv.sqlite3"))
    try:
        assert snap.execute("SELECT value FROM kv WHERE key = ?", (b"r7",)).fetchone() == (b"v7",)
        assert snap.execute("SELECT value FROM kv WHERE key = ?", (b"r0",)).fetchone() == (None,)
    finally:
        snap.close()
