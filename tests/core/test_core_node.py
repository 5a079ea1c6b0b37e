"""NodeCore driven directly: events in, effects out, no I/O."""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.core import wire
from quorumkv.core import node as node_mod
from quorumkv.core.consistency import quorum_of, resolve, weak_warning
from quorumkv.core.limits import KEY_BYTES_MAX, VALUE_BYTES_MAX
from quorumkv.core.membership import DOWN
from quorumkv.core.node import (
    SELF,
    NodeCore,
    NodeSettings,
    Respond,
    Send,
    StoreRead,
    StoreWrite,
    level_from_wire,
    level_to_wire,
)
from quorumkv.core.version import LOGICAL_BITS, Record, Version
from quorumkv.errors import InvalidRequestError
from quorumkv.sim.scenario import CoreMesh

from corekit import NOW, Client, Conn, new_core, of, sole_reply

MEMBERS = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}
KEY = b"user:42"


def make(node_id="n1", **kw) -> NodeCore:
    # Riak-style fan-out to every replica and no read repair: these tests check the
    # quorum judging itself; replica choice and repair have their own tests.
    kw.setdefault("read_all_replicas", True)
    kw.setdefault("read_repair", False)
    return new_core(node_id, MEMBERS, **kw)


CLIENT_EFFECTS = (Respond, Send, StoreWrite, StoreRead)


def client_effects(effects):
    """Drop the background chatter a tick adds (heartbeats, gossip, logs)."""
    return [e for e in effects if type(e) in (Respond, StoreWrite, StoreRead)
            or (type(e) is Send and type(e.msg) in (m.RepWrite, m.RepRead))]


def start_put(core, conn, value=b"v", w=m.LEVEL_DEFAULT, req_id=1, now=NOW, key=KEY):
    eff = core.on_request(conn, m.Put(req_id, key, value, w), now)
    writes = of(eff, StoreWrite)
    sends = of(eff, Send)
    assert len(writes) == 1 and len(sends) == 2 and len(eff) == 3, eff
    return writes[0], sends


def start_get(core, conn, r=m.LEVEL_DEFAULT, req_id=1, now=NOW, key=KEY):
    eff = core.on_request(conn, m.Get(req_id, key, r), now)
    reads = of(eff, StoreRead)
    sends = of(eff, Send)
    assert len(reads) == 1 and len(sends) == 2 and len(eff) == 3, eff
    return reads[0], sends


def ack(sends, peer, ok=True, error=""):
    (s,) = [s for s in sends if s.peer == peer]
    return m.RepWriteAck(s.msg.id, ok, error)


def read_resp(sends, peer, record, ok=True, error=""):
    (s,) = [s for s in sends if s.peer == peer]
    return m.RepReadResp(s.msg.id, ok, record, error)


# ------------------------------------------------------------------ writes
def test_put_fans_out_store_write_and_rep_writes():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client, b"hello")
    assert sorted(s.peer for s in sends) == ["n2", "n3"]
    assert sw.key == KEY
    assert sw.record.value == b"hello"
    assert sw.record.version.node == "n1"
    assert sw.record.version.ts >> LOGICAL_BITS == NOW
    # the coordinator's own replica: its completion goes straight to the round
    assert sw.token[0] == node_mod.LOCAL_WRITE
    for s in sends:
        assert type(s.msg) is m.RepWrite
        assert s.msg.key == KEY
        assert s.msg.record == sw.record  # every replica gets the same version
    assert sends[0].msg.id == sends[1].msg.id == sw.token[2]


def test_put_replies_ok_exactly_once_when_w_acks_arrive():
    core = make()  # W=2
    client = Conn("c")
    sw, sends = start_put(core, client, req_id=77)
    assert core.on_store_done(sw.token, True, None, NOW + 1) == []  # 1 of 2
    eff = core.on_response("n2", ack(sends, "n2"), NOW + 2)
    reply = sole_reply(eff, client)
    assert reply == m.Reply(77, m.OK, None, sw.record.version, "", "", w_used=2)  # W used and version
    assert len(eff) == 1
    # The third ack is late: nothing more is said, and the round is closed.
    assert core.on_response("n3", ack(sends, "n3"), NOW + 3) == []
    assert core.statistics()["rounds_open"] == 0
    assert core.stats["won"] == 1 and core.stats["writes"] == 1


def test_put_acks_from_peers_before_local_store():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client)
    assert core.on_response("n3", ack(sends, "n3"), NOW) == []
    reply = sole_reply(core.on_response("n2", ack(sends, "n2"), NOW), client)
    assert reply.status == m.OK
    assert core.on_store_done(sw.token, True, None, NOW) == []


def test_put_w_all_needs_three():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client, w=m.LEVEL_ALL)
    assert core.on_store_done(sw.token, True, None, NOW) == []
    assert core.on_response("n2", ack(sends, "n2"), NOW) == []
    reply = sole_reply(core.on_response("n3", ack(sends, "n3"), NOW), client)
    assert reply.status == m.OK


