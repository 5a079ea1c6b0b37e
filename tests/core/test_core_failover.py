"""NodeCore under failures: sloppy quorums, hinted handoff, read repair, speculative
retry, coordinator hints, status and inspect. Fake time; peers are declared down by
letting the detector run without their heartbeats."""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.core.hints import HintSettings, record_size
from quorumkv.core.membership import ALIVE, DOWN, SUSPECT
from quorumkv.core.node import (
    SELF,
    DeleteHint,
    LoadHints,
    Log,
    NodeCore,
    Peek,
    Respond,
    Send,
    StoreHint,
    StoreRead,
    StoreWrite,
)
from quorumkv.core.ring import Ring
from quorumkv.core.version import Record, Version, pack_ts
from quorumkv.sim.scenario import CoreMesh, MeshClient

from corekit import NOW, Client, Conn, Solo, new_core, of, only_reply, replies, sends

VNODES = 16
MEMBERS = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, 6)}
KEY = b"user:42"
_RING = Ring(MEMBERS, 3, VNODES)
PRIM = _RING.preference_list(KEY)
EXT = _RING.extended_list(KEY)
C, P2, P3 = PRIM  # C coordinates: it is the key's first primary
F1, F2 = [x for x in EXT if x not in PRIM]  # fallbacks in ring order
MEMBERS3 = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}


def make(node_id=C, members=MEMBERS, **kw) -> NodeCore:
    kw.setdefault("vnodes", VNODES)
    kw.setdefault("read_repair", False)
    kw.setdefault("speculative_retry_ms", 0)
    return new_core(node_id, members, **kw)


def solo(node_id=F1, members=MEMBERS, **kw) -> Solo:
    """``node_id`` on the shared runtime, its peers played by the test."""
    return Solo(node_id, members, vnodes=VNODES, **kw)


def kill(core, dead, t0=NOW, until=NOW + 2_500, step=100):
    """Advance time, feeding heartbeats from every peer except ``dead``; ticks the core.
    Returns (time reached, effects)."""
    out = []
    t = t0
    while t < until:
        t += step
        if (t - t0) % 200 == 0:
            beat(core, [p for p in core.membership.peers() if p not in dead], t, out)
        out += core.tick(t)
    return t, out


def beat(core, peers, t, out=None):
    out = [] if out is None else out
    for p in peers:
        out += core.on_request(Conn(p), m.Heartbeat(0, p, 1), t)
    return out


def rec(ts, node="n9", value=b"v"):
    """A record stamped at NOW (wall), ``ts`` its logical part: ordered by ``ts``, and
    as old as NOW says (hints expire by their record's age)."""
    return Record(Version(pack_ts(NOW, ts), node), value)


# ------------------------------------------------------------- detector + NodeCore
def test_kill_marks_only_the_silent_peer_down():
    core = make()
    t, eff = kill(core, {P3})
    ms = core.membership
    assert ms.liveness[P3] == DOWN
    assert all(ms.liveness[p] == ALIVE for p in ms.peers() if p != P3)
    events = [(e.event, e.fields["peer"]) for e in of(eff, Log) if e.event.startswith("node_")]
    assert events == [("node_suspect", P3), ("node_down", P3)]
    # A heartbeat from it brings it back, logged once.
    eff = core.on_request(Conn(P3), m.Heartbeat(0, P3, 1), t + 1)
    assert [(e.event, e.fields) for e in eff] == [("node_up", {"peer": P3, "was": DOWN})]
    assert ms.is_alive(P3)


# ---------------------------------------------------------------- sloppy writes
def test_write_with_a_dead_primary_goes_to_a_fallback_and_wins_with_its_ack():
    core = make()
    t, _ = kill(core, {P3})
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, KEY, b"v"), t)
    (sw,) = of(eff, StoreWrite)
    rw = sends(eff, m.RepWrite)
    assert sorted((s.peer, s.msg.hint_for) for s in rw) == sorted([(P2, ""), (F1, P3)])
    assert all(s.msg.record == sw.record for s in rw)
    assert core.stats["hinted_writes"] == 1
    assert replies(eff, client) == []
    assert core.on_store_done(sw.token, True, None, t) == []
    (fb,) = [s for s in rw if s.peer == F1]
    reply = only_reply(core.on_response(F1, m.RepWriteAck(fb.msg.id, True), t + 1), client)
    assert reply.status == m.OK


@pytest.mark.parametrize(
    "dead,w,primary_only,status,message",
    [
        # Fallbacks make up for dead primaries (sloppy quorum, the default)...
        ({P3}, 2, False, None, None),
        ({P2, P3}, 2, False, None, None),
        # ...but ALL always means every primary.
        ({P3}, 3, False, m.UNAVAILABLE, f"write needed 3 acks, at most 2 possible ({P3} down)"),
        ({P2, P3}, 3, False, m.UNAVAILABLE, f"write needed 3 acks, at most 1 possible ({P2} down, {P3} down)"),
        # primary_only: only live primaries count, decided at once.
        ({P3}, 3, True, m.UNAVAILABLE, f"write needed 3 acks, at most 2 possible ({P3} down)"),
        ({P2, P3}, 2, True, m.UNAVAILABLE, f"write needed 2 acks, at most 1 possible ({P2} down, {P3} down)"),
        ({P3}, 2, True, None, None),  # two live primaries can still make W=2
        # Not enough live nodes at all, fallbacks included.
        ({P2, P3, F1, F2}, 2, False, m.UNAVAILABLE,
         f"write needed 2 acks, at most 1 possible ({P2} down, {P3} down)"),
    ],
)
def test_write_availability(dead, w, primary_only, status, message):
    core = make()
    t, _ = kill(core, dead)
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, KEY, b"v", w, primary_only=primary_only), t)
    rw = sends(eff, m.RepWrite)
    assert not {s.peer for s in rw} & dead
    if primary_only:
        assert all(s.msg.hint_for == "" for s in rw) and {s.peer for s in rw} <= set(PRIM)
    if w == 3:  # ALL: no fallback is even asked
        assert all(s.msg.hint_for == "" for s in rw)
    if status is None:
        assert replies(eff, client) == []
        assert len(rw) + 1 == (3 if not primary_only else 3 - len(dead))
    else:
        reply = only_reply(eff, client)
        assert (reply.status, reply.message) == (status, message)


def test_primary_only_write_with_dead_primary_never_hints_a_fallback():
    core = make()
    t, _ = kill(core, {P3})
    eff = core.on_request(Conn("c"), m.Put(1, KEY, b"v", 2, primary_only=True), t)
    assert {s.peer for s in sends(eff, m.RepWrite)} == {P2}
    assert core.stats["hinted_writes"] == 0


# ------------------------------------------------------------- fallback replica
def test_fallback_stores_hint_and_acks_after_store_done():
    core = make(F1)
    peer = Conn(C)
    r = rec(5, C, b"hinted")
    eff = core.on_request(peer, m.RepWrite(11, KEY, r, P3), NOW)
    assert [type(e) for e in eff] == [StoreHint]
    assert eff[0][1:] == (P3, KEY, r, NOW)  # the token's shape is the core's business
    assert core.hints_held == {P3: [1, record_size(KEY, b"hinted")]}
    assert core.stats["hints_stored"] == 1
    assert core.on_store_done(eff[0].token, True, None, NOW) == [Respond(peer, m.RepWriteAck(11, True, ""))]


