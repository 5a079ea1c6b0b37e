"""Users, roles and what each connection may send (native port and RESP alike).

Configuration (``node.toml``)::

    resp_password = "s3cret"          # the "default" user's password (every permission)

    [users.reader]
    password = "r3ad"
    role = "readonly"                 # readonly | readwrite | admin | node

    [users.app]
    password = "sha256:9f86d0...""    # a SHA-256 hex digest instead of the password
    role = "readwrite"

    internode_user = "cluster"        # what this node's links to its peers present
    internode_password = "..."        # when mutual TLS does not identify them
                                      # (default: the default user, when resp_password is set)

Roles, ACL-style (Redis's ``+@read``/``+@write`` categories, Cassandra's roles):

* ``readonly``  — reads: Get, Scan, Ping, Status, Inspect, Latencies, a linearizable
  read (Atomic GET); RESP commands not flagged ``write``;
* ``readwrite`` — also Put/Delete, typed updates, atomic operations; every RESP command;
* ``admin``     — also repair, cleanup, decommission, snapshot;
* ``node``      — also the internode messages (replica reads/writes, heartbeats,
  gossip, anti-entropy, streaming): the role of a peer.

Security is on when any user exists (``users`` or ``resp_password``) or TLS is
configured. Then a native connection must ``Auth`` before anything else; a
connection whose TLS client certificate verified against ``tls_ca`` is a peer (role
``node``) without ``Auth`` (mutual TLS). With security off, every connection may
send everything, as before.

The check on the request path is one set lookup: each connection holds the
frozenset of message types it may send (``allowed``); anything else takes the slow
path here (``Auth``, or a refusal that is answered, logged and counted).
"""

from __future__ import annotations

import hashlib
import hmac

import structlog

from ..core import messages as m
from ..core import wire
from ..core.messages_admin import Auth, Snapshot
from ..core.messages_ae import AEExchange, AEGc, AETree, Repair
from ..core.messages_cas import OP_GET, Atomic, PxAccept, PxPrepare, PxRead
from ..core.messages_ring import Cleanup, Decommission, StreamRequest
from ..core.messages_scan import Scan, ScanPeek
from ..core.messages_typed import TypedApply, Update

log = structlog.get_logger("quorumkv.auth")

ROLES = ("readonly", "readwrite", "admin", "node")

READ_TYPES = frozenset({m.Get, m.Ping, m.Status, m.Inspect, m.Latencies, Scan})
#: Atomic (core/paxos.py) is a write here; a readonly user's linearizable read
#: (op GET) is let through by ``not_allowed`` (the role is per type, the op per message).
WRITE_TYPES = frozenset({m.Put, Update, Atomic})
ADMIN_TYPES = frozenset({Repair, Cleanup, Decommission, Snapshot})
#: What only a peer sends.
PEER_TYPES = frozenset({m.RepWrite, m.RepRead, m.RepPeek, m.Heartbeat, m.Gossip, AETree, AEExchange, AEGc,
                        StreamRequest, ScanPeek, TypedApply, PxRead, PxPrepare, PxAccept})
#: Every request type a node serves, Auth aside (it is handled before these).
ALL_TYPES = frozenset(wire.REQUEST_TYPES) - {Auth}

ALLOWED_BY_ROLE: dict[str, frozenset] = {
    "readonly": READ_TYPES,
    "readwrite": READ_TYPES | WRITE_TYPES,
    "admin": READ_TYPES | WRITE_TYPES | ADMIN_TYPES,
    "node": ALL_TYPES,
}
#: RESP: may a role run commands flagged "write"?
RESP_WRITE_ROLES = frozenset({"readwrite", "admin", "node"})
#: Before Auth: nothing (Auth itself takes the slow path).
NOTHING: frozenset = frozenset()


def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8")).digest()


def validate_users(users: dict) -> None:
    """Raise ValueError naming the first bad ``[users.NAME]`` entry."""
    if not isinstance(users, dict):
        raise ValueError("users must be a table of [users.NAME] entries")
    for name, entry in users.items():
        if not isinstance(entry, dict):
            raise ValueError(f"users.{name}: expected a table with password and role")
        unknown = set(entry) - {"password", "role"}
        if unknown:
            raise ValueError(f"users.{name}: unknown keys {sorted(unknown)} (password, role)")
        if not isinstance(entry.get("password"), str) or not entry["password"]:
            raise ValueError(f"users.{name}: password must be a non-empty string")
        pw = entry["password"]
        if pw.startswith("sha256:") and (len(pw) != 71 or any(c not in "0123456789abcdef" for c in pw[7:])):
            raise ValueError(f"users.{name}: password sha256:... must be 64 lowercase hex digits")
        if entry.get("role", "readwrite") not in ROLES:
            raise ValueError(f"users.{name}: role must be one of {', '.join(ROLES)}, got {entry.get('role')!r}")


