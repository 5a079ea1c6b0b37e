"""Storage engines: last-writer-wins, tombstones, durability, group commit."""

from __future__ import annotations

import threading

import pytest

from quorumkv.core.version import Record, Version
from quorumkv.shell.engines import open_engine
from quorumkv.shell.storage import MemoryEngine, SqliteEngine

WAIT_S = 10


def rec(ts, node, value, ctx=None):
    return Record(Version(ts, node, ctx), value)


class Waiter:
    """A ``done`` callback that records its calls and can be waited for."""

    def __init__(self, expected=1):
        self.calls = []
        self.threads = set()
        self._expected = expected
        self._lock = threading.Lock()
        self._event = threading.Event()

    def __call__(self, ok, result):
        with self._lock:
            self.calls.append((ok, result))
            self.threads.add(threading.get_ident())
            if len(self.calls) >= self._expected:
                self._event.set()

    def wait(self):
        assert self._event.wait(WAIT_S), f"only {len(self.calls)} of {self._expected} callbacks"
        return self.calls


def write(engine, key, record):
    """Write; returns the engine's result: None (applied), or the newer version kept."""
    w = Waiter()
    engine.write(key, record, w)
    ((ok, result),) = w.wait()
    assert ok, result
    return result


def read(engine, key):
    w = Waiter()
    engine.read(key, w)
    ((ok, result),) = w.wait()
    assert ok
    assert result == engine.get_now(key)
    return result


@pytest.fixture(params=["memory", "sqlite"])
def engine(request, tmp_path):
    if request.param == "memory":
        eng = MemoryEngine()
    else:
        eng = SqliteEngine(str(tmp_path / "db" / "kv.sqlite3"), loop=None)
    yield eng
    eng.close()


def test_read_missing_is_none(engine):
    assert read(engine, b"nope") is None
    assert engine.count() == 0
    assert engine.max_timestamp() == 0


def test_write_then_read(engine):
    r = rec(10, "n1", b"v")
    write(engine, b"k", r)
    assert read(engine, b"k") == r
    assert engine.count() == 1


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_newer_wins_in_both_orders(engine, order):
    old, new = rec(10, "n1", b"old"), rec(20, "n1", b"new")
    for r in ([old, new] if order == "old_first" else [new, old]):
        write(engine, b"k", r)
    assert read(engine, b"k") == new


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_equal_ts_tie_breaks_on_node_id(engine, order):
    a, b = rec(10, "n1", b"from-n1"), rec(10, "n2", b"from-n2")
    for r in ([a, b] if order == "a_first" else [b, a]):
        write(engine, b"k", r)
    assert read(engine, b"k") == b  # "n2" > "n1"


def test_tie_break_is_string_order(engine):
    # "n10" < "n9" as strings: the engines must agree with Version.newer_than.
    a, b = rec(10, "n10", b"n10"), rec(10, "n9", b"n9")
    assert b.version.newer_than(a.version)
    write(engine, b"k", b)
    write(engine, b"k", a)
    assert read(engine, b"k") == b


def test_identical_version_does_not_overwrite(engine):
    write(engine, b"k", rec(10, "n1", b"first"))
    write(engine, b"k", rec(10, "n1", b"second"))
    assert read(engine, b"k").value == b"first"


def test_write_reports_the_newer_version_that_kept_it_out(engine):
    """``RepWriteAck.newer`` (issue 10): an older write is acked ok but names the
    stored version; a newer one, a first one and a retransmit report None."""
    new = rec(20, "n2", b"new")
    assert write(engine, b"k", new) is None
    assert write(engine, b"k", rec(10, "n1", b"old")) == new.version
    assert write(engine, b"k", rec(20, "n1", b"tie-lost")) == new.version  # "n1" < "n2"
    assert write(engine, b"k", new) is None  # the same version again: applied
    newest = rec(30, "n1", b"newest")
    assert write(engine, b"k", newest) is None
    assert write(engine, b"k", rec(25, "n9", None)) == newest.version  # a tombstone kept out too
    assert read(engine, b"k") == newest
    assert write(engine, b"other", rec(1, "n1", b"x")) is None


def test_write_reports_newer_for_a_big_hlc_timestamp(engine):
    big = rec((1_700_000_000_000 << 16) + 7, "n3", b"big")
    assert write(engine, b"k", big) is None
    assert write(engine, b"k", rec(big.version.ts - 1, "n9", b"older")) == big.version


def test_older_write_never_overwrites_newer_many(engine):
    write(engine, b"k", rec(1000, "n2", b"newest"))
    for ts in range(990, 1001):
        write(engine, b"k", rec(ts, "n1", b"old-%d" % ts))
    assert read(engine, b"k") == rec(1000, "n2", b"newest")


def test_tombstone_stored_and_read_back(engine):
    write(engine, b"k", rec(10, "n1", b"live"))
    write(engine, b"k", rec(11, "n1", None))
    got = read(engine, b"k")
    assert got is not None
    assert got.value is None and got.tombstone
    assert got.version == Version(11, "n1")
    assert engine.count() == 1  # a delete is a version, not a removal
    # An older write does not resurrect the key.
    write(engine, b"k", rec(10, "n9", b"zombie"))
    assert read(engine, b"k").value is None


def test_empty_value_distinct_from_tombstone(engine):
    write(engine, b"empty", rec(5, "n1", b""))
    write(engine, b"tomb", rec(5, "n1", None))
    e, t = read(engine, b"empty"), read(engine, b"tomb")
    assert e.value == b"" and not e.tombstone
    assert t.value is None and t.tombstone


def test_binary_keys_and_values(engine):
    key, value = bytes(range(256)), b"\x00" * 10 + b"\xff"
    write(engine, key, rec(3, "n1", value))
    assert read(engine, key).value == value
    assert read(engine, key[:-1]) is None


