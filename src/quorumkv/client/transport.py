"""The transport seam: how a client reaches a node, apart from what it says to it.

``Client`` and ``AsyncClient`` build requests, judge replies, retry and route
(``base.py``); everything they need from the network is the two small interfaces
below. The defaults speak quorumkv's framed msgpack over TCP (optionally TLS); a
test may pass another ``transport=`` — e.g. one that hands each request to a
simulated node and returns what its core answers — and the client above it runs
unchanged. Authentication is protocol (an ``Auth`` request), so it stays in the
client and goes through the seam like any request.

Sync: ``Transport.connect(host, port, timeout_ms) -> Connection``;
``Connection.send(msg)`` then ``Connection.receive()`` (the replies decoded from the
next chunk read; ``ConnectionResetError`` when the node closed the connection).

Async: ``AsyncTransport.connect(...)`` (a coroutine) ``-> AsyncConnection``, whose
``request(msg, timeout_ms)`` sends one request and awaits its reply; requests on one
connection pipeline, so many coroutines can share it. The TCP one lives in
``aio.py`` (asyncio is imported only by asyncio users).

Failures are ``OSError`` (``TimeoutError``, ``ConnectionError``, ``ssl.SSLError``) or,
for a peer that does not speak the protocol, ``ProtocolError``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.framing import FrameDecoder, FrameEncoder

if TYPE_CHECKING:
    import ssl  # only a TLS client loads it (start-up of `quorumkv get`)

#: Bytes read from a socket per ``recv`` (a frame larger than this is reassembled by
#: the decoder over several reads).
RECV_BYTES_MAX = 65_536


class Request(Protocol):
    """A request message: every one carries the id its reply echoes."""

    @property
    def id(self) -> int: ...


class Connection(Protocol):
    """One open connection to one node (blocking)."""

    def send(self, msg: object) -> None: ...

    def receive(self) -> Sequence[Any]: ...

    def set_timeout_ms(self, timeout_ms: int) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    def connect(self, host: str, port: int, timeout_ms: int) -> Connection: ...


class AsyncConnection(Protocol):
    """One open connection to one node (asyncio); ``lost`` is set once it failed."""

    lost: Exception | None

    async def request(self, msg: Request, timeout_ms: int) -> Any: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    async def connect(self, host: str, port: int, timeout_ms: int) -> AsyncConnection: ...


# ------------------------------------------------------------------ TCP (the default)
class TcpConnection:
    """A socket carrying quorumkv frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder()

    def send(self, msg: object) -> None:
        self.sock.sendall(self._encoder.encode(msg))

    def receive(self) -> Sequence[Any]:
        data = self.sock.recv(RECV_BYTES_MAX)
        if not data:
            raise ConnectionResetError("node closed the connection")
        return self._decoder.feed(data)

    def set_timeout_ms(self, timeout_ms: int) -> None:
        self.sock.settimeout(timeout_ms / 1000)

    def close(self) -> None:
        self.sock.close()


class TcpTransport:
    """Blocking TCP, with TLS when ``ssl_context`` is given (the node's certificate
    and host name are checked)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context

    def connect(self, host: str, port: int, timeout_ms: int) -> TcpConnection:
        sock = socket.create_connection((host, port), timeout=timeout_ms / 1000)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
        except OSError:  # the TLS handshake failed (ssl.SSLError is an OSError)
            sock.close()
            raise
        return TcpConnection(sock)
