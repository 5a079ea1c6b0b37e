"""The RESP (Redis protocol) listener of a node: ``RespFrontEnd`` listens and is
the ``NodeView`` the command handlers see; each connection is a ``RespConnection``
(``resp_conn.py``: parsing, the reply FIFO, batching, back-pressure, bounds).
"""

from __future__ import annotations

import asyncio

import structlog

from ..resp.commands import Session
from .auth import SECURITY_COUNTERS, Users
from .config import parse_address
from .resp_conn import COMMANDS_PER_TURN_MAX, LINGER_BYTES_MAX, LINGER_MS, RespConnection
from .wallclock import now_ms

log = structlog.get_logger("quorumkv.resp")

# Importable from here still (tests, benchmarks).
__all__ = ["COMMANDS_PER_TURN_MAX", "LINGER_BYTES_MAX", "LINGER_MS", "RespConnection", "RespFrontEnd"]


class RespFrontEnd:
    """The RESP listener of one ``NodeServer``; also the ``NodeView`` handlers see."""

    def __init__(self, node) -> None:
        self.node = node
        cfg = node.config
        self.node_id = cfg.node_id
        self.n = node.core.replication_factor()
        self.default_r = node.core.default_r
        self.default_w = node.core.default_w
        self.members = dict(cfg.members)
        self.password = cfg.resp_password
        self.resp_listen = cfg.resp_listen
        self.started_ms = now_ms()
        self.connections: set[RespConnection] = set()
        self.stats = {"total_connections_received": 0, "total_commands_processed": 0,
                      "total_error_replies": 0, "protocol_errors": 0, "connected_clients": 0}
        self._next_client_id = 1
        self._server: asyncio.base_events.Server | None = None
        self._tls_listener = None
        # The node's users (shell/auth.py) and the stats its security counters live in.
        users = getattr(node, "users", None)
        self.users = users if users is not None else Users({}, cfg.resp_password)
        self.node_stats = getattr(node, "stats", None)
        if self.node_stats is None:
            self.node_stats = dict.fromkeys(SECURITY_COUNTERS, 0)

    # -- NodeView -----------------------------------------------------------------
    def now_ms(self) -> int:
        return now_ms()

    def local_records(self) -> int:
        return self.node.storage.count()

    def core_statistics(self) -> dict:
        return self.node.core.statistics()

    def storage_name(self) -> str:
        return self.node.storage.name

    def client_infos(self) -> list[str]:
        now = now_ms()
        return [c.session.info_line(now) for c in sorted(self.connections, key=lambda c: c.session.id)
                if c.session is not None]

    def new_session(self, addr: str) -> Session:
        self.stats["total_connections_received"] += 1
        session = Session(self._next_client_id, addr, needs_auth=self.users.enabled, now_ms=now_ms())
        session.linearizable = getattr(self.node.config, "consistency", "lww") == "linearizable"  # node default
        self._next_client_id += 1
        return session

    # -- security (shell/auth.py): the node's users, counted in the node's stats -------
    @property
    def has_users(self) -> bool:
        return self.users.enabled

    def authenticate(self, user: str, password: str) -> str | None:
        """The role of ``user`` when ``password`` is right, else None (counted)."""
        role = self.users.check(user, password)
        stats = self.node_stats
        if role is None:
            stats["auth_failed"] += 1
            log.warning("auth_failed", listener="resp", user=user)
        else:
            stats["auth_ok"] += 1
        return role

    def security_refused(self, error: bytes, session: Session) -> None:
        kind = "auth_missing" if error.startswith(b"-NOAUTH") else "auth_denied"
        self.node_stats[kind] += 1
        log.warning(kind, listener="resp", peer=session.addr, command=session.last_cmd)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        host, port = parse_address(self.resp_listen)
        node = self.node
        if getattr(node, "tls_server_ctx", None) is not None:
            from .tls import TlsListener  # noqa: PLC0415

            self._tls_listener = TlsListener(node.loop, lambda: RespConnection(self), node.tls_server_ctx, node.stats,
                                             b"-ERR this port requires TLS (redis-cli --tls, redis-py ssl=True)\r\n",
                                             "resp")
            await self._tls_listener.start(host, port)
        else:
            self._server = await node.loop.create_server(lambda: RespConnection(self), host, port,
                                                         reuse_address=True)
        log.info("resp_listening", node=self.node_id, listen=self.resp_listen)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
