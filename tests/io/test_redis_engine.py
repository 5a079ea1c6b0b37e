"""The Redis storage engine against real redis-server processes.

It runs the generic storage suite of ``test_storage.py`` (every test there that is not
SQLite-specific, imported below with this module's ``engine`` fixture), then
Redis-specific tests, then a real 3-node quorumkv cluster whose nodes keep their data
in three separate redis-servers.
"""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest
import test_storage
from redis_fixtures import direct, redis_servers, shared_redis, wait_until  # noqa: F401
from test_storage import Waiter, read, rec, write

from quorumkv import QUORUM, Client, NotFoundError
from quorumkv.core.version import Record, Version
from quorumkv.shell.engines import open_engine
from quorumkv.core.redis_layout import RedisLayout
from quorumkv.shell.storage_redis import SCAN_BATCH_KEYS, RedisEngine


# -- the generic engine suite, on Redis ------------------------------------------------
for _name in dir(test_storage):
    if _name.startswith("test_") and not _name.startswith("test_sqlite") and _name != "test_open_engine":
        globals()[_name] = getattr(test_storage, _name)


@pytest.fixture
def engine(shared_redis):
    direct(shared_redis).flushall()
    eng = RedisEngine(shared_redis.url, fsync=False)
    yield eng
    eng.close()


# -- Redis-specific -------------------------------------------------------------------
def test_record_layout_is_readable_with_plain_redis(engine, shared_redis):
    write(engine, b"user:1", Record(Version(0x1234, "n2", {"n2": 1}), b"alice", 1_700_000_000_000))
    h = direct(shared_redis).hgetall(b"qkv:d:user:1")
    assert h[b"ver"] == b"0000000000001234n2" and h[b"val"] == b"alice"
    assert h[b"exp"] == b"1700000000000" and b"ctx" in h
    write(engine, b"user:1", rec(0x1235, "n1", None))
    assert set(direct(shared_redis).hgetall(b"qkv:d:user:1")) == {b"ver", b"exp"}  # tombstone: no val


def test_expiry_is_kept_as_data_not_redis_ttl(engine, shared_redis):
    # An expired record must keep outranking older versions, so Redis must not drop it.
    write(engine, b"k", Record(Version(50, "n1"), b"short", expires_ms=3))
    assert read(engine, b"k").expires_ms == 3
    assert direct(shared_redis).pttl(b"qkv:d:k") == -1
    write(engine, b"k", rec(49, "n2", b"older"))
    assert read(engine, b"k").value == b"short"


def test_hlc_sized_timestamps_compare_exactly(engine):
    # Real HLC values exceed 2**53: a Lua number comparison would see these as equal.
    base = 1_700_000_000_000 << 16
    write(engine, b"k", rec(base + 1, "a", b"newer"))
    write(engine, b"k", rec(base, "z", b"older"))
    assert read(engine, b"k").value == b"newer"
    assert engine.max_timestamp() == base + 1


def test_node_ids_compare_bytewise_not_by_locale(engine):
    # Python orders str by code point; "B" < "a" and "n-2" < "n1" < "é".
    for older, newer in [("a", "B"), ("n1", "n-2"), ("é", "n1")]:
        assert Version(9, older).newer_than(Version(9, newer)), (older, newer)
        key = f"{older}|{newer}".encode()
        write(engine, key, rec(9, older, b"older-wins"))
        write(engine, key, rec(9, newer, b"newer-loses"))
        assert read(engine, key).value == b"older-wins"


def test_concurrent_writers_keep_the_newest(shared_redis):
    direct(shared_redis).flushall()
    engines = [RedisEngine(shared_redis.url, fsync=False) for _ in range(2)]
    versions = list(range(1, 401))
    waiter = Waiter(expected=len(versions))
    # Two engines (two connections, two I/O threads) race over one key, in opposite orders.
    for i, ts in enumerate(versions):
        engines[i % 2].write(b"hot", rec(ts if i % 2 else 401 - ts, f"n{i % 2}", b"%d" % ts), waiter)
    assert all(ok for ok, _ in waiter.wait())
    got = engines[0].get_now(b"hot")
    assert got.version == Version(400, "n1")  # both wrote ts=400; "n1" > "n0"
    for e in engines:
        e.close()


def test_pipelining_batches_writes(engine):
    n = 3_000
    waiter = Waiter(expected=n)
    for i in range(n):
        engine.write(b"k%d" % i, rec(i + 1, "n1", b"v"), waiter)
    assert all(ok for ok, _ in waiter.wait())
    assert engine.count() == n
    assert engine.batches < n  # writes queued during a round trip went out together


def test_read_queued_after_write_sees_it(engine):
    waiter = Waiter(expected=2)
    engine.write(b"k", rec(3, "n1", b"v"), waiter)
    engine.read(b"k", waiter)
    calls = waiter.wait()
    assert calls[1] == (True, rec(3, "n1", b"v"))


def test_scan_all_yields_every_key_once_with_tombstones(engine):
    n = SCAN_BATCH_KEYS * 2 + 17
    waiter = Waiter(expected=n)
    for i in range(n):
        engine.write(b"key-%05d" % i, rec(i + 1, "n1", None if i % 7 == 0 else b"v%d" % i), waiter)
    waiter.wait()
    got = dict(engine.scan_all())
    assert len(got) == n and len(list(engine.scan_all())) == n
    assert got[b"key-00007"].tombstone and got[b"key-00008"].value == b"v8"
    # Memory and SQLite engines have the same method.
    mem = open_engine("memory", "")
    mem.write(b"a", rec(1, "n1", None), lambda ok, err: None)
    assert list(mem.scan_all()) == [(b"a", rec(1, "n1", None))]


