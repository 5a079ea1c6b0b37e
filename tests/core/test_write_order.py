"""Acked writes in real-time order across coordinators (issue 10: "a write that
started after another's ack and lost is a lost write") — pure cores, no I/O.

Two *different* clients (no session floor links them) write one key through two
coordinators whose HLCs have not seen each other's writes. A replica that holds a
newer version than an incoming client write does not apply it and says so
(``RepWriteAck.newer``); the coordinator does not count that ack towards W and
sends the write again above the newer version (``RESTAMPS_MAX``). Strict quorums
intersect, so the later write ends up newer than the acked one at every replica.

``Mesh`` is the shared deterministic executor ``quorumkv.sim.scenario.CoreMesh``:
it delivers messages FIFO, keeps each node's "disk" in a dict with the real
engines' newer-wins rule (and their ``newer`` report, ``store``), and gives each
node its own clock offset; messages towards a node in ``held_to`` wait until
released.
"""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.core import wire
from quorumkv.core import node as node_mod
from quorumkv.core.node import SaveHlcCeiling
from quorumkv.core.version import LOGICAL_BITS, Record, Version
from quorumkv.sim.scenario import MESH_T0_MS, CoreMesh, MeshClient, store

T0 = MESH_T0_MS
NAMES = ("n1", "n2", "n3", "n4")
KEY = b"k"


Client = MeshClient


class Mesh(CoreMesh):
    """The shared executor (``quorumkv.sim.scenario.CoreMesh``) with this file's
    defaults (four nodes) and client helpers for the one key ``KEY``."""

    def __init__(self, names=NAMES, **kw):
        super().__init__(names, **kw)

    def put(self, client, node, value, req_id=None, **kw):
        req_id = req_id or len(client.replies) + 1
        return self.request(client, node, m.Put(req_id, KEY, value, **kw))

    def get(self, client, node, req_id=None, **kw):
        req_id = req_id or len(client.replies) + 1
        return self.request(client, node, m.Get(req_id, KEY, **kw))

    def replicas(self):
        ring = self.cores["n1"].ring
        return ring.preference_list(KEY)


def _two_coordinators(skew_ms: int):
    """Client A writes v1 through the coordinator whose clock is ``skew_ms`` ahead
    (0: the same millisecond, and that coordinator's logical counter is ahead);
    after A's ack client B writes v2 through the other one, whose HLC never saw v1."""
    mesh = Mesh()
    mesh.tick()  # ceilings saved
    prefs = mesh.replicas()
    ahead, behind = prefs[0], prefs[1]  # both replicas of the key: each stores its own write
    mesh.offset_ms[ahead] = skew_ms
    if skew_ms == 0:
        for _ in range(5):  # same ms: the ahead node's logical counter runs ahead
            mesh.cores[ahead].hlc.now(mesh.clock(ahead))
    a, b = Client("a"), Client("b")
    mesh.held_to.add(behind)  # v1's copy to the other coordinator is slow...
    r1 = mesh.put(a, ahead, b"v1", primary_only=True)
    assert r1 is not None and r1.status == m.OK
    mesh.held.clear()  # ...and never arrives
    mesh.held_to.clear()
    assert mesh.cores[behind].hlc.last < r1.version.ts  # its HLC has not seen v1
    r2 = mesh.put(b, behind, b"v2", primary_only=True)
    assert r2 is not None and r2.status == m.OK
    return mesh, prefs, r1, r2


@pytest.mark.parametrize("skew_ms", [0, 50])
def test_later_write_via_a_node_behind_wins_everywhere(skew_ms):
    mesh, prefs, r1, r2 = _two_coordinators(skew_ms)
    assert r2.version.newer_than(r1.version)
    for node in prefs:
        assert mesh.disk[node][KEY].value == b"v2", node
        assert mesh.disk[node][KEY].version == r2.version  # the reply names the version kept
    behind = prefs[1]
    assert mesh.cores[behind].stats["write_restamps"] == 1
    # A strict read after B's ack returns v2, through any node.
    for via in mesh.names:
        assert mesh.get(Client("reader"), via, primary_only=True).value == b"v2"


def test_without_restamps_the_later_write_is_lost(monkeypatch):
    """The control: with no re-stamp the replicas keep v1 and B's acked write is lost."""
    monkeypatch.setattr(node_mod, "RESTAMPS_MAX", 0)
    mesh, prefs, r1, r2 = _two_coordinators(50)
    assert r1.version.newer_than(r2.version)
    assert mesh.disk[prefs[2]][KEY].value == b"v1"


def test_newer_acks_do_not_count_towards_w_and_old_attempt_acks_are_ignored():
    mesh, prefs, r1, r2 = _two_coordinators(50)
    newer = [a for a in mesh.acks if a.newer is not None]
    assert newer and all(a.newer == r1.version for a in newer)
    # Every replica took part in the second attempt: its acks all said "applied".
    behind = mesh.cores[prefs[1]]
    assert not behind.ops  # nothing left open: the first attempt's round is gone
    assert behind.statistics()["rounds_open"] == 0
    assert all(v == 0 for v in behind.load.inflight.values())