def test_w_one_replies_on_local_store_alone():
    core = make()
    client = Conn("c")
    sw, _ = start_put(core, client, w=m.LEVEL_ONE)
    reply = sole_reply(core.on_store_done(sw.token, True, None, NOW), client)
    assert reply.status == m.OK
    assert reply.warning  # R=2 + W=1 <= 3


def test_peer_loss_making_quorum_impossible_is_unavailable_immediately():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client, w=3, req_id=5)
    eff = core.on_peer_lost("n2", "connection reset", NOW + 1)
    reply = sole_reply(eff, client)
    assert reply.id == 5
    assert reply.status == m.UNAVAILABLE
    assert reply.message == "write needed 3 acks, at most 2 possible (n2 connection reset)"
    # Late local store completion and peer ack change nothing.
    assert core.on_store_done(sw.token, True, None, NOW + 2) == []
    assert core.on_response("n3", ack(sends, "n3"), NOW + 3) == []
    assert client_effects(core.tick(NOW + 10_000_000)) == []
    assert core.statistics()["rounds_open"] == 0


def test_peer_loss_with_quorum_still_possible_waits():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client)  # W=2
    # No answer yet; the coordinator keeps a hint for the replica that missed the write.
    (hint,) = core.on_peer_lost("n2", "connection reset", NOW)
    assert type(hint) is node_mod.StoreHint and hint.owner == "n2" and hint.record == sw.record
    assert core.on_store_done(sw.token, True, None, NOW) == []
    reply = sole_reply(core.on_response("n3", ack(sends, "n3"), NOW), client)
    assert reply.status == m.OK


def test_send_failed_counts_as_failure():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client)
    (s2,) = [s for s in sends if s.peer == "n2"]
    (s3,) = [s for s in sends if s.peer == "n3"]
    assert [type(e) for e in core.on_send_failed("n2", s2.msg, "queue full", NOW)] == [node_mod.StoreHint]
    reply = sole_reply(core.on_send_failed("n3", s3.msg, "queue full", NOW), client)
    assert reply.status == m.UNAVAILABLE
    assert reply.message == "write needed 2 acks, at most 1 possible (n2 queue full, n3 queue full)"


def test_negative_acks_make_unavailable_with_reason():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client)
    assert core.on_response("n2", ack(sends, "n2", False, "disk full"), NOW) == []
    reply = sole_reply(core.on_response("n3", ack(sends, "n3", False, "disk full"), NOW), client)
    assert reply.status == m.UNAVAILABLE
    assert "n2 failed: disk full" in reply.message and "n3 failed: disk full" in reply.message


def test_local_store_failure_counts():
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client, w=3)
    reply = sole_reply(core.on_store_done(sw.token, False, "storage error: I/O", NOW), client)
    assert reply.status == m.UNAVAILABLE
    assert "n1 failed: storage error: I/O" in reply.message


def test_tick_past_deadline_times_out():
    core = make(timeout_ms_write=500)
    client = Conn("c")
    sw, sends = start_put(core, client, req_id=9)
    assert core.on_store_done(sw.token, True, None, NOW) == []
    assert client_effects(core.tick(NOW + 499)) == []
    reply = sole_reply(client_effects(core.tick(NOW + 500)), client)
    assert reply.id == 9
    assert reply.status == m.TIMEOUT
    assert reply.message == "write needed 2 acks, got 1 (n2 timed out, n3 timed out)"
    assert core.stats["timeouts"] == 1
    # Late replies after the timeout are ignored.
    assert core.on_response("n2", ack(sends, "n2"), NOW + 600) == []
    assert client_effects(core.tick(NOW + 10_000)) == []
    assert core.statistics()["rounds_open"] == 0


def test_tick_after_win_says_nothing_more_and_closes_round():
    core = make(timeout_ms_write=500)
    client = Conn("c")
    sw, sends = start_put(core, client)
    core.on_store_done(sw.token, True, None, NOW)
    sole_reply(core.on_response("n2", ack(sends, "n2"), NOW), client)
    assert core.statistics()["rounds_open"] == 1  # n3 still outstanding
    assert client_effects(core.tick(NOW + 500)) == []
    assert core.statistics()["rounds_open"] == 0


def test_each_round_has_its_own_deadline():
    core = make(timeout_ms_write=100)
    a, b = Conn("a"), Conn("b")
    start_put(core, a, req_id=1, now=NOW)
    start_put(core, b, req_id=2, now=NOW + 50)
    sole_reply(client_effects(core.tick(NOW + 100)), a)
    sole_reply(client_effects(core.tick(NOW + 150)), b)


