"""Sans-IO framing: round trips, arbitrary splits, several frames, hostile input."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core import messages as m
from quorumkv.core import wire
from quorumkv.core import messages_ae as ae
from quorumkv.core import messages_cas as mc
from quorumkv.core import messages_ring as mr
from quorumkv.core.framing import FrameDecoder, FrameEncoder
from quorumkv.core.membership import Endpoint
from quorumkv.core.version import Record, Version
from quorumkv.errors import ProtocolError

VER = Version(123 << 16 | 4, "n2", {"n1": 3, "n2": 1})
REC = Record(VER, b"value")
TOMB = Record(Version(9, "n1"), None)

ALL_MESSAGES = [
    m.Get(1, b"k"),
    m.Get(2, b"k2", m.LEVEL_QUORUM),
    m.Put(3, b"k", b"v", 2),
    m.Put(4, b"k", None),  # delete
    m.Put(5, b"k", b""),  # empty value, not a delete
    m.Ping(6),
    m.Reply(7, m.OK, b"v", VER, "", "weak"),
    m.Reply(8, m.NOT_FOUND, message="not found"),
    m.Reply(9, m.UNAVAILABLE, message="write needed 2 acks, got 1"),
    m.Pong(10, "n1", 3, 2, 2, {"n1": "127.0.0.1:1"}, "sqlite"),
    m.Pong(11, "n1", 3, 2, 2),
    m.RepWrite(12, b"k", REC),
    m.RepWrite(13, b"k", TOMB),
    m.RepWriteAck(14, True),
    m.RepWriteAck(15, False, "disk full"),
    m.RepRead(16, b"\x00\xff"),
    m.RepReadResp(17, True, REC),
    m.RepReadResp(18, True, None),
    m.RepReadResp(19, True, TOMB),
    m.RepReadResp(20, False, None, "storage error"),
    m.Error(21, "bad"),
    m.Get(22, b"k", m.LEVEL_ONE, True, True),
    m.Put(23, b"k", b"v", 0, 1500, True),
    m.Status(24),
    m.StatusReply(25, "n1", [m.MemberView("n1", "h:1", "up", "up", 7, 3, 0.5)], ["n1"], {"won": 3}, {"n2": 4}),
    m.Inspect(26, b"k"),
    m.InspectReply(27, b"k", "n1", ["n1", "n2"],
                   [m.ReplicaView("n1", "primary", "up", True, "1.0@n1", False, 3),
                    m.ReplicaView("n4", "fallback", "up", True, None, hint_for="n2")], "1.0@n1"),
    m.RepWrite(28, b"k", REC, "n3"),
    m.RepRead(29, b"k", "n3"),
    m.RepPeek(30, b"k"),
    m.RepPeekResp(31, REC, [("n2", TOMB)]),
    m.Heartbeat(0, "n1", 1_700_000_000_000),
    m.Gossip(0, [Endpoint("n1", "h:1", 5, 9, "up")]),
    m.GossipAck(0, [Endpoint("n2", "h:2", 5, 1, "joining")]),
    mr.StreamRequest(40, "n6", ["n1", "n6"], None, 512),
    mr.StreamRequest(41, "n6", ["n1", "n6"], b"after", 512),
    mr.StreamBatch(42, [(b"k", REC), (b"t", TOMB)], b"t", 2),
    mr.StreamBatch(43, [], None),
    mr.Decommission(44),
    mr.Decommission(45, True),
    mr.RingPlan(46, [("n1", "n6", 0.125)]),
]

MESSAGE_TYPES = {m.Get, m.Put, m.Ping, m.Reply, m.Pong, m.RepWrite, m.RepWriteAck,
                 m.RepRead, m.RepReadResp, m.Error, m.Status, m.StatusReply, m.Inspect,
                 m.InspectReply, m.RepPeek, m.RepPeekResp, m.Heartbeat, m.Gossip, m.GossipAck,
                 mr.StreamRequest, mr.StreamBatch, mr.Decommission, mr.RingPlan}


# Live latencies and dynamic quorums (issue 5): new types, appended fields.
ALL_MESSAGES += [
    m.Latencies(60),
    m.LatenciesReply(61, "n1", [0.5, 1.25], [0.25], [], [0.125], {"w": 2, "a": 1, "r": 0, "s": 1},
                     {"n": 3, "ready": False}),
    m.Get(62, b"k", 0, False, False, 0.999, 5.0),
    m.Put(63, b"k", b"v", 0, 0, False, 2.5),
    m.Reply(64, m.OK, b"v", VER, r_used=2),
    m.Reply(65, m.OK, w_used=3),
    m.RepWriteAck(66, True, "", 1_700_000_000_000_123),
    m.RepReadResp(67, True, REC, "", 1_700_000_000_000_456),
]
MESSAGE_TYPES |= {m.Latencies, m.LatenciesReply}

# Anti-entropy and tombstone GC (issue 4, core/messages_ae.py): tags 40-47.
ALL_MESSAGES += [
    ae.AETree(70, "n1", 123456789, 2, b"\x00" * 32),
    ae.AETreeResp(71, True, "", [1, 3], [(b"k", VER), (b"t", TOMB.version)], True, 7),
    ae.AETreeResp(72, False, "ring differs"),
    ae.AEExchange(73, [(b"k", REC), (b"t", TOMB)], [b"want"]),
    ae.AEExchangeResp(74, True, "", 2, [(b"want", REC)], [b"later"]),
    ae.AEGc(75, [(b"t", TOMB.version)]),
    ae.AEGc(76, [(b"t", TOMB.version)], True),
    ae.AEGcResp(77, [True, False]),
    ae.Repair(78),
    ae.RepairReply(79, "n1", False, {"keys_pulled": 3}, ["n2"], {"n4": "down"}, ""),
]
MESSAGE_TYPES |= {ae.AETree, ae.AETreeResp, ae.AEExchange, ae.AEExchangeResp, ae.AEGc, ae.AEGcResp,
                  ae.Repair, ae.RepairReply}
# Issue 10: decommission --force (appended field), cleanup (tag 54).
ALL_MESSAGES += [mr.Decommission(80, False, True), mr.Cleanup(81), mr.Cleanup(82, True, 1_000)]
MESSAGE_TYPES |= {mr.Cleanup}
# Issue 13: authentication and snapshots (core/messages_admin.py): tags 80-82.
from quorumkv.core import messages_admin as ma  # noqa: E402

ALL_MESSAGES += [ma.Auth(90, "alice", "pw"), ma.Snapshot(91, "nightly"),
                 ma.SnapshotReply(92, True, "", "n1", "/d/snapshots/nightly", 3, 8192, 1_700_000_000_000),
                 ma.SnapshotReply(93, False, "a snapshot is already running")]
MESSAGE_TYPES |= {ma.Auth, ma.Snapshot, ma.SnapshotReply}
# Issue 13: the cluster-wide key scan (core/messages_scan.py): tags 70-73.
from quorumkv.core import messages_scan as ms  # noqa: E402

ALL_MESSAGES += [ms.Scan(94, b"a", b"user:*", 100), ms.ScanReply(95, [b"k1", b"k2"], b"k2", ["n1", "n2"]),
                 ms.ScanPeek(96, b"", None, 10),
                 ms.ScanPeekResp(97, True, [(b"k", VER, False, 0), (b"t", TOMB.version, True, 0)], b"t"),
                 ms.ScanPeekResp(98, False, error="busy")]
MESSAGE_TYPES |= {ms.Scan, ms.ScanReply, ms.ScanPeek, ms.ScanPeekResp}
# Issue 15: typed writes (counters, sets, maps, siblings; core/messages_typed.py): tags 100-109.
from quorumkv.core import messages_typed as mt  # noqa: E402

ALL_MESSAGES += [mt.Update(99, b"cart", 3, "sadd", [b"apple"]), mt.Update(100, b"c", 2, "incr", delta=-5),
                 mt.TypedApply(101, b"k", 1, "put", [b"v"], ctx=b"\x01"),
                 mt.TypedApplied(102, True, REC), mt.TypedApplied(103, False, None, 3, "overloaded")]
MESSAGE_TYPES |= {mt.Update, mt.TypedApply, mt.TypedApplied}
# Issue 11: linearizable operations (core/messages_cas.py): tags 60-67.
ALL_MESSAGES += [
    mc.Atomic(90, b"k", mc.OP_CAS, b"new", b"old"),
    mc.Atomic(91, b"k", mc.OP_CAS, b"new", None, True, forwarded=True),
    mc.Atomic(92, b"n", mc.OP_INCR, delta=-5),
    mc.Atomic(93, b"k", mc.OP_SET, b"v", flags=mc.FLAG_NX | mc.FLAG_KEEPTTL, ttl_ms=1_000, plain=True),
    mc.AtomicReply(94, m.OK, True, b"v", b"old", 7, VER, "", 0, True),
    mc.AtomicReply(95, m.TIMEOUT, message="outcome unknown"),
    mc.PxRead(96, b"k"),
    mc.PxReadResp(97, True, REC),
    mc.PxReadResp(98, False, None, "storage error"),
    mc.PxPrepare(99, b"k", VER),
    mc.PxPromise(100, True, True, REC, VER),
    mc.PxPromise(101, True, False, None, VER),
    mc.PxAccept(102, b"k", REC),
    mc.PxAccepted(103, True, True),
    mc.PxAccepted(104, True, False, VER, VER),
]
MESSAGE_TYPES |= {mc.Atomic, mc.AtomicReply, mc.PxRead, mc.PxReadResp, mc.PxPrepare, mc.PxPromise, mc.PxAccept,
                  mc.PxAccepted}


def test_sample_covers_every_message_type():
    assert {type(x) for x in ALL_MESSAGES} == MESSAGE_TYPES
    assert set(wire.Message.__args__) == MESSAGE_TYPES


@pytest.fixture
def enc():
    return FrameEncoder()


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda x: f"{type(x).__name__}-{x.id}")
def test_round_trip_each_message(enc, msg):
    frame = enc.encode(msg)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    dec = FrameDecoder()
    out = dec.feed(frame)
    assert out == [msg]
    assert type(out[0]) is type(msg)
    assert dec.buffered == 0


def test_tombstone_and_empty_value_stay_distinct(enc):
    dec = FrameDecoder()
    put_del, put_empty = dec.feed(enc.encode(m.Put(1, b"k", None)) + enc.encode(m.Put(2, b"k", b"")))
    assert put_del.value is None
    assert put_empty.value == b""


def test_several_frames_in_one_feed(enc):
    stream = b"".join(enc.encode(x) for x in ALL_MESSAGES)
    dec = FrameDecoder()
    assert dec.feed(stream) == ALL_MESSAGES
    assert dec.buffered == 0


def test_one_byte_at_a_time(enc):
    stream = b"".join(enc.encode(x) for x in ALL_MESSAGES)
    dec = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out.extend(dec.feed(stream[i : i + 1]))
    assert out == ALL_MESSAGES
    assert dec.buffered == 0


def test_split_at_every_boundary(enc):
    stream = b"".join(enc.encode(x) for x in ALL_MESSAGES[:6])
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        out = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert out == ALL_MESSAGES[:6], cut
        assert dec.buffered == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=12), st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_arbitrary_chunking(cuts, values):
    enc = FrameEncoder()
    msgs = [m.Put(i, b"key-%d" % i, v) for i, v in enumerate(values)]
    stream = b"".join(enc.encode(x) for x in msgs)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    dec = FrameDecoder()
    out = []
    for a, b in zip(points, points[1:]):
        out.extend(dec.feed(stream[a:b]))
    assert out == msgs


def test_partial_frame_is_buffered(enc):
    frame = enc.encode(m.Ping(1))
    dec = FrameDecoder()
    assert dec.feed(frame[:-1]) == []
    assert dec.buffered == len(frame) - 1
    assert dec.feed(frame[-1:]) == [m.Ping(1)]


def test_oversized_length_header_raises_before_payload_arrives():
    dec = FrameDecoder(frame_bytes_max=1000)
    with pytest.raises(ProtocolError, match="exceeds FRAME_BYTES_MAX"):
        dec.feed((1001).to_bytes(4, "big"))  # header only; no need to wait for the body


def test_default_max_rejects_huge_header():
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(b"\xff\xff\xff\xff")


def test_frame_at_exact_limit_accepted(enc):
    frame = enc.encode(m.Ping(1))
    dec = FrameDecoder(frame_bytes_max=len(frame) - 4)
    assert dec.feed(frame) == [m.Ping(1)]


def test_garbage_payload_raises(enc):
    payload = b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    with pytest.raises(ProtocolError, match="undecodable"):
        FrameDecoder().feed(len(payload).to_bytes(4, "big") + payload)


def test_valid_msgpack_wrong_shape_raises():
    payload = msgspec.msgpack.encode({"hello": "world"})
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(len(payload).to_bytes(4, "big") + payload)


def test_unknown_tag_raises():
    payload = msgspec.msgpack.encode([77, 1, b"k"])
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(len(payload).to_bytes(4, "big") + payload)


def test_known_tag_wrong_field_types_raises():
    payload = msgspec.msgpack.encode([1, "not-an-int", b"k"])  # Get with a str id
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(len(payload).to_bytes(4, "big") + payload)


def test_bad_frame_after_a_good_one_in_the_same_feed_raises(enc):
    # The whole feed raises (the caller closes the connection); the good frame
    # decoded just before is not returned.
    bad = b"\x00\x00\x00\x01\xc1"
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(enc.encode(m.Ping(1)) + bad)


def test_wire_tags_frozen(enc):
    # Frozen format: the first array element is the tag.
    tags = {m.Get: 1, m.Put: 2, m.Ping: 3, m.Reply: 10, m.Pong: 11, m.RepWrite: 20,
            m.RepWriteAck: 21, m.RepRead: 22, m.RepReadResp: 23, m.Error: 99,
            m.Status: 4, m.Inspect: 5, m.StatusReply: 12, m.InspectReply: 13, m.RepPeek: 24,
            m.RepPeekResp: 25, m.Heartbeat: 30, m.Gossip: 31, m.GossipAck: 32,
            mr.StreamRequest: 50, mr.StreamBatch: 51, mr.Decommission: 52, mr.RingPlan: 53}
    tags.update({m.Latencies: 6, m.LatenciesReply: 14})
    tags.update({ae.AETree: 40, ae.AETreeResp: 41, ae.AEExchange: 42, ae.AEExchangeResp: 43, ae.AEGc: 44,
                 ae.AEGcResp: 45, ae.Repair: 46, ae.RepairReply: 47})
    tags[mr.Cleanup] = 54
    tags.update({ma.Auth: 80, ma.Snapshot: 81, ma.SnapshotReply: 82})
    tags.update({ms.Scan: 70, ms.ScanReply: 71, ms.ScanPeek: 72, ms.ScanPeekResp: 73})
    tags.update({mt.Update: 100, mt.TypedApply: 101, mt.TypedApplied: 102})
    tags.update({mc.Atomic: 60, mc.AtomicReply: 61, mc.PxRead: 62, mc.PxReadResp: 63, mc.PxPrepare: 64,
                 mc.PxPromise: 65, mc.PxAccept: 66, mc.PxAccepted: 67})
    for msg in ALL_MESSAGES:
        arr = msgspec.msgpack.decode(enc.encode(msg)[4:])
        assert arr[0] == tags[type(msg)]
        assert arr[1] == msg.id


def test_wire_tags_unique():
    """Every message type has its own tag: two modules that picked the same number would
    decode each other's frames as the wrong type (msgspec's tagged union refuses it only
    when the union is built, so check the whole table)."""
    types = wire.REQUEST_TYPES + wire.RESPONSE_TYPES
    seen: dict[int, str] = {}
    for t in types:
        tag = t.__struct_config__.tag
        assert tag not in seen, f"tag {tag} used by {seen[tag]} and {t.__name__}"
        seen[tag] = t.__name__