def test_rep_write_hinted_for_ourselves_is_a_plain_write():
    core = make(P3)
    r = rec(5, C)
    eff = core.on_request(Conn(C), m.RepWrite(11, KEY, r, P3), NOW)
    assert [type(e) for e in eff] == [StoreWrite]
    assert core.hints_held == {}


def test_hint_admission_refused_acks_not_ok_and_counts():
    size = record_size(KEY, b"x" * 36)
    core = make(F1, hints=HintSettings(bytes_max_per_target=2 * size))
    peer = Conn(C)
    for i in (1, 2):  # exactly at the cap: admitted
        (eff,) = core.on_request(peer, m.RepWrite(i, KEY, rec(i, C, b"x" * 36), P3), NOW)
        assert type(eff) is StoreHint
    eff = core.on_request(peer, m.RepWrite(3, KEY, rec(3, C, b"x" * 36), P3), NOW)
    (resp,) = of(eff, Respond)
    assert resp.conn is peer and resp.msg.id == 3 and resp.msg.ok is False
    assert f"hints for {P3} are full" in resp.msg.error
    assert not of(eff, StoreHint)
    (log,) = of(eff, Log)
    assert log.event == "hint_dropped" and log.fields["reason"] == "bytes"
    assert core.stats["hints_dropped_bytes"] == 1 and core.stats["hints_stored"] == 2
    assert core.hints_held[P3] == [2, 2 * size]
    # Hints for another target have their own budget.
    (eff,) = core.on_request(peer, m.RepWrite(4, KEY, rec(4, C, b"x" * 36), P2), NOW)
    assert type(eff) is StoreHint


def test_coordinator_fails_write_when_fallback_refuses_hint():
    core = make(w=2)
    t, _ = kill(core, {P2, P3})
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, KEY, b"v"), t)
    fbs = {s.peer: s for s in sends(eff, m.RepWrite)}
    assert set(fbs) == {F1, F2}
    assert replies(core.on_response(F1, m.RepWriteAck(fbs[F1].msg.id, False, "hints full"), t), client) == []
    reply = only_reply(core.on_response(F2, m.RepWriteAck(fbs[F2].msg.id, False, "hints full"), t), client)
    assert reply.status == m.UNAVAILABLE and f"{F1} failed: hints full" in reply.message


# ------------------------------------------------------------------ hint replay
def test_hint_replay_after_owner_returns():
    core = make(F1, hints=HintSettings(age_ms_max=60_000))
    t, eff = kill(core, {P3})
    assert not of(eff, LoadHints)
    peer = Conn(C)
    r_live = rec(7, C, b"live")
    (sh,) = core.on_request(peer, m.RepWrite(1, KEY, r_live, P3), t)
    core.on_store_done(sh.token, True, None, t)
    # While P3 is down, no replay, however long we wait.
    t2, eff = kill(core, {P3}, t0=t, until=t + 1_000)
    assert not of(eff, LoadHints)
    # P3 comes back: the next tick loads its hints.
    t3 = t2 + 1
    core.on_request(Conn(P3), m.Heartbeat(0, P3, 2), t3)
    (lh,) = of(core.tick(t3), LoadHints)
    assert lh.owner == P3 and lh.limit == 1
    # Storage returns the live hint and one whose *record* is from long ago, though
    # the hint was stored just now (a coordinator hints at its write deadline): the
    # record's age counts (issue 10: tombstone GC's grace must outlast it).
    r_old = Record(Version(pack_ts(t3 - 60_001, 0), C), b"old")
    core.hints_held[P3][0] += 1  # that one was counted too
    core.hints_held[P3][1] += record_size(b"k-old", b"old")
    eff = core.on_hints_loaded(P3, [("h-live", KEY, r_live, t), ("h-old", b"k-old", r_old, t3 - 1)], t3)
    (send,) = sends(eff)
    assert send.peer == P3 and send.msg == m.RepWrite(send.msg.id, KEY, r_live, "")
    assert of(eff, DeleteHint) == [DeleteHint("h-old")]
    assert core.stats["hints_dropped_age"] == 1
    assert [lg.fields["reason"] for lg in of(eff, Log)] == ["age"]
    # No second load while the batch is in flight.
    assert not of(core.tick(t3 + 10), LoadHints)
    assert core.on_response(P3, m.RepWriteAck(send.msg.id, True), t3 + 20) == [DeleteHint("h-live")]
    assert core.stats["hints_replayed"] == 1
    assert core.hints_held[P3] == [0, 0]
    assert not of(core.tick(t3 + 5_000), LoadHints)


def test_hint_not_deleted_when_owner_refuses_and_retried_later():
    core = make(F1)
    core.hints_held[P3] = [1, 100]
    (lh,) = of(core.tick(NOW), LoadHints)
    (send,) = sends(core.on_hints_loaded(P3, [("h1", KEY, rec(1), NOW)], NOW))
    assert core.on_response(P3, m.RepWriteAck(send.msg.id, False, "disk full"), NOW) == []
    assert core.hints_held[P3] == [1, 100]
    assert of(beat(core, [P3], NOW + 600) + core.tick(NOW + 600), LoadHints) == [LoadHints(P3, 1)]


@pytest.mark.parametrize("failure", ["timeout", "send_failed", "peer_lost"])
def test_hint_replay_failure_does_not_delete(failure):
    core = make(F1, timeout_ms_write=300)
    core.hints_held[P3] = [1, 100]
    of(core.tick(NOW), LoadHints)
    (send,) = sends(core.on_hints_loaded(P3, [("h1", KEY, rec(1), NOW)], NOW))
    if failure == "timeout":
        assert not of(core.tick(NOW + 299), DeleteHint)
        eff = core.tick(NOW + 300)
    elif failure == "send_failed":
        eff = core.on_send_failed(P3, send.msg, "queue full", NOW + 1)
    else:
        eff = core.on_peer_lost(P3, "reset", NOW + 1)
    assert not of(eff, DeleteHint)
    assert core.hints_held[P3] == [1, 100] and core.handoff.replays == {} and core.owners == {}
    # A late ack for the abandoned send changes nothing.
    assert core.on_response(P3, m.RepWriteAck(send.msg.id, True), NOW + 400) == []
    assert core.hints_held[P3] == [1, 100]


def test_empty_load_resyncs_the_count():
    core = make(F1)
    core.hints_held[P3] = [5, 500]
    of(core.tick(NOW), LoadHints)
    assert core.on_hints_loaded(P3, [], NOW) == []
    assert core.hints_held[P3] == [0, 0]
    assert not of(core.tick(NOW + 2_000), LoadHints)


@pytest.mark.parametrize("rate,seconds", [(3, 4), (20, 2), (7, 3)])
def test_replay_rate_bounded_by_token_bucket(rate, seconds):
    net = solo(hints=HintSettings(replay_per_s=rate))
    core = net.core
    for i in range(200):
        net.from_peer(C, m.RepWrite(i + 1, b"k%d" % i, rec(i + 1, C), P3))
    assert net.hint_count(P3) == 200 == core.hints_held[P3][0]
    sent_at = []
    t = NOW
    while t < NOW + seconds * 1_000:
        t += 50
        # Storage loads the hints; the core sends them; P3 acks at once.
        net.at(t, beats=core.membership.peers())
        for peer, msg in net.sent(m.RepWrite):
            assert peer == P3
            sent_at.append(t)
            net.answer(P3, m.RepWriteAck(msg.id, True))
    # One second's burst, then the rate.
    allowed = rate + rate * (t - NOW - 50) / 1000  # burst at the first tick, then the rate
    assert allowed - 1 <= len(sent_at) <= allowed
    assert len([x for x in sent_at if x <= NOW + 50]) == rate  # the burst
    assert net.hint_count(P3) == 200 - len(sent_at) == core.hints_held[P3][0]
    assert core.stats["hints_replayed"] == len(sent_at)


