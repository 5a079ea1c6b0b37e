"""``AsyncClient``, the asyncio twin of ``Client`` (import it from ``quorumkv`` or
``quorumkv.client``; it lives here so that the blocking client, and the CLI built on
it, start without importing asyncio), and the asyncio TCP transport
(``transport.AsyncTransport``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from .base import (
    _MISSING,
    DEFAULT,
    REPAIR_TIMEOUT_MS_DEFAULT,
    SCAN_COUNT_DEFAULT,
    SCAN_COUNT_KEYS,
    TIMEOUT_MS_REQUEST_DEFAULT,
    Item,
    _Base,
    _Default,
    _monotonic,
    _check_atomic,
    _check_inspect,
    _check_reply,
    _security,
    UPDATE_ATTEMPTS_MAX,
)
from .base import Data, Level, Resolver
from .typed import AsyncTypedMethods, SiblingsError
from ..core import messages as m
from ..core import messages_cas as mc
from ..core.dynamic import Target
from ..core.framing import FrameDecoder, FrameEncoder
from ..core.version import SessionContext
from .transport import AsyncConnection, AsyncTransport, Request
if TYPE_CHECKING:
    import ssl

    from ..core.messages_scan import ScanReply

from ..errors import (
    ConnectionFailedError,
    InvalidRequestError,
    ProtocolError,
    QuorumKVError,
    QuorumTimeoutError,
    UnavailableError,
)


class AsyncTcpConnection(asyncio.Protocol):
    """quorumkv frames over one asyncio connection; replies find their request by id."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None  # set by connection_made
        self.decoder = FrameDecoder()
        self.encoder = FrameEncoder()
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a stream connection (uvloop's too)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.decoder.feed(data)
        except ProtocolError as exc:
            self.close()
            self._fail_all(exc)
            return
        for reply in replies:
            if type(reply) is m.Error:
                refused = ProtocolError(f"node refused the request: {reply.message}")
                fut = self.waiters.pop(reply.id, None) if reply.id else None
                if fut is None:  # not about one request (id 0): the connection is done
                    self._fail_all(refused)
                elif not fut.done():  # one request refused (NOPERM): the others carry on
                    fut.set_exception(refused)
                continue
            fut = self.waiters.pop(reply.id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionResetError(str(exc) if exc else "connection closed")
        self._fail_all(self.lost)

    def _fail_all(self, exc: Exception) -> None:
        waiters, self.waiters = self.waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(exc)

    async def request(self, msg: Request, timeout_ms: int) -> Any:
        """Send ``msg`` and wait for its reply (at most ``timeout_ms``); on failure the
        request is no longer awaited here and the error propagates."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[msg.id] = fut
        if self.transport is None:
            raise ConnectionResetError("not connected")
        self.transport.write(self.encoder.encode(msg))
        try:
            return await asyncio.wait_for(fut, timeout_ms / 1000)
        except (OSError, asyncio.TimeoutError):
            self.waiters.pop(msg.id, None)
            raise

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AsyncTcpTransport:
    """asyncio TCP, with TLS when ``ssl_context`` is given (the default ``AsyncTransport``)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context

    async def connect(self, host: str, port: int, timeout_ms: int) -> AsyncTcpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(AsyncTcpConnection, host, port, ssl=self.ssl_context,
                                   server_hostname=host if self.ssl_context is not None else None),
            timeout_ms / 1000)
        return conn


class AsyncClient(AsyncTypedMethods, _Base):
    """asyncio client with the same methods as ``Client``; requests pipeline on one
    connection, so many coroutines can share a client. ``user``/``password``/
    ``tls_ca``/``ssl_context`` as for ``Client`` (same environment fallbacks)."""

    def __init__(self, nodes: str | Iterable[str], *, r: Level = None, w: Level = None,
                 timeout_ms: int = TIMEOUT_MS_REQUEST_DEFAULT, session: bool | SessionContext = True,
                 user: str | None = None, password: str | None = None, tls_ca: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, resolver: Resolver | None = None,
                 consistency: str = "lww", token_aware: bool = False,
                 transport: AsyncTransport | None = None) -> None:
        super().__init__(nodes, r=r, w=w, timeout_ms=timeout_ms, session=session, resolver=resolver,
                         consistency=consistency, token_aware=token_aware)
        self._user, self._password, ssl_context = _security(user, password, tls_ca, ssl_context)
        #: the seam to the nodes (transport.py): TCP, with TLS when configured
        self.transport: AsyncTransport = transport if transport is not None else AsyncTcpTransport(ssl_context)
        self._conn: AsyncConnection | None = None
        self._connecting: asyncio.Lock | None = None
        #: token-aware routing: connections to the key's replicas, by index in
        #: ``nodes`` (at most one per node; the current one stays ``_conn``)
        self._pool: dict[int, AsyncConnection] = {}

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        for conn in self._pool.values():
            conn.close()
        self._pool.clear()

    async def _open(self, idx: int) -> AsyncConnection:
        host, port = self.nodes[idx]
        conn = await self.transport.connect(host, port, self.timeout_ms)
        if self._user is not None:
            try:
                await self._authenticate(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _routed_conn(self, msg: Request) -> AsyncConnection | None:
        """A connection to one of ``msg``'s key's replicas, or None: use the current one."""
        if not isinstance(msg, (m.Get, m.Put)):
            return None
        if self._ring_stale():
            self._ring_at_s = _monotonic()  # one ping at a time; a failing one is not retried per request
            try:
                self._learn_ring(await self._call(m.Ping(next(self._ids))))
            except QuorumKVError:
                return None
        idx = self._routed(msg)
        if idx is None or (idx == self._current and self._conn is not None):
            return None
        conn = self._pool.get(idx)
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._pool.get(idx)
            if conn is not None and conn.lost is None:
                return conn
            try:
                conn = await self._open(idx)
            except (OSError, asyncio.TimeoutError, ProtocolError):
                self._route_failed(idx)
                return None
            self._pool[idx] = conn
            return conn

    async def _connection(self) -> AsyncConnection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and self._conn.lost is None:
                return self._conn
            errors = []
            for attempt in range(len(self.nodes)):
                idx = (self._current + attempt) % len(self.nodes)
                host, port = self.nodes[idx]
                try:
                    conn = await self._open(idx)
                except (OSError, asyncio.TimeoutError) as exc:
                    errors.append(f"{host}:{port}: {exc}")
                    self._route_failed(idx)
                    continue
                self._current = idx
                self._conn = conn
                return conn
            raise ConnectionFailedError("no node reachable: " + "; ".join(errors))

    async def _authenticate(self, conn: AsyncConnection) -> None:
        """``Auth`` first on a new connection; a refusal is a ProtocolError."""
        from ..core.messages_admin import Auth

        await conn.request(Auth(next(self._ids), self._user or "", self._password or ""), self.timeout_ms)

    async def _call(self, msg: Request, retry: bool = True) -> Any:
        tried = 0
        if self.token_aware:
            conn = await self._routed_conn(msg)
            if conn is not None:
                try:
                    reply = await conn.request(msg, self.timeout_ms)
                except (OSError, asyncio.TimeoutError) as exc:
                    conn.close()
                    for idx, pooled in list(self._pool.items()):
                        if pooled is conn:
                            del self._pool[idx]
                            self._route_failed(idx)
                    if not self._resendable(msg):
                        raise QuorumTimeoutError(f"outcome unknown: no answer to the request ({exc!r}); it was "
                                                 "not re-sent, as it might run twice") from exc
                    tried += 1  # then on to the current node, as any failure
                else:
                    return self._checked(msg, reply)
        while True:
            conn = await self._connection()
            try:
                reply = await conn.request(msg, self.timeout_ms)
            except (OSError, asyncio.TimeoutError) as exc:
                if conn is self._conn:
                    self._conn.close()
                    self._conn = None
                if not self._resendable(msg):
                    raise QuorumTimeoutError(f"outcome unknown: no answer to the request ({exc!r}); it was not "
                                             "re-sent, as it might run twice") from exc
                tried += 1
                self._route_failed(self._current)
                self._current = (self._current + 1) % len(self.nodes)
                if not retry:  # a typed update: it may have been applied, resending could apply it twice
                    raise ConnectionFailedError(f"connection lost during a typed update (maybe applied): {exc!r}") \
                        from exc
                if tried >= len(self.nodes):
                    raise ConnectionFailedError(f"request failed on every node: {exc!r}") from exc
                continue
            return self._checked(msg, reply)

    def _checked(self, msg: Request, reply: Any) -> Any:
        self._saw(msg, reply)
        if type(reply) is mc.AtomicReply:
            return _check_atomic(reply)
        return _check_reply(reply) if type(reply) is m.Reply else reply

    async def put(self, key: Data, value: Data, *, w: Level = DEFAULT, ttl_ms: int | None = None,
                  primary_only: bool = False, target_latency_ms: float | None = None,
                  context: bytes | None = _MISSING, consistency: str | _Default = DEFAULT) -> int:
        """Write ``value``; with ``ttl_ms`` it expires that long after the write. Returns the W used.
        ``context`` (causal mode): as ``Client.put``."""
        if value is None:
            raise InvalidRequestError("value must be bytes or str; use delete() to remove a key")
        if context is not _MISSING:
            return await self._causal_write(key, value, context, self.w if isinstance(w, _Default) else w)
        if self._linearizable(consistency):
            await self._call(self._atomic_msg(key, mc.OP_SET, value, ttl_ms=ttl_ms))
            return 0
        reply: m.Reply = await self._call(self._put_msg(key, value, w, ttl_ms, primary_only, target_latency_ms))
        return reply.w_used

    async def delete(self, key: Data, *, w: Level = DEFAULT, primary_only: bool = False,
                     context: bytes | None = _MISSING, consistency: str | _Default = DEFAULT) -> None:
        if context is not _MISSING:
            await self._causal_write(key, None, context, self.w if isinstance(w, _Default) else w)
            return
        if self._linearizable(consistency):
            await self._call(self._atomic_msg(key, mc.OP_SET, None))
            return
        await self._call(self._put_msg(key, None, w, None, primary_only))

    async def get(self, key: Data, *, r: Level = DEFAULT, default: Any = _MISSING, primary_only: bool = False,
                  blocking_repair: bool = False, target: Target | None = None,
                  consistency: str | _Default = DEFAULT) -> Any:
        if self._linearizable(consistency):
            reply = await self._call(self._atomic_msg(key, mc.OP_GET))
        else:
            reply = await self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        try:
            return self._value(reply, key, default)
        except SiblingsError:
            if self.resolver is None:
                raise
            return await self._resolve(key, reply)

    async def get_item(self, key: Data, *, r: Level = DEFAULT, primary_only: bool = False,
                       blocking_repair: bool = False, target: Target | None = None,
                       consistency: str | _Default = DEFAULT) -> Item:
        if self._linearizable(consistency):
            reply = await self._call(self._atomic_msg(key, mc.OP_GET))
            return Item(reply.value, reply.version, reply.expires_ms, 0)
        reply = await self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        return Item(reply.value, reply.version, reply.expires_ms, reply.r_used)

    # -- atomic per key: as Client's -----------------------------------------------
    async def cas(self, key: Data, expected: Data | None, new: Data | None, *, ttl_ms: int | None = None) -> bool:
        reply: mc.AtomicReply = await self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=expected,
                                                                  expect_absent=expected is None, ttl_ms=ttl_ms))
        return reply.applied

    async def incr(self, key: Data, delta: int = 1) -> int:
        reply: mc.AtomicReply = await self._call(self._atomic_msg(key, mc.OP_INCR, delta=delta))
        return reply.number

    async def getdel(self, key: Data, *, default: Any = None) -> Any:
        reply = await self._call(self._atomic_msg(key, mc.OP_GETDEL))
        return reply.old if reply.applied else default

    async def update(self, key: Data, fn: Callable[[bytes | None], Data | None], *,
                     attempts: int = UPDATE_ATTEMPTS_MAX) -> bytes | None:
        current = await self.get(key, default=None, consistency="linearizable")
        for _ in range(attempts):
            new = self._update_value(fn, current)
            reply: mc.AtomicReply = await self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=current,
                                                                      expect_absent=current is None))
            if reply.applied:
                return new
            current = reply.value
        raise UnavailableError(f"update of {key!r} gave up after {attempts} attempts: the key kept changing")

    async def latencies(self) -> m.LatenciesReply:
        reply: m.LatenciesReply = await self._call(m.Latencies(next(self._ids)))
        return reply

    async def ping(self) -> m.Pong:
        reply: m.Pong = await self._call(m.Ping(next(self._ids)))
        return reply

    async def status(self) -> m.StatusReply:
        reply: m.StatusReply = await self._call(m.Status(next(self._ids)))
        return reply

    async def inspect(self, key: Data) -> m.InspectReply | m.Reply:
        return _check_inspect(await self._call(self._inspect_msg(key)))

    async def scan_page(self, cursor: Data = b"", *, match: Data | None = None,
                        count: int = SCAN_COUNT_DEFAULT) -> tuple[bytes, list[bytes]]:
        """One page of the cluster-wide key scan: ``(next_cursor, keys)`` (see ``Client.scan_page``)."""
        reply: ScanReply = await self._call(self._scan_msg(cursor, match, count))
        return reply.after, reply.keys

    async def scan(self, *, match: Data | None = None, count: int = SCAN_COUNT_DEFAULT) -> AsyncIterator[bytes]:
        """Every live key of the cluster once, in key order (``async for key in c.scan()``)."""
        cursor = b""
        while True:
            cursor, keys = await self.scan_page(cursor, match=match, count=count)
            for key in keys:
                yield key
            if not cursor:
                return

    async def keys(self, pattern: Data = "*") -> list[bytes]:
        """Every live key matching the Redis glob ``pattern``, in key order."""
        return [key async for key in self.scan(match=pattern, count=SCAN_COUNT_KEYS)]

    async def repair(self, *, timeout_ms: int | None = None) -> Any:
        """As ``Client.repair``."""
        from ..core.messages_ae import Repair

        saved = self.timeout_ms
        self.timeout_ms = timeout_ms or REPAIR_TIMEOUT_MS_DEFAULT
        try:
            return await self._call(Repair(next(self._ids)))
        finally:
            self.timeout_ms = saved