def test_concurrent_rounds_answer_the_right_connection():
    core = make()
    a, b = Conn("a"), Conn("b")
    swa, sa = start_put(core, a, b"A", req_id=1)
    swb, sb = start_put(core, b, b"B", req_id=1)  # same client req id, other conn
    assert swa.token != swb.token
    core.on_store_done(swb.token, True, None, NOW)
    reply = sole_reply(core.on_response("n2", ack(sb, "n2"), NOW), b)
    assert reply.id == 1
    core.on_store_done(swa.token, True, None, NOW)
    sole_reply(core.on_response("n3", ack(sa, "n3"), NOW), a)


def test_writes_get_increasing_versions_even_if_clock_goes_back():
    core = make()
    v1 = start_put(core, Conn("c"), now=NOW)[0].record.version
    v2 = start_put(core, Conn("c"), now=NOW - 5_000)[0].record.version
    assert v2.newer_than(v1)


def test_replica_write_observed_by_hlc():
    core = make("n2")
    future = (NOW + 60_000) << LOGICAL_BITS
    peer = Conn("n1-inbound")
    eff = core.on_request(peer, m.RepWrite(3, KEY, Record(Version(future, "n1"), b"x")), NOW)
    assert len(eff) == 1 and type(eff[0]) is StoreWrite
    v = start_put(core, Conn("c"), now=NOW)[0].record.version
    assert v.ts > future


def test_delete_writes_a_tombstone():
    core = make()
    sw, sends = start_put(core, Conn("c"), value=None)
    assert sw.record.value is None and sw.record.tombstone
    assert all(s.msg.record.value is None for s in sends)


# ----------------------------------------------------------------- invalid
@pytest.mark.parametrize(
    "msg,fragment",
    [
        (m.Get(1, KEY, 7), "R=7 is impossible with N=3"),
        (m.Put(1, KEY, b"v", 7), "W=7 is impossible with N=3"),
        (m.Put(1, KEY, b"v", 4), "W=4 is impossible with N=3"),
        (m.Get(1, KEY, -9), "unknown consistency level code -9"),
        (m.Get(1, b"", 1), "empty key"),
        (m.Put(1, b"", b"v"), "empty key"),
        (m.Get(1, b"k" * (KEY_BYTES_MAX + 1)), "exceeds KEY_BYTES_MAX"),
        (m.Put(1, b"k" * (KEY_BYTES_MAX + 1), b"v"), "exceeds KEY_BYTES_MAX"),
        (m.Put(1, KEY, b"v" * (VALUE_BYTES_MAX + 1)), "exceeds VALUE_BYTES_MAX"),
    ],
)
def test_invalid_requests_rejected_without_side_effects(msg, fragment):
    core = make()
    client = Conn("c")
    hlc_before = core.hlc.last
    eff = core.on_request(client, msg, NOW)
    reply = sole_reply(eff, client)
    assert len(eff) == 1  # no StoreWrite, StoreRead or Send
    assert reply.status == m.INVALID
    assert reply.id == msg.id
    assert fragment in reply.message
    assert core.statistics()["rounds_open"] == 0
    assert core.stats["invalid"] == 1
    assert core.hlc.last == hlc_before


def test_key_at_limit_accepted():
    core = make()
    start_put(core, Conn("c"), key=b"k" * KEY_BYTES_MAX)


def test_overloaded_when_too_many_rounds(monkeypatch):
    monkeypatch.setattr(node_mod, "ROUNDS_INFLIGHT_MAX", 2)
    core = make()
    start_put(core, Conn("a"))
    start_get(core, Conn("b"))
    c = Conn("c")
    eff = core.on_request(c, m.Put(3, KEY, b"v"), NOW)
    reply = sole_reply(eff, c)
    assert len(eff) == 1
    assert reply.status == m.OVERLOADED
    assert "ROUNDS_INFLIGHT_MAX=2" in reply.message


def test_node_must_be_member():
    with pytest.raises(ValueError):
        NodeCore(NodeSettings("n9"), MEMBERS)


def test_bad_default_levels_fail_at_startup():
    with pytest.raises(InvalidRequestError):
        make(r=4)
    with pytest.raises(InvalidRequestError):
        make(w=0)


# ------------------------------------------------------------------- reads
def rec(ts, node, value):
    return Record(Version(ts, node), value)


def test_get_fans_out_and_returns_newest():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client, req_id=4)
    assert sr.key == KEY and sr.token[0] == "r" and sr.token[1] is SELF
    assert sorted(s.peer for s in sends) == ["n2", "n3"]
    assert all(type(s.msg) is m.RepRead and s.msg.key == KEY for s in sends)
    old, new = rec(10, "n1", b"old"), rec(20, "n3", b"new")
    assert core.on_store_done(sr.token, True, old, NOW) == []
    reply = sole_reply(core.on_response("n2", read_resp(sends, "n2", new), NOW), client)
    assert reply == m.Reply(4, m.OK, b"new", new.version, "", "", r_used=2)