def test_replay_batch_limited_by_replay_batch_max():
    core = make(F1, hints=HintSettings(replay_batch_max=4))
    core.hints_held[P3] = [100, 10_000]
    assert of(core.tick(NOW), LoadHints) == [LoadHints(P3, 4)]


def test_partial_replay_failure_does_not_reload_while_others_are_in_flight():
    """One replay send failing must not start a second batch while the rest of the
    first is still in flight: the duplicates' acks would be counted twice, the held
    count would go to zero or below with hints still stored, and those hints (and
    every later one) would never be replayed."""
    net = solo(hints=HintSettings(replay_per_s=1_000))
    core = net.core
    for i in range(3):
        net.from_peer(C, m.RepWrite(i + 1, b"k%d" % i, rec(i + 1, C), P3))
    net.sent()
    net.at(NOW)
    (_, s1), (_, s2), (_, s3) = net.sent(m.RepWrite)
    net.time_ms = NOW + 1
    net.send_failed(P3, s1, "queue full")
    t = NOW + 1_000
    net.at(t, beats=core.membership.peers())
    again = [msg for _, msg in net.sent(m.RepWrite)]
    for msg in [s2, s3] + again:
        net.answer(P3, m.RepWriteAck(msg.id, True))
    for _step in range(1, 6):  # let any remaining hint be replayed
        t += 200
        net.at(t, beats=core.membership.peers())
        for _, msg in net.sent(m.RepWrite):
            net.answer(P3, m.RepWriteAck(msg.id, True))
    assert net.hint_count(P3) == 0
    assert core.hints_held[P3] == [0, 0]
    # A new hint for P3 is replayed too.
    net.from_peer(C, m.RepWrite(9, b"new", rec(9, C), P3))
    t += 200
    net.at(t, beats=core.membership.peers())
    assert [msg.key for _, msg in net.sent(m.RepWrite)] == [b"new"]


# ------------------------------------------------------------------ read repair
def test_async_read_repair_waits_for_all_contacted_replies_then_fixes_stale_primary():
    core = make(read_repair=True, read_all_replicas=True)
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    assert set(rr) == {P2, P3}
    new, old = rec(20, C, b"new"), rec(10, C, b"old")
    assert core.on_store_done(sr.token, True, new, NOW) == []
    eff = core.on_response(P2, m.RepReadResp(rr[P2].id, True, old), NOW + 1)
    assert only_reply(eff, client).value == b"new"
    assert sends(eff) == []  # P3 still out: no repair yet
    eff = core.on_response(P3, m.RepReadResp(rr[P3].id, True, new), NOW + 2)
    assert eff == [Send(P2, m.RepWrite(0, KEY, new, ""))]
    assert core.stats["read_repairs"] == 1
    assert core.statistics()["rounds_open"] == 0


@pytest.mark.parametrize(
    "self_rec,p2_rec,p3_rec,repaired",
    [
        (rec(20), rec(20), rec(20), []),  # all agree
        (rec(20), None, rec(20), [P2]),  # missing copy
        (rec(20), rec(10), rec(15), [P2, P3]),
        (rec(10), rec(20), rec(20), [C]),  # the coordinator itself is stale
        (rec(20), rec(20, value=None), rec(20), []),  # same version (tombstone or not): nothing
        (rec(10), rec(30, value=None), None, [C, P3]),  # a newer tombstone is repaired too
    ],
)
def test_async_read_repair_targets(self_rec, p2_rec, p3_rec, repaired):
    core = make(read_repair=True, read_all_replicas=True, r=3)
    eff = core.on_request(Conn("c"), m.Get(1, KEY), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    out = core.on_store_done(sr.token, True, self_rec, NOW)
    out += core.on_response(P2, m.RepReadResp(rr[P2].id, True, p2_rec), NOW)
    out += core.on_response(P3, m.RepReadResp(rr[P3].id, True, p3_rec), NOW)
    newest = max((r for r in (self_rec, p2_rec, p3_rec) if r), key=lambda r: r.version.key())
    got = sorted(s.peer for s in sends(out, m.RepWrite))
    if C in repaired:
        (sw,) = of(out, StoreWrite)
        assert sw.record == newest and sw.token == ("w", SELF, 0)
        got.append(C)
    else:
        assert not of(out, StoreWrite)
    assert sorted(got) == sorted(repaired)
    assert all(s.msg == m.RepWrite(0, KEY, newest, "") for s in sends(out, m.RepWrite))
    assert core.stats["read_repairs"] == len(repaired)


def test_read_repair_skips_fallbacks():
    core = make(read_repair=True, r=2)
    t, _ = kill(core, {P2, P3})
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY), t)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    assert set(rr) == {F1} and rr[F1].hint_for == P2
    new = rec(20, C, b"new")
    out = core.on_store_done(sr.token, True, new, t)
    out += core.on_response(F1, m.RepReadResp(rr[F1].id, True, None), t)
    assert only_reply(out, client).value == b"new"
    assert sends(out, m.RepWrite) == [] and core.stats["read_repairs"] == 0


def test_no_read_repair_when_disabled():
    core = make(read_repair=False, read_all_replicas=True, r=3)
    eff = core.on_request(Conn("c"), m.Get(1, KEY), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    out = core.on_store_done(sr.token, True, rec(20), NOW)
    out += core.on_response(P2, m.RepReadResp(rr[P2].id, True, None), NOW)
    out += core.on_response(P3, m.RepReadResp(rr[P3].id, True, rec(1)), NOW)
    assert sends(out) == [] and not of(out, StoreWrite)


def start_blocking_read(core, client, t=NOW):
    eff = core.on_request(client, m.Get(1, KEY, blocking_repair=True), t)
    (sr,) = of(eff, StoreRead)
    (rd,) = sends(eff, m.RepRead)  # R=2 and ties go to self: self plus one peer
    return sr, rd


def test_blocking_read_repair_holds_reply_until_repair_ack():
    core = make(read_repair=True)
    client = Conn("c")
    sr, rd = start_blocking_read(core, client)
    new, old = rec(20, C, b"new"), rec(10, C, b"old")
    assert core.on_store_done(sr.token, True, new, NOW) == []
    eff = core.on_response(rd.peer, m.RepReadResp(rd.msg.id, True, old), NOW + 1)
    assert replies(eff, client) == []
    (rep,) = sends(eff, m.RepWrite)
    assert rep.peer == rd.peer and rep.msg.record == new and rep.msg.id != 0
    eff = core.on_response(rd.peer, m.RepWriteAck(rep.msg.id, True), NOW + 2)
    reply = only_reply(eff, client)
    assert (reply.status, reply.value) == (m.OK, b"new")
    assert core.statistics()["rounds_open"] == 0


def test_blocking_read_repair_waits_for_every_repair_ack():
    core = make(read_repair=True, r=3)
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY, blocking_repair=True), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    new = rec(20, C, b"new")
    out = core.on_store_done(sr.token, True, new, NOW)
    out += core.on_response(P2, m.RepReadResp(rr[P2].id, True, rec(10)), NOW)
    out += core.on_response(P3, m.RepReadResp(rr[P3].id, True, None), NOW)
    assert replies(out, client) == []
    reps = {s.peer: s.msg for s in sends(out, m.RepWrite)}
    assert set(reps) == {P2, P3} and all(r.record == new for r in reps.values())
    assert replies(core.on_response(P3, m.RepWriteAck(reps[P3].id, True), NOW + 1), client) == []
    assert only_reply(core.on_response(P2, m.RepWriteAck(reps[P2].id, True), NOW + 2), client).value == b"new"


