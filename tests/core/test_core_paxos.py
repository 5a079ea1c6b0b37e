"""core/paxos.py driven directly: three NodeCores with the paxos family installed,
their storage a MemoryEngine each, messages delivered by hand (no I/O, no clock)."""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.core import messages_cas as mc
from quorumkv.core.node import NodeCore, NodeSettings, Respond, Send, StoreRead, StoreWrite
from quorumkv.core.casops import apply_op, parse_int64
from quorumkv.core.paxos import PaxosStore, install, parent_of
from quorumkv.core.version import Record, Version
from quorumkv.shell.storage import MemoryEngine

MEMBERS = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}
NOW = 1_700_000_000_000


class Net:
    """Three cores; sends queue up until ``deliver``; storage effects run at once."""

    def __init__(self):
        self.cores = {n: NodeCore(NodeSettings(n, rng_seed=i), MEMBERS, now_ms=NOW) for i, n in enumerate(MEMBERS)}
        for core in self.cores.values():
            install(core)
        self.stores = {n: MemoryEngine() for n in MEMBERS}
        self.queue: list = []  # (src, dst, msg, is_response)
        self.replies: dict = {}  # client id -> reply
        self.sent: list = []  # every node-to-node message type, in order

    def run(self, node, effects):
        for eff in effects:
            t = type(eff)
            if t is Send:
                self.sent.append(type(eff.msg))
                self.queue.append((node, eff.peer, eff.msg, False))
            elif t is Respond:
                if eff.conn == "client":
                    self.replies[eff.msg.id] = eff.msg
                else:
                    self.queue.append((node, eff.conn, eff.msg, True))
            elif t is PaxosStore:
                box = []
                self.stores[node].paxos(eff.op, eff.key, eff.ballot, eff.record, lambda ok, r: box.append((ok, r)))
                self.run(node, self.cores[node].on_store_done(eff.token, *box[0], NOW))
            elif t is StoreRead:
                self.run(node, self.cores[node].on_store_done(eff.token, True, self.stores[node].get_now(eff.key), NOW))
            elif t is StoreWrite:
                box = []
                self.stores[node].write(eff.key, eff.record, lambda ok, r: box.append((ok, r)))
                self.run(node, self.cores[node].on_store_done(eff.token, *box[0], NOW))

    def request(self, node, msg):
        self.run(node, self.cores[node].on_request("client", msg, NOW))

    def deliver(self, drop_to=(), max_steps=10_000):
        for _ in range(max_steps):
            if not self.queue:
                return
            src, dst, msg, is_resp = self.queue.pop(0)
            if dst in drop_to or src in drop_to:
                continue
            if is_resp:
                self.run(dst, self.cores[dst].on_response(src, msg, NOW))
            else:
                self.run(dst, self.cores[dst].on_request(src, msg, NOW))

    def tick(self, ms):
        for n, core in self.cores.items():
            self.run(n, core.tick(NOW + ms))


def atomic(rid, key=b"k", op=mc.OP_CAS, value=None, **kw):
    return mc.Atomic(rid, key, op, value, **kw)


def test_apply_op_table():
    rec = Record(Version(1, "n1"), b"5")
    new, res = apply_op(atomic(1, op=mc.OP_INCR, delta=3), rec, NOW)
    assert new == (b"8", 0) and res.number == 8
    new, res = apply_op(atomic(1, op=mc.OP_INCR, delta=1), Record(Version(1, "n1"), b"x"), NOW)
    assert res.error and not res.applied
    new, res = apply_op(atomic(1, op=mc.OP_CAS, value=b"v", expected=b"5"), rec, NOW)
    assert res.applied and new == (b"v", 0)
    new, res = apply_op(atomic(1, op=mc.OP_CAS, value=b"v", expected=b"6"), rec, NOW)
    assert not res.applied and res.value == b"5"
    new, res = apply_op(atomic(1, op=mc.OP_CAS, value=b"v", expect_absent=True), None, NOW)
    assert res.applied
    _, res = apply_op(atomic(1, op=mc.OP_SET, value=b"v", flags=mc.FLAG_NX), rec, NOW)
    assert not res.applied and res.old == b"5"
    _, res = apply_op(atomic(1, op=mc.OP_SET, value=b"v", flags=mc.FLAG_XX), None, NOW)
    assert not res.applied
    new, res = apply_op(atomic(1, op=mc.OP_GETDEL), rec, NOW)
    assert new == (None, 0) and res.old == b"5"
    expired = Record(Version(1, "n1"), b"5", expires_ms=NOW - 1)
    _, res = apply_op(atomic(1, op=mc.OP_CAS, value=b"v", expect_absent=True), expired, NOW)
    assert res.applied  # an expired value is absent
    assert [parse_int64(x) for x in (b"12", b"-3", b" 1", b"+1", b"01", b"9223372036854775808")] == [
        12, -3, None, None, None, None]


def test_uncontended_cas_is_two_round_trips_and_reads_agreeing_replicas_in_one():
    net = Net()
    net.request("n1", atomic(1, value=b"a", expect_absent=True))
    net.deliver()
    assert net.replies[1].status == m.OK and net.replies[1].applied
    assert net.sent.count(mc.PxPrepare) == 2 and net.sent.count(mc.PxAccept) == 2  # to the 2 peers
    assert all(net.stores[n].get_now(b"k").value == b"a" for n in MEMBERS)
    net.sent.clear()
    net.request("n2", atomic(2, op=mc.OP_GET))
    net.deliver()
    assert net.replies[2].value == b"a"
    assert set(net.sent) == {mc.PxRead}  # one round trip: every replica agreed
    net.request("n3", atomic(3, value=b"b", expected=b"zzz"))
    net.deliver()
    assert net.replies[3].status == m.OK and not net.replies[3].applied and net.replies[3].value == b"a"