def test_get_newest_even_when_it_arrives_first():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client)
    new, old = rec(20, "n2", b"new"), rec(10, "n1", b"old")
    assert core.on_response("n2", read_resp(sends, "n2", new), NOW) == []
    reply = sole_reply(core.on_store_done(sr.token, True, old, NOW), client)
    assert reply.value == b"new"


def test_get_r_all_sees_all_three():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client, r=m.LEVEL_ALL)
    core.on_store_done(sr.token, True, rec(1, "n1", b"a"), NOW)
    assert core.on_response("n2", read_resp(sends, "n2", rec(2, "n1", b"b")), NOW) == []
    reply = sole_reply(core.on_response("n3", read_resp(sends, "n3", rec(3, "n1", b"c")), NOW), client)
    assert reply.value == b"c"


def test_get_not_found():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client)
    core.on_store_done(sr.token, True, None, NOW)
    reply = sole_reply(core.on_response("n3", read_resp(sends, "n3", None), NOW), client)
    assert reply.status == m.NOT_FOUND
    assert reply.value is None and reply.version is None


def test_get_tombstone_is_not_found_with_its_version():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client)
    tomb = rec(30, "n2", None)
    core.on_store_done(sr.token, True, rec(10, "n1", b"old"), NOW)
    reply = sole_reply(core.on_response("n2", read_resp(sends, "n2", tomb), NOW), client)
    assert reply.status == m.NOT_FOUND
    assert reply.value is None
    assert reply.version == tomb.version


def test_get_empty_value_is_found():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client, r=1)
    reply = sole_reply(core.on_store_done(sr.token, True, rec(1, "n1", b""), NOW), client)
    assert reply.status == m.OK and reply.value == b""


def test_get_read_response_observed_by_hlc():
    core = make()
    sr, sends = start_get(core, Conn("c"))
    future = (NOW + 90_000) << LOGICAL_BITS
    core.on_response("n2", read_resp(sends, "n2", rec(future, "n2", b"x")), NOW)
    v = start_put(core, Conn("d"))[0].record.version
    assert v.ts > future


def test_get_late_reply_produces_no_second_reply():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client)
    core.on_store_done(sr.token, True, None, NOW)
    sole_reply(core.on_response("n2", read_resp(sends, "n2", None), NOW), client)
    assert core.on_response("n3", read_resp(sends, "n3", rec(99, "n3", b"late")), NOW) == []
    assert core.on_response("n3", read_resp(sends, "n3", None), NOW) == []


def test_get_timeout():
    core = make(timeout_ms_read=300)
    client = Conn("c")
    sr, sends = start_get(core, client)
    core.on_store_done(sr.token, True, None, NOW)
    assert client_effects(core.tick(NOW + 299)) == []
    reply = sole_reply(client_effects(core.tick(NOW + 300)), client)
    assert reply.status == m.TIMEOUT
    assert reply.message == "read needed 2 replies, got 1 (n2 timed out, n3 timed out)"


def test_wrong_response_type_counts_as_failure():
    core = make()
    client = Conn("c")
    sr, sends = start_get(core, client, r=3)
    (s2,) = [s for s in sends if s.peer == "n2"]
    reply = sole_reply(core.on_response("n2", m.RepWriteAck(s2.msg.id, True), NOW), client)
    assert reply.status == m.UNAVAILABLE
    assert "n2 sent unexpected RepWriteAck" in reply.message


# ----------------------------------------------------------- weak quorums
def test_no_warning_for_strict_quorum():
    core = make()  # R=2, W=2, N=3
    client = Conn("c")
    sr, sends = start_get(core, client)
    core.on_store_done(sr.token, True, None, NOW)
    reply = sole_reply(core.on_response("n2", read_resp(sends, "n2", None), NOW), client)
    assert reply.warning == ""


def test_weak_read_quorum_warns_in_reply():
    core = make()  # W=2, read with R=1: 1 + 2 <= 3
    client = Conn("c")
    sr, _ = start_get(core, client, r=1)
    reply = sole_reply(core.on_store_done(sr.token, True, rec(1, "n1", b"x"), NOW), client)
    assert reply.status == m.OK
    assert reply.warning == weak_warning(1, 2, 3)
    assert "R=1 + W=2 <= N=3" in reply.warning


def test_weak_defaults_warn_on_failures_too():
    core = make(r=1, w=1)
    client = Conn("c")
    start_put(core, client)
    reply = sole_reply(client_effects(core.tick(NOW + 10_000)), client)
    assert reply.status == m.TIMEOUT
    assert "R=1 + W=1 <= N=3" in reply.warning


# --------------------------------------------------------------- replica role
def test_replica_write_round_trip():
    core = make("n2")
    peer = Conn("from-n1")
    r = Record(Version(5, "n1"), b"v")
    (sw,) = core.on_request(peer, m.RepWrite(11, KEY, r), NOW)
    assert sw == StoreWrite(("w", peer, 11), KEY, r)
    assert core.on_store_done(sw.token, True, None, NOW) == [Respond(peer, m.RepWriteAck(11, True, ""))]
    assert core.on_store_done(sw.token, False, "disk full", NOW) == [
        Respond(peer, m.RepWriteAck(11, False, "disk full"))
    ]