def test_blocking_read_repair_of_the_coordinator_itself():
    core = make(read_repair=True)
    client = Conn("c")
    sr, rd = start_blocking_read(core, client)
    new, old = rec(20, C, b"new"), rec(10, C, b"old")
    core.on_store_done(sr.token, True, old, NOW)
    eff = core.on_response(rd.peer, m.RepReadResp(rd.msg.id, True, new), NOW)
    assert replies(eff, client) == []
    (sw,) = of(eff, StoreWrite)
    assert sw.record == new
    reply = only_reply(core.on_store_done(sw.token, True, None, NOW + 1), client)
    assert reply.value == b"new"


def test_blocking_read_repair_without_ack_answers_at_deadline():
    core = make(read_repair=True, timeout_ms_read=400)
    client = Conn("c")
    sr, rd = start_blocking_read(core, client)
    core.on_store_done(sr.token, True, rec(20, C, b"new"), NOW)
    eff = core.on_response(rd.peer, m.RepReadResp(rd.msg.id, True, None), NOW)
    assert replies(eff, client) == [] and len(sends(eff, m.RepWrite)) == 1
    assert replies(core.tick(NOW + 399), client) == []
    reply = only_reply(core.tick(NOW + 400), client)
    assert (reply.status, reply.value) == (m.OK, b"new")
    assert core.statistics()["rounds_open"] == 0


def test_blocking_read_with_nothing_stale_answers_at_once():
    core = make(read_repair=True)
    client = Conn("c")
    sr, rd = start_blocking_read(core, client)
    core.on_store_done(sr.token, True, rec(20), NOW)
    eff = core.on_response(rd.peer, m.RepReadResp(rd.msg.id, True, rec(20)), NOW)
    assert only_reply(eff, client).status == m.OK and sends(eff) == []


# ------------------------------------------------------------ speculative retry
@pytest.mark.parametrize("delay", [5, 20, 100])
def test_speculative_retry_sends_to_spare_after_delay(delay):
    core = make(speculative_retry_ms=delay)
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY), NOW)
    (sr,) = of(eff, StoreRead)
    (first,) = sends(eff, m.RepRead)
    spare = ({P2, P3} - {first.peer}).pop()
    core.on_store_done(sr.token, True, rec(5), NOW)
    assert sends(core.tick(NOW + delay - 1), m.RepRead) == []
    (retry,) = sends(core.tick(NOW + delay), m.RepRead)
    assert retry.peer == spare and retry.msg.id == first.msg.id and retry.msg.hint_for == ""
    assert core.stats["speculative_retries"] == 1
    assert sends(core.tick(NOW + 2 * delay), m.RepRead) == []  # once only
    reply = only_reply(core.on_response(spare, m.RepReadResp(retry.msg.id, True, rec(9, value=b"s")), NOW + delay + 1),
                       client)
    assert (reply.status, reply.value) == (m.OK, b"s")


def test_no_speculative_retry_when_answered_in_time_or_disabled():
    for kw in ({"speculative_retry_ms": 20}, {"speculative_retry_ms": 0}):
        core = make(**kw)
        client = Conn("c")
        eff = core.on_request(client, m.Get(1, KEY), NOW)
        (sr,) = of(eff, StoreRead)
        if kw["speculative_retry_ms"]:
            core.on_store_done(sr.token, True, None, NOW)
            (first,) = sends(eff, m.RepRead)
            only_reply(core.on_response(first.peer, m.RepReadResp(first.msg.id, True, None), NOW + 1), client)
        assert sends(core.tick(NOW + 50), m.RepRead) == []
        assert core.stats["speculative_retries"] == 0


def test_speculative_retry_to_a_fallback_reads_its_hints():
    core = make(speculative_retry_ms=20)
    t, _ = kill(core, {P3})
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY), t)
    (sr,) = of(eff, StoreRead)
    (first,) = sends(eff, m.RepRead)
    assert first.peer == P2
    core.on_store_done(sr.token, True, rec(5, value=b"old"), t)
    (retry,) = sends(core.tick(t + 20), m.RepRead)
    assert (retry.peer, retry.msg.hint_for) == (F1, P3)
    reply = only_reply(core.on_response(F1, m.RepReadResp(retry.msg.id, True, rec(9, value=b"hint")), t + 21),
                       client)
    assert reply.value == b"hint"


def test_failed_read_replica_replaced_by_spare():
    core = make()
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY), NOW)
    (sr,) = of(eff, StoreRead)
    (first,) = sends(eff, m.RepRead)
    spare = ({P2, P3} - {first.peer}).pop()
    eff = core.on_peer_lost(first.peer, "reset", NOW + 1)
    (again,) = sends(eff, m.RepRead)
    assert again.peer == spare
    core.on_store_done(sr.token, True, None, NOW)
    assert only_reply(core.on_response(spare, m.RepReadResp(again.msg.id, True, None), NOW + 2),
                      client).status == m.NOT_FOUND


def test_replica_read_of_hints_uses_read_hint():
    core = make(F1)
    peer = Conn(C)
    (eff,) = core.on_request(peer, m.RepRead(4, KEY, P3), NOW)
    assert type(eff).__name__ == "ReadHint" and eff.key == KEY
    r = rec(1)
    assert core.on_store_done(eff.token, True, r, NOW) == [Respond(peer, m.RepReadResp(4, True, r, ""))]


# ------------------------------------------------------------- coordinator hints
@pytest.mark.parametrize("how", ["send_failed", "peer_lost", "timeout"])
def test_coordinator_hints_a_replica_that_misses_the_write(how):
    core = make("n1", members=MEMBERS3, vnodes=VNODES, timeout_ms_write=500)
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, KEY, b"v"), NOW)
    (sw,) = of(eff, StoreWrite)
    rw = {s.peer: s for s in sends(eff, m.RepWrite)}
    assert set(rw) == {"n2", "n3"}
    core.on_store_done(sw.token, True, None, NOW)
    only_reply(core.on_response("n2", m.RepWriteAck(rw["n2"].msg.id, True), NOW), client)
    if how == "send_failed":
        eff = core.on_send_failed("n3", rw["n3"].msg, "queue full", NOW + 1)
    elif how == "peer_lost":
        eff = core.on_peer_lost("n3", "reset", NOW + 1)
    else:
        assert not of(core.tick(NOW + 499), StoreHint)
        eff = core.tick(NOW + 500)
    (hint,) = of(eff, StoreHint)
    assert (hint.owner, hint.key, hint.record, hint.created_ms) == ("n3", KEY, sw.record, hint.created_ms)
    assert core.hints_held == {"n3": [1, record_size(KEY, b"v")]}
    assert replies(eff, client) == []  # the client already has its answer
    assert core.on_store_done(hint.token, True, None, NOW + 2) == []
    assert core.statistics()["rounds_open"] == 0
    # Nothing more for n3 after the round is closed.
    assert not of(core.on_peer_lost("n3", "again", NOW + 600), StoreHint)


