"""Anti-entropy and tombstone GC, pure: Merkle trees and their diff, the GC rule, and
NodeCores with anti-entropy installed wired by an in-memory network (no processes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core import messages_ae as m
from quorumkv.core.antientropy import (
    AESettings, gc_candidate, gc_confirmed, gc_holds, install, purge_applies,
)
from quorumkv.core.merkle import (
    BucketCollector, MerkleTree, compare_entries, diff, entry_hash, leaf_of,
)
from quorumkv.core.ring import token
from quorumkv.core.version import Record, Version, pack_ts
from quorumkv.sim.scenario import CoreMesh, MeshClient, store

# ----------------------------------------------------------------------- merkle


def tree_of(entries: dict[bytes, Version], bits: int = 6) -> MerkleTree:
    t = MerkleTree(bits)
    for k, v in entries.items():
        t.add_entry(token(k), k, v)
    return t


def differing_keys_via_tree(a: dict, b: dict, bits: int = 6) -> set[bytes]:
    leaves, _ = diff(tree_of(a, bits), tree_of(b, bits))
    wanted = set(leaves)
    in_a = {k: v for k, v in a.items() if leaf_of(token(k), bits) in wanted}
    in_b = {k: v for k, v in b.items() if leaf_of(token(k), bits) in wanted}
    push, pull = compare_entries(in_a, in_b)
    return set(push) | set(pull)


def test_equal_trees_compare_only_the_root():
    entries = {f"k{i}".encode(): Version(i + 1, "n1") for i in range(100)}
    leaves, compared = diff(tree_of(entries), tree_of(dict(entries)))
    assert (leaves, compared) == ([], 1)


def test_empty_trees_are_equal_and_root_zero():
    assert MerkleTree(4).root == 0
    assert diff(MerkleTree(4), MerkleTree(4)) == ([], 1)


@pytest.mark.parametrize("change", ["missing", "older", "tombstone_newer", "node_tiebreak"])
def test_one_change_is_found_in_exactly_its_leaf(change):
    base = {f"k{i}".encode(): Version(100 + i, "n1") for i in range(200)}
    other = dict(base)
    k = b"k42"
    if change == "missing":
        del other[k]
    elif change == "older":
        other[k] = Version(1, "n1")
    elif change == "tombstone_newer":
        other[k] = Version(10_000, "n2")  # a delete is a version like any other
    else:
        other[k] = Version(base[k].ts, "n9")
    leaves, compared = diff(tree_of(base), tree_of(other))
    assert leaves == [leaf_of(token(k), 6)]
    assert compared == 1 + 2 * 6  # root, then both children at each level on the one path
    assert differing_keys_via_tree(base, other) == {k}


def test_leaves_round_trip_through_bytes():
    t = tree_of({b"a": Version(1, "n1"), b"b": Version(2, "n2")}, bits=5)
    back = MerkleTree.from_leaves_bytes(5, t.leaves_bytes())
    assert back.leaves == t.leaves and back.root == t.root
    with pytest.raises(ValueError):
        MerkleTree.from_leaves_bytes(5, b"\x00" * 7)


def test_entry_hash_depends_on_key_and_version():
    v = Version(5, "n1")
    assert entry_hash(b"k", v) != entry_hash(b"k2", v)
    assert entry_hash(b"k", v) != entry_hash(b"k", Version(6, "n1"))
    assert entry_hash(b"k", v) != entry_hash(b"k", Version(5, "n2"))


versions = st.builds(Version, st.integers(1, 50), st.sampled_from(["n1", "n2", "n3"]))
keysets = st.dictionaries(st.binary(min_size=1, max_size=6), versions, max_size=60)


@settings(max_examples=200, deadline=None)
@given(keysets, keysets, st.integers(1, 8))
def test_diff_finds_exactly_the_differing_keys(a, b, bits):
    expected = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differing_keys_via_tree(a, b, bits) == expected


@settings(max_examples=100, deadline=None)
@given(keysets, keysets)
def test_compare_entries_moves_newest_both_ways(a, b):
    push, pull = compare_entries(a, b)
    after_a = {**a, **{k: b[k] for k in pull}}
    after_b = {**b, **{k: a[k] for k in push}}
    assert after_a == after_b  # one exchange makes both sides equal
    for k in after_a:  # and each holds the newest version either side had
        assert not any(v.newer_than(after_a[k]) for v in (a.get(k), b.get(k)) if v is not None)


def test_bucket_collector_keeps_whole_leaves_under_the_bound():
    c = BucketCollector([1, 2, 3], items_max=3, bytes_max=10**9)
    for leaf, item in [(1, "a"), (3, "x"), (2, "b"), (3, "y"), (2, "c"), (1, "d"), (9, "nope")]:
        c.add(leaf, item, 1)
    assert c.leaves() == [1, 2] or c.leaves() == [1]
    assert c.truncated and 3 in c.dropped
    got = c.collected()
    assert "x" not in got and "y" not in got and "nope" not in got
    assert len(got) <= 3 and "a" in got and "d" in got
    one = BucketCollector([7], items_max=1, bytes_max=1)
    for i in range(5):
        one.add(7, i, 100)
    assert one.leaves() == [7] and len(one.collected()) == 5  # the lowest leaf always stays


# ------------------------------------------------------------------- GC rule

T0 = 1_000_000  # wall ms
GRACE = 10_000
TOMB = Record(Version(pack_ts(T0, 0), "n1"), None)
VALUE = Record(Version(pack_ts(T0, 0), "n1"), b"v")


@pytest.mark.parametrize("rec, plist, now, expect", [
    (TOMB, ("me", "b", "c"), T0 + GRACE, True),
    (TOMB, ("me", "b", "c"), T0 + GRACE - 1, False),  # younger than the grace
    (TOMB, ("b", "me", "c"), T0 + GRACE * 9, False),  # not the first primary: another node drives it
    (VALUE, ("me", "b", "c"), T0 + GRACE * 9, False),  # values are never purged
    (TOMB, (), T0 + GRACE, False),
])
def test_gc_candidate(rec, plist, now, expect):
    assert gc_candidate(rec, plist, "me", now, GRACE) is expect


OLDER = Version(pack_ts(T0 - 5, 0), "n1")
NEWER = Version(pack_ts(T0 + 5, 0), "n1")


@pytest.mark.parametrize("local, expect", [
    (TOMB, True),
    (Record(NEWER, b"v2"), True),  # a newer value: the tombstone is superseded anyway
    (Record(NEWER, None), True),
    (Record(OLDER, b"old"), False),  # the replica missed the delete: purging would resurrect
    (None, False),  # wiped, or never got it
])
def test_gc_holds(local, expect):
    assert gc_holds(local, TOMB.version) is expect


@pytest.mark.parametrize("others, held, expect", [
    (("b", "c"), {"b", "c"}, True),
    (("b", "c"), {"b"}, False),  # c silent, down or lacking it
    (("b", "c"), set(), False),
    ((), set(), True),  # N=1
])
def test_gc_confirmed(others, held, expect):
    assert gc_confirmed(others, held) is expect


@pytest.mark.parametrize("local, expect", [
    (TOMB, True), (Record(NEWER, None), False), (Record(TOMB.version, b"v"), False), (None, False),
])
def test_purge_applies_only_to_exactly_that_tombstone(local, expect):
    assert purge_applies(local, TOMB.version) is expect


# ----------------------------------------------------- cores on an in-memory net

MEMBERS = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, 6)}


class Net(CoreMesh):
    """NodeCores with anti-entropy on the shared harness (``quorumkv.sim.scenario.CoreMesh``:
    the one runtime with FIFO edges and dict disks). A node in ``down`` neither sends
    nor receives: its traffic is dropped, not refused. Time is virtual (``now``)."""

    def __init__(self, ae: AESettings, nodes=MEMBERS, now_ms: int = T0):
        self.ae_settings = ae
        self.ae = {}
        super().__init__(nodes, n=3, report_newer=False, time_ms=now_ms)

    def restart(self, node: str) -> None:
        super().restart(node)
        self.ae[node] = install(self.cores[node], self.ae_settings, self.mono(node))

    @property
    def now(self) -> int:
        return self.time_ms

    @property
    def store(self) -> dict[str, dict[bytes, Record]]:
        return self.disk

    def put(self, nid: str, key: bytes, rec: Record) -> None:
        self.apply_write(nid, key, rec)

    def _deliver_send(self, node: str, peer: str, msg) -> None:
        if peer not in self.down and node not in self.down:
            super()._deliver_send(node, peer, msg)

    def _deliver_respond(self, node: str, conn, msg) -> None:
        if isinstance(conn, MeshClient) or (conn[1] not in self.down and node not in self.down):
            super()._deliver_respond(node, conn, msg)

    def advance(self, ms: int, tick_ms: int = 5) -> None:
        end = self.now + ms
        while self.now < end:
            self.time_ms += tick_ms
            for nid in self.names:
                if nid not in self.down:
                    self.executors[nid].tick()
            self.settle()

    def repair(self, nid: str, ms: int = 5_000) -> m.RepairReply:
        client = MeshClient("operator")
        self.request(client, nid, m.Repair(1))
        for _ in range(ms // 50):
            if client.replies:
                break
            self.advance(50)
        assert client.replies, "repair never answered"
        return client.replies[1]

    def primaries(self, key: bytes):
        return self.cores["n1"].ring.preference_list(key)


def seed(net: Net, keys: int, skip: str | None = None, t: int = T0) -> dict[bytes, Record]:
    """Write every key to its primaries (except ``skip``); every 5th is a tombstone."""
    truth = {}
    for i in range(keys):
        k = f"key{i}".encode()
        rec = Record(Version(pack_ts(t, i), "n1"), None if i % 5 == 0 else f"v{i}".encode())
        truth[k] = rec
        for p in net.primaries(k):
            if p != skip:
                net.put(p, k, rec)
    return truth


def assert_converged(net: Net, truth: dict[bytes, Record]) -> None:
    for k, rec in truth.items():
        for p in net.primaries(k):
            assert net.store[p].get(k) == rec, (k, p)


FAST = AESettings(interval_ms=0, repair_per_s=100_000, keys_per_message=50, scan_chunk_keys=64, leaf_bits=8,
                  gc=False)


def test_repair_restores_a_wiped_replica_values_and_tombstones():
    net = Net(FAST)
    truth = seed(net, 400)
    net.store["n3"].clear()  # wiped
    reply = net.repair("n3")
    assert reply.ok and sorted(reply.peers_synced) == ["n1", "n2", "n4", "n5"], reply
    owned = [k for k in truth if "n3" in net.primaries(k)]
    assert reply.summary["keys_pulled"] == len(owned)
    assert reply.summary["keys_pushed"] == 0
    assert_converged(net, truth)
    stats = net.cores["n3"].statistics()
    assert stats["ae_passes"] == 1 and stats["ae_keys_pulled"] == len(owned)
    # a second pass finds nothing to do and compares one root per peer
    again = net.repair("n3")
    assert again.summary["keys_pulled"] == again.summary["keys_pushed"] == 0
    assert again.summary["buckets_compared"] == 4 and again.summary["buckets_differing"] == 0


def test_repair_pushes_newer_both_ways_and_deletes_win():
    net = Net(FAST)
    truth = seed(net, 200)
    k_del = next(k for k, r in truth.items() if r.value is not None and "n2" in net.primaries(k)
                 and "n1" in net.primaries(k))
    tomb = Record(Version(pack_ts(T0 + 1000, 0), "n2"), None)
    net.put("n2", k_del, tomb)  # only n2 saw the delete
    k_new = next(k for k in truth if "n1" in net.primaries(k) and "n2" in net.primaries(k) and k != k_del)
    newer = Record(Version(pack_ts(T0 + 2000, 0), "n1"), b"fresh")
    net.put("n1", k_new, newer)  # only n1 saw this write
    truth[k_del], truth[k_new] = tomb, newer
    net.repair("n1")
    assert net.store["n1"][k_del] == tomb and net.store["n2"][k_new] == newer
    for nid in net.cores:
        net.repair(nid)
    assert_converged(net, truth)


def test_sessions_are_bounded_and_a_pass_runs_as_many_as_it_needs():
    small = FAST._replace(session_keys_max=20, keys_per_message=7)
    net = Net(small)
    truth = seed(net, 300)
    net.store["n4"].clear()
    reply = net.repair("n4", ms=60_000)
    assert reply.ok
    assert reply.summary["sessions"] > 4  # more than one per peer: truncated sessions continued
    assert_converged(net, truth)


def test_repair_rate_is_throttled_by_the_token_bucket():
    net = Net(FAST._replace(repair_per_s=1_000))
    seed(net, 600)
    net.store["n5"].clear()
    owned = sum(1 for k in (f"key{i}".encode() for i in range(600)) if "n5" in net.primaries(k))
    start = net.now
    net.repair("n5", ms=60_000)
    elapsed_ms = net.now - start
    # the bucket starts full (one second's worth), then 1000 keys/s
    assert elapsed_ms >= (owned - 1_000) * 1000 / 1_000 - 100
    assert net.cores["n5"].statistics()["ae_keys_pulled"] == owned


def test_periodic_sync_converges_without_a_repair_request():
    net = Net(FAST._replace(interval_ms=200))
    truth = seed(net, 150)
    net.store["n2"].clear()
    net.advance(6_000)
    assert_converged(net, truth)
    assert net.cores["n2"].statistics()["ae_passes"] >= 4


def test_a_down_peer_fails_its_session_and_the_pass_goes_on():
    net = Net(FAST)
    seed(net, 100)
    net.down.add("n4")
    net.cores["n1"].membership.detectors.pop("n4", None)
    reply = net.repair("n1", ms=120_000)
    # n4 looks alive to n1 (no time for the detector): its session times out or is
    # failed as down; either way the pass answers and names it
    assert not reply.ok and "n4" in reply.peers_failed
    assert set(reply.peers_synced) == {"n2", "n3", "n5"}


def test_ring_mismatch_is_refused():
    net = Net(FAST)
    core = net.cores["n2"]
    out = core.on_request(("peer", "n1"), m.AETree(9, "n1", 12345, 8, b"\x00" * (8 << 8)), T0)
    assert [type(e.msg) for e in out] == [m.AETreeResp]
    assert out[0].msg.ok is False and "ring" in out[0].msg.error


# ----------------------------------------------------------------- GC in cores

GC = FAST._replace(gc=True, gc_grace_ms=1_000)


def test_gc_purges_only_tombstones_every_primary_holds():
    net = Net(GC)
    truth = seed(net, 200)
    # one key's tombstone missed by a primary, which still has the old value
    k_missed, rec = next((k, r) for k, r in truth.items() if r.value is None)
    p_missed = net.primaries(k_missed)[2]
    old = Record(Version(rec.version.ts - 1, "n1"), b"old")
    net.store[p_missed][k_missed] = old
    net.advance(2_000)  # past the grace (and the ring has been stable that long)
    for nid in net.cores:
        net.repair(nid)
    tombs = [k for k, r in truth.items() if r.value is None]
    # first passes: the anti-entropy fixed k_missed; its GC check may have come first
    for nid in net.cores:
        net.repair(nid)
    gone = [k for k in tombs if all(k not in net.store[p] for p in net.primaries(k))]
    assert len(gone) == len(tombs), (len(gone), len(tombs))
    # nothing came back: no replica holds anything for a deleted key
    for k in tombs:
        assert all(net.store[p].get(k) is None for p in net.cores)
    purged = sum(c.statistics()["tombstones_purged"] for c in net.cores.values())
    assert purged == 3 * len(tombs)
    assert all(net.store[p].get(k) == r for k, r in truth.items() if r.value is not None for p in net.primaries(k))


def test_gc_waits_for_a_down_primary_and_never_resurrects():
    net = Net(GC)
    truth = seed(net, 120)
    k, rec = next((k, r) for k, r in truth.items() if r.value is None and "n5" in net.primaries(k))
    net.store["n5"][k] = Record(Version(rec.version.ts - 1, "n1"), b"old")  # n5 missed the delete
    net.down.add("n5")
    for nid in ("n1", "n2", "n3", "n4"):
        net.cores[nid].membership.detectors["n5"].last_ms = net.mono(nid) - 60_000  # looks dead
    net.advance(3_000)
    for nid in ("n1", "n2", "n3", "n4"):
        net.repair(nid, ms=150_000)
    others = [p for p in net.primaries(k) if p != "n5"]
    assert all(net.store[p].get(k) == rec for p in others)  # not purged while n5 may hold the old value
    net.down.discard("n5")
    for nid in ("n1", "n2", "n3", "n4"):
        net.cores[nid].membership.on_heartbeat("n5", 0, net.mono(nid))
    for _ in range(3):
        for nid in net.cores:
            net.repair(nid)
    assert all(net.store[p].get(k) is None for p in net.cores)  # purged everywhere, old value gone too
