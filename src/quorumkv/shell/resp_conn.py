"""One RESP (Redis protocol) client connection of a node: an asyncio Protocol.

A connection parses commands (``resp/parser.py``), runs their handlers
(``resp/commands.py``) and submits the reads and writes they ask for to the node's
core exactly like a native client request: ``core.on_request(self, Get|Put, now)``
then ``server.run(effects)``; the core answers through ``self.respond(reply)``
(the same duck type as ``conns.Inbound``). Request ids are unique per connection.

Order: Redis clients match replies to requests by position, so every command gets a
slot in a FIFO; quorum rounds may finish in any order, and only the ready prefix of
the FIFO is written (once per event-loop tick, like ``conns.Conn``).

Batching: every complete command of a read is parsed at once
(``RequestParser.commands``) and executed in order, and the replies that are ready
leave in one ``transport.write`` per connection per event-loop turn. Plain GET and
SET (no options) skip the handler generator: the connection submits the Get/Put
itself and encodes the reply directly (the same replies and errors as
``cmd_get``/``cmd_set``; the shortcut turns itself off if the command table maps
them elsewhere).

Bounds: at most ``COMMANDS_PER_TURN_MAX`` commands run per turn of one connection
(a client flooding a 256 KiB read of GETs must not hold the loop for the whole
read: the rest wait in the parser's buffer, reading paused, and carry on in a later
turn); at most ``CLIENT_PIPELINE_MAX`` commands are unanswered per connection; past
that, and while the socket's send buffer is full, the node stops executing and
reading (TCP back-pressure). Bytes that are not RESP, or that break a named bound of
the parser, get one ``-ERR Protocol error: ...`` after the replies already owed,
then the connection is closed; the node carries on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import structlog

from ..core import messages as m
from ..core.limits import CLIENT_PIPELINE_MAX
from ..core.typed import is_typed
from ..resp import commands as _commands
from ..resp.atomic import AtomicOp
from ..resp.commands import CommandError, ReadOp, Session, WriteOp, lookup
from ..resp.parser import OK, RequestParser, RespProtocolError, encode_bulk, encode_error, encode_null
from .wallclock import mono_ms

if TYPE_CHECKING:
    from .resp_server import RespFrontEnd

log = structlog.get_logger("quorumkv.resp")

#: After the last reply (QUIT, or the error reply to bad input) the node shuts down its
#: sending side and keeps reading — and discarding — for this long / this many bytes
#: before closing. Closing a socket that still has unread input makes the kernel send
#: RST and drop the reply we just wrote (a "lingering close", as HTTP servers do).
LINGER_MS = 1_000
LINGER_BYTES_MAX = 1024 * 1024

#: Commands one connection executes per event-loop turn. Parsing and running a whole
#: 256 KiB read of a flooding client (~6k GETs) at once held the loop long enough for
#: other clients' health checks to time out; 128 is far above what a client that
#: waits for its replies sends per read (redis-benchmark -P 16: 16), so batching
#: keeps paying, and the loop turns over every ~128 commands whatever one client does.
COMMANDS_PER_TURN_MAX = 128

# Plain GET/SET go straight to the core (``_submit_fast``); only while the command
# table still maps them to the handlers whose replies the shortcut reproduces.
_FAST_GET, _FAST_SET = 1, 2
_FAST: dict[bytes, int] = {}
if _commands.COMMANDS["get"].handler is _commands.cmd_get and _commands.COMMANDS["get"].arity == 2:
    _FAST.update({b"GET": _FAST_GET, b"get": _FAST_GET, b"Get": _FAST_GET})
if _commands.COMMANDS["set"].handler is _commands.cmd_set:
    _FAST.update({b"SET": _FAST_SET, b"set": _FAST_SET, b"Set": _FAST_SET})
_check_reply = _commands._check  # noqa: SLF001 - the same status-to-error mapping as the handlers


class _Slot:
    """One command's place in the reply order."""

    __slots__ = ("data", "gen", "replies", "missing", "close_after", "fast")

    def __init__(self) -> None:
        self.data: bytes | None = None  # the encoded reply, once known
        self.gen = None  # a handler generator waiting for quorum rounds
        self.replies: list | None = None
        self.missing = 0
        self.close_after = False
        self.fast = 0  # _FAST_GET / _FAST_SET: a plain GET/SET submitted without a handler


