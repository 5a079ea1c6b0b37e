"""core/paxos.py driven directly: three NodeCores with the paxos family installed on
the shared harness (``quorumkv.sim.scenario.CoreMesh``: the one runtime, FIFO edges,
dict disks with the engines' rules), no I/O, a virtual clock."""

from __future__ import annotations

import pytest

from quorumkv.core import messages as m
from quorumkv.core import messages_cas as mc
from quorumkv.core.casops import apply_op, parse_int64
from quorumkv.core.paxos import install, parent_of
from quorumkv.core.version import Record, Version
from quorumkv.shell.storage import MemoryEngine
from quorumkv.sim.scenario import CoreMesh, MeshClient

NAMES = ("n1", "n2", "n3")
NOW = 1_700_000_000_000


class Net(CoreMesh):
    """Cores with the paxos family installed (each its own ``rng_seed``). ``request``
    only hands a client message in; ``deliver`` runs everything queued (messages and
    storage) to quiescence. ``sent``: the type of every node-to-node message, in the
    order nodes sent them; ``sent_msgs`` the messages themselves."""

    def __init__(self, names=NAMES, **kw):
        self.sent: list = []
        self.sent_msgs: list = []
        self.client = MeshClient("client")
        super().__init__(names, time_ms=NOW, ceiling=False, **kw)  # no durable HLC ceiling to wait for
        self.replies = self.client.replies  # client request id -> reply

    def settings_of(self, node):
        return {**super().settings_of(node), "rng_seed": self.names.index(node)}

    def restart(self, node):
        super().restart(node)
        install(self.cores[node])

    def sending(self, node, peer, msg):
        self.sent.append(type(msg))
        self.sent_msgs.append(msg)

    def request(self, node, msg):
        self.executors[node].request(self.client, msg)

    def deliver(self, drop_to=()):
        """Run to quiescence; messages to or from ``drop_to`` are lost."""
        self.cut = set(drop_to)
        self.settle()
        self.cut = set()

    def promise(self, node, key, ballot):
        """A promise of ``ballot`` for ``key``, made on ``node``'s disk by storage itself."""
        got = []
        self.executors[node].storage.paxos("prepare", key, ballot, None, lambda ok, r: got.append((ok, r)))
        self.settle()
        assert got and got[0][0] is True and got[0][1][0] is True, got


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
    assert all(net.disk[n][b"k"].value == b"a" for n in NAMES)
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
    net.disk["n3"][b"k"] = rec  # a write that reached one replica only
    # Read through n2 with n1 silent: n2 and n3 answer, they disagree -> write back.
    net.request("n2", atomic(1, op=mc.OP_GET))
    net.deliver(drop_to=("n1",))
    assert net.replies[1].value == b"partial"
    assert net.disk["n2"][b"k"] == rec  # now on a majority (n2, n3)
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
    # Before n1's prepares arrive, n2 and n3 promise a far higher ballot of n2.
    high = Version((NOW + 5) << 16, "n2")
    for n in ("n2", "n3"):
        net.promise(n, b"k", high)
    net.request("n1", atomic(1, op=mc.OP_INCR, delta=1, forwarded=True))
    net.deliver()
    assert 1 not in net.replies  # refused: backing off
    for _step in range(1, 400):
        net.tick(1)
        if 1 in net.replies:
            break
    assert net.replies[1].status == m.OK and net.replies[1].number == 1
    assert net.cores["n1"].stats["cas_retries"] >= 1
    assert net.disk["n2"][b"k"].version.newer_than(high)


def test_changes_are_forwarded_to_the_home_and_run_one_at_a_time():
    net = Net()
    home = net.cores["n1"].ring.preference_list(b"k")[0]
    other = next(n for n in NAMES if n != home)
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
    first = net.disk["n1"][b"k"].version
    assert parent_of(first) is None
    net.request("n1", atomic(2, value=b"b", expected=b"a", forwarded=True))
    net.deliver()
    assert parent_of(net.disk["n1"][b"k"].version) == first.key()


@pytest.mark.parametrize("bad", [atomic(1, key=b""), atomic(1, op=99), atomic(1, op=mc.OP_SET, ttl_ms=-1)])
def test_bad_requests_are_refused_not_crashing(bad):
    net = Net()
    net.request("n1", bad)
    net.deliver()
    assert net.sent == []  # refused by the coordinator itself
    assert net.replies[1].status == m.INVALID and net.replies[1].message


def test_one_node_ring_answers_alone():
    net = Net(("n1",), n=1, r=1, w=1)
    net.request("n1", atomic(1, op=mc.OP_INCR, delta=2))
    net.deliver()
    net.request("n1", atomic(2, op=mc.OP_GET))
    net.deliver()
    assert net.sent == []  # no peer to ask
    replies = [net.replies[1], net.replies[2]]
    assert [r.status for r in replies] == [m.OK, m.OK] and replies[0].number == 2 and replies[1].value == b"2"


def test_paxos_message_ids_never_name_a_node_round():
    """A failed send is reported by message id: ours come from the core's counter."""
    net = Net()
    core = net.cores["n1"]
    net.request("n1", m.Get(1, b"plain", m.LEVEL_QUORUM))  # a node.py round, op id from the core
    net.request("n1", atomic(2, op=mc.OP_GET))
    assert core.ops  # the plain round is still open: its op id is taken
    sent_ids = [msg.id for msg in net.sent_msgs if type(msg) is mc.PxRead]
    assert sent_ids and not set(sent_ids) & set(core.ops)