def test_linearizable_read_writes_back_a_value_not_yet_on_a_majority():
    net = Net()
    rec = Record(Version(NOW << 16, "n9"), b"partial")
    net.stores["n3"].data[b"k"] = rec  # a write that reached one replica only
    # Read through n2 with n1 silent: n2 and n3 answer, they disagree -> write back.
    net.request("n2", atomic(1, op=mc.OP_GET))
    net.deliver(drop_to=("n1",))
    assert net.replies[1].value == b"partial"
    assert net.stores["n2"].get_now(b"k") == rec  # now on a majority (n2, n3)
    assert net.cores["n2"].stats["lin_writebacks"] == 1


def test_promise_fences_an_older_plain_write_and_reports_it_as_newer():
    store = MemoryEngine()
    got = []
    store.paxos("prepare", b"k", Version(100, "n1"), None, lambda ok, r: got.append(r))
    assert got[0][0] is True
    store.write(b"k", Record(Version(50, "n2"), b"old"), lambda ok, r: got.append(r))
    assert got[1] == Version(100, "n1") and store.get_now(b"k") is None  # not stored: fenced
    store.write(b"k", Record(Version(150, "n2"), b"new"), lambda ok, r: got.append(r))
    assert got[2] is None and store.get_now(b"k").value == b"new"
    store.paxos("accept", b"k", None, Record(Version(100, "n1"), b"cas"), lambda ok, r: got.append(r))
    assert got[3][0] is False  # the newer plain write wins: the CAS must retry above it


def test_accept_refused_by_a_higher_promise_retries_above_it():
    net = Net()
    net.request("n1", atomic(1, op=mc.OP_INCR, delta=1, forwarded=True))
    # Before n1's prepares arrive, n2 and n3 promise a far higher ballot of n2.
    high = Version((NOW + 5) << 16, "n2")
    for n in ("n2", "n3"):
        net.stores[n].paxos("prepare", b"k", high, None, lambda ok, r: None)
    net.deliver()
    assert 1 not in net.replies  # refused: backing off
    for step in range(1, 400):
        net.tick(step)
        net.deliver()
        if 1 in net.replies:
            break
    assert net.replies[1].status == m.OK and net.replies[1].number == 1
    assert net.cores["n1"].stats["cas_retries"] >= 1
    assert net.stores["n2"].get_now(b"k").version.newer_than(high)


def test_changes_are_forwarded_to_the_home_and_run_one_at_a_time():
    net = Net()
    home = net.cores["n1"].ring.preference_list(b"k")[0]
    other = next(n for n in MEMBERS if n != home)
    for i in range(1, 6):
        net.request(other, atomic(i, op=mc.OP_INCR, delta=1))
    net.deliver()
    assert sorted(net.replies[i].number for i in range(1, 6)) == [1, 2, 3, 4, 5]
    assert net.cores[other].stats["cas_forwarded"] == 5
    assert net.cores[home].stats["cas_retries"] == 0


def test_records_name_their_parent_state():
    net = Net()
    net.request("n1", atomic(1, value=b"a", expect_absent=True, forwarded=True))
    net.deliver()
    first = net.stores["n1"].get_now(b"k").version
    assert parent_of(first) is None
    net.request("n1", atomic(2, value=b"b", expected=b"a", forwarded=True))
    net.deliver()
    assert parent_of(net.stores["n1"].get_now(b"k").version) == first.key()


@pytest.mark.parametrize("bad", [atomic(1, key=b""), atomic(1, op=99), atomic(1, op=mc.OP_SET, ttl_ms=-1)])
def test_bad_requests_are_refused_not_crashing(bad):
    net = Net()
    net.request("n1", bad)
    assert net.replies[1].status == m.INVALID and net.replies[1].message


def test_one_node_ring_answers_synchronously():
    core = NodeCore(NodeSettings("n1", n=1, r=1, w=1), {"n1": "127.0.0.1:7001"}, now_ms=NOW)
    install(core)
    store = MemoryEngine()
    replies = []

    def run(effects):
        for eff in effects:
            if type(eff) is PaxosStore:
                box = []
                store.paxos(eff.op, eff.key, eff.ballot, eff.record, lambda ok, r: box.append((ok, r)))
                run(core.on_store_done(eff.token, *box[0], NOW))
            elif type(eff) is StoreRead:
                run(core.on_store_done(eff.token, True, store.get_now(eff.key), NOW))
            elif type(eff) is Respond:
                replies.append(eff.msg)

    run(core.on_request("client", atomic(1, op=mc.OP_INCR, delta=2), NOW))
    run(core.on_request("client", atomic(2, op=mc.OP_GET), NOW))
    assert [r.status for r in replies] == [m.OK, m.OK] and replies[0].number == 2 and replies[1].value == b"2"


def test_paxos_message_ids_never_name_a_node_round():
    """A failed send is reported by message id: ours come from the core's counter."""
    net = Net()
    core = net.cores["n1"]
    net.request("n1", m.Get(1, b"plain", m.LEVEL_QUORUM))  # a node.py round, op id from the core
    net.request("n1", atomic(2, op=mc.OP_GET))
    sent_ids = [msg.id for _src, _dst, msg, _r in net.queue if type(msg) is mc.PxRead]
    assert sent_ids and not set(sent_ids) & set(core.ops)
