"""TTL: expiry travels with the version, so replicas agree and repair cannot resurrect."""

from __future__ import annotations

import threading

from quorumkv.core import messages as m
from quorumkv.core.node import NodeCore, NodeSettings, Respond, Send, StoreWrite
from quorumkv.core.version import Record, Version, newest
from quorumkv.shell.storage import MemoryEngine, SqliteEngine

MEMBERS = {"n1": "a:1", "n2": "a:2", "n3": "a:3"}
NOW = 1_700_000_000_000


def test_put_with_ttl_sets_absolute_expiry_on_every_replica():
    core = NodeCore(NodeSettings("n1"), MEMBERS)
    eff = core.on_request("client", m.Put(1, b"k", b"v", 0, ttl_ms=5_000), NOW)
    records = [e.record for e in eff if type(e) is StoreWrite] + [e.msg.record for e in eff if type(e) is Send]
    assert len(records) == 3 and {r.expires_ms for r in records} == {NOW + 5_000}
    # a delete never carries an expiry
    eff = core.on_request("client", m.Put(2, b"k", None, 0, ttl_ms=5_000), NOW)
    assert all(e.record.expires_ms == 0 for e in eff if type(e) is StoreWrite)


def test_negative_ttl_is_invalid():
    core = NodeCore(NodeSettings("n1"), MEMBERS)
    eff = core.on_request("client", m.Put(1, b"k", b"v", 0, ttl_ms=-1), NOW)
    assert len(eff) == 1 and type(eff[0]) is Respond and eff[0].msg.status == m.INVALID


def _read(core, record, now):
    eff = core.on_request("client", m.Get(9, b"k", 0), now)
    (sr,) = [e for e in eff if type(e).__name__ == "StoreRead"]
    sends = [e for e in eff if type(e) is Send]
    out = core.on_store_done(sr.token, True, record, now)
    out += core.on_response(sends[0].peer, m.RepReadResp(sends[0].msg.id, True, record), now)
    (reply,) = [e.msg for e in out if type(e) is Respond]
    return reply


def test_expired_value_reads_as_not_found():
    rec = Record(Version(NOW << 16, "n1"), b"v", NOW + 1_000)
    core = NodeCore(NodeSettings("n1"), MEMBERS)
    alive = _read(core, rec, NOW + 999)
    assert alive.status == m.OK and alive.value == b"v" and alive.expires_ms == NOW + 1_000
    dead = _read(core, rec, NOW + 1_000)
    assert dead.status == m.NOT_FOUND and dead.value is None


def test_expired_record_still_outranks_older_versions():
    older = Record(Version(1 << 16, "n2"), b"old value")
    expired = Record(Version(2 << 16, "n1"), b"short-lived", expires_ms=3)
    assert newest([older, expired]) is expired
    assert not expired.live_at(10) and older.live_at(10)


def test_engines_keep_expiry():
    rec = Record(Version(7, "n1"), b"v", NOW + 42)
    mem = MemoryEngine()
    mem.write(b"k", rec, lambda ok, err: None)
    assert mem.get_now(b"k").expires_ms == NOW + 42


def test_sqlite_keeps_expiry(tmp_path):
    eng = SqliteEngine(str(tmp_path / "kv.sqlite3"))
    done = threading.Event()
    eng.write(b"k", Record(Version(7, "n1"), b"v", NOW + 42), lambda ok, err: done.set())
    assert done.wait(10)
    assert eng.get_now(b"k").expires_ms == NOW + 42
    eng.close()