class Users:
    """The credentials a node accepts: ``check(user, password) -> role | None``."""

    def __init__(self, users: dict, resp_password: str = "") -> None:
        validate_users(users)
        self._entries: dict[str, tuple[bytes, str]] = {}
        if resp_password:  # Redis's default user: every permission (internode too)
            self._entries["default"] = (_digest(resp_password), "node")
        for name, entry in users.items():
            pw = entry["password"]
            digest = bytes.fromhex(pw[7:]) if pw.startswith("sha256:") else _digest(pw)
            self._entries[name] = (digest, entry.get("role", "readwrite"))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def check(self, user: str, password: str) -> str | None:
        entry = self._entries.get(user)
        given = _digest(password)
        if entry is None:
            hmac.compare_digest(given, given)  # same work whether or not the user exists
            return None
        return entry[1] if hmac.compare_digest(given, entry[0]) else None


#: The request id of the ``Auth`` a node's link sends first to a peer (its reply is
#: consumed by the link, not routed to the core).
PEER_AUTH_ID = 0
#: Counters every node carries (shell stats, merged into ``Status``; metrics export them).
SECURITY_COUNTERS = ("auth_ok", "auth_failed", "auth_missing", "auth_denied", "peer_refused",
                     "tls_plaintext_refused", "tls_handshake_failed")


def open_types(users: bool, tls: bool) -> frozenset:
    """What a new native connection may send before ``Auth``: nothing when the node
    has users; with TLS alone, everything but internode messages (those need a
    peer's certificate); with no security, everything."""
    if users:
        return NOTHING
    return ALL_TYPES - PEER_TYPES if tls else ALL_TYPES


def internode_credentials(config) -> tuple[str, str] | None:
    """What a node's links present to its peers: ``internode_user``, else the default
    user when ``resp_password`` is set (a cluster secured by that password alone
    keeps working), else nothing (mutual TLS, or no security)."""
    if config.internode_user:
        return config.internode_user, config.internode_password
    if config.resp_password:
        return "default", config.resp_password
    return None


#: ``not_allowed``'s verdict: serve this request after all (a readonly user's Atomic GET).
RUN = "run"


def not_allowed(server, conn, msg, t):
    """The slow path of a native connection's request check: ``msg`` (type ``t``) is
    not in ``conn.allowed``. Handles ``Auth``; refuses the rest — answered with an
    ``Error``, logged, counted. True when the connection carries on with its next
    message, False when it was closed, ``RUN`` when the request is allowed after all."""
    stats = server.stats
    if t is Atomic and msg.op == OP_GET and READ_TYPES <= conn.allowed:
        return RUN  # a linearizable read by a user who may read
    if t is Auth:
        role = server.users.check(msg.user, msg.password) if server.users.enabled else "admin"
        if role is None:
            stats["auth_failed"] += 1
            _refuse(conn, msg, "auth_failed", f"WRONGPASS invalid username-password pair (user {msg.user!r})")
            return False
        stats["auth_ok"] += 1
        conn.allowed = ALLOWED_BY_ROLE[role] if server.secure else ALL_TYPES
        conn.user = msg.user
        if msg.id != PEER_AUTH_ID or role != "node":
            conn.send(m.Reply(msg.id, m.OK, message=f"authenticated as {msg.user} (role {role})"))
        else:
            conn.send(m.Reply(msg.id, m.OK))
        return True
    if conn.user is None and t not in PEER_TYPES and server.users.enabled:
        stats["auth_missing"] += 1
        _refuse(conn, msg, "auth_missing", f"NOAUTH authentication required before {t.__name__} "
                "(the client's user= and password=, or QUORUMKV_USER / QUORUMKV_PASSWORD)")
        return False
    if t in PEER_TYPES:
        stats["peer_refused"] += 1
        _refuse(conn, msg, "peer_refused", f"{t.__name__} refused: internode messages are accepted only from "
                "authenticated peers (a certificate signed by the cluster CA, or a user of role node)")
        return False
    stats["auth_denied"] += 1
    conn.send(m.Error(msg.id, f"NOPERM user {conn.user!r} has no permission to send {t.__name__}"))
    log.warning("auth_denied", peer=conn.peer_name, user=conn.user, request=t.__name__)
    return True


def _refuse(conn, msg, event: str, reason: str) -> None:
    log.warning(event, peer=conn.peer_name, reason=reason)
    conn.refuse(m.Error(getattr(msg, "id", 0), reason))


__all__ = ["not_allowed", "SECURITY_COUNTERS", "PEER_AUTH_ID", "ROLES", "Users", "ALLOWED_BY_ROLE", "ALL_TYPES", "PEER_TYPES", "NOTHING", "RESP_WRITE_ROLES",
           "validate_users"]