def test_equal_version_counts_as_applied():
    disk: dict = {}
    rec = Record(Version(5 << LOGICAL_BITS, "n1"), b"x")
    assert store(disk, KEY, rec) is None
    assert store(disk, KEY, rec) is None  # a retransmit
    older = Record(Version(4 << LOGICAL_BITS, "n9"), b"y")
    assert store(disk, KEY, older) == rec.version


def test_restamps_are_bounded_and_then_answered_as_before(monkeypatch):
    """Replicas that keep holding something newer (here: a version far in the
    future that this coordinator's clock guard refuses to adopt): RESTAMPS_MAX new
    attempts, then newer acks count, the write is acked with its last version."""
    mesh = Mesh(max_clock_skew_ms=100)
    mesh.tick()
    prefs = mesh.replicas()
    far = Record(Version((T0 + 3_600_000) << LOGICAL_BITS, "zz"), b"future")
    for node in prefs:
        mesh.disk[node][KEY] = far
    reply = mesh.put(Client("a"), prefs[0], b"v", primary_only=True)
    assert reply.status == m.OK
    core = mesh.cores[prefs[0]]
    assert core.stats["write_restamps"] == node_mod.RESTAMPS_MAX
    assert far.version.newer_than(reply.version)
    assert mesh.disk[prefs[1]][KEY] == far


def test_restamp_waits_for_the_hlc_ceiling_like_a_new_write():
    """A newer version beyond the durable ceiling: the re-stamp waits for the next
    ceiling save (no timestamp above a saved ceiling is ever issued), then goes."""
    mesh = Mesh()
    mesh.tick()
    prefs = mesh.replicas()
    coord = mesh.cores[prefs[0]]
    ceiling = coord.clock.durable
    # A version at the ceiling: observing it leaves no room to stamp above it without
    # a new save (it is within max_clock_skew_ms + HLC_LEASE_MS, so it is adopted).
    near = Record(Version(ceiling, "zz"), b"near")
    for node in prefs:
        mesh.disk[node][KEY] = near
    saves: list = []
    real_run = mesh.run

    def run(node, effects):
        effects = list(effects)
        if node == prefs[0]:
            saves.extend(e for e in effects if type(e) is SaveHlcCeiling)
        real_run(node, effects)
    mesh.run = run
    client = Client("a")
    assert mesh.put(client, prefs[0], b"v", primary_only=True, req_id=1) is None  # waiting
    assert coord.stats["write_restamps"] == 0 and saves
    mesh.tick()  # the ceiling was saved: the next tick sends the re-stamped write
    reply = client.replies[1]
    assert reply.status == m.OK and coord.stats["write_restamps"] == 1
    assert reply.version.newer_than(near.version)
    assert reply.version.ts <= coord.clock.durable
    assert saves, "the re-stamp asked for a new ceiling"
    for node in prefs:
        assert mesh.disk[node][KEY].value == b"v"


def test_old_frames_without_newer_still_decode():
    import msgspec

    old_frame = msgspec.msgpack.encode([21, 7, True, "", 0])  # tag, id, ok, error, t_us
    ack = msgspec.msgpack.decode(old_frame, type=wire.Response)
    assert type(ack) is m.RepWriteAck and ack.newer is None
    v = Version(42, "n3")
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(m.RepWriteAck(7, True, newer=v)), type=wire.Response)
    assert again.newer == v


def test_simulator_two_clients_later_write_survives_skew():
    """The same on the simulator, judged by its real-time checker: n4's clock is 50 ms
    ahead; client 0 writes v1 via n4; after the ack client 1 (another session)
    writes v2 via n5; a strict read by client 2 must return v2, and so must ALL."""
    from quorumkv.sim.scenario import Scenario, acked, find_key

    sc = Scenario()
    key = find_key(lambda k: not {"n4", "n5"} & set(sc.cluster.ring_view().preference_list(k)))
    sc.cluster.set_skew("n4", 50)
    sc.run_for(100)  # between heartbeats: n5 has seen n4's HLC only as it was 50+ ms ago
    v1 = sc.put("n4", key, b"v1", level=2, client=0)
    sc.run_for(5)
    v2 = sc.put("n5", key, b"v2", level=2, client=1)
    read = sc.get("n1", key, level=2, client=2)
    assert acked(v1) and acked(v2) and v1.complete_us < v2.invoke_us and v2.complete_us <= read.invoke_us
    assert read.value == b"v2"
    verdict = sc.check()
    assert verdict.lost_acked_writes == 0 and verdict.stale_reads == 0, verdict.examples