class RespConnection(asyncio.Protocol):
    def __init__(self, front: "RespFrontEnd") -> None:
        self.front = front
        self.server = front.node
        self.parser = RequestParser()
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None
        self.slots: deque[_Slot] = deque()
        self.waiting: dict[int, tuple[_Slot, int]] = {}  # request id -> (slot, op index)
        self.timing: dict[int, tuple] = {}  # Get/Put id -> (label, start): the latency histogram
        self._next_id = 1
        self._out: list[bytes] = []
        self._close_after_flush = False
        self.closed = False
        self.input_done = False  # QUIT or a protocol error: read nothing more
        self._reading_paused = False
        self._paused_writing = False
        self._lingering = False
        self._linger_bytes = 0
        self._close_when_idle = False
        self._more_scheduled = False  # a later turn runs the commands left in the parser
        # Complete commands may be left in the parser (COMMANDS_PER_TURN_MAX, a full
        # pipeline or send buffer): reading stays paused until they have run.
        self._backlog = False
        self._eof = False
        self._executing = False
        self._now = 0

    # -- asyncio callbacks ------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.session = self.front.new_session(addr)
        self.front.connections.add(self)
        self.front.stats["connected_clients"] = len(self.front.connections)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.front.connections.discard(self)
        self.front.stats["connected_clients"] = len(self.front.connections)
        self.slots.clear()
        self.waiting.clear()
        self.timing.clear()
        self._out = []

    def eof_received(self):
        # The client half-closed (``printf 'GET k\r\n' | nc -N``): answer what it sent,
        # then close. Returning True keeps the transport open for those replies.
        self._eof = True
        self._close_when_idle = True
        if not self._backlog:
            self.input_done = True
            if not self.slots and not self._out:
                self._close()
        return True

    def pause_writing(self) -> None:
        self._paused_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._update_reading()
        self._more_later()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._linger_bytes += len(data)
            if self._linger_bytes > LINGER_BYTES_MAX:
                self._close()
            return
        if self.input_done or self.closed:
            return
        self.parser.receive_data(data)
        self._run_commands()

    def _run_commands(self) -> None:
        """Execute up to COMMANDS_PER_TURN_MAX buffered commands (fewer while the
        pipeline or the send buffer is full); a later turn takes the rest."""
        budget = min(COMMANDS_PER_TURN_MAX, CLIENT_PIPELINE_MAX - len(self.slots))
        if self._paused_writing or budget <= 0:
            self._backlog = self.parser.buffered_bytes() > 0
        else:
            try:
                cmds = self.parser.commands(budget)
                error = None
            except RespProtocolError as exc:
                cmds = exc.commands
                error = str(exc)
            # Fewer than asked: the parser reached the end of what is complete.
            self._backlog = len(cmds) == budget and self.parser.buffered_bytes() > 0
            if cmds:
                self._now = mono_ms()  # the core's clock (monotonic)
                execute = self._execute
                self._executing = True  # replies that are ready now are queued once, below
                try:
                    for cmd in cmds:
                        if self.input_done or self.closed:
                            break
                        execute(cmd)
                finally:
                    self._executing = False
                if self.slots and self.slots[0].data is not None:
                    self._flush_ready()
                self.server.wake()
            if error is not None and not self.input_done and not self.closed:
                self._protocol_error(error)
        if self._backlog:
            self._more_later()
        elif self._eof and not self.input_done:  # the client half-closed: its last commands ran
            self.input_done = True
            if not self.slots and not self._out:
                self._close()
        self._update_reading()

    def _more_later(self) -> None:
        """Commands are left in the parser: run them in a later turn, once the
        pipeline and the send buffer leave room (reading stays paused meanwhile)."""
        if self._more_scheduled or not self._backlog or self.input_done or self.closed:
            return
        if self._paused_writing or len(self.slots) >= CLIENT_PIPELINE_MAX:
            return  # _flush_ready / resume_writing call again once there is room
        self._more_scheduled = True
        self.server.loop.call_soon(self._more)

    def _more(self) -> None:
        self._more_scheduled = False
        if self._backlog and not self.input_done and not self.closed and not self._lingering:
            self._run_commands()

    # -- commands ---------------------------------------------------------------
    def _execute(self, args: list[bytes]) -> None:
        front = self.front
        front.stats["total_commands_processed"] += 1
        session = self.session
        slot = _Slot()
        self.slots.append(slot)
        # The shortcut only where cmd_get/cmd_set would send one plain Get/Put: not in
        # linearizable mode (ABD/CASPaxos), not after a refused MULTI (lookup refuses every
        # command until EXEC/DISCARD), and never a SET for a read-only user (NOPERM).
        if session.authenticated and len(args) <= 3 and not session.linearizable and not session.multi_refused:
            fast = _FAST.get(args[0])
            if fast is not None and len(args) == fast + 1 and (fast == _FAST_GET or session.role != "readonly"):
                session.last_cmd = "get" if fast == _FAST_GET else "set"
                self._submit_fast(slot, fast, args)
                return
        handler, error = lookup(args, session)
        if error is not None:
            front.stats["total_error_replies"] += 1
            if error.startswith((b"-NOAUTH", b"-NOPERM")):  # security counters (shell/auth.py)
                front.security_refused(error, session)
            slot.data = error
        else:
            try:
                result = handler(session, front, args)
            except CommandError as exc:
                front.stats["total_error_replies"] += 1
                slot.data = encode_error(exc.message)
                if exc.message.startswith("NOAUTH"):  # HELLO before authenticating
                    front.security_refused(slot.data, session)
            except Exception as exc:  # a handler bug must not kill the node
                log.exception("resp_command_failed", command=args[0][:32])
                slot.data = encode_error(f"ERR internal error: {type(exc).__name__}")
            else:
                if type(result) is bytes:
                    slot.data = result
                else:
                    slot.gen = result
                    self._advance(slot, None)
        if session.closing:
            slot.close_after = True
            self.input_done = True

    def _advance(self, slot: _Slot, replies) -> None:
        """Resume a handler with the replies of its last batch of ops."""
        try:
            ops = slot.gen.send(replies)
        except StopIteration as stop:
            slot.gen = None
            slot.data = stop.value
            return
        except CommandError as exc:
            slot.gen = None
            self.front.stats["total_error_replies"] += 1
            slot.data = encode_error(exc.message)
            return
        except Exception as exc:
            log.exception("resp_command_failed")
            slot.gen = None
            slot.data = encode_error(f"ERR internal error: {type(exc).__name__}")
            return
        if not ops:
            self._advance(slot, ())
            return
        slot.replies = [None] * len(ops)
        slot.missing = len(ops)
        session = self.session
        server = self.server
        now = mono_ms()
        ids = []
        for i, op in enumerate(ops):  # register every id first: answers may be synchronous
            rid = self._next_id
            self._next_id += 1
            self.waiting[rid] = (slot, i, op.key)
            ids.append(rid)
        for rid, op in zip(ids, ops):
            if type(op) is ReadOp:
                msg = session.get_msg(rid, op.key)
                self.timing[rid] = server.request_latency.start(msg)
            elif type(op) is AtomicOp:
                msg = op.to_msg(rid)
            elif type(op) is WriteOp:
                msg = session.put_msg(rid, op.key, op.value, op.ttl_ms)
                self.timing[rid] = server.request_latency.start(msg)
            elif hasattr(op, "to_msg"):  # a typed update (resp/commands_crdt.py UpdateOp)
                msg = op.to_msg(rid, session)
            else:  # an op that builds its own request (resp/commands_scan.py ScanOp)
                msg = op.request(rid)
            try:
                server.run(server.core.on_request(self, msg, now))
            except Exception as exc:  # as conns.Inbound: a core bug drops this connection, not the node
                log.exception("resp_request_failed", peer=session.addr)
                self._fatal(f"ERR internal error: {type(exc).__name__}")
                return
            if self.closed:
                return

    def _submit_fast(self, slot: _Slot, fast: int, args: list[bytes]) -> None:
        """A plain GET or SET: one Get/Put to the core, no handler generator."""
        slot.fast = fast
        rid = self._next_id
        self._next_id += 1
        key = args[1]
        self.waiting[rid] = (slot, 0, key)
        session = self.session
        if fast == _FAST_GET:
            msg = m.Get(rid, key, session.r_wire, floor=session.causal.floor(key))
        else:
            msg = m.Put(rid, key, args[2], session.w_wire, 0, after_ts=session.causal.floor_ts)
        server = self.server
        self.timing[rid] = server.request_latency.start(msg)
        try:
            server.run(server.core.on_request(self, msg, self._now))
        except Exception as exc:  # as conns.Inbound: a core bug drops this connection, not the node
            log.exception("resp_request_failed", peer=session.addr)
            self._fatal(f"ERR internal error: {type(exc).__name__}")

    def _fast_reply(self, slot: _Slot, msg) -> None:
        """What cmd_get / cmd_set (without options) answer for the core's reply."""
        if type(msg) is m.Reply and (msg.status == m.OK or (msg.status == m.NOT_FOUND and slot.fast == _FAST_GET)):
            if slot.fast == _FAST_SET:
                slot.data = OK
            elif msg.status == m.OK and is_typed(msg.version):
                slot.data = _commands.typed_get(self.session, msg)  # a counter, set, map or causal key
            elif msg.status == m.OK:
                slot.data = encode_bulk(msg.value)
            else:
                slot.data = encode_null(self.session.proto)
            return
        try:
            _check_reply(msg)
            slot.data = OK  # a SET whose reply is NOT_FOUND: cmd_set answers OK too
        except CommandError as exc:
            self.front.stats["total_error_replies"] += 1
            slot.data = encode_error(exc.message)

    def respond(self, msg) -> None:
        """Called by ``NodeServer.run`` for a ``Respond`` effect addressed to us."""
        if self.closed:
            return  # the client went away mid-request; its answer has nowhere to go
        entry = self.waiting.pop(msg.id, None)
        if entry is None:
            return
        slot, i, key = entry
        started = self.timing.pop(msg.id, None)
        if started is not None:
            self.server.request_latency.done(started)
        self.session.saw(key, msg)
        if slot.fast:
            self._fast_reply(slot, msg)
        else:
            slot.replies[i] = msg
            slot.missing -= 1
            if slot.missing != 0 or slot.gen is None:
                return
            self._advance(slot, tuple(slot.replies))
        if slot.data is not None and not self._executing and self.slots and self.slots[0] is slot:
            self._flush_ready()

    # -- output -----------------------------------------------------------------
    def _flush_ready(self) -> None:
        slots = self.slots
        out = self._out
        if not out and (slots and slots[0].data is not None):
            self.server.loop.call_soon(self._write)
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            out.append(slot.data)
            if slot.close_after:
                self._close_after_flush = True
                slots.clear()
                break
        self._update_reading()
        if self._backlog and not self._more_scheduled:
            self._more_later()  # commands held back by a full pipeline can run now

    def _write(self) -> None:
        out, self._out = self._out, []
        if self.closed or self.transport is None:
            return
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._close_after_flush:
            self._linger()
        elif self._close_when_idle and not self.slots and not self._backlog:
            self._close()

    def _linger(self) -> None:
        transport = self.transport
        if not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()  # FIN after the replies; the client sees them, then EOF
        self._lingering = True
        transport.resume_reading()
        self.server.loop.call_later(LINGER_MS / 1000, self._close)

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _update_reading(self) -> None:
        if self.closed or self.transport is None or self._lingering:
            return
        pending = len(self.slots)
        # Hysteresis as in conns.Inbound: stop at CLIENT_PIPELINE_MAX, resume below half.
        limit = CLIENT_PIPELINE_MAX // 2 if self._reading_paused else CLIENT_PIPELINE_MAX
        # Commands still in the parser (past COMMANDS_PER_TURN_MAX) are run before
        # more is read: the buffer holds at most one read beyond them.
        pause = self.input_done or self._paused_writing or pending >= limit or self._backlog
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # -- bad input ----------------------------------------------------------------
    def _protocol_error(self, reason: str) -> None:
        log.warning("resp_bad_input", peer=self.session.addr, reason=reason)
        self.server.stats_bad_input += 1
        self.front.stats["protocol_errors"] += 1
        self.input_done = True
        slot = _Slot()
        slot.data = encode_error(f"ERR {reason}")
        slot.close_after = True
        self.slots.append(slot)
        self._flush_ready()

    def _fatal(self, message: str) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(encode_error(message))
            self.closed = True
            self.transport.close()
