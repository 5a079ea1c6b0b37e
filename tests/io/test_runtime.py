"""The one effect executor (``quorumkv.runtime``): every effect the core can return
has a handler, one step's effects run in order, persist-before-ack holds whatever the
storage's timing, and the durable things are effects of their own."""

from __future__ import annotations

import asyncio
import json
from typing import NamedTuple

import pytest

from quorumkv.core import effects as core_effects
from quorumkv.core import messages as m
from quorumkv.core.antientropy import AE_EFFECTS
from quorumkv.core.cleanup import DropMany
from quorumkv.core.effects import Log, Respond, SaveBootstrapped, SaveMembers, Send, StoreWrite
from quorumkv.core.node import NodeCore, NodeSettings
from quorumkv.core.paxos import PaxosStore
from quorumkv.core.scan import ScanKeys
from quorumkv.core.version import Record, Version
from quorumkv.runtime import Executor, UnknownEffect
from quorumkv.shell.edges import EngineStorage, NodeState
from quorumkv.shell.storage import MemoryEngine

T0 = 1_700_000_000_000


def _effect_types() -> set[type]:
    """Every effect type the core defines: core/effects.py plus the extensions'."""
    found = {v for v in vars(core_effects).values()
             if isinstance(v, type) and issubclass(v, tuple) and hasattr(v, "_fields")}
    return found | set(AE_EFFECTS) | {DropMany, PaxosStore, ScanKeys}


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def now_ms(self) -> int:
        return self.t

    def wall_ms(self) -> int:
        return self.t


class _Transport:
    def __init__(self) -> None:
        self.out: list = []

    def send(self, peer, msg) -> None:
        self.out.append(("send", peer, msg))

    def respond(self, conn, msg) -> None:
        self.out.append(("respond", conn, msg))


class _SlowStorage:
    """Holds every durable write until ``sync()``: the disk's fsync is pending."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.pending: list = []
        self.members = None
        self.bootstrapped = None

    def write(self, key, record, done) -> None:
        self.pending.append((key, record, done))

    def sync(self) -> None:
        pending, self.pending = self.pending, []
        for key, record, done in pending:
            self.data[key] = record
            done(True, None)

    def save_members(self, members) -> None:
        self.members = members

    def save_bootstrapped(self, members) -> None:
        self.bootstrapped = members


def _executor(storage=None):
    core = NodeCore(NodeSettings("n1", n=1, r=1, w=1), {"n1": "x:1"}, now_ms=T0)
    transport = _Transport()
    logs: list = []
    ex = Executor(core, storage if storage is not None else _SlowStorage(), transport, _Clock(), logs.append)
    return ex, transport, logs


def test_every_core_effect_type_has_a_handler():
    ex, _, _ = _executor()
    types = _effect_types()
    assert {Send, Respond, StoreWrite, SaveMembers, SaveBootstrapped, Log} <= types  # the scan found them
    missing = sorted(t.__name__ for t in types if t not in ex._table)
    assert not missing, f"effects the runtime cannot execute: {missing}"


def test_an_unknown_effect_is_a_clear_error():
    class Gossip(NamedTuple):  # an effect type from the future
        peer: str

    ex, _, _ = _executor()
    with pytest.raises(UnknownEffect, match="Gossip"):
        ex.run([Gossip("n2")])


def test_one_steps_effects_run_in_the_order_returned():
    ex, transport, logs = _executor()
    a, b, c = m.Ping(1), m.Ping(2), m.Ping(3)
    ex.run([Send("n2", a), Log("info", "x", {}), Respond("conn", b), Send("n3", c)])
    assert transport.out == [("send", "n2", a), ("respond", "conn", b), ("send", "n3", c)]
    assert [e.event for e in logs] == ["x"]


def test_a_write_is_acked_only_after_the_storage_made_it_durable():
    storage = _SlowStorage()
    ex, transport, _ = _executor(storage)
    ex.request("client", m.Put(7, b"k", b"v", 1))
    assert storage.pending and not transport.out  # the fsync is pending: no reply yet
    storage.sync()
    (reply,) = [msg for kind, conn, msg in transport.out if kind == "respond" and conn == "client"]
    assert reply.id == 7 and reply.status == m.OK
    assert storage.data[b"k"].value == b"v"


def test_a_replica_ack_waits_for_the_disk_too():
    storage = _SlowStorage()
    ex, transport, _ = _executor(storage)
    rec = Record(Version(T0 << 16, "n2"), b"v")
    ex.request(("peer", "n2"), m.RepWrite(5, b"k", rec))
    assert not transport.out
    storage.sync()
    assert [type(msg) for _, _, msg in transport.out] == [m.RepWriteAck]


def test_join_completed_log_writes_nothing_saveboostrapped_does(tmp_path):
    async def main():
        state = NodeState(str(tmp_path))
        storage = EngineStorage(MemoryEngine(), state, asyncio.get_running_loop())
        ex, _, logs = _executor(storage)
        ex.run([Log("info", "join_completed", {"received": 3})])
        assert logs and state.load() == {}  # a log line is only a log line
        ex.run([SaveBootstrapped({"n1": "x:1", "n2": "y:2"}), SaveMembers({"n3": ["z:3", 1, 2, "left"]})])
        saved = json.loads((tmp_path / "data" / "node-state.json").read_text())
        assert saved == {"bootstrapped": True, "members": {"n1": "x:1", "n2": "y:2"},
                         "known": {"n3": ["z:3", 1, 2, "left"]}}

    asyncio.run(main())


def test_a_failing_local_read_answers_failed_instead_of_raising(tmp_path):
    class Broken(MemoryEngine):
        def peek_hints(self, key):
            raise OSError("disk on fire")

    async def main():
        storage = EngineStorage(Broken(), NodeState(str(tmp_path)), asyncio.get_running_loop())
        got = []
        storage.query(lambda r: r.peek_hints(b"k"), lambda ok, res: got.append((ok, res)))
        assert got == [(False, "storage error: disk on fire")]
        storage.query_soon(lambda r: r.get_now(b"k"), lambda ok, res: got.append((ok, res)))
        assert len(got) == 1  # query_soon never finishes before it returns
        await asyncio.sleep(0)
        assert got[1] == (True, None)

    asyncio.run(main())


def test_the_core_takes_a_latency_model_as_an_event():
    ex, _, _ = _executor()
    model = object()
    ex.core.install_latency_model(model)
    assert ex.core.latency_model is model


def test_in_the_simulator_a_joined_node_restarts_as_a_member_not_a_joiner():
    """SaveBootstrapped reaches the simulated node-state (the Boot) through the one
    runtime: crash the joined node and start it again — it is up at once and keeps the
    data it streamed, instead of joining (and streaming) all over again."""
    from quorumkv.core.membership import UP
    from quorumkv.sim.scenario import Scenario

    sc = Scenario(nodes=4, seed=3)
    for i in range(20):
        sc.put(f"n{1 + i % 4}", f"k{i}".encode(), b"v", level=2)
    name = sc.join()
    cl = sc.cluster
    assert cl.boot[name].members.keys() >= {"n1", "n2", "n3", "n4", name}  # saved, not just its seed list
    streamed = cl.cores[name].stats["stream_keys_received"]
    assert streamed > 0
    cl.crash(name)
    cl.restart(name)
    assert cl.status(name) == UP
    sc.run_for(2_000)
    assert cl.cores[name].stats["stream_keys_received"] == 0  # no second bootstrap
    assert cl.logs.get("join_completed") == 1
