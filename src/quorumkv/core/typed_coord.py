"""Coordinating typed writes: a primary makes the update, the usual round replicates it.

Riak's shape (its put FSM forwards a CRDT or causal update to a vnode of the key's
preference list, which applies it to its local copy and replicates the result):

1. A node receiving ``Update`` picks the key's *applying primary*: itself when it is
   a primary, else the first live primary (``TypedApply``; the answer is
   ``TypedApplied``, or a timeout after ``timeout_ms_write``).
2. The applying primary reads its local copy, applies the update there
   (``core.typed.apply_update``: a fresh dot or per-node entry of *its own*), stamps
   a version and stores the new record durably — all under a per-key FIFO, so the
   next update of the key starts from a copy that already holds this one. That is
   what keeps a node's dots contiguous, so a version vector with one entry per
   coordinating node describes them (core/dvv.py).
3. The receiving node runs an ordinary write round for that record
   (``TypedPut`` through NodeCore's ``_coordinate``): W acks, hints, sloppy quorum,
   ring-change joint sets, exactly as for a plain put. Every replica *merges* the
   record into what it holds (``core.typed.resolve``), so concurrent updates applied
   by different primaries both survive.

Refusals reach the client as a ``Reply`` with a one-line message: a wrong type
(``WRONGTYPE ...``, INVALID), a sibling bound reached (INVALID), a state that would
exceed VALUE_BYTES_MAX (INVALID), no live primary (UNAVAILABLE), too much queued
(OVERLOADED). Nothing is applied in those cases.

Known limit: a primary whose disk is wiped and that comes back *under the same node
id* restarts its dots from what the other replicas stream back to it; an update it
applies before that could reuse a dot. Replace such a node (``quorumkv replace``
streams the data first), as Riak does by giving a vnode a fresh id.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InvalidRequestError
from . import crdt, dvv, typed
from . import messages as m
from .effects import Respond, Send, StoreRead, StoreWrite
from .limits import VALUE_BYTES_MAX
from .messages_typed import TypedApplied, TypedApply, TypedPut, Update
from .tokens import StoreKind
from .validation import validate_key
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore

#: Keys with typed updates queued or running on this node as their applying primary.
#: Each holds its updates in memory until durable; past this, new keys are refused
#: (OVERLOADED) rather than queued without bound.
TYPED_KEYS_INFLIGHT_MAX = 10_000
#: Updates queued behind the running one for one key: they run one at a time (each
#: reads the copy the previous one wrote), so a hot key's queue is its latency.
TYPED_QUEUE_PER_KEY_MAX = 256
#: Updates this node forwarded to an applying primary and is waiting for.
TYPED_FORWARDS_MAX = 10_000


class TypedForward(NamedTuple):
    """A client's update forwarded to the key's applying primary."""

    conn: object
    update: Update
    primary: str
    deadline_ms: int


class _Job:
    __slots__ = ("jid", "key", "msg", "conn", "client", "deadline_ms", "local", "waiting_clock")

    def __init__(self, jid: int, msg: Update | TypedApply, conn: object, client: bool, deadline_ms: int) -> None:
        self.jid = jid
        self.key = msg.key
        self.msg = msg  # Update (from a client) or TypedApply (from a peer)
        self.conn = conn
        self.client = client
        self.deadline_ms = deadline_ms
        self.local: Record | None = None  # the local record read, once read
        self.waiting_clock = False


class TypedCoordinator:
    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.keys: dict[bytes, deque[_Job]] = {}  # head: running
        self.jobs: dict[int, _Job] = {}
        self.forwards: dict[int, TypedForward] = {}  # forward id -> the update it carries
        core.handle_requests({Update: self._on_update})  # the core's extension interface
        core.handle_requests({TypedApply: self._on_apply})
        core.handle_responses({TypedApplied: self._on_applied})
        core.handle_stored(StoreKind.TYPED, self._on_store)
        core.add_ticker(self._tick)
        core.add_busy_probe(lambda: bool(self.jobs or self.forwards))
        core.stats.update({"typed_updates": 0, "typed_applied": 0, "typed_forwarded": 0,
                           "typed_refused": 0, "typed_siblings_refused": 0})

    # ------------------------------------------------------------ receiving node
    def _on_update(self, conn: object, msg: Update, now_ms: int, out: list[Any]) -> None:
        core = self.core
        core.stats["typed_updates"] += 1
        core.stats["requests"] += 1
        try:
            validate_key(msg.key)
            typed.check_update(msg.kind, msg.action, msg.args, msg.ctx)
            if msg.kind == typed.COUNTER and not -crdt.INT64_MAX - 1 <= msg.delta <= crdt.INT64_MAX:
                raise ValueError("delta is not a 64-bit integer")
        except (InvalidRequestError, ValueError) as exc:
            return self._fail_client(conn, msg, m.INVALID, str(exc), now_ms, out)
        ring = core.ring
        if ring is None:
            return self._fail_client(conn, msg, m.UNAVAILABLE, f"node {core.node_id} has no ring yet", now_ms, out)
        primaries = ring.preference_list(msg.key)
        # A replacement still streaming does not hold its earlier dots yet: not it.
        serves = core.membership.serves_reads
        primary: str | None
        if core.node_id in primaries and serves(core.node_id):
            primary = core.node_id
        else:
            primary = next((p for p in primaries if serves(p)), None)
        if primary is None:
            return self._fail_client(conn, msg, m.UNAVAILABLE, f"no primary of the key is up to apply a typed "
                                     f"write (primaries: {', '.join(primaries)})", now_ms, out)
        deadline_ms = now_ms + core.settings.timeout_ms_write
        if primary == core.node_id:
            return self._enqueue(_Job(core.new_op_id(), msg, conn, True, deadline_ms), now_ms, out)
        if len(self.forwards) >= TYPED_FORWARDS_MAX:
            return self._fail_client(conn, msg, m.OVERLOADED, f"node {core.node_id} has TYPED_FORWARDS_MAX="
                                     f"{TYPED_FORWARDS_MAX} typed writes forwarded", now_ms, out)
        fid = core.new_op_id()
        self.forwards[fid] = TypedForward(conn, msg, primary, deadline_ms)
        core.stats["typed_forwarded"] += 1
        out.append(Send(primary, TypedApply(fid, msg.key, msg.kind, msg.action, msg.args, msg.delta, msg.ctx)))

    def _on_applied(self, peer: str, msg: TypedApplied, now_ms: int, out: list[Any]) -> None:
        fwd = self.forwards.pop(msg.id, None)
        if fwd is None or fwd.primary != peer:
            return  # late (timed out already) or from a node we did not ask
        conn, update, _primary, _deadline = fwd
        if msg.ok and msg.record is not None and typed.kind_of(msg.record) == update.kind:
            return self._replicate(conn, update, msg.record, now_ms, out)
        self._fail_client(conn, update, msg.status or m.INTERNAL, msg.error or "bad answer from the primary",
                          now_ms, out)

    def _replicate(self, conn: object, update: Update, record: Record, now_ms: int, out: list[Any]) -> None:
        put = TypedPut(update.id, update.key, record.value, w=update.w, record=record)
        self.core.writes.coordinate(conn, put, now_ms, out)  # the usual write round

    def _fail_client(self, conn: object, msg: Update, status: int, error: str, now_ms: int, out: list[Any]) -> None:
        self.core.stats["typed_refused"] += 1
        self.core.respond(conn, m.Reply(msg.id, status, message=error), now_ms, out)

    # ------------------------------------------------------------ applying primary
    def _on_apply(self, conn: object, msg: TypedApply, now_ms: int, out: list[Any]) -> None:
        core = self.core
        error = ""
        try:
            validate_key(msg.key)
            typed.check_update(msg.kind, msg.action, msg.args, msg.ctx)
        except (InvalidRequestError, ValueError) as exc:
            error = str(exc)
        if not error and (core.ring is None or core.node_id not in core.ring.preference_list(msg.key)):
            error = f"node {core.node_id} is not a primary of this key (rings differ: retry)"
        elif not error and not core.membership.serves_reads(core.node_id):
            error = f"node {core.node_id} is still streaming its data (replacing): retry"
        if error:
            out.append(Respond(conn, TypedApplied(msg.id, False, status=m.INVALID, error=error)))
            return
        self._enqueue(_Job(core.new_op_id(), msg, conn, False, now_ms + core.settings.timeout_ms_write),
                      now_ms, out)

    def _enqueue(self, job: _Job, now_ms: int, out: list[Any]) -> None:
        queue = self.keys.get(job.key)
        if queue is None and len(self.keys) >= TYPED_KEYS_INFLIGHT_MAX:
            return self._finish(job, m.OVERLOADED, f"TYPED_KEYS_INFLIGHT_MAX={TYPED_KEYS_INFLIGHT_MAX} keys "
                                "have typed writes in flight", None, now_ms, out)
        if queue is not None and len(queue) > TYPED_QUEUE_PER_KEY_MAX:
            return self._finish(job, m.OVERLOADED, f"TYPED_QUEUE_PER_KEY_MAX={TYPED_QUEUE_PER_KEY_MAX} typed "
                                "writes queued for this key", None, now_ms, out)
        self.jobs[job.jid] = job
        if queue is None:
            self.keys[job.key] = deque([job])
            out.append(StoreRead((StoreKind.TYPED, None, job.jid, "read"), job.key))
        else:
            queue.append(job)

    def _on_store(self, token: tuple[Any, ...], ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        job = self.jobs.get(token[2])
        if job is None:
            return
        if not ok:
            return self._done(job, m.UNAVAILABLE, f"local storage failed: {result}", None, now_ms, out)
        if token[3] == "read":
            job.local = result
            return self._apply(job, now_ms, out)
        if type(result) is Version:  # a newer record of another type landed meanwhile: kept ours out
            return self._done(job, m.UNAVAILABLE, "the key was overwritten concurrently by a newer write of "
                              "another type; retry", None, now_ms, out)
        self.core.stats["typed_applied"] += 1
        self._done(job, m.OK, "", job.local, now_ms, out)

    def _apply(self, job: _Job, now_ms: int, out: list[Any]) -> None:
        core, msg = self.core, job.msg
        clock = core.clock
        if clock.refusal:
            return self._done(job, m.UNAVAILABLE, clock.refusal, None, now_ms, out)
        if clock.durable is not None and not clock.may_issue(now_ms):  # as _restamp does
            job.waiting_clock = True  # _tick retries once the ceiling is saved
            clock.save(now_ms, out)
            return
        job.waiting_clock = False
        try:
            ctx = typed.check_update(msg.kind, msg.action, msg.args, msg.ctx)
            wall_ms = core.wall_ms(now_ms)
            state = typed.state_of(job.local, msg.kind, wall_ms)
            new = typed.apply_update(msg.kind, state, msg.action, msg.args, msg.delta, ctx, core.node_id,
                                     core.hlc.peek(wall_ms))
        except dvv.SiblingLimitError as exc:
            core.stats["typed_siblings_refused"] += 1
            return self._done(job, m.INVALID, str(exc), None, now_ms, out)
        except ValueError as exc:  # WRONGTYPE, overflow, a corrupt local state
            return self._done(job, m.INVALID, str(exc), None, now_ms, out)
        record = typed.typed_record(Version(core.hlc.now(core.wall_ms(now_ms)), core.node_id), msg.kind, new)
        assert record.value is not None, "a typed record holds its state"
        if len(record.value) > VALUE_BYTES_MAX:
            return self._done(job, m.INVALID, f"the {typed.KIND_NAMES[msg.kind]} would be {len(record.value)} "
                              f"bytes (VALUE_BYTES_MAX={VALUE_BYTES_MAX})", None, now_ms, out)
        job.local = record
        out.append(StoreWrite((StoreKind.TYPED, None, job.jid, "write"), job.key, record))

    def _done(self, job: _Job, status: int, error: str, record: Record | None, now_ms: int, out: list[Any]) -> None:
        """The job's local part is over: let the key's next update start, then answer."""
        del self.jobs[job.jid]
        queue = self.keys[job.key]
        queue.popleft()
        if queue:
            out.append(StoreRead((StoreKind.TYPED, None, queue[0].jid, "read"), job.key))
        else:
            del self.keys[job.key]
        self._finish(job, status, error, record, now_ms, out)

    def _finish(self, job: _Job, status: int, error: str, record: Record | None, now_ms: int,
                out: list[Any]) -> None:
        if job.client:
            assert type(job.msg) is Update, "a client's job carries its Update"
            if status == m.OK:
                assert record is not None, "an applied update has its record"
                return self._replicate(job.conn, job.msg, record, now_ms, out)
            return self._fail_client(job.conn, job.msg, status, error, now_ms, out)
        if status != m.OK:
            self.core.stats["typed_refused"] += 1
        out.append(Respond(job.conn, TypedApplied(job.msg.id, status == m.OK, record, status, error)))

    # ------------------------------------------------------------------ time
    def _tick(self, now_ms: int, out: list[Any]) -> None:
        for fid, (conn, update, primary, deadline_ms) in list(self.forwards.items()):
            if now_ms >= deadline_ms:
                del self.forwards[fid]
                self.core.stats["timeouts"] += 1
                self._fail_client(conn, update, m.TIMEOUT, f"primary {primary} did not apply the typed write "
                                  f"within timeout_ms_write={self.core.settings.timeout_ms_write}", now_ms, out)
        for job in [j for j in self.jobs.values() if j.waiting_clock]:
            if now_ms >= job.deadline_ms:
                self._done(job, m.TIMEOUT, "the node's clock ceiling was not saved in time", None, now_ms, out)
            else:
                self._apply(job, now_ms, out)
