"""Tombstone GC's storage half: ``purge`` deletes only exactly the named tombstone,
on every engine; ``scan_all`` pages (SQLite) and sees every record once."""

from __future__ import annotations

import threading

import pytest

from quorumkv.core.version import Record, Version
from quorumkv.shell.storage import MemoryEngine, SqliteEngine

from redis_fixtures import shared_redis  # noqa: F401 - fixture

TOMB = Record(Version(100, "n1"), None)


def call(fn, *args):
    got = []
    ev = threading.Event()

    def done(ok, result):
        got.append((ok, result))
        ev.set()

    fn(*args, done)
    assert ev.wait(10)
    return got[0]


def engines(tmp_path):
    return [MemoryEngine(), SqliteEngine(str(tmp_path / "kv.sqlite3"), fsync=False)]


def check_purge_rule(eng) -> None:
    assert eng.supports_purge
    call(eng.write, b"t", TOMB)
    call(eng.write, b"v", Record(Version(100, "n1"), b"value"))
    call(eng.write, b"newer", Record(Version(200, "n1"), None))
    # wrong version, a value at that version, a newer tombstone: all kept
    for key, version in [(b"t", Version(100, "n2")), (b"t", Version(99, "n1")), (b"v", Version(100, "n1")),
                         (b"newer", Version(100, "n1")), (b"missing", Version(100, "n1"))]:
        ok, _ = call(eng.purge, key, version)
        assert ok
    assert eng.get_now(b"t") == TOMB
    assert eng.get_now(b"v").value == b"value"
    assert eng.get_now(b"newer") is not None
    ok, _ = call(eng.purge, b"t", Version(100, "n1"))
    assert ok and eng.get_now(b"t") is None
    assert eng.count() == 2


def test_purge_is_compare_and_delete(tmp_path):
    for eng in engines(tmp_path):
        try:
            check_purge_rule(eng)
        finally:
            eng.close()


def test_sqlite_scan_all_pages_through_every_record(tmp_path, monkeypatch):
    import quorumkv.shell.storage as storage

    monkeypatch.setattr(storage, "SCAN_PAGE_ROWS", 7)
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"), fsync=False)
    try:
        for i in range(50):
            call(eng.write, f"k{i:03d}".encode(), Record(Version(i + 1, "n1"), None if i % 4 == 0 else b"x"))
        seen = [k for k, _ in eng.scan_all()]
        assert seen == sorted(f"k{i:03d}".encode() for i in range(50))
        # a client read between pages sees a write made after the scan started
        it = eng.scan_all()
        next(it)
        call(eng.write, b"k001", Record(Version(999, "n2"), b"new"))
        assert eng.get_now(b"k001").version.ts == 999
        assert len(list(it)) == 49
    finally:
        eng.close()


def test_redis_purge_is_compare_and_delete(shared_redis):  # noqa: F811 - fixture
    from quorumkv.shell.storage_redis import RedisEngine

    eng = RedisEngine(shared_redis.url, prefix=b"purge-test:", fsync=False)
    try:
        check_purge_rule(eng)
    finally:
        eng.close()
