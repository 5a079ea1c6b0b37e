"""Dynamic quorums (core/dynamic.py) and live latency samples (shell/latency.py), pure."""

from __future__ import annotations

import msgspec
import pytest

from quorumkv import Target
from quorumkv.core import dynamic as dyn
from quorumkv.core import messages as m
from quorumkv.core.framing import FrameDecoder, FrameEncoder
from quorumkv.core.limits import PBS_SAMPLES_MAX
from quorumkv.core.node import NodeCore, NodeSettings, Respond, Send
from quorumkv.errors import InvalidRequestError
from quorumkv.shell import latency as lat

GRID = (0.0, 1.0, 5.0, 10.0)


def table(curves, n=3, trials=20_000, write=None):
    """A hand-made model: curves[(r, w)] over GRID."""
    write = write or {w: {"p50": w * 1.0, "p99": w * 2.0, "p99.9": w * 3.0} for w in range(1, n + 1)}
    return dyn.LatencyTable(n=n, samples=dict.fromkeys("wars", 500), trials=trials, computed_ms=1,
                            t_grid_ms=GRID, curves=curves, write_latency_ms=write)


# N=3, W=1: R=1 is stale-ish, R=2 better, R=3 is strict.
T1 = table({(1, 1): (0.50, 0.90, 0.999, 0.9999), (2, 1): (0.80, 0.99, 0.9995, 1.0),
            (1, 2): (0.7, 0.95, 0.9990, 1.0)})


@pytest.mark.parametrize(
    ("p_fresh", "within_ms", "w", "r_max", "want"),
    [
        (0.50, 0.0, 1, None, 1),  # exactly met at the boundary
        (0.5000001, 0.0, 1, None, 2),  # just above: next R
        (0.80, 0.0, 1, None, 2),
        (0.81, 0.0, 1, None, 3),  # only the strict quorum (R+W > N)
        (0.90, 1.0, 1, None, 1),
        (0.90, 4.999, 1, None, 1),  # between grid points: the point below (1 ms) is used
        (0.999, 4.999, 1, None, 3),  # at the 1 ms point R=1 has 0.90, R=2 0.99: only strict
        (0.999, 5.0, 1, None, 1),
        (0.9995, 5.0, 1, None, 2),  # exactly the resolution limit (1 - 10/20000): still trusted
        (0.9996, 10.0, 1, None, 3),  # beyond the Monte Carlo's resolution: strict only
        (1.0, 10.0, 1, None, 3),
        (0.95, 1.0, 2, None, 1),  # with W=2, R=2 is already strict
        (0.96, 1.0, 2, None, 2),
        (0.81, 0.0, 1, 2, None),  # R=3 would be needed but only 2 replicas are up
        (0.80, 0.0, 1, 2, 2),
        (0.5, 0.0, 1, 0, None),  # nothing up
    ],
)
def test_choose_r_boundaries(p_fresh, within_ms, w, r_max, want):
    assert dyn.choose_r(T1, Target(p_fresh, within_ms), w, r_max) == want


def test_choose_r_not_ready_or_bad_w():
    empty = dyn.LatencyTable(n=3, samples={})
    assert dyn.choose_r(empty, Target(0.5), 1) is None
    assert dyn.choose_r(T1, Target(0.5), 4) is None


@pytest.mark.parametrize(("bound", "want"), [(6.0, 3), (5.99, 2), (4.0, 2), (2.0, 1), (1.99, None)])
def test_choose_w_largest_within_p99(bound, want):
    assert dyn.choose_w(T1, bound) == want  # p99 of W is 2*W ms in T1


@pytest.mark.parametrize(("p", "ms"), [(0.0, 0.0), (-0.1, 0.0), (1.01, 0.0), (0.9, -1.0), (0.9, float("inf")),
                                       (0.9, float("nan"))])
def test_bad_targets_are_refused(p, ms):
    with pytest.raises(InvalidRequestError):
        Target(p, ms)


