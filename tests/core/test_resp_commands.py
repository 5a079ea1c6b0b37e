"""RESP command handlers (pure, against a fake quorum) and the connection's reply order
and bounds (against a fake core and transport) — no sockets, no processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from quorumkv.core import messages as m
from quorumkv.core.limits import CLIENT_PIPELINE_MAX
from quorumkv.core import messages_cas as mc
from quorumkv.core.casops import _KEEP, apply_op
from quorumkv.core.version import Record, Version
from quorumkv.resp import commands as c
from quorumkv.resp.atomic import AtomicOp
from quorumkv.resp.commands import CommandError, ReadOp, Session, WriteOp, lookup

NOW = 1_700_000_000_000


class FakeNode:
    node_id = "n1"
    n = 3
    default_r = 2
    default_w = 2
    members = {"n1": "h:1", "n2": "h:2", "n3": "h:3"}
    password = ""
    resp_listen = "127.0.0.1:6400"
    started_ms = NOW - 5_000
    stats = {"total_connections_received": 1, "total_commands_processed": 0, "total_error_replies": 0,
             "protocol_errors": 0, "connected_clients": 1}

    def __init__(self):
        self.clock = NOW
        self.store: dict[bytes, tuple[bytes, int]] = {}  # key -> (value, expires_ms)
        self.ops: list = []
        self.fail_status = None

    def now_ms(self):
        return self.clock

    def local_records(self):
        return len(self.store)

    def core_statistics(self):
        return {"requests": 0}

    def storage_name(self):
        return "memory"

    def client_infos(self):
        return ["id=1 addr=?"]

    def answer(self, op, rid):
        self.ops.append(op)
        if self.fail_status is not None:
            return m.Reply(rid, self.fail_status, message="write needed 3 acks, got 2 (n3 timed out)")
        if type(op) is AtomicOp:  # a linearizable proposal: its change function on the store
            entry = self.store.get(op.key)
            cur = Record(Version(5 << 16, "n2"), entry[0], entry[1]) if entry else None
            new, res = apply_op(op.to_msg(rid), cur, self.clock)
            if res.error:
                return mc.AtomicReply(rid, m.INVALID, message=res.error)
            if new is not _KEEP:
                if new[0] is None:
                    self.store.pop(op.key, None)
                else:
                    self.store[op.key] = new
            return mc.AtomicReply(rid, m.OK, res.applied, res.value, res.old, res.number, found=res.found)
        if type(op) is ReadOp:
            entry = self.store.get(op.key)
            if entry is None or (entry[1] and entry[1] <= self.clock):
                return m.Reply(rid, m.NOT_FOUND, None, Version(1, "n1") if entry else None, "not found")
            return m.Reply(rid, m.OK, entry[0], Version(5 << 16, "n2"), "", "", entry[1])
        if op.value is None:
            self.store.pop(op.key, None)
        else:
            self.store[op.key] = (op.value, self.clock + op.ttl_ms if op.ttl_ms else 0)
        return m.Reply(rid, m.OK)


def run(node, *words, session=None):
    """Run one command to completion; returns the encoded reply."""
    s = session or Session(7)
    args = [w.encode() if isinstance(w, str) else w for w in words]
    handler, error = lookup(args, s)
    if error is not None:
        return error
    try:
        result = handler(s, node, args)
        if type(result) is bytes:
            return result
        replies = None
        rid = 0
        while True:
            try:
                ops = result.send(replies)
            except StopIteration as stop:
                return stop.value
            replies = []
            for op in ops:
                rid += 1
                replies.append(node.answer(op, rid))
            replies = tuple(replies)
    except CommandError as exc:
        return b"-" + exc.message.encode() + b"\r\n"


@pytest.fixture
def node():
    return FakeNode()


def test_get_set_del_exists(node):
    assert run(node, "GET", "k") == b"$-1\r\n"
    assert run(node, "GET", "k", session=_s3()) == b"_\r\n"
    assert run(node, "SET", "k", "v") == b"+OK\r\n"
    assert run(node, "get", "k") == b"$1\r\nv\r\n"
    assert run(node, "EXISTS", "k", "nope", "k") == b":2\r\n"
    assert run(node, "DEL", "k", "nope", "k") == b":1\r\n"
    assert run(node, "MSET", "a", "1", "b", "2") == b"+OK\r\n"
    assert run(node, "MGET", "a", "x", "b") == b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    assert run(node, "TYPE", "a") == b"+string\r\n" and run(node, "TYPE", "x") == b"+none\r\n"


def _s3():
    s = Session(8)
    s.proto = 3
    return s


def test_set_options(node):
    assert run(node, "SET", "k", "1", "NX") == b"+OK\r\n"
    assert run(node, "SET", "k", "2", "NX") == b"$-1\r\n"
    assert run(node, "SET", "k", "3", "XX", "GET") == b"$1\r\n1\r\n"
    assert run(node, "SET", "new", "3", "XX") == b"$-1\r\n"
    assert run(node, "SET", "k", "4", "NX", "GET") == b"$1\r\n3\r\n"  # not set, old value returned
    assert run(node, "GET", "k") == b"$1\r\n3\r\n"
    assert run(node, "SET", "k", "v", "NX", "XX") == b"-ERR syntax error\r\n"
    assert run(node, "SET", "k", "v", "EX", "0") == b"-ERR invalid expire time in 'set' command\r\n"
    assert run(node, "SET", "k", "v", "EX", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert run(node, "SET", "k", "v", "EX", "1", "PX", "5") == b"-ERR syntax error\r\n"
    assert run(node, "SET", "k", "v", "EX") == b"-ERR syntax error\r\n"


def test_ttl_family(node):
    assert run(node, "SET", "k", "v", "EX", "10") == b"+OK\r\n"
    assert node.ops[-1] == WriteOp(b"k", b"v", 10_000)
    node.clock += 400
    assert run(node, "TTL", "k") == b":10\r\n"  # 9.6 s rounds to 10, as in Redis
    assert run(node, "PTTL", "k") == b":9600\r\n"
    assert run(node, "TTL", "missing") == b":-2\r\n"
    run(node, "SET", "p", "v")
    assert run(node, "TTL", "p") == b":-1\r\n"
    assert run(node, "SET", "k", "w", "KEEPTTL") == b"+OK\r\n" and node.ops[-1].flags == mc.FLAG_KEEPTTL
    assert run(node, "PTTL", "k") == b":9600\r\n"  # KEEPTTL is atomic now: the proposal keeps the expiry
    assert run(node, "SET", "a", "v", "PXAT", str(NOW + 1_000)) == b"+OK\r\n" and node.ops[-1].ttl_ms == 600
    # EXPIRE: read, then rewrite the value with the new ttl
    assert run(node, "EXPIRE", "p", "5") == b":1\r\n" and node.ops[-1] == WriteOp(b"p", b"v", 5_000)
    assert run(node, "EXPIRE", "missing", "5") == b":0\r\n"
    assert run(node, "PEXPIRE", "p", "100", "GT") == b":0\r\n"
    assert run(node, "PEXPIRE", "p", "100", "LT") == b":1\r\n"
    assert run(node, "EXPIRE", "p", "100", "NX") == b":0\r\n"
    assert run(node, "EXPIRE", "p", "1", "NX", "XX") == (
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n")
    assert run(node, "EXPIRE", "p", "1", "FOO") == b"-ERR Unsupported option FOO\r\n"
    assert run(node, "PERSIST", "p") == b":1\r\n" and run(node, "TTL", "p") == b":-1\r\n"
    assert run(node, "EXPIRE", "p", "-1") == b":1\r\n" and node.ops[-1] == WriteOp(b"p", None, 0)
    assert run(node, "GET", "p") == b"$-1\r\n"
    node.clock += 10_000
    assert run(node, "TTL", "k") == b":-2\r\n" and run(node, "GET", "k") == b"$-1\r\n"


def test_quorum_errors_use_redis_conventions(node):
    node.fail_status = m.UNAVAILABLE
    assert run(node, "SET", "k", "v") == b"-NOQUORUM write needed 3 acks, got 2 (n3 timed out)\r\n"
    node.fail_status = m.TIMEOUT
    assert run(node, "GET", "k").startswith(b"-TIMEOUT ")
    assert run(node, "MGET", "a", "b").startswith(b"-TIMEOUT ")
    node.fail_status = m.INVALID
    assert run(node, "GET", "k").startswith(b"-ERR ")


def test_unknown_command_and_arity_messages(node):
    assert run(node, "FOO", "a", "b") == b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    assert run(node, "FOO") == b"-ERR unknown command 'FOO', with args beginning with: \r\n"
    long = run(node, "FOO", "x" * 500)
    assert len(long) < 250
    assert run(node, "GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert run(node, "GET", "a", "b") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert run(node, "MSET", "a", "1", "b") == b"-ERR wrong number of arguments for 'mset' command\r\n"
    assert run(node, "CLIENT", "NOPE") == b"-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"


def test_connection_commands(node):
    s = Session(42)
    assert run(node, "PING", session=s) == b"+PONG\r\n"
    assert run(node, "PING", "hi", session=s) == b"$2\r\nhi\r\n"
    assert run(node, "ECHO", "x", session=s) == b"$1\r\nx\r\n"
    assert run(node, "SELECT", "0", session=s) == b"+OK\r\n"
    assert run(node, "SELECT", "1", session=s) == b"-ERR DB index is out of range\r\n"
    assert run(node, "CLIENT", "ID", session=s) == b":42\r\n"
    assert run(node, "CLIENT", "GETNAME", session=s) == b"$-1\r\n"
    assert run(node, "CLIENT", "SETNAME", "app", session=s) == b"+OK\r\n"
    assert run(node, "CLIENT", "GETNAME", session=s) == b"$3\r\napp\r\n"
    assert run(node, "CLIENT", "SETNAME", "a b", session=s).startswith(b"-ERR Client names cannot")
    assert run(node, "CLIENT", "SETINFO", "LIB-NAME", "redis-py", session=s) == b"+OK\r\n"
    assert run(node, "CLIENT", "SETINFO", "LIB-VER", "8.1.0", session=s) == b"+OK\r\n"
    assert b"lib-name=redis-py lib-ver=8.1.0" in run(node, "CLIENT", "INFO", session=s)
    hello = run(node, "HELLO", "3", "SETNAME", "n", session=s)
    assert hello.startswith(b"%") and b"$5\r\nproto\r\n:3\r\n" in hello and s.proto == 3 and s.name == b"n"
    assert run(node, "HELLO", "2", session=s).startswith(b"*") and s.proto == 2
    assert run(node, "HELLO", "4", session=s) == b"-NOPROTO unsupported protocol version\r\n"
    assert run(node, "AUTH", "x", session=s).startswith(b"-ERR AUTH <password> called without any password")
    assert run(node, "QUIT", session=s) == b"+OK\r\n" and s.closing
    assert run(node, "COMMAND", "COUNT") == b":%d\r\n" % len(c.COMMANDS)
    info = run(node, "COMMAND", "INFO", "get", "nope")
    assert info.startswith(b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n") and info.endswith(b"$-1\r\n")
    assert b"summary" in run(node, "COMMAND", "DOCS", "set")
    assert run(node, "CONFIG", "GET", "save") == b"*0\r\n"
    text = run(node, "INFO")
    for section in (b"# Server", b"# Clients", b"# Replication", b"# Quorum", b"# Keyspace"):
        assert section in text
    assert b"# Server" not in run(node, "INFO", "quorum")
    assert run(node, "DBSIZE") == b":0\r\n"


def test_auth_required_when_a_password_is_configured(node):
    node.password = "s3cret"
    s = Session(1, needs_auth=True)
    assert run(node, "GET", "k", session=s) == b"-NOAUTH Authentication required.\r\n"
    assert run(node, "HELLO", "3", session=s).startswith(b"-NOAUTH HELLO must be called")
    assert run(node, "AUTH", "nope", session=s) == (
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    assert run(node, "HELLO", "3", "AUTH", "default", "nope", session=s).startswith(b"-WRONGPASS")
    assert run(node, "HELLO", "3", "AUTH", "default", "s3cret", session=s).startswith(b"%")
    assert run(node, "GET", "k", session=s) == b"_\r\n"
    s2 = Session(2, needs_auth=True)
    assert run(node, "AUTH", "default", "s3cret", session=s2) == b"+OK\r\n"
    assert run(node, "PING", session=s2) == b"+PONG\r\n"


def test_quorum_override(node):
    s = Session(1)
    shown = run(node, "QUORUM", session=s)
    assert b"$1\r\nr\r\n$7\r\nDEFAULT\r\n" in shown and b"$10\r\nr_replicas\r\n:2\r\n" in shown
    assert run(node, "QUORUM", "R", "1", "W", "ALL", session=s) == b"+OK\r\n"
    assert (s.r_wire, s.w_wire) == (1, m.LEVEL_ALL)
    assert b"$10\r\nw_replicas\r\n:3\r\n" in run(node, "QUORUM", session=s)
    assert run(node, "QUORUM", "W", "ONE", session=s) == b"+OK\r\n"
    assert b"partial quorum" in run(node, "QUORUM", session=s)  # R=1 + W=1 <= N=3
    assert run(node, "QUORUM", "R", "4", session=s) == (
        b"-ERR R=4 is impossible with N=3: need 1 <= R <= 3\r\n")
    assert run(node, "QUORUM", "R", "MOST", session=s).startswith(b"-ERR ")
    assert run(node, "QUORUM", "X", "1", session=s).startswith(b"-ERR syntax error")
    assert run(node, "QUORUM", "R", "DEFAULT", "W", "quorum", session=s) == b"+OK\r\n"
    assert (s.r_wire, s.w_wire) == (m.LEVEL_DEFAULT, m.LEVEL_QUORUM)


def test_qkv_version(node):
    assert run(node, "QKV.VERSION", "k") == b"$-1\r\n"
    run(node, "SET", "k", "v")
    out = run(node, "QKV.VERSION", "k")
    assert b"$4\r\nnode\r\n$2\r\nn2\r\n" in out and b"$5\r\nstate\r\n$4\r\nlive\r\n" in out


# ------------------------------------------------- the connection: order, bounds
class FakeTransport:
    def __init__(self):
        self.written = b""
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data):
        assert not self.closed
        self.written += data

    def close(self):
        self.closed = True

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def get_extra_info(self, name):
        return ("127.0.0.1", 5555)


class FakeLoop:
    def __init__(self):
        self.calls = []

    def call_soon(self, fn, *args):
        self.calls.append((fn, args))

    def call_later(self, delay, fn, *args):
        self.later = (delay, fn)

    def drain(self):
        while self.calls:
            fn, args = self.calls.pop(0)
            fn(*args)


class FakeCore:
    ring = SimpleNamespace(n=3)
    default_r = 2

    def replication_factor(self):
        return 3

    default_w = 2

    def __init__(self):
        self.requests = []

    def on_request(self, conn, msg, now):
        self.requests.append(msg)
        return []

    def statistics(self):
        return {}


def make_conn():
    from quorumkv.shell.metrics_hist import RequestLatency
    from quorumkv.shell.resp_server import RespConnection, RespFrontEnd

    node = SimpleNamespace(
        config=SimpleNamespace(node_id="n1", members={"n1": "h:1"}, resp_password="", resp_listen="h:2"),
        core=FakeCore(), loop=FakeLoop(), stats_bad_input=0, run=lambda effects: None, wake=lambda: None,
        storage=SimpleNamespace(count=lambda: 0, name="memory"), request_latency=RequestLatency(),
    )
    conn = RespConnection(RespFrontEnd(node))
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, node, transport


def test_replies_come_back_in_request_order_when_rounds_finish_out_of_order():
    conn, node, t = make_conn()
    conn.data_received(b"GET a\r\nGET b\r\nPING\r\nMGET c d\r\n")
    node.loop.drain()
    ids = [msg.id for msg in node.core.requests]
    assert len(set(ids)) == 4  # unique per connection
    assert t.written == b""
    a, b, c_, d = node.core.requests
    conn.respond(m.Reply(b.id, m.OK, b"B"))
    conn.respond(m.Reply(d.id, m.OK, b"D"))
    node.loop.drain()
    assert t.written == b""  # GET a still owes its reply
    conn.respond(m.Reply(a.id, m.OK, b"A"))
    node.loop.drain()
    assert t.written == b"$1\r\nA\r\n$1\r\nB\r\n+PONG\r\n"
    conn.respond(m.Reply(c_.id, m.NOT_FOUND))
    node.loop.drain()
    assert t.written.endswith(b"*2\r\n$-1\r\n$1\r\nD\r\n")
    conn.respond(m.Reply(a.id, m.OK, b"dup"))  # a duplicate answer is ignored
    node.loop.drain()
    assert t.written.endswith(b"D\r\n")


def test_two_phase_command_and_later_commands_wait_for_it():
    conn, node, t = make_conn()
    # EXPIRE reads, then rewrites (SET NX is one atomic proposal now: resp/atomic.py)
    conn.data_received(b"EXPIRE k 10\r\nPING\r\n")
    (read,) = node.core.requests
    assert type(read) is m.Get
    conn.respond(m.Reply(read.id, m.OK, b"v"))
    write = node.core.requests[-1]
    assert type(write) is m.Put and write.value == b"v" and write.id != read.id
    node.loop.drain()
    assert t.written == b""
    conn.respond(m.Reply(write.id, m.OK))
    node.loop.drain()
    assert t.written == b":1\r\n+PONG\r\n"


def test_per_connection_levels_travel_on_requests():
    conn, node, t = make_conn()
    conn.data_received(b"QUORUM R ONE W 3\r\nGET k\r\nSET k v\r\n")
    get, put = node.core.requests
    assert get.r == m.LEVEL_ONE and put.w == 3


def test_pipeline_bound_pauses_reading():
    conn, node, t = make_conn()
    conn.data_received(b"GET k\r\n" * (CLIENT_PIPELINE_MAX + 10))
    node.loop.drain()  # later turns run what COMMANDS_PER_TURN_MAX left, up to the bound
    assert len(node.core.requests) == CLIENT_PIPELINE_MAX
    assert not t.reading
    for msg in node.core.requests[:CLIENT_PIPELINE_MAX // 2 + 1]:
        conn.respond(m.Reply(msg.id, m.OK, b"v"))
    node.loop.drain()
    assert len(node.core.requests) == CLIENT_PIPELINE_MAX + 10  # the ten held back ran
    assert not t.reading  # CLIENT_PIPELINE_MAX // 2 + 9 open: still above the low mark
    for msg in node.core.requests[CLIENT_PIPELINE_MAX // 2 + 1:CLIENT_PIPELINE_MAX // 2 + 11]:
        conn.respond(m.Reply(msg.id, m.OK, b"v"))
    node.loop.drain()
    assert t.reading
    assert t.written == b"$1\r\nv\r\n" * (CLIENT_PIPELINE_MAX // 2 + 11)


def test_one_turn_runs_at_most_commands_per_turn_max_and_the_rest_follow_in_order():
    from quorumkv.shell.resp_server import COMMANDS_PER_TURN_MAX

    conn, node, t = make_conn()
    total = 3 * COMMANDS_PER_TURN_MAX + 5
    conn.data_received(b"".join(b"GET k%d\r\n" % i for i in range(total)))
    assert len(node.core.requests) == COMMANDS_PER_TURN_MAX  # the loop gets a turn now
    assert not t.reading  # nothing more is read while complete commands wait
    node.loop.drain()
    assert [r.key for r in node.core.requests] == [b"k%d" % i for i in range(total)]
    assert t.reading
    for msg in reversed(node.core.requests):
        conn.respond(m.Reply(msg.id, m.OK, msg.key))
    node.loop.drain()
    assert t.written == b"".join(b"$%d\r\nk%d\r\n" % (len(b"k%d" % i), i) for i in range(total))


def test_half_close_runs_the_commands_left_over_then_closes():
    from quorumkv.shell.resp_server import COMMANDS_PER_TURN_MAX

    conn, node, t = make_conn()
    total = COMMANDS_PER_TURN_MAX + 3
    conn.data_received(b"PING\r\n" * total)
    assert conn.eof_received() is True
    assert not t.closed
    node.loop.drain()
    assert t.written == b"+PONG\r\n" * total
    assert t.closed


def test_protocol_error_comes_after_owed_replies_then_close():
    conn, node, t = make_conn()
    conn.data_received(b"GET a\r\n*x\r\nPING\r\n")
    assert not t.reading
    conn.data_received(b"PING\r\n")  # ignored: the stream is broken
    node.loop.drain()
    assert t.written == b"" and not t.closed
    (a,) = node.core.requests
    conn.respond(m.Reply(a.id, m.OK, b"A"))
    node.loop.drain()
    assert t.written == b"$1\r\nA\r\n-ERR Protocol error: invalid multibulk length\r\n"
    assert t.eof and not t.closed  # FIN first: closing with unread input would RST the reply away
    assert t.reading  # ... and what the client still sends is read and discarded
    conn.data_received(b"x" * 1000)
    assert t.written.endswith(b"length\r\n") and not t.closed
    node.loop.later[1]()  # the linger deadline
    assert t.closed
    assert node.stats_bad_input == 1


def test_quit_answers_then_closes_and_reads_nothing_more():
    conn, node, t = make_conn()
    conn.data_received(b"PING\r\nQUIT\r\nGET k\r\n")
    node.loop.drain()
    assert t.written == b"+PONG\r\n+OK\r\n" and t.eof and node.core.requests == []


def test_half_closed_client_gets_its_replies_then_the_close():
    conn, node, t = make_conn()
    conn.data_received(b"GET a\r\nPING\r\n")
    assert conn.eof_received() is True
    assert not t.closed
    (a,) = node.core.requests
    conn.respond(m.Reply(a.id, m.OK, b"A"))
    node.loop.drain()
    assert t.written == b"$1\r\nA\r\n+PONG\r\n" and t.closed