def test_ctx_round_trips(engine):
    r = rec(7, "n1", b"v", {"n1": 3, "n2": 9})
    write(engine, b"k", r)
    assert read(engine, b"k").version.ctx == {"n1": 3, "n2": 9}


def test_max_timestamp(engine):
    write(engine, b"a", rec(5, "n1", b"x"))
    write(engine, b"b", rec(1 << 50, "n1", None))  # tombstones count too
    write(engine, b"c", rec(7, "n1", b"y"))
    assert engine.max_timestamp() == 1 << 50


def test_sqlite_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "kv.sqlite3")
    eng = SqliteEngine(path)
    write(eng, b"a", rec(10, "n1", b"alpha"))
    write(eng, b"b", rec(12, "n2", None))
    write(eng, b"c", rec(11, "n3", b""))
    eng.close()
    eng = SqliteEngine(path)
    try:
        assert eng.get_now(b"a") == rec(10, "n1", b"alpha")
        assert eng.get_now(b"b") == rec(12, "n2", None)
        assert eng.get_now(b"c") == rec(11, "n3", b"")
        assert eng.count() == 3
        assert eng.max_timestamp() == 12
        # LWW still enforced against data from before the restart.
        write(eng, b"a", rec(9, "n9", b"older"))
        assert eng.get_now(b"a").value == b"alpha"
    finally:
        eng.close()


def test_sqlite_close_drains_queued_writes(tmp_path):
    path = str(tmp_path / "kv.sqlite3")
    eng = SqliteEngine(path)
    w = Waiter(200)
    for i in range(200):
        eng.write(b"k%d" % i, rec(i + 1, "n1", b"v"), w)
    eng.close()  # must not drop what was queued
    assert len(w.wait()) == 200 and all(ok for ok, _ in w.calls)
    eng = SqliteEngine(path)
    try:
        assert eng.count() == 200
    finally:
        eng.close()


def test_sqlite_callbacks_run_on_writer_thread_when_no_loop(tmp_path):
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"), loop=None)
    try:
        w = Waiter()
        eng.write(b"k", rec(1, "n1", b"v"), w)
        w.wait()
        assert w.threads and threading.get_ident() not in w.threads
    finally:
        eng.close()


def test_sqlite_group_commit_batches(tmp_path):
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"))  # fsync=True: commits are slow
    try:
        w = Waiter(500)
        for i in range(500):
            eng.write(b"key-%d" % i, rec(i + 1, "n1", b"v%d" % i), w)
        calls = w.wait()
        assert len(calls) == 500 and all(c == (True, None) for c in calls)
        assert eng.batched_writes == 500
        assert eng.batches < 500, eng.batches
        assert eng.count() == 500
        assert eng.max_timestamp() == 500
    finally:
        eng.close()


def test_sqlite_same_key_in_one_batch_keeps_newest(tmp_path):
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"))
    try:
        w = Waiter(100)
        # Interleave old and new versions of one key in one burst (likely one batch).
        stamps = [1000 - i if i % 2 else i + 1 for i in range(100)]
        for ts in stamps:
            eng.write(b"k", rec(ts, "n1", b"%d" % ts), w)
        w.wait()
        top = max(stamps)
        assert top == 999
        assert eng.get_now(b"k") == rec(top, "n1", b"%d" % top)
    finally:
        eng.close()


def test_sqlite_newer_reported_per_write_within_one_batch(tmp_path):
    """Group commit: only the writes of a batch that lost to a stored newer version
    report it, each with the version that kept it out."""
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"))
    try:
        write(eng, b"a", rec(50, "n1", b"a50"))
        writes = [(b"a", rec(40, "n1", b"a40")), (b"b", rec(5, "n1", b"b5")), (b"a", rec(60, "n1", b"a60")),
                  (b"b", rec(4, "n1", b"b4")), (b"c", rec(1, "n1", b"c1")), (b"a", rec(55, "n1", b"a55"))]
        waiters = [Waiter() for _ in writes]
        for (key, r), w in zip(writes, waiters):
            eng.write(key, r, w)
        results = [w.wait()[0] for w in waiters]
        assert all(ok for ok, _ in results)
        # a40 lost to a50 or to a60 (whichever the batch held when it was judged:
        # the version stored now), b4 to b5, a55 to a60; the others were applied.
        got = [res for _, res in results]
        assert got[1] is None and got[2] is None and got[4] is None
        assert got[0] in (Version(50, "n1"), Version(60, "n1"))
        assert got[3] == Version(5, "n1") and got[5] == Version(60, "n1")
        assert eng.get_now(b"a").value == b"a60"
    finally:
        eng.close()


def test_open_engine(tmp_path):
    assert isinstance(open_engine("memory", str(tmp_path)), MemoryEngine)
    eng = open_engine("sqlite", str(tmp_path / "data"), fsync=False)
    try:
        assert isinstance(eng, SqliteEngine)
        assert (tmp_path / "data" / "kv.sqlite3").exists()
    finally:
        eng.close()
    with pytest.raises(ValueError):
        open_engine("redis-ish", str(tmp_path))


def test_hlc_ceiling_saved_then_read_back(engine):
    """The HLC ceiling (core/clock.py): 0 on a fresh engine; a save is done only once
    durable, and the last one is what a restarted node reads."""
    assert engine.hlc_ceiling() == 0
    big = (1_700_000_000_000 << 16) + 7  # HLC-sized: beyond 2**53
    w = Waiter(2)
    engine.save_hlc_ceiling(big - 7, w)
    engine.save_hlc_ceiling(big, w)
    assert w.wait() == [(True, None), (True, None)]
    assert engine.hlc_ceiling() == big