def test_coordinator_hint_for_a_failed_fallback_names_the_dead_primary():
    core = make()
    t, _ = kill(core, {P3})
    eff = core.on_request(Conn("c"), m.Put(1, KEY, b"v"), t)
    (fb,) = [s for s in sends(eff, m.RepWrite) if s.peer == F1]
    (hint,) = of(core.on_send_failed(F1, fb.msg, "queue full", t), StoreHint)
    assert hint.owner == P3


def test_no_coordinator_hint_for_replicas_that_acked_or_failed_the_write():
    core = make("n1", members=MEMBERS3, vnodes=VNODES, timeout_ms_write=500)
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, KEY, b"v", 3), NOW)
    (sw,) = of(eff, StoreWrite)
    rw = {s.peer: s for s in sends(eff, m.RepWrite)}
    core.on_store_done(sw.token, True, None, NOW)
    core.on_response("n2", m.RepWriteAck(rw["n2"].msg.id, True), NOW)
    eff = core.on_response("n3", m.RepWriteAck(rw["n3"].msg.id, False, "disk"), NOW)
    assert only_reply(eff, client).status == m.UNAVAILABLE
    assert not of(eff, StoreHint)
    assert not of(core.on_peer_lost("n2", "reset", NOW + 1), StoreHint)
    assert not of(core.tick(NOW + 1_000), StoreHint)


def test_coordinator_hint_refused_by_byte_cap():
    core = make("n1", members=MEMBERS3, vnodes=VNODES, hints=HintSettings(bytes_max_per_target=10))
    eff = core.on_request(Conn("c"), m.Put(1, KEY, b"v"), NOW)
    n3 = [s for s in sends(eff, m.RepWrite) if s.peer == "n3"][0]
    eff = core.on_send_failed("n3", n3.msg, "queue full", NOW)
    assert not of(eff, StoreHint)
    assert core.stats["hints_dropped_bytes"] == 1


# ----------------------------------------------------------------------- status
def test_status_lists_members_with_states():
    core = make(read_repair=False)
    t, _ = kill(core, {P3}, until=NOW + 2_500)
    t, _ = kill(core, {P3, P2}, t0=t, until=t + 1_000)  # P2 silent for 1 s: suspect, not yet down
    core.hints_held[P3] = [4, 400]
    client = Conn("c")
    (resp,) = core.on_request(client, m.Status(5), t)
    st = resp.msg
    assert resp.conn is client and type(st) is m.StatusReply and st.id == 5 and st.node == C
    views = {v.node: v for v in st.members}
    assert sorted(views) == sorted(MEMBERS)
    expected = {n: ALIVE.shown for n in MEMBERS}  # shown as "up"
    expected[P3] = DOWN
    expected[P2] = SUSPECT
    assert {n: v.state for n, v in views.items()} == expected
    assert all(v.status == "up" and v.address == MEMBERS[n] for n, v in views.items())
    assert views[P3].phi > 8 and views[P2].phi >= 8 and views[F1].phi < 1 and views[C].phi == 0.0
    assert st.ring == sorted(MEMBERS)
    assert st.hints == {P3: 4}
    assert st.stats["hints_held"] == 4 and "rounds_open" in st.stats


# ---------------------------------------------------------------------- inspect
def test_inspect_collects_peeks_with_roles_versions_tombstones():
    core = make()
    client = Conn("c")
    eff = core.on_request(client, m.Inspect(3, KEY), NOW)
    (peek,) = of(eff, Peek)
    assert peek.key == KEY and peek.token[1] is SELF
    rp = {s.peer: s.msg for s in sends(eff, m.RepPeek)}
    assert set(rp) == set(MEMBERS) - {C}
    v_new, v_tomb, v_hint = rec(30, C, b"abc"), rec(20, P2, None), rec(40, C, b"hinted!")
    out = core.on_store_done(peek.token, True, (v_new, []), NOW)
    out += core.on_response(P2, m.RepPeekResp(rp[P2].id, v_tomb, []), NOW)
    out += core.on_response(P3, m.RepPeekResp(rp[P3].id, None, []), NOW)
    out += core.on_response(F1, m.RepPeekResp(rp[F1].id, None, [(P3, v_hint)]), NOW)
    assert replies(out, client) == []
    out += core.on_response(F2, m.RepPeekResp(rp[F2].id, None, []), NOW)
    rep = only_reply(out, client)
    assert type(rep) is m.InspectReply and rep.id == 3 and rep.key == KEY and rep.coordinator == C
    assert rep.preference_list == list(PRIM)
    views = {v.node: v for v in rep.replicas}
    assert [v.node for v in rep.replicas] == [C, P2, P3, F1]  # F2 holds nothing and is not planned
    assert (views[C].role, views[C].version, views[C].tombstone, views[C].value_bytes) == \
        ("primary", str(v_new.version), False, 3)
    assert (views[P2].version, views[P2].tombstone, views[P2].value_bytes) == (str(v_tomb.version), True, None)
    assert (views[P3].version, views[P3].answered, views[P3].tombstone) == (None, True, False)
    assert (views[F1].role, views[F1].hint_for, views[F1].version) == ("fallback", P3, str(v_hint.version))
    assert rep.newest == str(v_hint.version)
    assert sends(out) == [] and not of(out, StoreWrite)  # inspect never repairs


def test_inspect_with_a_dead_primary_answers_at_deadline():
    core = make(timeout_ms_inspect=300)
    t, _ = kill(core, {P3})
    client = Conn("c")
    eff = core.on_request(client, m.Inspect(3, KEY), t)
    (peek,) = of(eff, Peek)
    rp = {s.peer: s.msg for s in sends(eff, m.RepPeek)}
    assert P3 in rp  # asked anyway: it may be alive after all
    out = core.on_store_done(peek.token, True, (None, []), t)
    for p in (P2, F1, F2):
        out += core.on_response(p, m.RepPeekResp(rp[p].id, None, []), t)
    assert replies(out, client) == []
    assert replies(core.tick(t + 299), client) == []
    rep = only_reply(core.tick(t + 300), client)
    views = {v.node: v for v in rep.replicas}
    assert (views[P3].state, views[P3].answered, views[P3].error) == (DOWN, False, "timed out")
    assert (views[F1].role, views[F1].hint_for, views[F1].version) == ("fallback", P3, None)  # planned
    assert F2 not in views
    assert rep.newest is None


def test_inspect_rejects_empty_key():
    core = make()
    (resp,) = core.on_request(Conn("c"), m.Inspect(3, b""), NOW)
    assert resp.msg.status == m.INVALID


