"""Python clients: ``Client`` (blocking sockets) and ``AsyncClient`` (asyncio).

The package: ``sync.py`` (``Client``) and ``aio.py`` (``AsyncClient``) are twins over
``base.py`` (defaults, argument checks, request building, reply checks, routing) and
``typed.py`` (typed keys: siblings, counters, sets, maps); each talks to the nodes
through ``transport.py`` — the seam where a test can put a simulated network instead
of TCP (``Client(..., transport=...)``). The client imports only ``core/`` and
``quorumkv.errors`` (tests/core/test_layers.py).

Both take a list of node addresses (``"host:port"``); any node coordinates any key.
If the node in use cannot be reached the client moves to the next one. Puts and
deletes are retried on another node when the connection fails mid-request: a retry
writes the same value with a new, larger version, so it is safe under
last-writer-wins (it may however win over a concurrent write that the lost attempt
would have lost to).

``r``/``w`` accept an integer, ``"ONE"``, ``"QUORUM"`` or ``"ALL"``; leaving them out
uses the client's default, and a client default of ``None`` uses the node's.

Dynamic quorums: ``get(key, target=Target(p_fresh=0.999, within_ms=5))`` lets the
coordinator pick the smallest R its live latency model predicts meets the target
(``get_item(...).r_used`` tells which); ``put(key, v, target_latency_ms=5)`` gets the
largest W whose predicted p99 write latency is within 5 ms (``put`` returns the W
used). See docs/math.md, "Dynamic quorums".

Sessions (on by default): a client is one session with Bayou's guarantees —
read-your-writes, monotonic reads, monotonic writes, writes-follow-reads — whichever
node serves each request and whatever its clock says. It remembers the newest version
it has seen (``client.session``, a ``SessionContext``): every put is stamped above it,
and a read of a key answers with the session's version of that key or a newer one
(the coordinator asks further replicas if it must, and raises ``UnavailableError``
rather than go back in time). ``session=False`` turns this off; pass one
``SessionContext`` to several clients to make them one session. See
docs/consistency.md, "Sessions".

Linearizable operations (docs/consistency.md, "Linearizable operations"):
``Client(..., consistency="linearizable")`` (or ``consistency=`` per call) makes
``get``/``put``/``delete`` linearizable (ABD reads, CASPaxos writes); ``cas``,
``incr``, ``getdel`` and ``update`` are always atomic per key (core/paxos.py). A
non-read atomic operation is never re-sent after the connection failed mid-request
(it might run twice): it raises ``QuorumTimeoutError`` ("outcome unknown") instead.
"""

from __future__ import annotations

from .base import (
    CONSISTENCY_LEVELS,
    DEFAULT,
    REPAIR_TIMEOUT_MS_DEFAULT,
    RING_CACHE_MAX,
    ROUTE_AVOID_MS,
    ROUTE_REFRESH_MS,
    SCAN_COUNT_DEFAULT,
    SCAN_COUNT_KEYS,
    SNAPSHOT_TIMEOUT_MS_DEFAULT,
    TIMEOUT_MS_REQUEST_DEFAULT,
    UPDATE_ATTEMPTS_MAX,
    Item,
)
from .sync import Client
from .transport import AsyncConnection, AsyncTransport, Connection, TcpTransport, Transport
from .typed import Siblings, SiblingsError

__all__ = [
    "AsyncClient", "AsyncConnection", "AsyncTcpTransport", "AsyncTransport", "CONSISTENCY_LEVELS", "Client",
    "Connection", "DEFAULT", "Item", "REPAIR_TIMEOUT_MS_DEFAULT", "RING_CACHE_MAX", "ROUTE_AVOID_MS",
    "ROUTE_REFRESH_MS", "SCAN_COUNT_DEFAULT", "SCAN_COUNT_KEYS", "SNAPSHOT_TIMEOUT_MS_DEFAULT", "Siblings",
    "SiblingsError", "TIMEOUT_MS_REQUEST_DEFAULT", "TcpTransport", "Transport", "UPDATE_ATTEMPTS_MAX",
]


def __getattr__(name: str) -> object:
    """``AsyncClient`` lives in ``aio``: importing asyncio costs a CLI call like
    ``quorumkv get`` a third of its start-up, so only its users pay for it."""
    if name in ("AsyncClient", "AsyncTcpTransport"):
        from . import aio  # noqa: PLC0415

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