def test_replica_read_round_trip():
    core = make("n3")
    peer = Conn("from-n1")
    (sr,) = core.on_request(peer, m.RepRead(12, KEY), NOW)
    assert sr == StoreRead(("r", peer, 12), KEY)
    r = Record(Version(5, "n1"), b"v")
    assert core.on_store_done(sr.token, True, r, NOW) == [Respond(peer, m.RepReadResp(12, True, r, ""))]
    assert core.on_store_done(sr.token, False, "io", NOW) == [Respond(peer, m.RepReadResp(12, False, None, "io"))]


def test_ping_pong():
    core = make("n2")
    c = Conn("c")
    (resp,) = core.on_request(c, m.Ping(8), NOW)
    # the ring rides along: token-aware clients route by it (docs/performance.md)
    assert resp == Respond(c, m.Pong(8, "n2", 3, 2, 2, MEMBERS, ring=sorted(MEMBERS), vnodes=core.settings.vnodes))


def test_response_type_as_request_answers_error():
    core = make()
    c = Conn("c")
    (resp,) = core.on_request(c, m.Reply(3, m.OK), NOW)
    assert resp.conn is c and type(resp.msg) is m.Error and resp.msg.id == 3


def test_response_for_unknown_round_ignored():
    core = make()
    assert core.on_response("n2", m.RepWriteAck(12345, True), NOW) == []


# -------------------------------------------------- three cores, one network
def mesh(**kw) -> CoreMesh:
    """The three cores of ``make`` on the shared runtime (FIFO, run to quiescence):
    dict disks that keep the newer record and report nothing, no HLC ceiling."""
    kw.setdefault("read_all_replicas", True)
    return CoreMesh(MEMBERS, time_ms=NOW, ceiling=False, report_newer=False, **kw)


def test_three_cores_write_then_read_elsewhere():
    net = mesh()
    c = Client("client")
    reply = net.request(c, "n1", m.Put(1, KEY, b"v1"))
    assert reply.status == m.OK
    assert all(net.disk[n][KEY].value == b"v1" for n in MEMBERS)
    # Overwrite via n2 while n3 is unreachable (W=2 still met).
    net.time_ms, net.cut = NOW + 1, {"n3"}
    reply = net.request(c, "n2", m.Put(2, KEY, b"v2"))
    assert reply.status == m.OK
    assert net.disk["n3"][KEY].value == b"v1"  # stale replica
    # A read coordinated by n3 (R=2) sees its own stale copy and n1's new one: newest wins.
    net.time_ms, net.cut = NOW + 2, {"n2"}
    reply = net.request(c, "n3", m.Get(3, KEY))
    assert (reply.status, reply.value) == (m.OK, b"v2")
    assert reply.version.node == "n2"
    # Delete, then read: not found.
    net.time_ms, net.cut = NOW + 3, set()
    assert net.request(c, "n1", m.Put(4, KEY, None)).status == m.OK
    net.time_ms = NOW + 4
    assert net.request(c, "n2", m.Get(5, KEY)).status == m.NOT_FOUND
    assert sorted(c.replies) == [1, 2, 3, 4, 5]  # one reply each (``Client`` refuses a second)


# ------------------------------------------------------------ consistency
@pytest.mark.parametrize(
    "level,n,expected",
    [
        (None, 3, 2),  # default
        ("ONE", 3, 1), ("one", 3, 1), (" One ", 3, 1),
        ("QUORUM", 3, 2), ("QUORUM", 4, 3), ("QUORUM", 5, 3), ("QUORUM", 1, 1),
        ("ALL", 3, 3), ("all", 5, 5),
        (1, 3, 1), (3, 3, 3),
        ("2", 3, 2), (" 3 ", 3, 3),
    ],
)
def test_resolve_levels(level, n, expected):
    assert resolve(level, n, 2 if n >= 2 else 1, "R") == expected


@pytest.mark.parametrize("level", [True, False])
def test_resolve_rejects_bool(level):
    with pytest.raises(InvalidRequestError, match="must be an integer"):
        resolve(level, 3, 2, "W")


@pytest.mark.parametrize("level", [0, -1, 4, "4", "0", 100])
def test_resolve_rejects_out_of_range(level):
    with pytest.raises(InvalidRequestError, match="impossible with N=3"):
        resolve(level, 3, 2, "R")


@pytest.mark.parametrize("level", ["MOST", "", "2.5", "-1", 2.0, b"ONE", [1]])
def test_resolve_rejects_nonsense(level):
    with pytest.raises(InvalidRequestError):
        resolve(level, 3, 2, "R")


def test_resolve_default_also_checked():
    with pytest.raises(InvalidRequestError):
        resolve(None, 3, 5, "W")


