"""QuorumRedis / AsyncQuorumRedis: client-side quorums over real, independent redis-servers."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest
from redis_fixtures import direct, redis_servers, wait_until  # noqa: F401

from quorumkv.core.version import Record, Version
from quorumkv.errors import (
    ConsistencyWarning,
    InvalidRequestError,
    NotFoundError,
    QuorumTimeoutError,
    UnavailableError,
)
from quorumkv.contrib.redis_quorum import AsyncQuorumRedis, QuorumRedis
from quorumkv.core.redis_layout import decode_record


TIMEOUT_MS = 400  # per operation; short so that timeout tests stay fast
#: Per operation where the test is about convergence, not time-outs: 120 concurrent puts
#: queue for connections, and a loaded CI machine must not turn that into a failure.
CONVERGENCE_TIMEOUT_MS = 10_000


def held(srv, key: bytes) -> Record | None:
    """What one server really holds, read with plain redis-py."""
    return decode_record(direct(srv).hgetall(b"qkv:d:" + key))


@pytest.fixture
def five(redis_servers):
    return redis_servers(5)


def test_values_versions_and_tombstones(five):
    with QuorumRedis([s.url for s in five], timeout_ms=TIMEOUT_MS) as q:
        assert (q.n, q.r, q.w) == (5, 3, 3)
        v1 = q.put("user:1", "alice")
        assert q.get("user:1") == b"alice"  # the value, not True
        item = q.get_item("user:1")
        assert item.version == v1 and v1.node == q.client_id
        v2 = q.set("user:1", b"\x00bob")
        assert v2.newer_than(v1) and q.get("user:1", r="ALL") == b"\x00bob"
        q.delete("user:1")
        with pytest.raises(NotFoundError):
            q.get("user:1")
        assert q.get("user:1", default=None) is None
        assert q.get("never", default=b"d") == b"d"
        q.drain()
        # Every server holds the tombstone: a delete is a version, not a removal.
        assert all(held(s, b"user:1").tombstone for s in five)


@pytest.mark.filterwarnings("ignore::quorumkv.errors.ConsistencyWarning")
def test_kill_one_two_then_three_of_five(five):
    with QuorumRedis([s.url for s in five], timeout_ms=TIMEOUT_MS) as q:
        for i in range(20):
            q.put(f"k{i}", f"v{i}")
        five[4].kill()  # SIGKILL
        for i in range(20):
            q.put(f"k{i}", f"w{i}")
        assert [q.get(f"k{i}") for i in range(20)] == [f"w{i}".encode() for i in range(20)]
        five[0].kill()
        q.put("k0", "x")
        assert q.get("k0") == b"x" and q.get("k1") == b"w1"
        five[2].kill()
        dead = sorted(f"127.0.0.1:{s.port}" for s in (five[0], five[2], five[4]))
        start = time.monotonic()
        with pytest.raises(UnavailableError) as err:
            q.put("k0", "y")
        assert not isinstance(err.value, QuorumTimeoutError)
        # "at most 2 possible" when decided before the live servers answered, else "got 2"
        assert re.match(r"write needed 3 acks, (at most 2 possible|got 2) \(", str(err.value))
        assert all(f"{d} unreachable" in str(err.value) for d in dead)
        with pytest.raises(UnavailableError, match=r"^read needed 3 replies, (at most 2 possible|got 2) \("):
            q.get("k0")
        assert time.monotonic() - start < TIMEOUT_MS / 1000  # refused connections fail fast
        assert q.get("k0", r=2) in (b"x", b"y")  # a failed write is not rolled back


def test_timeout_on_a_paused_server(redis_servers):
    servers = redis_servers(3)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS) as q:
        q.put("k", "v1", w="ALL")
        servers[1].pause()  # SIGSTOP: accepts TCP, never answers
        start = time.monotonic()
        q.put("k", "v2")  # QUORUM = 2 of 3: does not wait for the paused server
        assert q.get("k") == b"v2"
        assert time.monotonic() - start < TIMEOUT_MS / 1000
        start = time.monotonic()
        with pytest.raises(QuorumTimeoutError) as err:
            q.put("k", "v3", w="ALL")
        assert time.monotonic() - start >= TIMEOUT_MS / 1000 * 0.9
        assert str(err.value) == f"write needed 3 acks, got 2 (127.0.0.1:{servers[1].port} timed out)"
        with pytest.raises(QuorumTimeoutError, match=r"read needed 3 replies, got 2 \(.* timed out\)"):
            q.get("k", r="ALL")
        servers[1].resume()
        q.put("k", "v4", w="ALL")
        assert q.get("k", r="ALL") == b"v4"


def test_read_repair_sync_fixes_a_server_that_missed_writes(redis_servers):
    servers = redis_servers(3, appendonly=True)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS, read_repair="sync") as q:
        q.put("k", "old", w="ALL")
        servers[2].kill()
        new = q.put("k", "new")  # lands on 2 of 3
        servers[2].start()  # back, with its AOF: it holds the old version
        assert held(servers[2], b"k").value == b"old"
        assert q.get("k", r="ALL") == b"new"
        # Repaired before get returned: the server now holds the newest version itself.
        assert held(servers[2], b"k").version == new
        assert q.stats["repairs"] == 1


def test_read_repair_async_and_missing_keys(redis_servers):
    servers = redis_servers(3)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS) as q:
        v = q.put("k", "v", w="ALL")
        direct(servers[0]).delete(b"qkv:d:k")  # lost on one server
        assert q.get("k", r="ALL") == b"v"
        q.drain()  # background repair finished
        assert held(servers[0], b"k").version == v


@pytest.mark.filterwarnings("ignore::quorumkv.errors.ConsistencyWarning")
def test_late_stale_reply_is_repaired_too(redis_servers):
    servers = redis_servers(3)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS) as q:
        v = q.put("k", "v", w="ALL")
        stale = servers[2]
        direct(stale).delete(b"qkv:d:k")
        # R=ONE is decided by the first reply; the other two arrive after it and the
        # stale one among them is repaired in the background.
        for _ in range(5):
            q.get("k", r=1, default=None)  # may be decided by the stale server: R=1
        q.drain()
        assert held(stale, b"k").version == v


def test_a_stale_write_never_overwrites_a_newer_one(redis_servers):
    servers = redis_servers(3)
    urls = [s.url for s in servers]
    with QuorumRedis(urls, client_id="fast") as ahead, QuorumRedis(urls, client_id="slow") as behind:
        ahead.hlc.last = (time.time_ns() // 1_000_000 + 60_000) << 16  # a clock one minute fast
        ahead.put("k", "from the future")
        behind.put("k", "from the present")  # an older version: every server ignores it
        assert behind.get("k", r="ALL") == b"from the future"
        assert all(held(s, b"k").value == b"from the future" for s in servers)
        # The read moved the reader's HLC past what it saw: its next write is newer.
        behind.put("k", "after reading")
        assert ahead.get("k", r="ALL") == b"after reading"


def test_concurrent_writers_converge_on_the_newest(redis_servers):
    servers = redis_servers(3)
    urls = [s.url for s in servers]

    async def main():
        clients = [AsyncQuorumRedis(urls, timeout_ms=CONVERGENCE_TIMEOUT_MS, client_id=f"w{i}") for i in range(3)]
        versions = await asyncio.gather(*(c.put("hot", f"{c.client_id}-{j}") for j in range(40) for c in clients))
        for c in clients:
            await c.drain()
        newest = max(versions, key=Version.key)
        item = await clients[0].get_item("hot", r="ALL")
        for c in clients:
            await c.close()
        return newest, item

    newest, item = asyncio.run(main())
    assert item.version == newest
    assert all(held(s, b"hot").version == newest for s in servers)  # every server agrees


def test_ttl_travels_with_the_version(redis_servers):
    servers = redis_servers(3)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS) as q:
        q.put("k", "v", ttl_ms=200)
        item = q.get_item("k")
        assert item.value == b"v" and item.expires_ms > 0
        wait_until(lambda: q.get("k", default=None) is None, "the value to expire")
        q.drain()
        assert {held(s, b"k").expires_ms for s in servers} == {item.expires_ms}
        assert all(direct(s).pttl(b"qkv:d:k") == -1 for s in servers)  # kept, not dropped


def test_restarted_empty_server_gets_script_and_data_back(redis_servers):
    servers = redis_servers(3)
    with QuorumRedis([s.url for s in servers], timeout_ms=TIMEOUT_MS) as q:
        q.put("a", "1", w="ALL")
        servers[0].restart()  # no AOF: empty, script cache empty, old connections dead
        q.put("b", "2", w="ALL")  # reconnect + NOSCRIPT -> SCRIPT LOAD -> resend
        assert q.get("a", r="ALL") == b"1"
        q.drain()
        assert held(servers[0], b"a").value == b"1" and held(servers[0], b"b").value == b"2"


def test_bad_configuration_is_refused(redis_servers):
    servers = redis_servers(3)
    urls = [s.url for s in servers]
    with pytest.raises(InvalidRequestError, match="listed twice"):
        QuorumRedis(urls + [urls[0].replace("/0", "")])
    with pytest.raises(InvalidRequestError, match="R=4 is impossible with N=3"):
        QuorumRedis(urls, r=4)
    with QuorumRedis(urls) as q:
        with pytest.raises(InvalidRequestError, match="W=0 is impossible"):
            q.put("k", "v", w=0)
        with pytest.warns(ConsistencyWarning, match="partial quorum"):
            q.get("k", r=1, default=None)
        with pytest.raises(InvalidRequestError):
            q.put(b"", "v")


def test_seed_example_runs(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, os.path.join(root, "examples", "seed_example.py")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "read after 2 of 5 servers were killed: b'v2'" in out
    assert "write -> UnavailableError: write needed 3 acks, " in out
    assert "read -> UnavailableError: read needed 3 replies, " in out
