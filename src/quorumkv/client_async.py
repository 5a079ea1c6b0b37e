"""The asyncio twin of ``quorumkv.client.Client`` (import it from ``quorumkv`` or
``quorumkv.client``; it lives here so that the blocking client, and the CLI built on
it, start without importing asyncio)."""

from __future__ import annotations

import asyncio

from .client import (
    _MISSING,
    DEFAULT,
    REPAIR_TIMEOUT_MS_DEFAULT,
    TIMEOUT_MS_REQUEST_DEFAULT,
    Item,
    _Base,
    _check_atomic,
    _check_inspect,
    _check_reply,
    UPDATE_ATTEMPTS_MAX,
)
from .core import messages as m
from .core import messages_cas as mc
from .core.dynamic import Target
from .core.framing import FrameDecoder, FrameEncoder
from .core.version import SessionContext
from .errors import ConnectionFailedError, InvalidRequestError, ProtocolError, QuorumTimeoutError, UnavailableError


class _AsyncConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport = None
        self.decoder = FrameDecoder()
        self.waiters: dict[int, asyncio.Future] = {}
        self.lost: Exception | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.decoder.feed(data)
        except ProtocolError as exc:
            self.transport.close()
            self._fail_all(exc)
            return
        for reply in replies:
            if type(reply) is m.Error:
                self._fail_all(ProtocolError(f"node refused the request: {reply.message}"))
                continue
            fut = self.waiters.pop(reply.id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.lost = ConnectionResetError(str(exc) if exc else "connection closed")
        self._fail_all(self.lost)

    def _fail_all(self, exc) -> None:
        waiters, self.waiters = self.waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(exc)


class AsyncClient(_Base):
    """asyncio client with the same methods as ``Client``; requests pipeline on one
    connection, so many coroutines can share a client."""

    def __init__(self, nodes, *, r=None, w=None, timeout_ms: int = TIMEOUT_MS_REQUEST_DEFAULT,
                 session: bool | SessionContext = True, consistency: str = "lww"):
        super().__init__(nodes, r=r, w=w, timeout_ms=timeout_ms, session=session, consistency=consistency)
        self._conn: _AsyncConn | None = None
        self._connecting: asyncio.Lock | None = None
        self._encoder = FrameEncoder()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

    async def _connection(self) -> _AsyncConn:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and self._conn.lost is None:
                return self._conn
            loop = asyncio.get_running_loop()
            errors = []
            for attempt in range(len(self.nodes)):
                idx = (self._current + attempt) % len(self.nodes)
                host, port = self.nodes[idx]
                try:
                    _, conn = await asyncio.wait_for(
                        loop.create_connection(_AsyncConn, host, port), self.timeout_ms / 1000
                    )
                except (OSError, asyncio.TimeoutError) as exc:
                    errors.append(f"{host}:{port}: {exc}")
                    continue
                self._current = idx
                self._conn = conn
                return conn
            raise ConnectionFailedError("no node reachable: " + "; ".join(errors))

    async def _call(self, msg):
        tried = 0
        while True:
            conn = await self._connection()
            fut = asyncio.get_running_loop().create_future()
            conn.waiters[msg.id] = fut
            conn.transport.write(self._encoder.encode(msg))
            try:
                reply = await asyncio.wait_for(fut, self.timeout_ms / 1000)
            except (OSError, asyncio.TimeoutError) as exc:
                conn.waiters.pop(msg.id, None)
                if conn is self._conn:
                    self._conn.transport.close()
                    self._conn = None
                if not self._resendable(msg):
                    raise QuorumTimeoutError(f"outcome unknown: no answer to the request ({exc!r}); it was not "
                                             "re-sent, as it might run twice") from exc
                tried += 1
                self._current = (self._current + 1) % len(self.nodes)
                if tried >= len(self.nodes):
                    raise ConnectionFailedError(f"request failed on every node: {exc!r}") from exc
                continue
            self._saw(msg, reply)
            if type(reply) is mc.AtomicReply:
                return _check_atomic(reply)
            return _check_reply(reply) if type(reply) is m.Reply else reply

    async def put(self, key, value, *, w=DEFAULT, ttl_ms: int | None = None, primary_only: bool = False,
                  target_latency_ms: float | None = None, consistency=DEFAULT) -> int:
        """Write ``value``; with ``ttl_ms`` it expires that long after the write. Returns the W used."""
        if value is None:
            raise InvalidRequestError("value must be bytes or str; use delete() to remove a key")
        if self._linearizable(consistency):
            await self._call(self._atomic_msg(key, mc.OP_SET, value, ttl_ms=ttl_ms))
            return 0
        reply = await self._call(self._put_msg(key, value, w, ttl_ms, primary_only, target_latency_ms))
        return reply.w_used

    async def delete(self, key, *, w=DEFAULT, primary_only: bool = False, consistency=DEFAULT) -> None:
        if self._linearizable(consistency):
            await self._call(self._atomic_msg(key, mc.OP_SET, None))
            return
        await self._call(self._put_msg(key, None, w, None, primary_only))

    async def get(self, key, *, r=DEFAULT, default=_MISSING, primary_only: bool = False,
                  blocking_repair: bool = False, target: Target | None = None, consistency=DEFAULT) -> bytes:
        if self._linearizable(consistency):
            reply = await self._call(self._atomic_msg(key, mc.OP_GET))
        else:
            reply = await self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        return self._value(reply, key, default)

    async def get_item(self, key, *, r=DEFAULT, primary_only: bool = False,
                       blocking_repair: bool = False, target: Target | None = None, consistency=DEFAULT) -> Item:
        if self._linearizable(consistency):
            reply = await self._call(self._atomic_msg(key, mc.OP_GET))
            return Item(reply.value, reply.version, reply.expires_ms, 0)
        reply = await self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        return Item(reply.value, reply.version, reply.expires_ms, reply.r_used)

    # -- atomic per key: as Client's -----------------------------------------------
    async def cas(self, key, expected, new, *, ttl_ms: int | None = None) -> bool:
        return (await self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=expected,
                                                  expect_absent=expected is None, ttl_ms=ttl_ms))).applied

    async def incr(self, key, delta: int = 1) -> int:
        return (await self._call(self._atomic_msg(key, mc.OP_INCR, delta=delta))).number

    async def getdel(self, key, *, default=None):
        reply = await self._call(self._atomic_msg(key, mc.OP_GETDEL))
        return reply.old if reply.applied else default

    async def update(self, key, fn, *, attempts: int = UPDATE_ATTEMPTS_MAX):
        current = await self.get(key, default=None, consistency="linearizable")
        for _ in range(attempts):
            new = self._update_value(fn, current)
            reply = await self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=current,
                                                      expect_absent=current is None))
            if reply.applied:
                return new
            current = reply.value
        raise UnavailableError(f"update of {key!r} gave up after {attempts} attempts: the key kept changing")

    async def latencies(self) -> m.LatenciesReply:
        return await self._call(m.Latencies(next(self._ids)))

    async def ping(self) -> m.Pong:
        return await self._call(m.Ping(next(self._ids)))

    async def status(self) -> m.StatusReply:
        return await self._call(m.Status(next(self._ids)))

    async def inspect(self, key) -> m.InspectReply:
        return _check_inspect(await self._call(self._inspect_msg(key)))

    async def repair(self, *, timeout_ms: int | None = None):
        """As ``Client.repair``."""
        from .core.messages_ae import Repair

        saved = self.timeout_ms
        self.timeout_ms = timeout_ms or REPAIR_TIMEOUT_MS_DEFAULT
        try:
            return await self._call(Repair(next(self._ids)))
        finally:
            self.timeout_ms = saved