def test_read_level_explains_what_it_cannot_do():
    r, why = dyn.read_level(T1, 0.81, 0.0, 1, 3, live=2)
    assert r is None
    assert "no R meets target P(fresh) >= 0.81 within 0 ms" in why
    assert "R=1: 0.5" in why and "R=2: 0.8" in why and "R>2 needs more live replicas" in why
    r, why = dyn.read_level(None, 0.9, 1.0, 1, 3, live=3)
    assert r is None and "no latency model" in why
    not_ready = dyn.LatencyTable(n=3, samples={"w": 7, "a": 7, "r": 0, "s": 0})
    r, why = dyn.read_level(not_ready, 0.9, 1.0, 1, 3, live=3)
    assert r is None and "W=7, A=7, R=0, S=0" in why and f"needs {dyn.PBS_SAMPLES_MIN}" in why
    r, why = dyn.read_level(T1, 0.9, 1.0, 1, 5, live=5)
    assert r is None and "N=3" in why and "N=5" in why
    w, why = dyn.write_level(T1, 1.0, 3)
    assert w is None and "even W=1 has predicted p99 write latency 2 ms" in why


def test_level_for_refuses_level_and_target_together():
    with pytest.raises(InvalidRequestError, match="either R or a freshness target"):
        dyn.level_for(m.Get(1, b"k", 2, False, False, 0.9, 1.0), T1, 3, 1, 3)
    with pytest.raises(InvalidRequestError, match="needs target_p_fresh"):
        dyn.level_for(m.Get(1, b"k", 0, False, False, 0.0, 1.0), T1, 3, 1, 3)
    with pytest.raises(InvalidRequestError, match="either W or a latency target"):
        dyn.level_for(m.Put(1, b"k", b"v", 2, 0, False, 5.0), T1, 3, 1, 3)
    assert dyn.level_for(m.Put(1, b"k", b"v", 0, 0, False, 4.0), T1, 3, 1, 3) == (2, "")


# ------------------------------------------------------------ the coordinator
def core3(model, w=1):
    members = {f"n{i}": f"127.0.0.1:{9000 + i}" for i in (1, 2, 3)}
    core = NodeCore(NodeSettings("n1", n=3, r=2, w=w, speculative_retry_ms=0), members, now_ms=1_000)
    core.latency_model = model
    return core


def test_coordinator_uses_the_chosen_r_and_reports_it():
    core = core3(T1)
    eff = core.on_request("c", m.Get(7, b"key", 0, False, False, 0.5, 0.0), 1_000)
    reads = [e for e in eff if type(e) is Send and type(e.msg) is m.RepRead]
    local = [e for e in eff if type(e).__name__ == "StoreRead"]
    assert len(reads) + len(local) == 1  # R=1: one replica asked
    # a stricter target asks more replicas
    eff = core.on_request("c", m.Get(8, b"key", 0, False, False, 0.9, 0.0), 1_000)
    reads = [e for e in eff if type(e) is Send and type(e.msg) is m.RepRead]
    local = [e for e in eff if type(e).__name__ == "StoreRead"]
    assert len(reads) + len(local) == 3


def test_coordinator_refuses_without_a_model_and_for_an_impossible_target():
    core = core3(None)
    eff = core.on_request("c", m.Get(7, b"key", 0, False, False, 0.9, 0.0), 1_000)
    (reply,) = [e.msg for e in eff if type(e) is Respond]
    assert reply.status == m.UNAVAILABLE and "no latency model" in reply.message
    core = core3(T1, w=1)
    eff = core.on_request("c", m.Get(8, b"key", 2, False, False, 0.9, 0.0), 1_000)
    (reply,) = [e.msg for e in eff if type(e) is Respond]
    assert reply.status == m.INVALID and "either R or a freshness target" in reply.message
    eff = core.on_request("c", m.Put(9, b"key", b"v", 0, 0, False, 0.5), 1_000)
    (reply,) = [e.msg for e in eff if type(e) is Respond]
    assert reply.status == m.UNAVAILABLE and "no W meets target latency 0.5 ms" in reply.message


