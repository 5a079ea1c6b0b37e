"""The cluster-wide key scan (core/scan.py): SCAN/KEYS over RESP with redis-py, the
native clients' scan()/keys(), ``quorumkv scan``; a node killed mid-scan; pure tests
of the glob, the merge and the RESP cursor."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from quorumkv.client import AsyncClient, Client
from quorumkv.core.messages_scan import ScanPeekResp
from quorumkv.core.scan import CURSOR_KEY_BYTES_PREFERRED_MAX, glob_to_regex, merge_pages
from quorumkv.core import typed
from quorumkv.core.version import Version
from quorumkv.errors import UnavailableError
from quorumkv.resp.commands import CommandError
from quorumkv.resp.commands_scan import after_to_cursor, cursor_to_after

redis = pytest.importorskip("redis")


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("pattern,key,matches", [
    (b"*", b"anything", True), (b"user:*", b"user:1", True), (b"user:*", b"usr:1", False),
    (b"a?c", b"abc", True), (b"a?c", b"ac", False), (b"a[bc]d", b"acd", True), (b"a[^b]d", b"abd", False),
    (b"a[^b]d", b"axd", True), (b"a[a-c]d", b"abd", True), (b"a[c-a]d", b"abd", True), (b"a[a-c]d", b"azd", False),
    (b"h\\*o", b"h*o", True), (b"h\\*o", b"hxo", False), (b"[", b"[", True), (b"a.b", b"axb", False),
    (b"x*", b"x\ny", True), (b"k[\\]]", b"k]", True),
])
def test_glob_matches_like_redis(pattern, key, matches):
    assert bool(re.fullmatch(glob_to_regex(pattern), key, re.DOTALL)) is matches


def _v(ts: int, node: str = "n1") -> Version:
    return Version(ts, node)


def test_merge_stops_at_the_smallest_full_page_and_hides_tombstones():
    a = ScanPeekResp(1, True, [(b"a", _v(1), False, 0), (b"c", _v(5), True, 0), (b"e", _v(1), False, 0)], b"e")
    b = ScanPeekResp(1, True, [(b"a", _v(2), True, 0), (b"c", _v(1), False, 0), (b"d", _v(1), False, 0)], b"d")
    c = ScanPeekResp(1, True, [(b"b", _v(1), False, 50)], b"")  # expired at 50; this member is done
    keys, after = merge_pages([a, b, c], now_ms=100)
    # a: newest is b's tombstone; c: newest is a's tombstone; e is past b's boundary d.
    assert (keys, after) == ([b"d"], b"d")
    keys, after = merge_pages([c], now_ms=10)
    assert (keys, after) == ([b"b"], b"")


def test_merge_filters_by_the_newest_records_redis_type():
    set_v = Version(5, "n1", {"h": 1, "t": typed.SET})
    map_v = Version(5, "n1", {"h": 2, "t": typed.MAP})
    page = ScanPeekResp(1, True, [(b"h", map_v, False, 0), (b"p", _v(1), False, 0), (b"s", set_v, False, 0),
                                  (b"t", _v(9), False, 0)], b"")
    older_set = ScanPeekResp(1, True, [(b"t", Version(2, "n2", {"h": 3, "t": typed.SET}), False, 0)], b"")
    assert merge_pages([page, older_set], 0, "set") == ([b"s"], b"")  # t: its newest record is plain
    assert merge_pages([page, older_set], 0, "hash") == ([b"h"], b"")
    assert merge_pages([page, older_set], 0, "string") == ([b"p", b"t"], b"")
    assert merge_pages([page], 0, "zset") == ([], b"")


def test_merge_prefers_a_short_cursor_key():
    long_key = b"z" * (CURSOR_KEY_BYTES_PREFERRED_MAX + 1)
    page = ScanPeekResp(1, True, [(b"a", _v(1), False, 0), (long_key, _v(1), False, 0)], long_key)
    assert merge_pages([page], 0) == ([b"a"], b"a")
    only_long = ScanPeekResp(1, True, [(long_key, _v(1), False, 0)], long_key)
    assert merge_pages([only_long], 0) == ([long_key], long_key)


@pytest.mark.parametrize("after", [b"", b"k", b"\x00\x00key", b"\xff" * 3000, b"x" * 65_536])
def test_resp_cursor_round_trips(after):
    cursor = after_to_cursor(after)
    assert cursor.isdigit()
    assert cursor_to_after(cursor) == after


@pytest.mark.parametrize("bad", [b"-1", b"abc", b"12345", b"1" * 200_000])
def test_resp_cursor_rejects_what_no_page_made(bad):
    with pytest.raises(CommandError, match="invalid cursor"):
        cursor_to_after(bad)


# -------------------------------------------------------------- real processes
def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def _load(cluster, count: int) -> set[bytes]:
    """Write ``count`` keys, delete every tenth: the live keys."""
    live = set()
    with Client(cluster.addresses()) as c:
        for i in range(count):
            key = f"key:{i:05d}".encode()
            c.put(key, b"v%d" % i)
            live.add(key)
        for i in range(0, count, 10):
            key = f"key:{i:05d}".encode()
            c.delete(key)
            live.discard(key)
        c.put(b"other:1", b"x")
        c.put(b"gone", b"x", ttl_ms=1)  # expired by the time anything scans
        live.add(b"other:1")
    return live


@pytest.mark.integration
def test_scan_everywhere_lists_each_live_key_once(make_cluster):
    cluster = make_cluster(3, replicas=3, storage="sqlite")
    live = _load(cluster, 400)
    addrs = cluster.addresses()
    with Client(addrs) as c:
        keys = list(c.scan(count=17))
        assert keys == sorted(live)  # once each, key order, tombstones and the expired key hidden
        assert c.keys("other:*") == [b"other:1"]
        assert c.keys("key:0001?") == sorted(k for k in live if k.startswith(b"key:0001"))

    async def async_scan():
        async with AsyncClient(addrs) as ac:
            return [k async for k in ac.scan(count=50)], await ac.keys("key:0039*")

    got, ks = asyncio.run(async_scan())
    assert got == sorted(live)
    assert ks == sorted(k for k in live if k.startswith(b"key:0039"))

    r = redis.Redis(port=_port(cluster.nodes[1].resp))
    seen = list(r.scan_iter(count=7))
    assert sorted(seen) == sorted(live) and len(seen) == len(set(seen))
    assert sorted(r.keys("key:001*")) == sorted(k for k in live if k.startswith(b"key:001"))
    assert list(r.scan_iter(_type="hash")) == []
    assert sorted(r.scan_iter(_type="string")) == sorted(live)
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.scan(cursor=12345)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SCAN", "0", "COUNT", "0")
    r.close()

    env = dict(os.environ)
    cli = [sys.executable, "-m", "quorumkv", "scan", "--node", addrs[2]]
    total = subprocess.run(cli + ["--total"], capture_output=True, text=True, env=env, timeout=60)
    assert total.returncode == 0, total.stderr
    assert int(total.stdout) == len(live)
    listed = subprocess.run(cli + ["--match", "other:*", "-o", "json"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert json.loads(listed.stdout) == ["other:1"]


@pytest.mark.integration
def test_scan_cursor_survives_a_node_killed_mid_scan(make_cluster):
    cluster = make_cluster(4, replicas=3, storage="memory")
    live = _load(cluster, 300)
    first, second = cluster.nodes[0], cluster.nodes[1]
    r = redis.Redis(port=_port(first.resp))
    cursor, page = r.scan(0, count=20)
    seen = list(page)
    assert cursor != 0
    os.kill(cluster.nodes[3].pid(), signal.SIGKILL)  # a replica of some keys dies mid-scan
    cursor, page = r.scan(cursor, count=20)  # its peek fails; the three others cover the ring
    seen += page
    r.close()
    # Continue on another node: the cursor names no node.
    r2 = redis.Redis(port=_port(second.resp))
    while cursor != 0:
        cursor, page = r2.scan(cursor, count=40)
        seen += page
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(live)
    # Two more down: some replica sets now have no live member; a page is refused, not partial.
    os.kill(cluster.nodes[2].pid(), signal.SIGKILL)
    os.kill(second.pid(), signal.SIGKILL)
    with Client([first.address]) as c, pytest.raises(UnavailableError, match="scan unavailable"):
        c.scan_page(b"", count=10)
    r2.close()