def test_quorum_of():
    assert [quorum_of(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("r,w,n,weak", [(1, 1, 3, True), (1, 2, 3, True), (2, 2, 3, False),
                                        (1, 3, 3, False), (2, 2, 4, True), (3, 2, 4, False)])
def test_weak_warning(r, w, n, weak):
    assert (weak_warning(r, w, n) is not None) is weak


@pytest.mark.parametrize("level", [None, "ONE", "quorum", "ALL", 1, 2, 5, "3"])
def test_level_wire_round_trip(level):
    back = level_from_wire(level_to_wire(level))
    if isinstance(level, str) and not level.isdigit():
        assert back == level.upper()
    elif isinstance(level, str):
        assert back == int(level)
    else:
        assert back == level


@pytest.mark.parametrize("level", [0, -2, True, "MOST", 1.5])
def test_level_to_wire_rejects(level):
    with pytest.raises(InvalidRequestError):
        level_to_wire(level)


# ------------------------------------- ring smaller than R/W (issue 10, hole 7)
def test_ring_shrinking_below_integer_r_w_never_raises_in_gossip_and_fails_per_request():
    from quorumkv.core.membership import LEFT, UP, Endpoint

    core = make(r=2, w=2)  # integers, not QUORUM: they cannot follow the ring down
    c = Conn("client")
    gone = [Endpoint(p, MEMBERS[p], 5, 9, LEFT) for p in ("n2", "n3")]
    eff = core.on_request(c, m.Gossip(1, gone), NOW)  # raised InvalidRequestError before
    assert [type(e.msg) for e in of(eff, Respond)] == [m.GossipAck]
    assert core.ring.nodes == ("n1",)
    for msg in (m.Put(2, KEY, b"v"), m.Get(3, KEY)):
        reply = sole_reply(core.on_request(c, msg, NOW), c)
        what = "W" if type(msg) is m.Put else "R"
        assert reply.status == m.UNAVAILABLE, reply  # not INVALID: the request is fine, the ring is small
        assert reply.message == f"{what}=2 needs 2 replicas but the ring has only 1 node (N=3 configured)"
    # An explicit level the ring can meet still works...
    eff = core.on_request(c, m.Put(4, KEY, b"v", m.LEVEL_ONE), NOW)
    (sw,) = of(eff, StoreWrite)
    assert sole_reply(core.on_store_done(sw.token, True, None, NOW), c).status == m.OK
    # ...one the configured N forbids is still the client's error...
    assert sole_reply(core.on_request(c, m.Get(5, KEY, 4), NOW), c).status == m.INVALID
    # ...and the defaults work again once the ring grows back.
    back = [Endpoint(p, MEMBERS[p], 6, 1, UP) for p in ("n2", "n3")]
    core.on_request(c, m.Gossip(6, back), NOW)
    assert core.ring.nodes == ("n1", "n2", "n3") and (core.default_r, core.default_w) == (2, 2)
    start_put(core, c, req_id=7)


# ------------------------------------------- joint rounds during a ring change (hole 4)
def test_joint_round_needs_every_group():
    from quorumkv.core.quorum import LOST, PENDING, WON, QuorumRound

    groups = (("current", frozenset("abc"), 2), ("future", frozenset("abd"), 2))
    rnd = QuorumRound("write", tuple("abcd"), 2, groups)
    assert rnd.add_ok("c") == PENDING and rnd.add_ok("d") == PENDING  # one from each: 2 acks, neither set has 2
    assert rnd.short_of("a") and rnd.short_of("b")
    assert rnd.add_ok("a") == WON  # a is in both sets
    rnd = QuorumRound("write", tuple("abcd"), 2, groups)
    rnd.add_ok("a")
    rnd.add_ok("c")  # the current set is met, the future one is not
    assert rnd.status == PENDING and not rnd.short_of("c") and rnd.short_of("d")
    assert rnd.add_failure("b", "down") == PENDING  # d can still make the future set
    assert rnd.add_failure("d", "down") == LOST


def test_plain_round_is_unchanged_by_joint_support():
    from quorumkv.core.quorum import WON, QuorumRound

    rnd = QuorumRound("write", tuple("abc"), 2)
    rnd.add_ok("c")
    assert rnd.short_of("a") and rnd.add_ok("b") == WON


def test_joint_read_targets_take_the_best_of_each_set():
    from quorumkv.core.routing import joint_read_targets

    groups = [(frozenset("abc"), 2), (frozenset("abd"), 2)]
    cands = [("c", None), ("a", None), ("d", None), ("b", None)]  # best first
    assert joint_read_targets(cands, groups) == ([("c", None), ("a", None), ("d", None)], [("b", None)])
    assert joint_read_targets(cands, groups, all_primaries=True)[1] == []
    # A fallback counts for the set of the primary it stands in for.
    cands = [("f", "c"), ("a", None), ("b", None), ("d", None)]
    assert joint_read_targets(cands, groups) == ([("f", "c"), ("a", None), ("b", None)], [("d", None)])


# ------------------------------------------------ peer input never raises (hole 7)
def _random_message(rng, cls, next_op):
    """A wire-valid instance of ``cls`` with adversarial field values: unknown node
    names, negative and huge numbers, ids of rounds that are open right now."""
    from msgspec import inspect as mi

    def gen(t, depth=0):
        if isinstance(t, mi.IntType):
            return rng.choice([0, 1, 2, 3, -1, -2, -3, -4, 2**62, -2**62, rng.randrange(-100, 100)])
        if isinstance(t, mi.FloatType):
            return rng.choice([0.0, 1.0, -1.0, 0.5, 1e300])
        if isinstance(t, mi.BoolType):
            return rng.random() < 0.5
        if isinstance(t, mi.StrType):
            return rng.choice(["n1", "n2", "n3", "ghost", "", "up", "left", "joining", "x" * 50])
        if isinstance(t, mi.BytesType):
            return rng.choice([b"", b"k", KEY, bytes(rng.randrange(256) for _ in range(rng.randrange(8)))])
        if isinstance(t, (mi.NoneType, mi.AnyType)):
            return None
        if isinstance(t, mi.UnionType):
            return gen(rng.choice(t.types), depth)
        if isinstance(t, mi.ListType):
            return [gen(t.item_type, depth + 1) for _ in range(rng.randrange(0 if depth > 2 else 4))]
        if isinstance(t, mi.TupleType):
            return tuple(gen(x, depth + 1) for x in t.item_types)
        if isinstance(t, mi.DictType):
            return {gen(t.key_type, depth + 1): gen(t.value_type, depth + 1) for _ in range(rng.randrange(3))}
        if isinstance(t, mi.StructType):
            return t.cls(**{f.name: max(next_op - rng.randrange(1, 30), 0) if f.name == "id" and rng.random() < 0.8
                            else gen(f.type, depth + 1) for f in t.fields})
        raise TypeError(t)

    return gen(mi.type_info(cls))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_peer_message_makes_the_core_raise(seed):
    import random

    import msgspec

    from quorumkv.core.antientropy import AESettings, install

    rng = random.Random(seed)
    members = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, 6)}
    core = NodeCore(NodeSettings("n1", vnodes=16, r=2, w=2), members, now_ms=NOW)
    install(core, AESettings(interval_ms=1_000), NOW)
    types = wire.REQUEST_TYPES + wire.RESPONSE_TYPES
    t = NOW
    for i in range(3_000):
        cls = rng.choice(types)
        try:  # only what can arrive: a message that survives the wire codec
            msg = msgspec.msgpack.decode(msgspec.msgpack.encode(_random_message(rng, cls, core._next_op)), type=cls)
        except (msgspec.ValidationError, ValueError, TypeError, OverflowError):
            continue
        t += rng.randrange(50)
        # inbound connections carry requests (and confused peers' responses); outbound links answers
        if type(msg) in wire.REQUEST_TYPES if rng.random() < 0.9 else rng.random() < 0.5:
            eff = core.on_request(Conn(i), msg, t)
        else:
            eff = core.on_response(rng.choice(["n2", "n3", "n4", "ghost"]), msg, t)
        for e in eff:
            if type(e) in (StoreWrite, StoreRead) and rng.random() < 0.7:
                core.on_store_done(e.token, rng.random() < 0.9, None, t)
        if rng.random() < 0.1:
            core.tick(t)
    assert all(v >= 0 for k, v in core.statistics().items() if not k.startswith("ae_")), core.statistics()