def test_blocking_repair_answers_at_once_when_the_repair_target_disconnects():
    core = make(read_repair=True, read_all_replicas=True, r=2)
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY, blocking_repair=True), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    stale_peer = sorted(rr)[0]
    new = rec(20, C, b"new")
    out = core.on_store_done(sr.token, True, new, NOW)
    out += core.on_response(stale_peer, m.RepReadResp(rr[stale_peer].id, True, rec(1, C, b"old")), NOW)
    assert replies(out, client) == []  # waiting for the repair ack
    assert [s.peer for s in sends(out, m.RepWrite)] == [stale_peer]
    out = core.on_peer_lost(stale_peer, "connection reset", NOW + 1)
    assert only_reply(out, client).value == b"new"  # answered now, not at the deadline


def test_blocking_repair_answers_at_once_when_the_repair_send_fails():
    # Regression (issue 9): a mixed and/or condition in on_send_failed skipped a
    # read's RepWrite, so a repair that could not be sent held the reply to the deadline.
    core = make(read_repair=True, read_all_replicas=True, r=2, timeout_ms_read=2_000)
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, KEY, blocking_repair=True), NOW)
    (sr,) = of(eff, StoreRead)
    rr = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    stale_peer, other = sorted(rr)
    new = rec(20, C, b"new")
    out = core.on_store_done(sr.token, True, new, NOW)
    out += core.on_response(stale_peer, m.RepReadResp(rr[stale_peer].id, True, rec(1, C, b"old")), NOW)
    (repair,) = sends(out, m.RepWrite)
    assert replies(out, client) == []
    out = core.on_send_failed(stale_peer, repair.msg, "queue full", NOW + 1)
    assert only_reply(out, client).value == b"new"  # answered now, not at the deadline
    out = core.on_response(other, m.RepReadResp(rr[other].id, True, new), NOW + 2)
    assert replies(out, client) == [] and core.statistics()["rounds_open"] == 0


# ------------------------------------- hints for known-down primaries (issue 10, hole 6)
def test_known_down_primary_without_fallback_gets_a_coordinator_hint_and_its_writes_on_return():
    # 3 nodes, N=3: no node is left to stand in for a dead primary. The coordinator
    # keeps the write for it and replays it once it is back.
    net = solo("n1", MEMBERS3)
    core = net.core
    t = net.run_without({"n3"})
    net.sent()
    client = Client("c")
    keys = [f"k{i}".encode() for i in range(5)]
    written = {}
    for i, key in enumerate(keys):
        net.take()
        assert net.request(client, "n1", m.Put(i + 1, key, b"v%d" % i, m.LEVEL_QUORUM)) is None
        (rw,) = net.sent(m.RepWrite)
        assert rw[0] == "n2"  # n3 is known down
        (sw,) = of(net.take(), StoreWrite)
        written[key] = sw.record
        net.answer("n2", m.RepWriteAck(rw[1].id, True))
        assert client.replies[i + 1].status == m.OK
    assert net.hint_count("n3") == 5 and core.stats["hints_stored"] == 5
    # n3 returns: the next tick loads its hints and replays every write it missed.
    t += 200
    net.time_ms = t
    net.from_peer("n3", m.Heartbeat(0, "n3", 2))
    net.at(t)
    replay = {msg.key: msg for peer, msg in net.sent(m.RepWrite) if peer == "n3"}
    assert {k: msg.record for k, msg in replay.items()} == written
    for msg in replay.values():
        net.answer("n3", m.RepWriteAck(msg.id, True))
    assert net.hint_count("n3") == 0 and core.stats["hints_replayed"] == 5


def test_no_coordinator_hint_when_a_fallback_stands_in():
    core = make()
    t, _ = kill(core, {P3})
    eff = core.on_request(Conn("c"), m.Put(1, KEY, b"v"), t)
    assert [s.msg.hint_for for s in sends(eff, m.RepWrite) if s.peer == F1] == [P3]
    assert not of(eff, StoreHint)  # the fallback keeps the hint; one copy is enough


# ------------------------------------------- bounds on peer input (issue 10, hole 7)
def test_hint_for_an_unknown_or_departed_node_is_refused_and_creates_no_target():
    from quorumkv.core.membership import LEFT, Endpoint

    core = make(F1)
    core.on_request(Conn(C), m.Gossip(1, [Endpoint(P2, MEMBERS[P2], 5, 9, LEFT)]), NOW)
    peer = Conn(C)
    for i, owner in enumerate(["ghost-%d" % j for j in range(3)] + [P2]):
        eff = core.on_request(peer, m.RepWrite(i + 1, KEY, rec(1, C), owner), NOW)
        (resp,) = of(eff, Respond)
        assert resp.msg.ok is False and f"hint for {owner!r} refused: not a member" in resp.msg.error
        assert not of(eff, StoreHint)
    assert core.hints_held == {} and core.stats["hints_refused_target"] == 4
    (eff,) = core.on_request(peer, m.RepWrite(9, KEY, rec(1, C), P3), NOW)  # a member: accepted
    assert type(eff) is StoreHint


def test_hint_targets_are_bounded(monkeypatch):
    from quorumkv.core import node as node_mod

    monkeypatch.setattr(node_mod, "HINT_TARGETS_MAX", 2)
    core = make(F1)
    peer = Conn(C)
    assert [type(e) for e in core.on_request(peer, m.RepWrite(1, KEY, rec(1, C), P2), NOW)] == [StoreHint]
    assert [type(e) for e in core.on_request(peer, m.RepWrite(2, KEY, rec(1, C), P3), NOW)] == [StoreHint]
    (resp,) = core.on_request(peer, m.RepWrite(3, KEY, rec(1, C), F2), NOW)
    assert resp.msg.ok is False and "HINT_TARGETS_MAX=2" in resp.msg.error
    assert [type(e) for e in core.on_request(peer, m.RepWrite(4, KEY, rec(2, C), P3), NOW)] == [StoreHint]
    assert sorted(core.hints_held) == sorted([P2, P3])


def test_inspect_respects_the_rounds_in_flight_bound(monkeypatch):
    from quorumkv.core import node as node_mod

    monkeypatch.setattr(node_mod, "ROUNDS_INFLIGHT_MAX", 1)
    core = make()
    assert of(core.on_request(Conn("a"), m.Inspect(1, KEY), NOW), Peek)
    c = Conn("c")
    eff = core.on_request(c, m.Inspect(2, KEY), NOW)
    assert len(eff) == 1 and only_reply(eff, c).status == m.OVERLOADED
    assert "ROUNDS_INFLIGHT_MAX=1" in only_reply(eff, c).message
    assert core.statistics()["rounds_open"] == 1 and core.stats["overloaded"] == 1


def test_antientropy_exchanges_served_at_once_are_bounded():
    from quorumkv.core import messages_ae as ae
    from quorumkv.core.antientropy import EXCHANGES_SERVING_MAX, AESettings, install

    core = make()
    install(core, AESettings(interval_ms=0), NOW)
    peer = Conn(P2)
    for i in range(EXCHANGES_SERVING_MAX):  # storage never answers: every exchange stays open
        eff = core.on_request(peer, ae.AEExchange(i + 1, [(b"k%d" % i, rec(1, P2))]), NOW)
        assert [type(e) for e in eff] == [StoreWrite]
    eff = core.on_request(peer, ae.AEExchange(99, [(b"over", rec(1, P2))]), NOW)
    (resp,) = eff
    assert (resp.conn, resp.msg.id, resp.msg.ok) == (peer, 99, False)
    assert f"EXCHANGES_SERVING_MAX={EXCHANGES_SERVING_MAX}" in resp.msg.error


