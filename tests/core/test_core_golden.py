"""Golden traces: a few scripted scenarios, every effect every core emitted, in order.

The pure core is deterministic (no clock, no global random, no I/O), so the same events
give the same effects byte for byte. These traces pin that down across refactors of
the core (issue 9: the NodeCore split must not change behaviour): a change that alters
what the core decides — or the order in which it asks for things — shows up here as a
diff against ``tests/golden/<scenario>.txt``.

When a change is *meant* to alter a trace, regenerate and review the diff::

    QKV_UPDATE_GOLDEN=1 python -m pytest tests/core/test_core_golden.py
    git diff tests/golden/

Each line is ``<node> <effect> <fields>``; message ids, timestamps and HLC values are
left out (they would only restate the order), keys, peers, statuses and values kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quorumkv.core import messages as m
from quorumkv.core.effects import Respond, Send, StoreRead, StoreWrite
from quorumkv.core.ring import Ring
from quorumkv.sim.scenario import CoreMesh, MeshClient, find_key

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("QKV_UPDATE_GOLDEN") == "1"
NAMES = ("n1", "n2", "n3", "n4")


def _msg(msg: object) -> str:
    name = type(msg).__name__
    parts = [name]
    for field in ("key", "value", "status", "ok", "error", "message"):
        v = getattr(msg, field, None)
        if v not in (None, "", b""):
            if field == "status":
                v = int(v)  # the number on the wire, whatever the enum's repr
            parts.append(f"{field}={v!r}")
    record = getattr(msg, "record", None)
    if record is not None:
        parts.append(f"record.value={getattr(record, 'value', None)!r}")
    return " ".join(parts)


def _effect(eff: object) -> str:
    t = type(eff)
    if t is Send:
        return f"Send->{eff.peer} {_msg(eff.msg)}"
    if t is Respond:
        to = eff.conn.name if isinstance(eff.conn, MeshClient) else (eff.conn[1] if eff.conn else None)
        return f"Respond->{to} {_msg(eff.msg)}"
    if t is StoreWrite:
        return f"StoreWrite key={eff.key!r} value={eff.record.value!r}"
    if t is StoreRead:
        return f"StoreRead key={eff.key!r}"
    return t.__name__


class TracedMesh(CoreMesh):
    """The shared test executor, recording every effect handed to it."""

    def __init__(self, *a, **kw) -> None:
        self.trace: list[str] = []
        super().__init__(*a, **kw)

    def run(self, node: str, effects) -> None:
        effects = list(effects)
        self.trace.extend(f"{node} {_effect(e)}" for e in effects)
        super().run(node, effects)


def _check(name: str, mesh: TracedMesh, results: list[str]) -> None:
    text = "\n".join(["# client results", *results, "# effects", *mesh.trace]) + "\n"
    path = GOLDEN_DIR / f"{name}.txt"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with QKV_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name}: the trace differs from {path} (QKV_UPDATE_GOLDEN=1 + git diff)"


def _reply(r: m.Reply | None) -> str:
    if r is None:
        return "pending"
    return f"status={r.status} value={getattr(r, 'value', None)!r}"


def test_put_then_get_all_replicas_up():
    mesh = TracedMesh(NAMES)
    c = MeshClient("c1")
    results = [
        _reply(mesh.request(c, "n1", m.Put(1, b"k1", b"v1", m.LEVEL_DEFAULT))),
        _reply(mesh.request(c, "n2", m.Get(2, b"k1", m.LEVEL_DEFAULT))),
        _reply(mesh.request(c, "n3", m.Put(3, b"k1", None, m.LEVEL_DEFAULT))),
        _reply(mesh.request(c, "n4", m.Get(4, b"k1", m.LEVEL_DEFAULT))),
    ]
    _check("put_get_all_up", mesh, results)


def test_writes_with_a_replica_down_then_back():
    mesh = TracedMesh(NAMES)
    c = MeshClient("c1")
    results = []
    for i in range(4):
        key = f"k{i}".encode()
        mesh.down = {"n3"}
        results.append(_reply(mesh.request(c, "n1", m.Put(10 + i, key, b"a", m.LEVEL_DEFAULT))))
        mesh.down = set()
        results.append(_reply(mesh.request(c, "n2", m.Get(20 + i, key, m.LEVEL_DEFAULT))))
    mesh.tick(50)
    _check("replica_down", mesh, results)


def test_a_slow_replica_and_a_later_read():
    ring = Ring(NAMES, 3)
    key = find_key(lambda k: ring.preference_list(k) == ("n1", "n2", "n3"))
    mesh = TracedMesh(NAMES)
    c = MeshClient("c1")
    mesh.held_to = {"n2"}  # n2's link is slow: its copy of the first write arrives last
    first = mesh.request(c, "n1", m.Put(1, key, b"old", m.LEVEL_DEFAULT))
    mesh.held_to = {"n2", "n3"}
    second = mesh.request(c, "n4", m.Put(2, key, b"new", m.LEVEL_DEFAULT))  # only n1 answers: pending
    mesh.release("n3")
    mesh.release("n2")
    results = [_reply(first), _reply(second), _reply(c.replies.get(2)),
               _reply(mesh.request(c, "n2", m.Get(3, key, m.LEVEL_DEFAULT))),
               _reply(mesh.request(c, "n3", m.Get(4, key, 1)))]
    _check("slow_replica", mesh, results)


@pytest.mark.parametrize("level", [1, "ALL"])
def test_levels_one_and_all(level):
    mesh = TracedMesh(NAMES)
    c = MeshClient("c1")
    wire = m.LEVEL_ALL if level == "ALL" else level
    results = [_reply(mesh.request(c, "n2", m.Put(1, b"lv", b"x", wire))),
               _reply(mesh.request(c, "n2", m.Get(2, b"lv", wire)))]
    _check(f"level_{level}", mesh, results)
