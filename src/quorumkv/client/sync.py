"""``Client``: the blocking twin (``aio.py`` holds ``AsyncClient``). Requests are built
and replies judged in ``base.py``; bytes move through a ``transport.Transport``
(TCP by default). The package docstring (``quorumkv.client``) describes both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..core import messages as m
from ..core import messages_cas as mc
from ..core.dynamic import Target
from ..core.version import SessionContext
from ..errors import ConnectionFailedError, InvalidRequestError, ProtocolError, QuorumKVError, QuorumTimeoutError
from ..errors import UnavailableError
from .base import (
    _MISSING,
    DEFAULT,
    REPAIR_TIMEOUT_MS_DEFAULT,
    SCAN_COUNT_DEFAULT,
    SCAN_COUNT_KEYS,
    SNAPSHOT_TIMEOUT_MS_DEFAULT,
    TIMEOUT_MS_REQUEST_DEFAULT,
    UPDATE_ATTEMPTS_MAX,
    Item,
    _Base,
    _Default,
    _check_atomic,
    _check_inspect,
    _check_reply,
    _monotonic,
    _security,
)
from .base import Data, Level, Resolver
from .transport import Connection, Request, TcpTransport, Transport
from .typed import SiblingsError, TypedMethods

if TYPE_CHECKING:
    import ssl

    from ..core.messages_scan import ScanReply


class Client(TypedMethods, _Base):
    """Blocking client. ``with Client(["127.0.0.1:7101"]) as c: c.put("k", "v")``.

    Security: ``user``/``password`` authenticate each connection (``Auth``) before
    its first request; ``tls_ca`` (the cluster CA's PEM file) or ``ssl_context``
    turns TLS on, checking the node's certificate and address. Each falls back to
    ``QUORUMKV_USER`` / ``QUORUMKV_PASSWORD`` / ``QUORUMKV_TLS_CA``.
    """

    def __init__(self, nodes: str | Iterable[str], *, r: Level = None, w: Level = None,
                 timeout_ms: int = TIMEOUT_MS_REQUEST_DEFAULT, session: bool | SessionContext = True,
                 user: str | None = None, password: str | None = None, tls_ca: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, resolver: Resolver | None = None,
                 consistency: str = "lww", token_aware: bool = False, transport: Transport | None = None) -> None:
        super().__init__(nodes, r=r, w=w, timeout_ms=timeout_ms, session=session, resolver=resolver,
                         consistency=consistency, token_aware=token_aware)
        self._user, self._password, ssl_context = _security(user, password, tls_ca, ssl_context)
        #: the seam to the nodes (transport.py): TCP, with TLS when configured
        self.transport: Transport = transport if transport is not None else TcpTransport(ssl_context)
        self._conn: Connection | None = None
        #: token-aware routing: open connections to the other nodes, by index in
        #: ``nodes`` (at most one per node)
        self._pool: dict[int, Connection] = {}

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for conn in self._pool.values():
            conn.close()
        self._pool.clear()

    def _drop(self) -> None:
        """Close the current connection (a failed one), keeping the pool."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _use(self, idx: int) -> None:
        """Make node ``idx`` the current one, keeping the connection we leave."""
        if idx == self._current:
            return
        if self._conn is not None:
            self._pool[self._current] = self._conn
        self._current = idx
        self._conn = self._pool.pop(idx, None)

    def _route(self, msg: Request) -> None:
        if not isinstance(msg, (m.Get, m.Put)):
            return
        if self._ring_stale():
            self._ring_at_s = _monotonic()  # a failing ping is not retried per request
            try:
                self._learn_ring(self._call(m.Ping(next(self._ids))))
            except QuorumKVError:
                return  # the request itself will report what is wrong
        idx = self._routed(msg)
        if idx is not None:
            self._use(idx)

    def _connect(self) -> Connection:
        errors = []
        for attempt in range(len(self.nodes)):
            idx = (self._current + attempt) % len(self.nodes)
            host, port = self.nodes[idx]
            try:
                conn = self.transport.connect(host, port, self.timeout_ms)
            except OSError as exc:  # refused, timed out, or the TLS handshake failed
                errors.append(f"{host}:{port}: {exc.strerror or exc}")
                self._route_failed(idx)
                continue
            try:
                if self._user is not None:
                    self._authenticate(conn)
            except OSError as exc:
                conn.close()
                errors.append(f"{host}:{port}: {exc}")
                continue
            except ProtocolError:
                conn.close()
                raise
            self._current = idx
            stale = self._pool.pop(self._current, None)
            if stale is not None:
                stale.close()
            self._conn = conn
            return conn
        raise ConnectionFailedError("no node reachable: " + "; ".join(errors))

    def _authenticate(self, conn: Connection) -> None:
        from ..core.messages_admin import Auth

        msg = Auth(next(self._ids), self._user or "", self._password or "")
        conn.send(msg)
        while True:
            for reply in conn.receive():
                if type(reply) is m.Error:
                    raise ProtocolError(f"node refused the request: {reply.message}")
                if reply.id == msg.id:
                    return

    def _call(self, msg: Request, retry: bool = True) -> Any:
        if self.token_aware:
            self._route(msg)
        tried = 0
        while True:
            conn = self._conn or self._connect()
            try:
                conn.send(msg)
                while True:
                    for reply in conn.receive():
                        if reply.id == msg.id or type(reply) is m.Error:
                            self._saw(msg, reply)
                            if type(reply) is mc.AtomicReply:
                                return _check_atomic(reply)
                            return _check_reply(reply) if type(reply) in (m.Reply, m.Error) else reply
            except (OSError, ProtocolError) as exc:
                self._drop()
                if isinstance(exc, ProtocolError) and not isinstance(exc, OSError):
                    raise
                if not self._resendable(msg):
                    raise QuorumTimeoutError(f"outcome unknown: the connection failed after the request was sent "
                                             f"({exc}); it was not re-sent, as it might run twice") from exc
                tried += 1
                self._route_failed(self._current)
                self._use((self._current + 1) % len(self.nodes))
                if not retry:  # a typed update: it may have been applied, resending could apply it twice
                    raise ConnectionFailedError(f"connection lost during a typed update (maybe applied): {exc}") \
                        from exc
                if tried >= len(self.nodes):
                    raise ConnectionFailedError(f"request failed on every node: {exc}") from exc

    def put(self, key: Data, value: Data, *, w: Level = DEFAULT, ttl_ms: int | None = None,
            primary_only: bool = False, target_latency_ms: float | None = None, context: bytes | None = _MISSING,
            consistency: str | _Default = DEFAULT) -> int:
        """Write ``value``; with ``ttl_ms`` it expires that long after the write.

        ``primary_only`` (Riak's pw): only the key's own replicas count towards W;
        by default a fallback node standing in for a down replica counts (sloppy quorum).
        ``target_latency_ms`` instead of ``w``: the coordinator picks the largest W
        whose predicted p99 write latency is within it. Returns the W used.

        ``context`` (causal mode, docs/consistency.md "Siblings and CRDTs"): the
        context ``get_siblings`` returned — this write supersedes exactly those
        siblings; ``context=None`` writes without one and adds a sibling.
        """
        if value is None:
            raise InvalidRequestError("value must be bytes or str; use delete() to remove a key")
        if context is not _MISSING:  # causal mode (typed.py): None adds a sibling
            return self._causal_write(key, value, context, self.w if isinstance(w, _Default) else w)
        if self._linearizable(consistency):  # a majority of primaries: W is the quorum
            self._call(self._atomic_msg(key, mc.OP_SET, value, ttl_ms=ttl_ms))
            return 0
        reply: m.Reply = self._call(self._put_msg(key, value, w, ttl_ms, primary_only, target_latency_ms))
        return reply.w_used

    def delete(self, key: Data, *, w: Level = DEFAULT, primary_only: bool = False, context: bytes | None = _MISSING,
               consistency: str | _Default = DEFAULT) -> None:
        """Delete ``key``; with ``context`` (causal mode) only the siblings it saw."""
        if context is not _MISSING:
            self._causal_write(key, None, context, self.w if isinstance(w, _Default) else w)
            return
        if self._linearizable(consistency):
            self._call(self._atomic_msg(key, mc.OP_SET, None))
            return
        self._call(self._put_msg(key, None, w, None, primary_only))

    def get(self, key: Data, *, r: Level = DEFAULT, default: Any = _MISSING, primary_only: bool = False,
            blocking_repair: bool = False, target: Target | None = None,
            consistency: str | _Default = DEFAULT) -> Any:
        """The value of ``key``. ``blocking_repair``: return only after stale replicas
        that answered were repaired (default: repair in the background). ``target``
        instead of ``r``: the coordinator picks the smallest R meeting it.
        ``consistency="linearizable"``: an ABD read (r, target ignored)."""
        if self._linearizable(consistency):
            reply = self._call(self._atomic_msg(key, mc.OP_GET))
        else:
            reply = self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        try:
            return self._value(reply, key, default)
        except SiblingsError:
            if self.resolver is None:
                raise
            return self._resolve(key, reply)  # causal key with siblings: resolve, write back

    def get_item(self, key: Data, *, r: Level = DEFAULT, primary_only: bool = False, blocking_repair: bool = False,
                 target: Target | None = None, consistency: str | _Default = DEFAULT) -> Item:
        """The value, its version and the R used; a missing key gives ``Item(None, None)``."""
        if self._linearizable(consistency):
            reply = self._call(self._atomic_msg(key, mc.OP_GET))
            return Item(reply.value, reply.version, reply.expires_ms, 0)
        reply = self._call(self._get_msg(key, r, primary_only, blocking_repair, target))
        return Item(reply.value, reply.version, reply.expires_ms, reply.r_used)

    # -- atomic per key (CASPaxos, core/paxos.py) -------------------------------------
    def cas(self, key: Data, expected: Data | None, new: Data | None, *, ttl_ms: int | None = None) -> bool:
        """Set ``key`` to ``new`` iff its current value is ``expected`` (None: the key
        is absent); ``new`` None deletes. True when applied."""
        reply: mc.AtomicReply = self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=expected,
                                                            expect_absent=expected is None, ttl_ms=ttl_ms))
        return reply.applied

    def incr(self, key: Data, delta: int = 1) -> int:
        """Add ``delta`` to the key's integer value (absent: 0), atomically; the new value."""
        reply: mc.AtomicReply = self._call(self._atomic_msg(key, mc.OP_INCR, delta=delta))
        return reply.number

    def getdel(self, key: Data, *, default: Any = None) -> Any:
        """Delete ``key`` atomically, returning the value it had (``default`` if none)."""
        reply = self._call(self._atomic_msg(key, mc.OP_GETDEL))
        return reply.old if reply.applied else default

    def update(self, key: Data, fn: Callable[[bytes | None], Data | None], *,
               attempts: int = UPDATE_ATTEMPTS_MAX) -> bytes | None:
        """Atomically replace the value ``v`` (None: absent) by ``fn(v)`` (None:
        delete), retrying with the fresh value when another writer got in between;
        returns the value written. ``fn`` may run several times: keep it pure."""
        current = self.get(key, default=None, consistency="linearizable")
        for _ in range(attempts):
            new = self._update_value(fn, current)
            reply: mc.AtomicReply = self._call(self._atomic_msg(key, mc.OP_CAS, new, expected=current,
                                                                expect_absent=current is None))
            if reply.applied:
                return new
            current = reply.value
        raise UnavailableError(f"update of {key!r} gave up after {attempts} attempts: the key kept changing")

    def latencies(self) -> m.LatenciesReply:
        """The connected node's WARS latency samples (ms) and its dynamic-quorum model."""
        reply: m.LatenciesReply = self._call(m.Latencies(next(self._ids)))
        return reply

    def ping(self) -> m.Pong:
        reply: m.Pong = self._call(m.Ping(next(self._ids)))
        return reply

    def status(self) -> m.StatusReply:
        """The connected node's view: members with their states, ring, counters, hints."""
        reply: m.StatusReply = self._call(m.Status(next(self._ids)))
        return reply

    def inspect(self, key: Data) -> m.InspectReply | m.Reply:
        """Where ``key`` lives and which version each replica holds (no read repair)."""
        return _check_inspect(self._call(self._inspect_msg(key)))

    def scan_page(self, cursor: Data = b"", *, match: Data | None = None,
                  count: int = SCAN_COUNT_DEFAULT) -> tuple[bytes, list[bytes]]:
        """One page of the cluster-wide key scan: ``(next_cursor, keys)``; start with
        ``b""``, stop when ``next_cursor == b""``. The cursor is the last key returned,
        so any node can continue it (docs/operations.md, "Listing keys"). ``match``: a
        Redis glob; ``count``: keys each member scans for this page (a hint)."""
        reply: ScanReply = self._call(self._scan_msg(cursor, match, count))
        return reply.after, reply.keys

    def scan(self, *, match: Data | None = None, count: int = SCAN_COUNT_DEFAULT) -> Iterator[bytes]:
        """Every live key of the cluster once, in key order (an iterator of bytes)."""
        cursor = b""
        while True:
            cursor, keys = self.scan_page(cursor, match=match, count=count)
            yield from keys
            if not cursor:
                return

    def keys(self, pattern: Data = "*") -> list[bytes]:
        """Every live key matching the Redis glob ``pattern``, in key order."""
        return list(self.scan(match=pattern, count=SCAN_COUNT_KEYS))

    def decommission(self, *, dry_run: bool = False, force: bool = False) -> Any:
        """Ask the connected node to stream its data to the new owners and leave the ring.

        Returns at once (progress: ``status()``); with ``dry_run`` returns the plan
        (``RingPlan.moves``: (from, to, share of the key space)) and changes nothing.
        ``force``: leave even below N live nodes, and give up records that still fail
        after a few attempts (counted in ``stream_undelivered``).
        """
        from ..core.messages_ring import Decommission

        return self._call(Decommission(next(self._ids), dry_run, force))

    def cleanup(self, *, dry_run: bool = False, keys_per_s: int = 0) -> Any:
        """Ask the connected node to drop the records it no longer replicates
        (``core/cleanup.py``); returns at once, progress in ``status()`` (``cleanup_*``)."""
        from ..core.messages_ring import Cleanup

        return self._call(Cleanup(next(self._ids), dry_run, keys_per_s))

    def repair(self, *, timeout_ms: int | None = None) -> Any:
        """Run a full anti-entropy pass on the connected node now — against every peer
        it shares ranges with — and return its ``RepairReply`` (``ok``, ``summary``
        of keys compared/pushed/pulled, ``peers_synced``, ``peers_failed``). Waits up
        to ``timeout_ms`` (default ``REPAIR_TIMEOUT_MS_DEFAULT``); repair is throttled
        by the node's ``ae_repair_per_s``."""
        from ..core.messages_ae import Repair

        saved = self.timeout_ms
        self.timeout_ms = timeout_ms or REPAIR_TIMEOUT_MS_DEFAULT
        if self._conn is not None:
            self._conn.set_timeout_ms(self.timeout_ms)
        try:
            return self._call(Repair(next(self._ids)))
        finally:
            self.timeout_ms = saved
            if self._conn is not None:
                self._conn.set_timeout_ms(saved)

    def snapshot(self, tag: str, *, timeout_ms: int | None = None) -> Any:
        """Ask the connected node for a consistent snapshot of its storage under
        ``<data_dir>/snapshots/<tag>/`` on its host; returns its ``SnapshotReply``
        (``ok``, ``message``, ``path``, ``keys``, ``bytes``, ``taken_ms``). Progress:
        ``status().stats`` (``snapshot_done`` / ``snapshot_total``)."""
        from ..core.messages_admin import Snapshot

        saved = self.timeout_ms
        self.timeout_ms = timeout_ms or SNAPSHOT_TIMEOUT_MS_DEFAULT
        if self._conn is not None:
            self._conn.set_timeout_ms(self.timeout_ms)
        try:
            return self._call(Snapshot(next(self._ids), tag))
        finally:
            self.timeout_ms = saved
            if self._conn is not None:
                self._conn.set_timeout_ms(saved)