def test_hints_for_a_departed_node_go_to_the_keys_current_replicas_once():
    from quorumkv.core.membership import LEFT, Endpoint

    # F1 holds a hint for P3; P3 is decommissioned (LEFT) before it came back for it.
    net = solo(hints=HintSettings(age_ms_max=3_600_000))
    core = net.core
    hinted = rec(7, C, b"hinted")
    net.from_peer(C, m.RepWrite(1, KEY, hinted, P3))
    net.from_peer(C, m.Gossip(2, [Endpoint(P3, net.members[P3], 5, 9, LEFT)]))
    new_replicas = Ring([x for x in MEMBERS if x != P3], 3, VNODES).preference_list(KEY)
    assert P3 not in core.ring.nodes and F1 in new_replicas  # F1 now replicates the key itself
    net.sent(), net.take()
    net.at(NOW + 1)
    out = net.sent()
    assert not [peer for peer, _ in out if peer == P3]  # never replayed to the departed node
    rw = {peer: msg for peer, msg in out if type(msg) is m.RepWrite}
    (sw,) = of(net.take(), StoreWrite)  # F1's own copy, done by now
    assert sorted(rw) == sorted(x for x in new_replicas if x != F1)
    assert all(msg.record == hinted and msg.hint_for == "" for msg in rw.values()) and sw.record == hinted
    assert net.disk[F1][KEY] == hinted
    peers = sorted(rw)
    net.time_ms = NOW + 2
    net.answer(peers[0], m.RepWriteAck(rw[peers[0]].id, True))
    assert not of(net.take(), DeleteHint) and net.hint_count(P3) == 1  # one ack missing
    net.time_ms = NOW + 3
    net.answer(peers[1], m.RepWriteAck(rw[peers[1]].id, True))
    assert net.hint_count(P3) == 0 and core.hints_held[P3] == [0, 0]
    assert core.stats["hints_handed_over"] == 1 and core.stats["hints_replayed"] == 0
    # Nothing is left to retry: later ticks send nothing more.
    for t in range(NOW + 100, NOW + 2_000, 100):
        net.at(t)
        assert not net.sent(m.RepWrite)


def test_departed_nodes_hint_for_a_down_replica_becomes_a_hint_for_that_replica():
    from quorumkv.core.membership import LEFT, Endpoint

    net = solo()
    hinted = rec(7, C, b"hinted")
    new_replicas = Ring([x for x in MEMBERS if x != P3], 3, VNODES).preference_list(KEY)
    down = [x for x in new_replicas if x != F1][0]
    t = net.run_without({down})
    net.from_peer(C, m.RepWrite(1, KEY, hinted, P3))
    net.from_peer(C, m.Gossip(2, [Endpoint(P3, net.members[P3], 5, 9, LEFT)]))
    net.sent(), net.take()
    net.at(t + 1)
    out = net.sent()
    assert down not in {peer for peer, _ in out}
    assert net.hint_count(down) == 1 and net.hint_count(P3) == 1  # a new hint first; the old one stays until acks
    assert of(net.take(), StoreWrite)  # F1's own copy
    net.time_ms = t + 2
    for peer, msg in out:
        if type(msg) is m.RepWrite:
            net.answer(peer, m.RepWriteAck(msg.id, True))
    assert of(net.take(), DeleteHint)
    assert net.hint_count(P3) == 0 and net.hint_count(down) == 1


# --------------------------------- strict quorums across a ring change (issue 10, hole 4)
class RingNet(CoreMesh):
    """The cores of a ring change on the shared harness (FIFO, run to quiescence);
    while ``hold(src, dst, msg)`` says so, a message waits in ``slow`` (a slow link)
    until ``release_to`` its destination. Disks keep the newer record, report nothing."""

    def __init__(self, members):
        self.slow: list = []
        self.client = Client()
        super().__init__(members, time_ms=NOW, ceiling=False, report_newer=False, vnodes=VNODES)

    @staticmethod
    def hold(src, dst, msg) -> bool:
        return False

    def _deliver_send(self, node, peer, msg):
        if self.hold(node, peer, msg):
            self.slow.append((node, peer, msg))
        else:
            super()._deliver_send(node, peer, msg)

    def _answers(self, before) -> list:
        return [r for rid, r in self.client.replies.items() if rid not in before]

    def ask(self, at, msg, hold=None) -> list:
        """The client's request to ``at``; the replies it got by quiescence."""
        before = set(self.client.replies)
        if hold is not None:
            self.hold = hold
        try:
            self.request(self.client, at, msg)
        finally:
            self.hold = RingNet.hold
        return self._answers(before)

    def release_to(self, dst) -> list:
        """Deliver what waits for ``dst``; the client replies that follow."""
        before = set(self.client.replies)
        mine = [x for x in self.slow if x[1] == dst]
        self.slow = [x for x in self.slow if x[1] != dst]
        for src, peer, msg in mine:
            self.queue.append(lambda src=src, peer=peer, msg=msg: CoreMesh._deliver_send(self, src, peer, msg))
        self.settle()
        return self._answers(before)

    def holders(self, key):
        return {nid for nid, disk in self.disk.items() if key in disk}


def _change_views(kind):
    """(members, status seen by nodes still on the old ring, status seen on the new one,
    the node whose status changes) for a join of n6 or a decommission of n5."""
    from quorumkv.core.membership import JOINING, LEAVING, LEFT, UP

    members = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, 7 if kind == "join" else 6)}
    if kind == "join":
        return members, JOINING, UP, "n6"
    return members, LEAVING, LEFT, "n5"


def _ring_change_cores(kind, key_ok):
    """Cores for a ring change mid-flight: ``mover``'s status is gossiped to everyone
    as the old-ring status (they route by the old ring plus the future one), except
    to the new owner of the key, which has already moved on to the new ring."""
    from quorumkv.core.membership import Endpoint

    members, old_status, new_status, mover = _change_views(kind)
    before = [x for x in members if x != mover] if kind == "join" else list(members)
    after = list(members) if kind == "join" else [x for x in members if x != mover]
    old_ring, new_ring = Ring(before, 3, VNODES), Ring(after, 3, VNODES)
    for i in range(2_000):
        key = b"rc%d" % i
        old, new = old_ring.preference_list(key), new_ring.preference_list(key)
        if set(old) != set(new) and key_ok(old, new):
            break
    else:  # pragma: no cover - the ring has such keys
        raise AssertionError("no key moves")
    (newcomer,) = set(new) - set(old)
    net = RingNet(members)
    net.cut = set(members)  # each node learns the status alone: nothing it says spreads it
    gossip = MeshClient("gossip")
    for i, nid in enumerate(members):
        status = new_status if nid == newcomer else old_status
        endpoint = Endpoint(mover, net.members[mover], 1, 5, status)
        assert type(net.request(gossip, nid, m.Gossip(i, [endpoint]))) is m.GossipAck
    net.cut = set()
    return net, key, old, new, newcomer


