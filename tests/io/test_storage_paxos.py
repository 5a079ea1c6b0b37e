"""CASPaxos acceptor state in the storage engines (memory, SQLite): promises are
durable (they survive reopening SQLite), fence older plain writes, and go once a
record at or above them is stored."""

from __future__ import annotations

import threading

import pytest

from quorumkv.core.version import Record, Version
from quorumkv.shell.storage import MemoryEngine, SqliteEngine


def call(fn, *args):
    box, ev = [], threading.Event()

    def done(ok, result):
        box.append((ok, result))
        ev.set()

    fn(*args, done)
    assert ev.wait(10)
    return box[0]


@pytest.fixture(params=["memory", "sqlite"])
def engine(request, tmp_path):
    eng = MemoryEngine() if request.param == "memory" else SqliteEngine(str(tmp_path / "kv.sqlite3"), fsync=False)
    yield eng
    eng.close()


def test_prepare_accept_and_fencing(engine):
    b1, b2 = Version(100, "n1"), Version(200, "n2")
    assert call(engine.paxos, "prepare", b"k", b1, None) == (True, (True, None, b1))
    ok, (promised, _rec, promise) = call(engine.paxos, "prepare", b"k", Version(50, "n3"), None)
    assert not promised and promise == b1  # a lower ballot is refused, told the promise
    assert call(engine.write, b"k", Record(Version(60, "n3"), b"plain")) == (True, b1)  # fenced
    assert engine.get_now(b"k") is None
    assert call(engine.paxos, "accept", b"k", None, Record(b1, b"cas")) == (True, (True, None, None))
    assert engine.get_now(b"k").value == b"cas"
    assert call(engine.paxos, "accept", b"k", None, Record(b1, b"cas"))[1][0] is True  # a retransmit: applied
    assert call(engine.write, b"k", Record(Version(150, "n3"), b"plain")) == (True, None)  # above: stored
    ok, (applied, stored, _p) = call(engine.paxos, "accept", b"k", None, Record(Version(120, "n1"), b"late"))
    assert not applied and stored == Version(150, "n3")
    assert call(engine.paxos, "prepare", b"k", b2, None)[1][0] is True


def test_sqlite_promise_survives_reopening(tmp_path):
    path = str(tmp_path / "kv.sqlite3")
    eng = SqliteEngine(path, fsync=False)
    call(eng.paxos, "prepare", b"k", Version(100, "n1"), None)
    eng.close()
    eng = SqliteEngine(path, fsync=False)
    try:
        assert call(eng.write, b"k", Record(Version(60, "n3"), b"plain")) == (True, Version(100, "n1"))
        assert call(eng.write, b"other", Record(Version(60, "n3"), b"plain")) == (True, None)
    finally:
        eng.close()