def _run_cluster_requests(net, requests):
    """Drive n1 of ``net`` (``mesh``) through ``requests``, one at a time: n2
    answers, n3 never (so W/R=2 need n1 and n2). The client's replies, n1's stats."""
    client = Client("c")
    net.cut = {"n3"}
    replies = []
    for i, msg in enumerate(requests):
        net.time_ms = NOW + i
        replies.append(net.request(client, "n1", msg))
    return replies, net.cores["n1"].stats


def test_fast_path_answers_exactly_as_the_general_path(monkeypatch):
    """Plain Get/Put take the coordinators' start_fast; the same requests through the general
    machinery alone give the same replies (versions included) and counters."""
    requests = []
    for i in range(30):
        key = b"k%d" % (i % 7)
        requests.append(m.Put(2 * i + 1, key, b"v%d" % i, ttl_ms=50_000 if i % 5 == 0 else 0)
                        if i % 3 else m.Get(2 * i + 1, key))
        requests.append(m.Get(2 * i + 2, key))
    requests.append(m.Put(100, b"", b"x"))  # invalid: the general path says why
    requests.append(m.Put(101, KEY, None))  # a delete

    fast_net = mesh(read_all_replicas=False, speculative_retry_ms=0)
    fast = fast_net.cores["n1"]
    taken = []

    def spy(real):
        def start_fast(*a):
            op = real(*a)
            taken.append(op is not None)
            return op
        return start_fast

    for coordinator in (fast.reads, fast.writes):
        monkeypatch.setattr(coordinator, "start_fast", spy(coordinator.start_fast))
    got_fast, stats_fast = _run_cluster_requests(fast_net, requests)
    assert taken.count(True) == len(requests) - 1  # all but the invalid one
    slow_net = mesh(read_all_replicas=False, speculative_retry_ms=0)
    slow = slow_net.cores["n1"]
    monkeypatch.setattr(slow.reads, "start_fast", lambda *a: None)
    monkeypatch.setattr(slow.writes, "start_fast", lambda *a: None)
    got_slow, stats_slow = _run_cluster_requests(slow_net, requests)
    assert len(got_fast) == len(requests) and None not in got_fast  # every request answered
    assert [r.status for r in got_fast].count(m.OK) > 40
    assert got_fast == got_slow
    assert stats_fast == stats_slow