def test_prefix_with_glob_characters(shared_redis):
    direct(shared_redis).flushall()
    other = RedisEngine(shared_redis.url, prefix=b"other:", fsync=False)
    eng = RedisEngine(shared_redis.url, prefix=b"t[1]*:", fsync=False)
    write(other, b"x", rec(1, "n1", b"not mine"))
    write(eng, b"x", rec(1, "n1", b"mine"))
    assert eng.layout.scan_pattern == RedisLayout(b"t[1]*:").scan_pattern == b"t\\[1\\]\\*:d:*"
    assert list(eng.scan_all()) == [(b"x", rec(1, "n1", b"mine"))]
    assert eng.count() == 1
    eng.close()
    other.close()


def test_callbacks_run_on_the_event_loop_thread(shared_redis):
    direct(shared_redis).flushall()

    async def main():
        loop = asyncio.get_running_loop()
        eng = RedisEngine(shared_redis.url, loop=loop, fsync=False)
        fut = loop.create_future()
        eng.write(b"k", rec(1, "n1", b"v"), lambda ok, res: fut.set_result((ok, threading.get_ident())))
        ok, ident = await asyncio.wait_for(fut, 10)
        eng.close()
        return ok, ident

    ok, ident = asyncio.run(main())
    assert ok and ident == threading.get_ident()


def test_open_engine_redis_and_unreachable_url(shared_redis, tmp_path):
    eng = open_engine("redis", str(tmp_path), fsync=False, redis_url=shared_redis.url)
    assert isinstance(eng, RedisEngine) and eng.name == "redis"
    eng.close()
    with pytest.raises(ConnectionError, match="cannot use redis://127.0.0.1:1/0"):
        RedisEngine("redis://127.0.0.1:1/0")


def test_durability_probe(redis_servers):
    plain, aof = redis_servers(1)[0], redis_servers(1, appendonly=True)[0]
    assert RedisEngine(plain.url, fsync=False).durability == "none"
    assert RedisEngine(aof.url).durability == "aof-always"


def test_survives_redis_kill9_and_restart(redis_servers):
    (srv,) = redis_servers(1, appendonly=True)
    eng = RedisEngine(srv.url)
    write(eng, b"acked", rec(10, "n1", b"before the crash"))
    srv.kill(signal.SIGKILL)
    # While Redis is down, operations fail (the quorum round decides) and the engine lives on.
    waiter = Waiter(expected=2)
    eng.write(b"k", rec(11, "n1", b"v"), waiter)
    eng.read(b"acked", waiter)
    for ok, err in waiter.wait():
        assert not ok and err.startswith("storage error: redis")
    srv.start()  # same port and AOF; its script cache is empty now: NOSCRIPT -> reload
    assert read(eng, b"acked") == rec(10, "n1", b"before the crash")
    write(eng, b"k", rec(12, "n1", b"after"))
    write(eng, b"k", rec(11, "n1", b"stale"))
    assert read(eng, b"k").value == b"after"
    assert eng.max_timestamp() == 12
    eng.close()


def test_close_drains_queued_operations(shared_redis):
    direct(shared_redis).flushall()
    eng = RedisEngine(shared_redis.url, fsync=False)
    waiter = Waiter(expected=500)
    for i in range(500):
        eng.write(b"k%d" % i, rec(1, "n1", b"v"), waiter)
    eng.close()
    assert len(waiter.wait()) == 500
    assert int(direct(shared_redis).get(b"qkv:m:count")) == 500
    refused = Waiter()
    eng.write(b"late", rec(1, "n1", b"v"), refused)
    assert refused.wait() == [(False, "storage engine is closed")]


# -- a real cluster on Redis storage ----------------------------------------------------
@pytest.mark.integration
def test_cluster_on_redis_storage_survives_kill9_of_a_node(make_cluster, redis_servers):
    import test_cluster

    servers = redis_servers(3)  # one redis-server per node: separate failure domains
    overrides = {f"n{i + 1}": {"redis_url": s.url} for i, s in enumerate(servers)}
    cluster = make_cluster(nodes=3, replicas=3, storage="redis", fsync=False, node_overrides=overrides)
    keys = 60
    with Client(cluster.addresses()) as c:
        assert c.ping().storage == "redis"
        for i in range(keys):
            c.put(f"k{i}", f"v{i}", w=QUORUM)
        c.delete("k0", w=QUORUM)
        # Every replica's redis-server holds every key (N=3 of 3 nodes), as records.
        wait_until(lambda: all(int(direct(s).get(b"qkv:m:count") or 0) == keys for s in servers),
                   "every replica write to land")
        h = direct(servers[0]).hgetall(b"qkv:d:k1")
        assert h[b"val"] == b"v1" and h[b"ver"][16:] in (b"n1", b"n2", b"n3")
        test_cluster.kill9(cluster, "n2")
        for i in range(1, keys):
            assert c.get(f"k{i}", r=QUORUM) == f"v{i}".encode()
        for i in range(keys):
            c.put(f"k{i}", f"w{i}", w=QUORUM)
        for i in range(keys):
            assert c.get(f"k{i}", r=QUORUM) == f"w{i}".encode()
        c.delete("k1", w=QUORUM)
        with pytest.raises(NotFoundError):
            c.get("k1", r=QUORUM)
    # The dead node's data was never in its process: its redis-server still has it.
    assert direct(servers[1]).hgetall(b"qkv:d:k5")[b"val"] == b"v5"
