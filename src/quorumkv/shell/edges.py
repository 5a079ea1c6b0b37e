"""The real node's Storage and Clock edges (``runtime/interfaces.py``); its
Transport is ``peers.SocketTransport``.

``EngineStorage`` puts a storage engine (``storage.py``: SQLite, memory, Redis) and
the node-state file (``node-state.json``) behind the one Storage interface. The
engine's callback methods are bound straight through (no extra call on the hot
path); the synchronous reads run at once inside ``query`` — a storage error becomes
``done(False, "storage error: ...")``, the replica answers "failed" — and
``query_soon`` runs them on the event loop's next turn (anti-entropy's chunked scans
interleave with client traffic).
"""

from __future__ import annotations

import asyncio
import json
import os

from .storage_base import StorageEngine
from .wallclock import mono_ms, now_ms


class WallClock:
    """The node's clocks in ms (``wallclock.py``): ``now_ms`` monotonic, ``wall_ms``
    the wall clock plus the configured test offset."""

    __slots__ = ("now_ms", "wall_ms")

    def __init__(self) -> None:
        self.now_ms = mono_ms  # the functions themselves: one call per step, not two
        self.wall_ms = now_ms


class NodeState:
    """``<data_dir>/data/node-state.json``: what a restart must not forget — the
    members the node knows (``SaveMembers``) and that its join/replace finished
    (``SaveBootstrapped``). Written durably: fsync, then rename over the old one."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, "data", "node-state.json")

    def load(self) -> dict:
        try:
            with open(self.path) as fh:
                saved = json.load(fh)
            return saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self, **fields) -> None:
        state = {**self.load(), **fields}
        tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class EngineStorage:
    """A storage engine plus the node-state file, as the runtime's Storage."""

    def __init__(self, engine: StorageEngine, state: NodeState, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.state = state
        self.loop = loop
        # Durable changes and reads with callbacks: the engine's own methods.
        self.write = engine.write
        self.read = engine.read
        self.write_hint = engine.write_hint
        self.paxos = engine.paxos
        self.save_hlc_ceiling = engine.save_hlc_ceiling
        self.purge = engine.purge
        self.drop = engine.drop
        self.delete_hint = engine.delete_hint

    def query(self, read, done) -> None:
        try:
            result = read(self.engine)
        except Exception as exc:  # storage error: the replica answers "failed"
            done(False, f"storage error: {exc}")
            return
        done(True, result)

    def query_soon(self, read, done) -> None:
        self.loop.call_soon(self.query, read, done)

    def save_members(self, members: dict) -> None:
        self.state.save(known=members)

    def save_bootstrapped(self, members: dict) -> None:
        """After a join or replace streamed its data, a restart must come back as a
        member (``up``), not join or replace again: remember the members we know."""
        self.state.save(bootstrapped=True, members=members)
