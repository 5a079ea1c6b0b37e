"""The one effect executor: runs a ``NodeCore``'s effects against Storage,
Transport and Clock (``runtime/interfaces.py``).

The real node (``shell/server.py``), the simulator (``sim/cluster.py``,
``sim/scenario.py``'s ``CoreMesh``) and the unit tests all execute effects here;
they differ only in the three edges they pass in (FoundationDB's rule: swap the
network, the disk and time, never the logic).

Order of execution (what every edge may rely on)
------------------------------------------------
1. The effects of one step (one ``on_*`` call or ``tick``) are executed **in the
   order the core returned them**, each one *started* before the next: a ``Send``
   or ``Respond`` is handed to the transport (which may queue it — the real node
   writes every frame of one event-loop turn in one syscall), a storage effect is
   handed to storage.
2. A storage completion is a **new step** (``on_store_done``, ``on_hints_loaded``)
   whose effects are executed the same way — at once and re-entrantly when the
   storage finished synchronously (memory engine, a local read), later otherwise.
3. **Persist before ack.** Storage calls ``done`` for ``StoreWrite``,
   ``StoreHint``, ``PaxosStore``, ``SaveHlcCeiling``, ``PurgeMany``/``DropMany``
   only once the change is durable, and the core produces the reply that
   acknowledges a write (``RepWriteAck``, a client ``Reply``, a Paxos promise) only
   in that later step — never in the step that asked for the write. So an ack can
   never overtake its write, whatever the transport does with step 1's queue.
4. ``SaveMembers`` and ``SaveBootstrapped`` are synchronous: durable when the
   storage call returns, so an effect after them in the same step (the gossip that
   spreads the change) leaves only after the node would remember it.
5. ``Log`` goes to the edge's ``on_log`` (structlog in the node, counters in the
   simulator); it never changes state — anything durable is its own effect.

Time: a step's ``now_ms`` is the monotonic clock. The wall clock reaches the core as
its own event, ``observe_wall_clock``, read together with the monotonic clock
(``now``) before every tick, request and hint load the executor feeds; answers,
failures and storage completions carry the monotonic clock alone (the core uses
the wall clock it last observed, at most a tick old). The real node's socket
handlers hand requests and peer replies to the core themselves with the monotonic
clock only (the hot path), so there the wall clock arrives with every tick: a step
of the wall clock shows in the HLC, TTLs and clock offsets at the next tick.

An effect type not in the table raises ``UnknownEffect`` (a core bug, not input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from ..core.antientropy import PurgeMany, ReadMany, ScanLocal
from ..core.cleanup import DropMany
from ..core.effects import (
    DeleteHint, LoadHints, Log, Peek, ReadHint, Respond, SaveBootstrapped, SaveHlcCeiling, SaveMembers, ScanRange,
    Send, StoreHint, StoreRead, StoreWrite,
)
from ..core.paxos import PaxosStore
from ..core.scan import ScanKeys
from ..core.typed import read_result
from ..core.version import Version
from .interfaces import Clock, Done, Reader, Storage, Transport

__all__ = ["Executor", "UnknownEffect", "newest_hint"]


class UnknownEffect(TypeError):
    """The core returned an effect type the executor does not know how to execute."""


def newest_hint(hints: Iterable[tuple[Any, Any]]) -> object:
    """What a fallback answers a read with: its newest hint (typed hints: merged)."""
    return read_result(rec for _, rec in hints)


def _ignore_log(eff: Log) -> None:
    pass


class Executor:
    """Executes one node's effects. ``core`` is a ``NodeCore`` (or anything with
    its ``on_*``/``tick`` methods); the edges are ``storage``, ``transport`` and
    ``clock``; ``on_log`` receives every ``Log`` effect.

    The ``request``/``response``/``send_failed``/``peer_lost``/``tick`` methods are
    the events an edge feeds in: each asks the core for one step at the clock's
    time and executes its effects.
    """

    __slots__ = ("core", "storage", "transport", "clock", "on_log", "_table", "_scans")

    def __init__(self, core: Any, storage: Storage, transport: Transport, clock: Clock,
                 on_log: Callable[[Log], None] = _ignore_log) -> None:
        self.core = core
        self.storage = storage
        self.transport = transport
        self.clock = clock
        self.on_log = on_log
        self._scans: dict[Any, Iterator[Any]] = {}  # ScanLocal token -> iterator over storage.scan_all()
        self._table: dict[type, Callable[[Any], None]] = {
            Send: self._send, Respond: self._respond,
            StoreWrite: self._store_write, StoreRead: self._store_read,
            StoreHint: self._store_hint, ReadHint: self._read_hint, Peek: self._peek,
            LoadHints: self._load_hints, DeleteHint: self._delete_hint,
            ScanRange: self._scan_range, ScanKeys: self._scan_keys,
            ScanLocal: self._scan_local, ReadMany: self._read_many,
            PurgeMany: self._purge_many, DropMany: self._drop_many,
            PaxosStore: self._paxos, SaveHlcCeiling: self._save_hlc_ceiling,
            SaveMembers: self._save_members, SaveBootstrapped: self._save_bootstrapped,
            Log: self._log,
        }

    # ------------------------------------------------------------------ the loop
    def run(self, effects: list[Any]) -> None:
        """Execute one step's effects, in order (see the module docstring)."""
        for eff in effects:
            t = type(eff)
            # The two effects of every request go straight to the transport (the hot
            # path: no table lookup, no wrapper); the rest through the table.
            if t is Respond:
                self.transport.respond(eff.conn, eff.msg)
            elif t is Send:
                self.transport.send(eff.peer, eff.msg)
            else:
                handler = self._table.get(t)
                if handler is None:
                    raise UnknownEffect(f"{t.__name__} ({eff!r}): teach quorumkv/runtime/executor.py "
                                        "how to execute it")
                handler(eff)

    # -------------------------------------------------------------------- events
    def now(self) -> int:
        """The monotonic time of the next step, after handing the core the wall
        clock read with it (``NodeCore.observe_wall_clock``): the core's deadlines
        run on the first, its HLC, TTLs and clock offsets on the second."""
        clock = self.clock
        now = clock.now_ms()
        self.core.observe_wall_clock(clock.wall_ms(), now)
        return now

    def request(self, conn: Any, msg: Any) -> None:
        self.run(self.core.on_request(conn, msg, self.now()))

    # Answers, failures and storage completions run on the monotonic clock alone: the
    # wall clock the core last observed (with the request or tick that started the
    # work, at most a tick ago) stands for it, which saves a clock read and a call on
    # every completion (the hot path: one or two per request).
    def response(self, peer: str, msg: Any) -> None:
        self.run(self.core.on_response(peer, msg, self.clock.now_ms()))

    def send_failed(self, peer: str, msg: Any, reason: str) -> None:
        self.run(self.core.on_send_failed(peer, msg, reason, self.clock.now_ms()))

    def peer_lost(self, peer: str, reason: str) -> None:
        self.run(self.core.on_peer_lost(peer, reason, self.clock.now_ms()))

    def tick(self) -> None:
        self.run(self.core.tick(self.now()))

    def store_done(self, token: Any) -> Done:
        """The callback that turns a storage completion into ``on_store_done``."""
        def done(ok: bool, result: Any) -> None:
            self.run(self.core.on_store_done(token, ok, result, self.clock.now_ms()))
        return done

    # ----------------------------------------------------------------- network
    def _send(self, eff: Send) -> None:
        self.transport.send(eff.peer, eff.msg)

    def _respond(self, eff: Respond) -> None:
        self.transport.respond(eff.conn, eff.msg)

    # ----------------------------------------------------------------- records
    def _store_write(self, eff: StoreWrite) -> None:
        self.storage.write(eff.key, eff.record, self.store_done(eff.token))

    def _store_read(self, eff: StoreRead) -> None:
        self.storage.read(eff.key, self.store_done(eff.token))

    def _paxos(self, eff: PaxosStore) -> None:
        self.storage.paxos(eff.op, eff.key, eff.ballot, eff.record, self.store_done(eff.token))

    def _save_hlc_ceiling(self, eff: SaveHlcCeiling) -> None:
        self.storage.save_hlc_ceiling(eff.ts, self.store_done(eff.token))

    # ------------------------------------------------------------------- hints
    def _store_hint(self, eff: StoreHint) -> None:
        self.storage.write_hint(eff.owner, eff.key, eff.record, eff.created_ms, self.store_done(eff.token))

    def _read_hint(self, eff: ReadHint) -> None:
        key = eff.key
        self.storage.query(lambda r: newest_hint(r.peek_hints(key)), self.store_done(eff.token))

    def _peek(self, eff: Peek) -> None:
        key = eff.key
        self.storage.query(lambda r: (r.get_now(key), r.peek_hints(key)), self.store_done(eff.token))

    def _load_hints(self, eff: LoadHints) -> None:
        owner, limit = eff.owner, eff.limit

        def loaded(ok: bool, entries: Any) -> None:
            if ok:
                self.run(self.core.on_hints_loaded(owner, entries, self.now()))
            else:  # the replay of ``owner`` stays paused, as before the runtime existed
                self.on_log(Log("error", "load_hints_failed", {"target": owner, "error": str(entries)}))

        self.storage.query(lambda r: r.load_hints(owner, limit), loaded)

    def _delete_hint(self, eff: DeleteHint) -> None:
        self.storage.delete_hint(eff.hint_id)

    # ----------------------------------------------------------------- scans
    def _scan_range(self, eff: ScanRange) -> None:
        after, limit = eff.after, eff.limit
        self.storage.query(lambda r: r.scan_range(after, limit), self.store_done(eff.token))

    def _scan_keys(self, eff: ScanKeys) -> None:
        after, limit = eff.after, eff.limit
        self.storage.query(lambda r: r.scan_keys(after, limit), self.store_done(eff.token))

    def _scan_local(self, eff: ScanLocal) -> None:
        """Anti-entropy's chunked scan: one iterator over ``scan_all`` per token, the
        next ``limit`` records per effect (``limit`` 0 abandons it); each chunk is
        delivered with ``query_soon`` so a whole-table scan interleaves with traffic."""
        token, limit, scans = eff.token, eff.limit, self._scans
        if limit <= 0:
            scans.pop(token, None)
            return

        def chunk(reader: Reader) -> tuple[list[Any], bool]:
            it = scans.get(token)
            if it is None:
                it = scans[token] = iter(reader.scan_all())
            try:
                part = list(islice(it, limit))
            except Exception:  # storage error mid-scan: the core fails the session
                scans.pop(token, None)
                raise
            last = len(part) < limit
            if last:
                scans.pop(token, None)
            return (part, last)

        self.storage.query_soon(chunk, self.store_done(token))

    def _read_many(self, eff: ReadMany) -> None:
        keys = eff.keys
        self.storage.query(lambda r: [r.get_now(k) for k in keys], self.store_done(eff.token))

    def _purge_many(self, eff: PurgeMany) -> None:
        self._delete_each(eff.token, eff.entries, self.storage.purge)

    def _drop_many(self, eff: DropMany) -> None:
        self._delete_each(eff.token, eff.entries, self.storage.drop)

    def _delete_each(self, token: Any, entries: list[Any], delete: Callable[[bytes, Version, Done], None]) -> None:
        """Compare-and-delete each ``(key, version)``; once all are durable,
        ``on_store_done(token, ok, count applied | first error)``."""
        finish = self.store_done(token)
        if not entries:
            self.storage.query_soon(lambda r: 0, finish)
            return
        outstanding, applied, error = len(entries), 0, ""

        def done(ok: bool, result: Any) -> None:
            nonlocal outstanding, applied, error
            outstanding -= 1
            if ok:
                applied += 1 if result is None else int(bool(result))
            elif not error:
                error = str(result)
            if outstanding == 0:
                finish(not error, error or applied)

        for key, version in entries:
            delete(key, version, done)

    # ------------------------------------------------------------- node state
    def _save_members(self, eff: SaveMembers) -> None:
        self.storage.save_members(eff.members)

    def _save_bootstrapped(self, eff: SaveBootstrapped) -> None:
        self.storage.save_bootstrapped(eff.members)

    def _log(self, eff: Log) -> None:
        self.on_log(eff)