# ------------------------------------------------------------ shell: samples
def test_samples_are_bounded_ring_buffers_and_clamped():
    rec = lat.LatencyRecorder(maxlen=5)
    for i in range(12):
        rec.add(True, 1_000, 1_000 + 1_000 * i, 2_000 + 1_000 * i)  # W = i ms, A = 1 ms
    assert rec.counts() == {"w": 5, "a": 5, "r": 0, "s": 0}
    assert rec.snapshot()["w"] == [7.0, 8.0, 9.0, 10.0, 11.0]  # the newest kept
    assert rec.recorded["w"] == 12
    rec.add(False, 5_000, 4_000, 3_000)  # clocks disagree: negative delays clamp to 0
    assert rec.snapshot()["r"] == [0.0] and rec.snapshot()["s"] == [0.0]
    assert lat.LatencyRecorder().maxlen == PBS_SAMPLES_MAX == 10_000


def test_pending_stamps_are_bounded(monkeypatch):
    monkeypatch.setattr(lat, "PENDING_MAX", 3)
    st = lat.PendingStamps()
    for i in range(1, 6):
        st.stamp(i, True)
    assert len(st.sent) == 3
    assert st.take(1, True) is None and st.take(2, True) is None  # evicted, oldest first
    assert st.take(5, True) is not None and st.take(5, True) is None
    assert st.take(4, False) is None  # a read with the same id is another stamp


def test_build_table_from_samples():
    assert not lat.build_table({"w": [1.0] * 99, "a": [1.0] * 500, "r": [1.0] * 500, "s": [1.0] * 500}, 3, 5).ready
    # constant delays: W=3, A=R=S=1 -> commit at 4 ms; a read at t reaches replicas at 4+t+1,
    # every replica got the write at 3 ms: always consistent.
    t = lat.build_table({"w": [3.0] * 200, "a": [1.0] * 200, "r": [1.0] * 200, "s": [1.0] * 200}, 3, 5,
                        trials=1_000)
    assert t.ready and t.trials == 1_000 and set(t.curves) == {(r, w) for r in (1, 2, 3) for w in (1, 2, 3)}
    assert dyn.p_fresh(t, 1, 1, 0.0) == 1.0
    assert t.write_latency_ms[1]["p99"] == pytest.approx(4.0)
    # slow writes to some replicas: W in {0, 50} ms -> R=1 at t=0 is often stale, at 60 ms never
    t = lat.build_table({"w": [0.0, 50.0] * 200, "a": [1.0] * 200, "r": [1.0] * 200, "s": [1.0] * 200}, 3, 5,
                        trials=5_000)
    assert 0.3 < dyn.p_fresh(t, 1, 1, 0.0) < 0.9
    assert dyn.p_fresh(t, 1, 1, 60.0) == 1.0
    assert dyn.choose_r(t, Target(0.99, 0.0), 1) == 3
    assert dyn.choose_r(t, Target(0.99, 60.0), 1) == 1


def test_old_frames_without_the_new_fields_still_decode():
    """Appended fields have defaults: a frame from a node without them decodes."""
    enc = FrameEncoder()
    for old, new_type in ((m.RepWriteAck(1, True), m.RepWriteAck), (m.Get(2, b"k"), m.Get),
                          (m.Reply(3, m.OK), m.Reply)):
        arr = msgspec.msgpack.decode(enc.encode(old)[4:])
        # drop the trailing default fields this release appended
        trimmed = arr[: {m.RepWriteAck: 4, m.Get: 6, m.Reply: 8}[new_type]]
        body = msgspec.msgpack.encode(trimmed)
        (got,) = FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
        assert got == old
