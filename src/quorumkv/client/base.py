"""What ``Client`` (``sync.py``) and ``AsyncClient`` (``aio.py``) share: the
defaults, ``Item``, argument checks, the reply checks and ``_Base`` (configuration and
request building). Both client modules import it; it imports neither, so the sync and
async twins do not import each other.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..core import messages as m
from ..core import messages_cas as mc
from ..core.dynamic import Target, validate_latency_bound
from ..core.validation import level_to_wire, validate_key, validate_value
from ..core.version import SessionContext, Version
from .typed import plain_value, to_bytes  # to_bytes: re-exported (contrib/redis_quorum.py)
from ..core.status import raise_for_status
from ..core.typed import is_typed
from ..errors import (
    ConsistencyWarning,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
)

#: Client-side limit on one request (the node's own quorum timeouts are shorter, so
#: this only fires when the node itself hangs).
TIMEOUT_MS_REQUEST_DEFAULT = 10_000
#: Keys each member scans per ``scan()`` page by default (Redis's SCAN default is
#: 10; a larger page costs fewer round trips and the same total work).
SCAN_COUNT_DEFAULT = 100
#: Page size of ``keys()``, which wants everything anyway.
SCAN_COUNT_KEYS = 1_000
#: Times ``update(key, fn)`` re-reads and retries its compare-and-set when another
#: writer changed the key in between, before giving up (UnavailableError).
UPDATE_ATTEMPTS_MAX = 32
#: ``consistency`` values: last-writer-wins quorum reads/writes, or linearizable ones.
CONSISTENCY_LEVELS = ("lww", "linearizable")
#: How long a learned ring is trusted before a token-aware client asks a node again
#: (a membership change is rare; a stale ring only costs a hop, never correctness:
#: any node coordinates any key).
ROUTE_REFRESH_MS = 30_000
#: How long a token-aware client leaves a node it could not reach out of its routes
#: (the requests go to the next replica, or any node, meanwhile).
ROUTE_AVOID_MS = 2_000
#: How long ``repair()`` waits for a node's full anti-entropy pass (it is throttled).
REPAIR_TIMEOUT_MS_DEFAULT = 3_600_000
#: How long ``snapshot()`` waits for a node to finish copying its storage.
SNAPSHOT_TIMEOUT_MS_DEFAULT = 3_600_000


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()  # "use the client's default", distinct from None
_MISSING: Any = object()  # "no default given" (Any: it stands in for any argument type)

#: What the client accepts as a key or value (str is UTF-8 encoded).
Data = Union[bytes, str, bytearray, memoryview]
#: A consistency level as the caller gives it: a count, ONE/QUORUM/ALL (or digits) as
#: text, None for the node's default, or ``DEFAULT`` for the client's.
Level = Union[int, str, None, "_Default"]
#: ``Client(resolver=fn)``: merges a causal key's sibling values into one.
Resolver = Callable[[list[bytes]], Data]

if TYPE_CHECKING:
    import ssl

    from ..core.messages_scan import Scan
    from ..core.ring import Ring


@dataclass(frozen=True)
class Item:
    """A read result with its version (``value`` is None for a tombstone)."""

    value: bytes | None
    version: Version | None
    expires_ms: int = 0  # absolute wall-clock expiry, 0 = never
    r_used: int = 0  # the R the coordinator used (chosen by it for a dynamic read)


def _check_reply(reply: m.Reply | m.Error) -> m.Reply:
    if isinstance(reply, m.Error):
        raise ProtocolError(f"node refused the request: {reply.message}")
    if reply.warning:
        warnings.warn(reply.warning, ConsistencyWarning, stacklevel=4)
    raise_for_status(reply.status, reply.message)
    return reply


def _check_atomic(reply: mc.AtomicReply) -> mc.AtomicReply:
    raise_for_status(reply.status, reply.message)
    return reply


def _consistency(value: object) -> str:
    if not isinstance(value, str) or value not in CONSISTENCY_LEVELS:
        raise InvalidRequestError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {value!r}")
    return value


def _check_inspect(reply: m.InspectReply | m.Reply) -> m.InspectReply | m.Reply:
    if isinstance(reply, m.Reply):  # an invalid key comes back as a Reply
        return _check_reply(reply)
    return reply


def _parse_nodes(nodes: str | Iterable[str]) -> list[tuple[str, int]]:
    if isinstance(nodes, str):
        nodes = [nodes]
    out = []
    for addr in nodes:
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidRequestError(f"bad node address {addr!r}: expected HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise InvalidRequestError("no node addresses given")
    return out


def _session(session: object) -> SessionContext | None:
    if session is True:
        return SessionContext()
    if session is False or session is None:
        return None
    if isinstance(session, SessionContext):
        return session
    raise InvalidRequestError(f"session must be True, False or a SessionContext, not {type(session).__name__}")


def _monotonic() -> float:
    return time.monotonic()


_RING_CACHE: dict[tuple[tuple[str, ...], int, int], Ring] = {}
#: Rings kept for token-aware clients (building one hashes vnodes x members tokens;
#: clients of one cluster share it). One per distinct membership seen.
RING_CACHE_MAX = 8


def _ring_of(members: tuple[str, ...], n: int, vnodes: int) -> Ring:
    from ..core.ring import Ring  # noqa: PLC0415 - only token-aware clients need it

    key = (members, n, vnodes)
    ring = _RING_CACHE.get(key)
    if ring is None:
        if len(_RING_CACHE) >= RING_CACHE_MAX:
            _RING_CACHE.pop(next(iter(_RING_CACHE)))
        ring = _RING_CACHE[key] = Ring(members, n, vnodes)
    return ring


def _client_level(level: Level, what: str) -> int | str | None:
    if isinstance(level, _Default):
        raise InvalidRequestError(f"{what}=DEFAULT means the client's default; a client's own default is a level or None")
    return level


class _Base:
    def __init__(self, nodes: str | Iterable[str], *, r: Level = None, w: Level = None,
                 timeout_ms: int = TIMEOUT_MS_REQUEST_DEFAULT, session: bool | SessionContext = True,
                 resolver: Resolver | None = None, consistency: str = "lww", token_aware: bool = False) -> None:
        self.nodes = _parse_nodes(nodes)
        #: causal mode: ``resolver(values) -> value`` merges siblings on ``get`` and the
        #: client writes the result back with their context (typed.py)
        self.resolver = resolver
        #: "lww" (quorum reads/writes at r/w) or "linearizable" for get/put/delete
        self.consistency = _consistency(consistency)
        #: the client's default R and W (None: the node's)
        self.r: int | str | None = _client_level(r, "r")
        self.w: int | str | None = _client_level(w, "w")
        self.timeout_ms = timeout_ms
        self._ids: Iterator[int] = itertools.count(1)
        self._current = 0
        #: the session's floors (None: no session guarantees); see the module doc
        self.session: SessionContext | None = _session(session)
        #: token-aware routing (docs/performance.md, "Token-aware routing"): a plain
        #: get/put goes to one of the key's replicas among ``nodes``, learned from a
        #: node's ``Pong``. Off by default: it saves node CPU on writes but costs the
        #: client more than it saves in our measurements (a client of one address
        #: always talks to that node).
        self.token_aware = bool(token_aware) and len(self.nodes) > 1
        self._ring: Ring | None = None  # the cluster's ring, as a node told us
        self._route_idx: dict[str, int] = {}  # node id -> index in self.nodes
        self._ring_at_s: float | None = None  # monotonic time the ring was learned
        self._avoid_until_s: dict[int, float] = {}  # index -> monotonic time it may be routed to again

    def _routed(self, msg: object) -> int | None:
        """The index of a node among ``nodes`` that replicates ``msg``'s key, or None
        (not a plain get/put, ring unknown, no replica among our addresses)."""
        if self._ring is None or not isinstance(msg, (m.Get, m.Put)):
            return None
        for node in self._ring.preference_list(msg.key):
            idx = self._route_idx.get(node)
            if idx is not None:
                until = self._avoid_until_s.get(idx)
                if until is None or until <= _monotonic():
                    return idx
        return None

    def _ring_stale(self) -> bool:
        return self._ring_at_s is None or (_monotonic() - self._ring_at_s) * 1000 >= ROUTE_REFRESH_MS

    def _learn_ring(self, pong: m.Pong) -> None:
        """Build the routes from a ``Pong`` (an old node without a ring: no routing)."""
        self._ring_at_s = _monotonic()
        ring = list(getattr(pong, "ring", None) or [])
        vnodes = getattr(pong, "vnodes", 0)
        if not ring or vnodes <= 0 or pong.n <= 0:
            self._ring, self._route_idx = None, {}
            return
        where = {f"{host}:{port}": i for i, (host, port) in enumerate(self.nodes)}
        self._route_idx = {node: where[pong.members[node]] for node in ring if pong.members.get(node) in where}
        self._ring = _ring_of(tuple(sorted(ring)), pong.n, vnodes) if self._route_idx else None

    def _route_failed(self, idx: int) -> None:
        if self._ring is not None:
            self._avoid_until_s[idx] = _monotonic() + ROUTE_AVOID_MS / 1000
            self._ring_at_s = None  # ask again: the membership may have changed

    def _saw(self, msg: object, reply: object) -> None:
        """Remember the version a Get/Put reply names (failed writes too: they may land)."""
        if (self.session is not None and isinstance(reply, (m.Reply, mc.AtomicReply)) and reply.version is not None
                and isinstance(msg, (m.Get, m.Put, mc.Atomic))):
            self.session.saw(msg.key, reply.version)

    def _linearizable(self, consistency: object) -> bool:
        return (self.consistency if consistency is DEFAULT else _consistency(consistency)) == "linearizable"

    def _atomic_msg(self, key: Data, op: int, value: Data | None = None, *, expected: Data | None = None,
                    expect_absent: bool = False, delta: int = 0, flags: int = 0,
                    ttl_ms: int | None = None) -> mc.Atomic:
        k = to_bytes(key, "key")
        validate_key(k)
        v = None if value is None else to_bytes(value, "value")
        validate_value(v)
        e = None if expected is None else to_bytes(expected, "expected value")
        validate_value(e)
        if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0):
            raise InvalidRequestError(f"ttl_ms must be a positive integer, not {ttl_ms!r}")
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidRequestError(f"delta must be an integer, not {type(delta).__name__}")
        return mc.Atomic(next(self._ids), k, op, v, e, bool(expect_absent), delta, flags, ttl_ms or 0)

    @staticmethod
    def _resendable(msg: object) -> bool:
        """May ``msg`` be sent again after the connection failed mid-request? Not an
        atomic change: the first attempt may have run (it would run twice)."""
        return not isinstance(msg, mc.Atomic) or msg.op == mc.OP_GET

    @staticmethod
    def _update_value(fn: Callable[[bytes | None], Data | None], current: bytes | None) -> bytes | None:
        new = fn(current)
        if new is not None and not isinstance(new, (bytes, str, bytearray, memoryview)):
            raise InvalidRequestError(f"update function must return bytes, str or None, not {type(new).__name__}")
        return None if new is None else to_bytes(new, "value")

    def _get_msg(self, key: Data, r: Level, primary_only: bool = False, blocking_repair: bool = False,
                 target: Target | None = None) -> m.Get:
        k = to_bytes(key, "key")
        validate_key(k)
        if target is not None:
            if not isinstance(target, Target):
                raise InvalidRequestError(f"target must be a quorumkv.Target, not {type(target).__name__}")
            if r is not DEFAULT and r is not None:
                raise InvalidRequestError("give either r or target, not both")
            return m.Get(next(self._ids), k, m.LEVEL_DEFAULT, bool(primary_only), bool(blocking_repair),
                         float(target.p_fresh), float(target.within_ms), self._floor(k))
        return m.Get(next(self._ids), k, level_to_wire(self.r if isinstance(r, _Default) else r),
                     bool(primary_only), bool(blocking_repair), floor=self._floor(k))

    def _floor(self, key: bytes) -> Version | None:
        return self.session.floor(key) if self.session is not None else None

    def _inspect_msg(self, key: Data) -> m.Inspect:
        k = to_bytes(key, "key")
        validate_key(k)
        return m.Inspect(next(self._ids), k)

    def _put_msg(self, key: Data, value: Data | None, w: Level, ttl_ms: int | None = None, primary_only: bool = False,
                 target_latency_ms: float | None = None) -> m.Put:
        if target_latency_ms is not None:
            validate_latency_bound(target_latency_ms)
            if w is not DEFAULT and w is not None:
                raise InvalidRequestError("give either w or target_latency_ms, not both")
            w = None
        k = to_bytes(key, "key")
        validate_key(k)
        v = None if value is None else to_bytes(value, "value")
        validate_value(v)
        if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0):
            raise InvalidRequestError(f"ttl_ms must be a positive integer, not {ttl_ms!r}")
        return m.Put(next(self._ids), k, v, level_to_wire(self.w if isinstance(w, _Default) else w), ttl_ms or 0,
                     bool(primary_only), float(target_latency_ms or 0.0),
                     self.session.floor_ts if self.session is not None else 0)

    def _scan_msg(self, cursor: Data, match: Data | None, count: int) -> Scan:
        from ..core.messages_scan import Scan

        after = to_bytes(cursor, "cursor")
        pattern = None if match is None else to_bytes(match, "match")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidRequestError(f"count must be a positive integer, not {count!r}")
        return Scan(next(self._ids), after, pattern, count)

    @staticmethod
    def _value(reply: m.Reply | mc.AtomicReply, key: Data, default: Any) -> Any:
        if reply.status == m.OK and is_typed(reply.version):
            value = plain_value(reply)  # a typed key: a causal key's only sibling, else an error
            if value is not None:
                return value
        elif reply.status != m.NOT_FOUND:
            return reply.value
        if default is not _MISSING:
            return default
        raise NotFoundError(f"not found: {key!r}")


def _security(user: str | None, password: str | None, tls_ca: str | None,
              ssl_context: ssl.SSLContext | None) -> tuple[str | None, str | None, ssl.SSLContext | None]:
    """Credentials and TLS context, from the arguments or the environment
    (``QUORUMKV_USER``, ``QUORUMKV_PASSWORD``, ``QUORUMKV_TLS_CA`` — as libpq reads
    ``PGPASSWORD``), so the CLI and scripts reach a secured cluster unchanged."""
    import os

    user = user if user is not None else os.environ.get("QUORUMKV_USER") or None
    password = password if password is not None else os.environ.get("QUORUMKV_PASSWORD") or None
    if password is not None and user is None:
        user = "default"  # Redis's AUTH <password>
    tls_ca = tls_ca if tls_ca is not None else os.environ.get("QUORUMKV_TLS_CA") or None
    if ssl_context is None and tls_ca:
        import ssl

        ssl_context = ssl.create_default_context(cafile=tls_ca)
    return user, password, ssl_context