def test_fast_path_is_not_taken_when_a_primary_is_down():
    core = make(read_all_replicas=False)
    core.membership.liveness["n3"] = DOWN
    eff = core.on_request(Conn("c"), m.Put(1, KEY, b"v"), NOW)
    local = of(eff, StoreWrite)
    assert [w.token[0] for w in local] == ["w"]  # the general path: a fallback or a hint


def test_every_reply_finds_its_round_through_the_one_owner_map():
    """Each open round's op id maps to its coordinator in ``core.owners``; once the
    round is answered and closed, the id leaves both tables, so a late or duplicate
    reply finds no owner and changes nothing."""
    core = make()
    client = Conn("c")
    sw, sends = start_put(core, client, w=m.LEVEL_ALL)  # the general path: every primary must ack
    (op_id,) = core.ops
    assert core.owners == {op_id: core.writes}
    assert core.on_store_done(sw.token, True, None, NOW) == []
    assert core.on_response("n2", ack(sends, "n2"), NOW) == []
    reply = sole_reply(core.on_response("n3", ack(sends, "n3"), NOW), client)
    assert reply.status == m.OK
    assert core.ops == {} and core.owners == {}
    assert core.on_response("n3", ack(sends, "n3"), NOW) == []  # a duplicate: no second answer
    rd, rsends = start_get(core, client, req_id=2)
    (read_id,) = core.ops
    assert core.owners == {read_id: core.reads} and read_id != op_id  # op ids are never reused


def test_the_local_replica_is_served_without_reentering_on_request(monkeypatch):
    """A general-path round reaches this node's own replica through the request table
    (connection SELF), not by calling the public ``on_request`` again; its ack comes
    back to the round without ``on_response`` either."""
    core = make()
    client = Conn("c")
    entered = []
    real_request, real_response = core.on_request, core.on_response
    monkeypatch.setattr(core, "on_request", lambda *a: entered.append("request") or real_request(*a))
    monkeypatch.setattr(core, "on_response", lambda *a: entered.append("response") or real_response(*a))
    eff = core.on_request(client, m.Put(1, KEY, b"v", m.LEVEL_ALL), NOW)
    (local,) = of(eff, StoreWrite)
    assert local.token[0] == "w" and local.token[1] is SELF  # the replica side's own token
    assert core.on_store_done(local.token, True, None, NOW) == []  # the ack went to the round
    assert entered == ["request"]
    (op,) = core.ops.values()
    assert op.round.oks == ["n1"]


def test_read_repair_is_a_decision_the_round_returns():
    """riak's final_action: the read coordinator returns the repairs (one RepWrite of
    the newest version per primary that answered with less; none for a fallback,
    which only holds hints) and sends nothing itself; the node applies them."""
    from quorumkv.core.quorum import QuorumRound
    from quorumkv.core.rounds import Op, Repair

    core = make(read_repair=True)
    new, old = rec(9, "n1", b"new"), rec(3, "n1", b"old")
    op = Op(core.new_op_id(), "read", QuorumRound("read", ("n1", "n2", "n3", "n4"), 4), Conn("c"), 1, NOW + 1,
            "", KEY)
    op.hint_for["n4"] = "n3"  # n4 stands in for n3
    for node, r in (("n1", new), ("n2", old), ("n3", None), ("n4", old)):
        op.round.add_ok(node, r)
    repairs = core.reads.final_action(op, new, reply_id=0)
    assert sorted(repairs) == sorted([Repair("n2", m.RepWrite(0, KEY, new)), Repair("n3", m.RepWrite(0, KEY, new))])
    assert core.stats["read_repairs"] == 2
    out = []
    core.apply(repairs, NOW, out)
    assert sorted((s.peer, s.msg) for s in of(out, Send)) == sorted((r.node, r.msg) for r in repairs)
    assert core.reads.final_action(op, None, reply_id=0) == []  # no copy anywhere: nothing to repair
