"""Typed records in every storage engine: merged through ``core.typed.resolve``."""

from __future__ import annotations

import pytest
from redis_fixtures import direct, redis_servers, shared_redis  # noqa: F401
from test_storage import Waiter, read, write

from quorumkv.core import crdt, dvv, typed
from quorumkv.core.version import Record, Version
from quorumkv.shell.storage import MemoryEngine, SqliteEngine
from quorumkv.shell.storage_redis import RedisEngine


@pytest.fixture(params=["memory", "sqlite", "redis"])
def engine(request, tmp_path):
    if request.param == "memory":
        eng = MemoryEngine()
    elif request.param == "sqlite":
        eng = SqliteEngine(str(tmp_path / "db" / "kv.sqlite3"), loop=None)
    else:
        server = request.getfixturevalue("shared_redis")
        direct(server).flushall()
        eng = RedisEngine(server.url, fsync=False)
    yield eng
    eng.close()


def counter(ts, node, delta, at="n1"):
    return typed.typed_record(Version(ts, at), typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), node, delta))


def value_of(rec):
    return crdt.counter_value(typed.decode(typed.COUNTER, rec.value))


def test_same_kind_merges_in_either_order(engine):
    write(engine, b"c", counter(10, "n1", 2))
    assert write(engine, b"c", counter(5, "n2", 3)) is None  # older, but merged: applied
    got = read(engine, b"c")
    assert value_of(got) == 5 and got.version.key() == (10, "n1")
    assert got.version.ctx == typed.tag(typed.COUNTER, got.value)  # digest of what is stored
    write(engine, b"c", counter(5, "n2", 3))  # a retransmit changes nothing
    assert value_of(read(engine, b"c")) == 5


def test_typed_and_plain_are_last_writer_wins(engine):
    write(engine, b"k", counter(10, "n1", 2))
    newer = write(engine, b"k", Record(Version(5, "n1"), b"old string"))
    assert newer == Version(10, "n1")
    write(engine, b"k", Record(Version(20, "n1"), b"new string"))
    assert read(engine, b"k").value == b"new string"
    assert write(engine, b"k", counter(15, "n1", 1)) == Version(20, "n1")


def test_sibling_sets_merge_in_one_batch(engine):
    """Two concurrent causal writes queued together both survive as siblings."""
    base = dvv.update(dvv.EMPTY, {}, b"v0", "n1")
    a = typed.typed_record(Version(2, "n1"), typed.CAUSAL, dvv.update(base, dvv.context(base), b"a", "n1"))
    b = typed.typed_record(Version(3, "n2"), typed.CAUSAL, dvv.update(base, dvv.context(base), b"b", "n2"))
    w = Waiter(2)
    engine.write(b"s", a, w)
    engine.write(b"s", b, w)
    assert all(ok for ok, _ in w.wait())
    state = typed.decode(typed.CAUSAL, read(engine, b"s").value)
    assert sorted(dvv.values(state)) == [b"a", b"b"]


def test_scan_returns_typed_records_with_their_tag(engine):
    write(engine, b"c", counter(10, "n1", 4))
    [(key, rec)] = [(k, r) for k, r in engine.scan_all()]
    assert key == b"c" and typed.kind_of(rec) == typed.COUNTER and value_of(rec) == 4


def test_a_corrupt_typed_record_fails_alone_and_changes_nothing(engine):
    good = counter(10, "n1", 2)
    write(engine, b"c", good)
    bad = Record(Version(11, "n1", typed.tag(typed.COUNTER, b"\xc1")), b"\xc1")  # not msgpack
    w = Waiter(2)
    engine.write(b"c", bad, w)
    engine.write(b"other", counter(10, "n1", 1), w)  # same batch: must still succeed
    calls = w.wait()
    assert [ok for ok, _ in calls].count(False) == 1 and "corrupt" in str([r for ok, r in calls if not ok][0])
    assert read(engine, b"c") == good and value_of(read(engine, b"other")) == 1


def test_read_result_leaves_a_corrupt_reply_out():
    good = counter(10, "n1", 2)
    bad = Record(Version(12, "n2", typed.tag(typed.COUNTER, b"\xc1")), b"\xc1")
    assert value_of(typed.read_result([good, bad])) == 2
    assert value_of(typed.read_result([bad, good])) == 2
