"""The core's two clocks (issue 9): every event's ``now_ms`` is monotonic, wall time
comes in apart (``NodeCore.observe_wall_clock``). Stepping one node's WALL clock
(NTP, an operator) by +-10 s must not move its deadlines, its failure detector or
its gossip period, while its HLC still follows the wall clock — monotone, through
the durable ceiling as before. ``CoreMesh``: ``offset_ms`` moves a node's wall clock
only; its monotonic clock (``mono``) runs from a base of its own, far from it.
"""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.sim.scenario import CoreMesh, MeshClient

NODES = ("n1", "n2", "n3")
STEPS_MS = (10_000, -10_000)


class Mesh(CoreMesh):
    """A ``CoreMesh`` that notes every heartbeat a node sends: (mono time, src)."""

    def __init__(self, **kw) -> None:
        self.beats: list[tuple[int, str]] = []
        super().__init__(NODES, **kw)

    def sending(self, node: str, peer: str, msg) -> None:
        if type(msg) is m.Heartbeat:
            self.beats.append((self.time_ms, node))

    def run_ms(self, ms: int, step_ms: int = 5) -> None:
        for _ in range(ms // step_ms):
            self.tick(step_ms)


def put(mesh: Mesh, rid: int, key: bytes = b"k", ttl_ms: int = 0) -> m.Reply:
    client = MeshClient(f"c{rid}")
    reply = mesh.request(client, "n1", m.Put(rid, key, b"v%d" % rid, 2, ttl_ms))
    assert reply is not None and reply.status == m.OK, reply
    return reply


def test_the_meshs_monotonic_clocks_are_far_from_wall_time():
    """Else a wall use fed the monotonic clock would hide (the point of the bases)."""
    mesh = Mesh()
    for node in NODES:
        assert abs(mesh.clock(node) - mesh.mono(node)) > 10**11
    assert len({mesh.mono(x) for x in NODES}) == len(NODES)
    core = mesh.cores["n1"]
    assert core.wall_ms(mesh.mono("n1")) == mesh.clock("n1")


@pytest.mark.parametrize("step_ms", STEPS_MS)
def test_a_wall_clock_step_moves_no_write_deadline(step_ms):
    mesh = Mesh(ceiling=False)
    timeout_ms = mesh.cores["n1"].settings.timeout_ms_write
    mesh.held_to = {"n2", "n3"}  # the round cannot reach W=2: only its deadline ends it
    client = MeshClient("c")
    assert mesh.request(client, "n1", m.Put(1, b"k", b"v", 2)) is None
    mesh.offset_ms["n1"] += step_ms
    mesh.run_ms(timeout_ms - 100)
    assert 1 not in client.replies  # +10 s on the wall clock did not expire it
    mesh.run_ms(200)
    assert client.replies[1].status == m.TIMEOUT  # -10 s did not postpone it


@pytest.mark.parametrize("step_ms", STEPS_MS)
def test_a_wall_clock_step_moves_no_failure_detector(step_ms):
    mesh = Mesh()
    mesh.run_ms(2_000)  # the detectors learn the heartbeat interval
    core = mesh.cores["n1"]
    assert core.is_alive("n2") and core.is_alive("n3")
    mesh.offset_ms["n1"] += step_ms
    mesh.cut = {"n3"}  # n3 falls silent at the moment of the step
    t0 = mesh.time_ms
    while core.is_alive("n3"):
        mesh.tick(5)
        assert core.membership.state_of("n2") == "up"  # +10 s: not even suspected
        assert mesh.time_ms - t0 < 3_000, "n3 not suspected within 3 s"  # -10 s: no delay
    mesh.run_ms(1_000)
    assert core.is_alive("n2") and not core.is_alive("n3")
    assert core.stats["clock_refusing"] == 1  # (its clock is 10 s off the others': it says so)


@pytest.mark.parametrize("step_ms", STEPS_MS)
def test_a_wall_clock_step_moves_no_gossip_period(step_ms):
    mesh = Mesh()
    mesh.run_ms(1_000)

    def beats_in_next(ms: int) -> int:
        t0 = mesh.time_ms
        mesh.run_ms(ms)
        return sum(1 for t, src in mesh.beats if src == "n1" and t > t0)

    before = beats_in_next(2_000)
    assert before >= 2 * 2_000 // mesh.cores["n1"].settings.detector.heartbeat_interval_ms  # to each peer
    mesh.offset_ms["n1"] += step_ms
    after = beats_in_next(2_000)
    assert abs(after - before) <= 2  # not a burst (+10 s), not a 10 s silence (-10 s)


def step_all(mesh: Mesh, ms: int) -> None:
    """Every node's wall clock steps (one bad time source): no node refuses writes."""
    for node in NODES:
        mesh.offset_ms[node] += ms
    mesh.tick(5)


def test_the_hlc_still_follows_the_wall_clock_monotone():
    mesh = Mesh()  # with the durable HLC ceiling, as a real node
    v1 = put(mesh, 1).version
    assert abs(v1.wall_ms - mesh.clock("n1")) <= 5
    saves = mesh.cores["n1"].stats["hlc_ceiling_saves"]
    step_all(mesh, 10_000)
    v2 = put(mesh, 2, ttl_ms=60_000).version
    assert v2.newer_than(v1) and abs(v2.wall_ms - mesh.clock("n1")) <= 5  # forwards with the wall clock
    assert mesh.cores["n1"].stats["hlc_ceiling_saves"] > saves  # past the old ceiling: a new one first
    got = mesh.request(MeshClient("r"), "n1", m.Get(3, b"k", 2))
    assert got.status == m.OK and got.expires_ms == v2.wall_ms + 60_000  # TTLs are wall time too
    step_all(mesh, -20_000)  # now 10 s behind true time
    v3 = put(mesh, 4).version
    assert v3.newer_than(v2)  # never backwards: the HLC keeps the higher time
    assert v3.wall_ms < mesh.clock("n1") + 20_000 + 5


def test_the_wall_clock_a_core_sees_is_the_last_observed():
    """``observe_wall_clock`` is the only way wall time enters a core."""
    mesh = Mesh(ceiling=False)
    core = mesh.cores["n1"]
    now = mesh.mono("n1")
    core.observe_wall_clock(now + 123_456, now)
    assert core.wall_ms(now) == now + 123_456 and core.wall_ms(now + 7) == now + 123_463