@pytest.mark.parametrize("kind", ["join", "decommission"])
def test_write_on_the_old_ring_is_seen_by_a_strict_read_on_the_new_ring(kind):
    # The scenario: the new owner has finished (routes by the new ring);
    # a coordinator still on the old ring writes at W=2 primary_only and the copies
    # to the new owner and to the replica the reader will pick are slow.
    net, key, old, new, newcomer = _ring_change_cores(
        kind, lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    reader_peer = next(x for x in new if x != newcomer)  # the new owner reads itself and new[...] first
    slow = {newcomer, reader_peer}
    hold = lambda src, dst, msg: type(msg) is m.RepWrite and dst in slow  # noqa: E731
    got = net.ask(coord, m.Put(1, key, b"v1", 2, primary_only=True), hold=hold)
    assert net.holders(key) == set(old) - slow
    # Two old replicas acked, but only one of them stays a replica: not acknowledged yet.
    assert got == [], got
    got = net.release_to(newcomer)
    assert [r.status for r in got] == [m.OK]
    # Any strict read, on either ring, now meets a copy.
    for ring in (old, new):
        for pair in [(a, b) for a in ring for b in ring if a < b]:
            assert set(pair) & net.holders(key), (ring, pair, net.holders(key))
    (reply,) = net.ask(newcomer, m.Get(2, key, 2, primary_only=True))
    assert (reply.status, reply.value) == (m.OK, b"v1")
    (reply,) = net.ask(coord, m.Get(3, key, 2, primary_only=True))
    assert (reply.status, reply.value) == (m.OK, b"v1")


@pytest.mark.parametrize("kind", ["join", "decommission"])
def test_write_on_the_new_ring_is_seen_by_a_strict_read_on_the_old_ring(kind):
    # The other way round: the new owner coordinates a write on the new ring; a
    # coordinator still on the old ring reads at R=2 and prefers the two old replicas
    # that are fastest for it — one of which leaves the key — so an old-ring-only
    # read would miss the write.
    net, key, old, new, newcomer = _ring_change_cores(kind, lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    kept_unread = next(x for x in old if x in new)  # the old replica the reader ranks last
    net.cores[coord].load.latency_ms[kept_unread] = 100.0
    slow = set(new) - {newcomer, kept_unread}
    hold = lambda src, dst, msg: type(msg) is m.RepWrite and dst in slow  # noqa: E731
    (reply,) = net.ask(newcomer, m.Put(1, key, b"v2", 2, primary_only=True), hold=hold)
    assert reply.status == m.OK and net.holders(key) == {newcomer, kept_unread}
    (reply,) = net.ask(coord, m.Get(2, key, 2, primary_only=True))
    assert (reply.status, reply.value) == (m.OK, b"v2")


def test_failed_copy_to_a_future_owner_gets_a_hint_and_counts_as_a_failure():
    net, key, old, new, newcomer = _ring_change_cores("join", lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    core = net.cores[coord]
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, key, b"v", 2, primary_only=True), NOW)
    rw = {s.peer: s.msg for s in sends(eff, m.RepWrite)}
    assert sorted(rw) == sorted(set(old) | {newcomer}) and all(x.hint_for == "" for x in rw.values())
    (hint,) = of(core.on_send_failed(newcomer, rw[newcomer], "queue full", NOW), StoreHint)
    assert (hint.owner, hint.key) == (newcomer, key)
    # The future set still needs two acks: its two members that stay.
    leaving = (set(old) - set(new)).pop()
    stay = sorted(set(old) & set(new))
    assert replies(core.on_response(leaving, m.RepWriteAck(rw[leaving].id, True), NOW), client) == []
    assert replies(core.on_response(stay[0], m.RepWriteAck(rw[stay[0]].id, True), NOW), client) == []
    reply = only_reply(core.on_response(stay[1], m.RepWriteAck(rw[stay[1]].id, True), NOW), client)
    assert reply.status == m.OK and reply.w_used == 2


def test_joint_write_that_cannot_reach_the_future_set_fails_saying_so():
    net, key, old, new, newcomer = _ring_change_cores("join", lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    core = net.cores[coord]
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, key, b"v", 2, primary_only=True), NOW)
    rw = {s.peer: s.msg for s in sends(eff, m.RepWrite)}
    stay = sorted(set(old) & set(new))
    core.on_send_failed(newcomer, rw[newcomer], "queue full", NOW)
    reply = only_reply(core.on_response(stay[0], m.RepWriteAck(rw[stay[0]].id, False, "disk"), NOW), client)
    assert reply.status == m.UNAVAILABLE
    assert reply.message.startswith("write during a ring change needed acks from both replica sets (2 of current")
    assert f"2 of future replicas {', '.join(sorted(new))}: got 0" in reply.message


def test_replay_ack_from_a_node_it_was_not_sent_to_is_ignored():
    core = make(F1)
    core.hints_held[P3] = [1, 100]
    of(core.tick(NOW), LoadHints)
    (send,) = sends(core.on_hints_loaded(P3, [("h1", KEY, rec(1), NOW)], NOW))
    assert core.on_response(P2, m.RepWriteAck(send.msg.id, True), NOW) == []  # a confused peer
    assert core.hints_held[P3] == [1, 100] and core.stats["hints_replayed"] == 0
    assert core.on_response(P3, m.RepWriteAck(send.msg.id, True), NOW) == [DeleteHint("h1")]


def test_joint_read_brings_in_a_spare_for_each_replica_set_a_failure_leaves_short():
    # A replica in both sets fails: each set needs one more reply, from different spares.
    net, key, old, new, newcomer = _ring_change_cores("join", lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    core = net.cores[coord]
    client = Conn("c")
    eff = core.on_request(client, m.Get(1, key, 2, primary_only=True), NOW)
    first = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    both = sorted(set(first) & set(old) & set(new))
    assert len(first) == 2 and len(both) == 2  # the two replicas that stay serve both sets
    eff = core.on_send_failed(both[0], first[both[0]], "queue full", NOW)
    extra = {s.peer: s.msg for s in sends(eff, m.RepRead)}
    assert sorted(extra) == sorted((set(old) | set(new)) - set(first))  # the leaver and the newcomer
    out = core.on_response(both[1], m.RepReadResp(first[both[1]].id, True, rec(5, "n1", b"x")), NOW)
    for peer, msg in extra.items():
        out += core.on_response(peer, m.RepReadResp(msg.id, True, None), NOW)
    assert only_reply(out, client).value == b"x"


def test_sloppy_write_during_a_join_puts_a_fallback_in_for_a_dead_joiner():
    net, key, old, new, newcomer = _ring_change_cores("join", lambda old, new: True)
    coord = next(x for x in sorted(net.cores) if x not in old and x not in new)
    core = net.cores[coord]
    t, _ = kill(core, {newcomer})
    client = Conn("c")
    eff = core.on_request(client, m.Put(1, key, b"v", 2), t)
    rw = {s.peer: s.msg for s in sends(eff, m.RepWrite)}
    (fallback,) = [p for p, msg in rw.items() if msg.hint_for == newcomer]
    assert newcomer not in rw and fallback not in set(old) | set(new)
    assert not of(eff, StoreHint)  # the fallback keeps the hint
    stay = sorted(set(old) & set(new))
    (leaving,) = set(old) - set(new)
    out = core.on_response(stay[0], m.RepWriteAck(rw[stay[0]].id, True), t)
    out += core.on_response(leaving, m.RepWriteAck(rw[leaving].id, True), t)
    assert replies(out, client) == []  # the current set has 2, the future set 1
    reply = only_reply(core.on_response(fallback, m.RepWriteAck(rw[fallback].id, True), t), client)
    assert reply.status == m.OK  # the fallback counts for the joiner it stands in for
