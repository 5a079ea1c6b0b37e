"""NodeCore: the protocol state machine of one quorumkv node.

The shell feeds it events and executes the effects it returns, in order:

=====================  ======================================================
event (method)         what it means
=====================  ======================================================
``on_request``         a request arrived on an inbound connection ``conn``
                       (a client's Get/Put/Ping or a peer's RepWrite/RepRead)
``on_response``        an answer arrived from ``peer`` on our outbound connection
``on_store_done``      a StoreWrite/StoreRead effect finished (``token`` from it)
``on_peer_lost``       the outbound connection to ``peer`` failed; nothing more
                       will come back on it
``on_send_failed``     one request to ``peer`` could not be sent
``tick``               time passed (deadlines)
=====================  ======================================================

=====================  ======================================================
effect                 what the shell must do
=====================  ======================================================
``Send``               send ``msg`` to ``peer`` on the outbound connection
``Respond``            send ``msg`` back on inbound connection ``conn``
``StoreWrite``         durably apply ``record`` to ``key`` *then* report
                       ``on_store_done(token, ...)`` (persist before ack)
``StoreRead``          read ``key``, report ``on_store_done(token, record)``
=====================  ======================================================

Time (``now_ms``, wall-clock milliseconds) is an argument; the core owns no clock,
no socket and no randomness, so the simulator can run it under virtual time.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from ..errors import InvalidRequestError
from . import messages as m
from .consistency import resolve, weak_warning
from .limits import KEY_BYTES_MAX, ROUNDS_INFLIGHT_MAX, VALUE_BYTES_MAX
from .quorum import LOST, PENDING, WON, QuorumRound
from .ring import Ring
from .version import HLC, Record, Version

SELF = "<self>"  # the connection token of requests a node sends to itself


class Send(NamedTuple):
    peer: str
    msg: object


class Respond(NamedTuple):
    conn: object
    msg: object


class StoreWrite(NamedTuple):
    token: object
    key: bytes
    record: Record


class StoreRead(NamedTuple):
    token: object
    key: bytes


class NodeSettings(NamedTuple):
    node_id: str
    n: int = 3
    r: int = 2
    w: int = 2
    timeout_ms_read: int = 2_000
    timeout_ms_write: int = 2_000
    vnodes: int = 256


class _Op:
    """A request this node coordinates: the quorum round plus where to answer."""

    __slots__ = ("op_id", "round", "conn", "req_id", "deadline_ms", "warning", "answered")

    def __init__(self, op_id, rnd, conn, req_id, deadline_ms, warning):
        self.op_id = op_id
        self.round = rnd
        self.conn = conn
        self.req_id = req_id
        self.deadline_ms = deadline_ms
        self.warning = warning
        self.answered = False


def level_from_wire(code: int) -> int | str | None:
    if code == m.LEVEL_DEFAULT:
        return None
    if code < 0:
        try:
            return m.LEVEL_NAMES[code]
        except KeyError:
            raise InvalidRequestError(f"unknown consistency level code {code}") from None
    return code


def level_to_wire(level: int | str | None) -> int:
    if level is None:
        return m.LEVEL_DEFAULT
    if isinstance(level, str):
        name = level.strip().upper()
        for code, known in m.LEVEL_NAMES.items():
            if known == name:
                return code
        if name.isdigit():
            return int(name)
        raise InvalidRequestError(f"{level!r} is not a consistency level (integer, ONE, QUORUM or ALL)")
    if isinstance(level, bool) or not isinstance(level, int):
        raise InvalidRequestError(f"{level!r} is not a consistency level (integer, ONE, QUORUM or ALL)")
    if level < 1:
        raise InvalidRequestError(f"consistency level must be >= 1, got {level}")
    return level


def validate_key(key: bytes) -> None:
    if not key:
        raise InvalidRequestError("empty key")
    if len(key) > KEY_BYTES_MAX:
        raise InvalidRequestError(f"key of {len(key)} bytes exceeds KEY_BYTES_MAX={KEY_BYTES_MAX}")


def validate_value(value: bytes | None) -> None:
    if value is not None and len(value) > VALUE_BYTES_MAX:
        raise InvalidRequestError(
            f"value of {len(value)} bytes exceeds VALUE_BYTES_MAX={VALUE_BYTES_MAX}"
        )


class NodeCore:
    def __init__(self, settings: NodeSettings, members: dict[str, str], hlc_last: int = 0) -> None:
        if settings.node_id not in members:
            raise ValueError(f"node {settings.node_id!r} is not in its own member list")
        self.settings = settings
        self.node_id = settings.node_id
        self.members = dict(members)
        self.ring = Ring(members, settings.n, settings.vnodes)
        self.hlc = HLC(hlc_last)
        self.ops: dict[int, _Op] = {}
        self._deadlines: list[tuple[int, int]] = []  # heap of (deadline_ms, op_id)
        self._next_op = 1
        self.stats = {
            "requests": 0, "reads": 0, "writes": 0, "won": 0, "lost": 0,
            "timeouts": 0, "invalid": 0, "overloaded": 0, "replica_writes": 0,
            "replica_reads": 0,
        }
        # Resolve the configured defaults once; a bad config fails at startup.
        n = self.ring.n
        self.default_r = resolve(settings.r, n, 1, "R")
        self.default_w = resolve(settings.w, n, 1, "W")

    # ------------------------------------------------------------------ events
    def on_request(self, conn, msg, now_ms: int) -> list:
        out: list = []
        t = type(msg)
        if t is m.RepWrite:
            self.stats["replica_writes"] += 1
            self.hlc.observe(msg.record.version.ts, now_ms)
            out.append(StoreWrite(("w", conn, msg.id), msg.key, msg.record))
        elif t is m.RepRead:
            self.stats["replica_reads"] += 1
            out.append(StoreRead(("r", conn, msg.id), msg.key))
        elif t is m.Get or t is m.Put:
            self.stats["requests"] += 1
            try:
                self._coordinate(conn, msg, now_ms, out)
            except InvalidRequestError as exc:
                self.stats["invalid"] += 1
                self._respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
        elif t is m.Ping:
            s = self.settings
            self._respond(conn, m.Pong(msg.id, self.node_id, self.ring.n, self.default_r,
                                       self.default_w, dict(self.members)), now_ms, out)
        else:
            # A response type arriving as a request: a confused peer. Answer, don't crash.
            self._respond(conn, m.Error(getattr(msg, "id", 0), f"unexpected {t.__name__} as a request"),
                          now_ms, out)
        return out

    def on_response(self, peer: str, msg, now_ms: int) -> list:
        out: list = []
        op = self.ops.get(msg.id)
        if op is None:
            return out  # late reply for a finished round
        rnd = op.round
        t = type(msg)
        if t is m.RepWriteAck and rnd.kind == "write":
            if msg.ok:
                rnd.add_ok(peer)
            else:
                rnd.add_failure(peer, f"failed: {msg.error}")
        elif t is m.RepReadResp and rnd.kind == "read":
            if msg.ok:
                if msg.record is not None:
                    self.hlc.observe(msg.record.version.ts, now_ms)
                rnd.add_ok(peer, msg.record)
            else:
                rnd.add_failure(peer, f"failed: {msg.error}")
        else:
            rnd.add_failure(peer, f"sent unexpected {t.__name__}")
        self._progress(op, now_ms, out)
        return out

    def on_store_done(self, token, ok: bool, result, now_ms: int) -> list:
        """``result``: the Record read (StoreRead), or an error string when not ok."""
        out: list = []
        kind, conn, req_id = token
        if kind == "w":
            msg = m.RepWriteAck(req_id, ok, "" if ok else str(result))
        else:
            msg = m.RepReadResp(req_id, ok, result if ok else None, "" if ok else str(result))
        self._respond(conn, msg, now_ms, out)
        return out

    def on_peer_lost(self, peer: str, reason: str, now_ms: int) -> list:
        out: list = []
        for op in list(self.ops.values()):
            if peer in op.round.outstanding:
                op.round.add_failure(peer, reason)
                self._progress(op, now_ms, out)
        return out

    def on_send_failed(self, peer: str, msg, reason: str, now_ms: int) -> list:
        out: list = []
        op = self.ops.get(getattr(msg, "id", None))
        if op is not None:
            op.round.add_failure(peer, reason)
            self._progress(op, now_ms, out)
        return out

    def tick(self, now_ms: int) -> list:
        out: list = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            _, op_id = heapq.heappop(heap)
            op = self.ops.get(op_id)
            if op is not None:
                op.round.expire()
                self._progress(op, now_ms, out)
        return out

    # ------------------------------------------------------------- coordinator
    def _coordinate(self, conn, msg, now_ms: int, out: list) -> None:
        key = msg.key
        validate_key(key)
        n = self.ring.n
        if type(msg) is m.Get:
            needed = resolve(level_from_wire(msg.r), n, self.default_r, "R")
            warning = weak_warning(needed, self.default_w, n)
            kind = "read"
            deadline = now_ms + self.settings.timeout_ms_read
        else:
            validate_value(msg.value)
            if msg.ttl_ms < 0:
                raise InvalidRequestError(f"ttl_ms must be >= 0, got {msg.ttl_ms}")
            needed = resolve(level_from_wire(msg.w), n, self.default_w, "W")
            warning = weak_warning(self.default_r, needed, n)
            kind = "write"
            deadline = now_ms + self.settings.timeout_ms_write
        if len(self.ops) >= ROUNDS_INFLIGHT_MAX:
            self.stats["overloaded"] += 1
            self._respond(conn, m.Reply(msg.id, m.OVERLOADED,
                                        message=f"node {self.node_id} has ROUNDS_INFLIGHT_MAX="
                                        f"{ROUNDS_INFLIGHT_MAX} rounds open"), now_ms, out)
            return
        replicas = self.ring.preference_list(key)
        op_id = self._next_op
        self._next_op += 1
        op = _Op(op_id, QuorumRound(kind, replicas, needed), conn, msg.id, deadline, warning or "")
        self.ops[op_id] = op
        heapq.heappush(self._deadlines, (deadline, op_id))
        if kind == "read":
            self.stats["reads"] += 1
            req = m.RepRead(op_id, key)
        else:
            self.stats["writes"] += 1
            expires = now_ms + msg.ttl_ms if msg.ttl_ms and msg.value is not None else 0
            record = Record(Version(self.hlc.now(now_ms), self.node_id), msg.value, expires)
            req = m.RepWrite(op_id, key, record)
        for replica in replicas:
            if replica == self.node_id:
                out.extend(self.on_request(SELF, req, now_ms))
            else:
                out.append(Send(replica, req))

    def _progress(self, op: _Op, now_ms: int, out: list) -> None:
        rnd = op.round
        if not op.answered and rnd.status != PENDING:
            op.answered = True
            if rnd.status == WON:
                self.stats["won"] += 1
                if rnd.kind == "read":
                    rec = rnd.result()
                    if rec is None or not rec.live_at(now_ms):  # missing, deleted or expired
                        reply = m.Reply(op.req_id, m.NOT_FOUND, None, rec.version if rec else None,
                                        "not found", op.warning)
                    else:
                        reply = m.Reply(op.req_id, m.OK, rec.value, rec.version, "", op.warning,
                                        rec.expires_ms)
                else:
                    reply = m.Reply(op.req_id, m.OK, None, None, "", op.warning)
            else:
                self.stats["lost"] += 1
                status = m.TIMEOUT if rnd.timed_out else m.UNAVAILABLE
                if status == m.TIMEOUT:
                    self.stats["timeouts"] += 1
                reply = m.Reply(op.req_id, status, message=rnd.error_message(), warning=op.warning)
            self._respond(op.conn, reply, now_ms, out)
        if op.answered and (rnd.complete or rnd.status == LOST):
            # Kept until every replica answered (a later issue's read repair needs the
            # late replies) or the deadline expired it.
            self.ops.pop(op.op_id, None)

    def _respond(self, conn, msg, now_ms: int, out: list) -> None:
        if conn is SELF:
            out.extend(self.on_response(self.node_id, msg, now_ms))
        else:
            out.append(Respond(conn, msg))

    # ------------------------------------------------------------------- info
    def statistics(self) -> dict:
        return dict(self.stats, rounds_open=len(self.ops))
