"""What each Redis command does, as pure handlers.

A handler is ``handler(session, node, args) -> bytes | generator``:

* a command that needs nothing from the cluster (PING, HELLO, QUORUM...) returns its
  encoded reply;
* a command that reads or writes keys is a generator: it yields a tuple of
  ``ReadOp``/``WriteOp``, receives the tuple of ``messages.Reply`` (same order) when
  every one of them has finished its quorum round, may yield again (read, then
  write), and finally returns the encoded reply.

The connection (``shell/resp_server.py``) drives the generators: it turns each op into
a ``messages.Get``/``messages.Put`` at the connection's R/W and submits it to the
node's core like any client request. Handlers own no I/O and no clock (``node.now_ms()``
is injected), so they are tested without sockets.

Consistency of the compound commands (documented in docs/resp.md): SET NX/XX/GET/
KEEPTTL, EXPIRE/PEXPIRE/PERSIST read at R and then write at W — two quorum rounds,
not atomic: a write by another client between them is not seen (and EXPIRE rewrites
the value it read). DEL/UNLINK read every key (to count the ones that existed) and
then write a tombstone for each.
"""

from __future__ import annotations

import hmac
import os
import platform
from typing import Protocol

from ..core import messages as m
from ..core.consistency import resolve, weak_warning
from ..core.typed import is_typed
from ..core.node import level_to_wire
from ..core.version import SessionContext
from ..errors import InvalidRequestError
from . import atomic
from .common import Command, CommandError, ReadOp, WriteOp, _c, _check, _int_arg, _lower  # noqa: F401
from .parser import (
    EMPTY_ARRAY,
    OK,
    PONG,
    encode_array,
    encode_bulk,
    encode_bulk_or_null,
    encode_error,
    encode_int,
    encode_map,
    encode_null,
    encode_value,
)

#: The Redis version we answer HELLO/INFO with: the command set and reply shapes we
#: follow are Redis 7.2's. The software is quorumkv (``quorumkv_version`` in INFO).
REDIS_COMPAT_VERSION = "7.2.0"

#: Longest text quoted back in "unknown command" errors (redis-server: 128).
ERROR_ARGS_CHARS_MAX = 128

#: Keys whose session floor one RESP connection remembers (core.version.
#: SessionContext; least recently used forgotten first). Per connection, so kept
#: small: 10,000 connections x 256 keys of ~100 bytes is ~256 MB at worst.
RESP_SESSION_KEYS_MAX = 256


class NodeView(Protocol):
    """What handlers may ask of the node (implemented by the RESP server)."""

    node_id: str
    n: int
    default_r: int
    default_w: int
    members: dict[str, str]
    password: str
    resp_listen: str
    started_ms: int
    stats: dict  # total_connections_received, total_commands_processed, rejected_connections ...

    def now_ms(self) -> int: ...
    def local_records(self) -> int: ...
    def core_statistics(self) -> dict: ...
    def storage_name(self) -> str: ...
    def client_infos(self) -> list[str]: ...


class Session:
    """Per-connection state."""

    __slots__ = ("id", "proto", "name", "lib_name", "lib_ver", "authenticated", "role", "r_level",
                 "w_level", "r_wire", "w_wire", "closing", "addr", "created_ms", "last_cmd", "causal",
                 "multi_refused", "linearizable")

    def __init__(self, client_id: int, addr: str = "?", *, needs_auth: bool = False, now_ms: int = 0) -> None:
        self.id = client_id
        self.addr = addr
        self.proto = 2
        self.name: bytes | None = None
        self.lib_name = b""
        self.lib_ver = b""
        self.authenticated = not needs_auth
        #: the user's role once authenticated (shell/auth.py): "readonly" may not run
        #: commands flagged "write" (NOPERM); without users every session is "admin"
        self.role = "admin"
        self.r_level: int | str | None = None  # None: the node's default
        self.w_level: int | str | None = None
        self.r_wire = m.LEVEL_DEFAULT
        self.w_wire = m.LEVEL_DEFAULT
        self.closing = False  # QUIT: close once this reply is written
        self.created_ms = now_ms
        self.last_cmd = "NULL"
        # Session guarantees per connection (docs/consistency.md, "Sessions"): each
        # write is stamped above every version this connection has seen, and each read
        # returns this connection's version of the key or a newer one.
        self.causal = SessionContext(RESP_SESSION_KEYS_MAX)
        # MULTI was refused: every command up to EXEC/DISCARD is refused too, so a
        # client's transaction runs nothing (resp/transactions.py).
        self.multi_refused = False
        # QUORUM MODE LINEARIZABLE: GET/SET/DEL go through core/paxos.py (resp/atomic.py).
        self.linearizable = False

    def get_msg(self, rid: int, key: bytes) -> m.Get:
        return m.Get(rid, key, self.r_wire, floor=self.causal.floor(key))

    def put_msg(self, rid: int, key: bytes, value: bytes | None, ttl_ms: int) -> m.Put:
        return m.Put(rid, key, value, self.w_wire, ttl_ms, after_ts=self.causal.floor_ts)

    def saw(self, key: bytes, reply) -> None:
        """A Get/Put of ``key`` finished: remember the version its reply names."""
        if type(reply) is m.Reply or type(reply) is atomic.mc.AtomicReply:
            self.causal.saw(key, reply.version)

    def info_line(self, now_ms: int) -> str:
        name = (self.name or b"").decode("utf-8", "replace")
        return (f"id={self.id} addr={self.addr} name={name} age={(now_ms - self.created_ms) // 1000} "
                f"db=0 cmd={self.last_cmd} resp={self.proto} lib-name={self.lib_name.decode('utf-8', 'replace')} "
                f"lib-ver={self.lib_ver.decode('utf-8', 'replace')}")


# ------------------------------------------------------------------- helpers
def _found(reply) -> bool:
    return _check(reply).status == m.OK


def _remaining_ttl_ms(reply, now_ms: int) -> int:
    """0 when the value has no expiry, else ms left (>= 1)."""
    if not reply.expires_ms:
        return 0
    return max(1, reply.expires_ms - now_ms)


# ------------------------------------------------------------ connection cmds
def cmd_ping(s, node, args):
    if len(args) == 1:
        return PONG
    return encode_bulk(args[1])


def cmd_echo(s, node, args):
    return encode_bulk(args[1])


def _password_ok(node, user: bytes, password: bytes) -> bool:
    if user != b"default":
        return False
    if not node.password:
        return True  # Redis's default user is "nopass" when no password is configured
    return hmac.compare_digest(password, node.password.encode("utf-8"))


def _login(s, node, user: bytes, password: bytes) -> None:
    """Authenticate the session as ``user`` and take on its role: the node's users
    (shell/auth.py) when it has any, else Redis's password-less default user."""
    authenticate = getattr(node, "authenticate", None)
    if authenticate is None or not getattr(node, "has_users", False):
        if not _password_ok(node, user, password):
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    else:
        role = authenticate(user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))
        if role is None:
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
        s.role = role
    s.authenticated = True


def cmd_hello(s, node, args):
    proto = s.proto
    if len(args) > 1:
        try:
            proto = int(args[1])
        except ValueError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    i, auth, name = 2, None, None
    while i < len(args):
        opt = _lower(args[i])
        if opt == "auth" and i + 2 < len(args):
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif opt == "setname" and i + 1 < len(args):
            name = args[i + 1]
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'")
    if auth is not None:
        _login(s, node, *auth)
    if not s.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                           "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                           "select the RESP protocol version at the same time")
    if name is not None:
        _validate_name(name)
        s.name = name or None
    s.proto = proto
    return encode_value({
        "server": "redis", "version": REDIS_COMPAT_VERSION, "proto": proto, "id": s.id,
        "mode": "standalone", "role": "master", "modules": [],
        "quorumkv_version": _version(), "quorumkv_node": node.node_id,
    }, proto)


def cmd_auth(s, node, args):
    if len(args) == 2:
        if not node.password and not getattr(node, "has_users", False):
            raise CommandError("ERR AUTH <password> called without any password configured for the default "
                               "user. Are you sure your configuration is correct?")
        user, password = b"default", args[1]
    else:
        user, password = args[1], args[2]
    _login(s, node, user, password)
    return OK


def _validate_name(name: bytes) -> None:
    if any(c < 33 or c > 126 for c in name):
        raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")


_CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME", "    Return the name of the current connection.",
    "ID", "    Return the ID of the current connection.",
    "INFO", "    Return information about the current client connection.",
    "LIST", "    Return information about the RESP client connections of this node.",
    "SETINFO <option> <value>", "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
    "SETNAME <name>", "    Assign the name <name> to the current connection.",
    "HELP", "    Print this help.",
]


def cmd_client(s, node, args):
    sub = _lower(args[1])
    if sub == "setname" and len(args) == 3:
        _validate_name(args[2])
        s.name = args[2] or None
        return OK
    if sub == "getname" and len(args) == 2:
        return encode_bulk_or_null(s.name, s.proto)
    if sub == "id" and len(args) == 2:
        return encode_int(s.id)
    if sub == "setinfo" and len(args) == 4:
        opt = _lower(args[2])
        if any(c < 33 or c > 126 for c in args[3]):
            raise CommandError(f"ERR {args[2].decode('latin-1')} cannot contain spaces, newlines or special characters.")
        if opt == "lib-name":
            s.lib_name = args[3]
        elif opt == "lib-ver":
            s.lib_ver = args[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        return OK
    if sub == "info" and len(args) == 2:
        return encode_bulk(s.info_line(node.now_ms()) + "\n")
    if sub == "list" and len(args) == 2:
        return encode_bulk("".join(line + "\n" for line in node.client_infos()))
    if sub == "help" and len(args) == 2:
        return encode_array([b"+" + line.encode() + b"\r\n" for line in _CLIENT_HELP])
    if sub in ("setname", "getname", "id", "setinfo", "info", "list", "help"):
        raise CommandError(f"ERR wrong number of arguments for 'client|{sub}' command")
    raise CommandError(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')[:ERROR_ARGS_CHARS_MAX]}'. "
                       "Try CLIENT HELP.")


def cmd_select(s, node, args):
    if _int_arg(args[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


def cmd_quit(s, node, args):
    s.closing = True
    return OK


def cmd_config(s, node, args):
    sub = _lower(args[1])
    if sub == "get" and len(args) >= 3:
        # quorumkv has no runtime Redis configuration: no parameter matches.
        return encode_map([], s.proto)
    if sub in ("set", "resetstat", "rewrite"):
        raise CommandError(f"ERR CONFIG {sub.upper()} is not supported by quorumkv "
                           "(a node is configured by its node.toml)")
    raise CommandError(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CONFIG HELP.")


# ---------------------------------------------------------------- key commands
def cmd_get(s, node, args):
    if s.linearizable:
        return (yield from atomic.lin_get(s, node, args))
    (reply,) = yield (ReadOp(args[1]),)
    reply = _check(reply)
    if reply.status == m.OK and is_typed(reply.version):  # typed (commands_crdt.py)
        return typed_get(s, reply)
    return encode_bulk(reply.value) if reply.status == m.OK else encode_null(s.proto)


def cmd_set(s, node, args):
    key, value = args[1], args[2]
    nx = xx = get = keepttl = False
    ttl_ms = 0
    expire_set = False
    i = 3
    while i < len(args):
        opt = _lower(args[i])
        if opt == "nx" and not xx:
            nx = True
        elif opt == "xx" and not nx:
            xx = True
        elif opt == "get":
            get = True
        elif opt == "keepttl" and not expire_set:
            keepttl = True
        elif opt in ("ex", "px", "exat", "pxat") and not expire_set and not keepttl and i + 1 < len(args):
            amount = _int_arg(args[i + 1])
            i += 1
            if amount <= 0 or amount > 2**62 // 1000:
                raise CommandError("ERR invalid expire time in 'set' command")
            if opt == "ex":
                ttl_ms = amount * 1000
            elif opt == "px":
                ttl_ms = amount
            else:
                at_ms = amount * 1000 if opt == "exat" else amount
                ttl_ms = max(1, at_ms - node.now_ms())  # in the past: expires at once, as in Redis
            expire_set = True
        else:
            raise CommandError("ERR syntax error")
        i += 1
    if not (nx or xx or get or keepttl or s.linearizable):
        (reply,) = yield (WriteOp(key, value, ttl_ms),)
        _check(reply)
        return OK
    # One CASPaxos proposal: atomic (resp/atomic.py).
    return (yield from atomic.atomic_set(s, key, value, ttl_ms, nx, xx, get, keepttl))


def cmd_mget(s, node, args):
    if s.linearizable:
        return (yield from atomic.lin_mget(s, node, args))
    replies = yield tuple(ReadOp(k) for k in args[1:])
    out = []
    for reply in replies:
        reply = _check(reply)
        out.append(encode_bulk(reply.value) if reply.status == m.OK else encode_null(s.proto))
    return encode_array(out)


def cmd_mset(s, node, args):
    if len(args) % 2 != 1:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    if s.linearizable:
        return (yield from atomic.lin_mset(s, node, args))
    replies = yield tuple(WriteOp(args[i], args[i + 1]) for i in range(1, len(args), 2))
    for reply in replies:
        _check(reply)
    return OK


def cmd_del(s, node, args):
    # Count from a read at R before the deletes (Redis answers how many existed);
    # every key gets a tombstone, so a key the read missed is deleted too.
    if s.linearizable:
        return (yield from atomic.lin_del(s, node, args))
    keys = list(dict.fromkeys(args[1:]))  # DEL k k deletes (and counts) k once
    found = yield tuple(ReadOp(k) for k in keys)
    count = sum(1 for reply in found if _found(reply))
    written = yield tuple(WriteOp(k, None) for k in keys)
    for reply in written:
        _check(reply)
    return encode_int(count)


def cmd_exists(s, node, args):
    if s.linearizable:
        return (yield from atomic.lin_exists(s, node, args))
    replies = yield tuple(ReadOp(k) for k in args[1:])
    return encode_int(sum(1 for reply in replies if _found(reply)))


def cmd_type(s, node, args):
    (reply,) = yield (ReadOp(args[1]),)
    if _found(reply) and is_typed(reply.version):  # typed (commands_crdt.py)
        return redis_type(reply)
    return b"+string\r\n" if _found(reply) else b"+none\r\n"


def _expire(s, node, args, unit_ms: int):
    key = args[1]
    ttl_ms = _int_arg(args[2])
    if abs(ttl_ms) > 2**62 // unit_ms:
        raise CommandError(f"ERR invalid expire time in '{_lower(args[0])}' command")
    ttl_ms *= unit_ms
    flags = set()
    for raw in args[3:]:
        flag = _lower(raw)
        if flag not in ("nx", "xx", "gt", "lt"):
            raise CommandError(f"ERR Unsupported option {raw.decode('utf-8', 'replace')}")
        flags.add(flag)
    if "nx" in flags and len(flags) > 1:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if "gt" in flags and "lt" in flags:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    (old,) = yield (ReadOp(key),)
    if not _found(old):
        return encode_int(0)
    now = node.now_ms()
    current = _remaining_ttl_ms(old, now)  # 0: no expiry (= infinite for GT/LT)
    if ("nx" in flags and current) or ("xx" in flags and not current):
        return encode_int(0)
    if "gt" in flags and (not current or ttl_ms <= current):
        return encode_int(0)
    if "lt" in flags and current and ttl_ms >= current:
        return encode_int(0)
    # A rewrite of the value just read, with a new version (not atomic; module doc).
    op = WriteOp(key, None) if ttl_ms <= 0 else WriteOp(key, old.value, ttl_ms)
    (reply,) = yield (op,)
    _check(reply)
    return encode_int(1)


def cmd_expire(s, node, args):
    return _expire(s, node, args, 1000)


def cmd_pexpire(s, node, args):
    return _expire(s, node, args, 1)


def cmd_persist(s, node, args):
    (old,) = yield (ReadOp(args[1]),)
    if not _found(old) or not old.expires_ms:
        return encode_int(0)
    (reply,) = yield (WriteOp(args[1], old.value, 0),)
    _check(reply)
    return encode_int(1)


def _ttl(s, node, args, unit_ms: int):
    (reply,) = yield (ReadOp(args[1]),)
    if not _found(reply):
        return encode_int(-2)
    if not reply.expires_ms:
        return encode_int(-1)
    left = reply.expires_ms - node.now_ms()
    if left <= 0:
        return encode_int(-2)
    return encode_int((left + unit_ms // 2) // unit_ms)  # Redis rounds TTL to the nearest second


def cmd_ttl(s, node, args):
    return _ttl(s, node, args, 1000)


def cmd_pttl(s, node, args):
    return _ttl(s, node, args, 1)


def cmd_dbsize(s, node, args):
    # The local node's record count (tombstones and expired records included) — not
    # the cluster's number of live keys, which no node knows. Documented in docs/resp.md.
    return encode_int(node.local_records())


# ------------------------------------------------------------------ extensions
def _level_arg(raw: bytes, what: str, node) -> tuple[int | str | None, int]:
    """A ``QUORUM R|W`` argument: the client's parser (``level_to_wire``) reads it, the
    core's ``resolve`` checks it against N; their messages are the error line."""
    text = raw.decode("utf-8", "replace").strip().upper()
    if text == "DEFAULT":
        return None, m.LEVEL_DEFAULT
    try:
        wire = level_to_wire(text)
        resolve(text, node.n, 1, what)
    except InvalidRequestError as exc:
        raise CommandError(f"ERR {exc}") from None
    return text, wire


def cmd_quorum(s, node, args):
    """QUORUM                      show this connection's levels
    QUORUM R <lvl> [W <lvl>]    set them (integer, ONE, QUORUM, ALL or DEFAULT)
    QUORUM MODE LINEARIZABLE|LWW  this connection's GET/SET/DEL... linearizable or not"""
    if len(args) == 3 and _lower(args[1]) == "mode":
        return atomic.set_mode(s, args[2])
    if len(args) == 1:
        r = resolve(s.r_level, node.n, node.default_r, "R")
        w = resolve(s.w_level, node.n, node.default_w, "W")
        info = {
            "n": node.n,
            "r": "DEFAULT" if s.r_level is None else str(s.r_level),
            "w": "DEFAULT" if s.w_level is None else str(s.w_level),
            "r_replicas": r, "w_replicas": w,
            "warning": weak_warning(r, w, node.n) or "",
            "mode": "LINEARIZABLE" if s.linearizable else "LWW",
        }
        return encode_value(info, s.proto)
    if len(args) % 2 != 1:
        raise CommandError("ERR syntax error: QUORUM [R <level>] [W <level>]")
    updates = {}
    for i in range(1, len(args), 2):
        what = _lower(args[i]).upper()
        if what not in ("R", "W"):
            raise CommandError("ERR syntax error: QUORUM [R <level>] [W <level>]")
        updates[what] = _level_arg(args[i + 1], what, node)
    if "R" in updates:
        s.r_level, s.r_wire = updates["R"]
    if "W" in updates:
        s.w_level, s.w_wire = updates["W"]
    return OK


def cmd_qkv_version(s, node, args):
    """QKV.VERSION key: the version (HLC timestamp @ node) of the newest record a read
    at R finds — also for a deleted or expired key — or null when there is none."""
    (reply,) = yield (ReadOp(args[1]),)
    reply = _check(reply)
    v = reply.version
    if v is None:
        return encode_null(s.proto)
    return encode_value({
        "version": str(v), "ts": v.ts, "wall_ms": v.wall_ms, "node": v.node,
        "state": "live" if reply.status == m.OK else "deleted_or_expired",
        "expires_ms": reply.expires_ms,
    }, s.proto)


# -------------------------------------------------------------- COMMAND / INFO
def cmd_command(s, node, args):
    if len(args) == 1:
        return encode_array([_command_info(c) for c in COMMANDS.values()])
    sub = _lower(args[1])
    if sub == "count" and len(args) == 2:
        return encode_int(len(COMMANDS))
    if sub == "list" and len(args) == 2:
        return encode_array([encode_bulk(name) for name in COMMANDS])
    if sub == "info":
        names = [_lower(a) for a in args[2:]] or list(COMMANDS)
        return encode_array([_command_info(COMMANDS[n]) if n in COMMANDS else encode_null(s.proto) for n in names])
    if sub == "docs":
        names = [_lower(a) for a in args[2:]] or list(COMMANDS)
        return encode_map([(encode_bulk(n), _command_docs(COMMANDS[n], s.proto)) for n in names if n in COMMANDS],
                          s.proto)
    if sub in ("count", "list"):
        raise CommandError(f"ERR wrong number of arguments for 'command|{sub}' command")
    raise CommandError(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try COMMAND HELP.")


def _command_info(c: "Command") -> bytes:
    return encode_array([
        encode_bulk(c.name), encode_int(c.arity),
        encode_array([b"+" + f.encode() + b"\r\n" for f in c.flags]),
        encode_int(c.first_key), encode_int(c.last_key), encode_int(c.step),
        EMPTY_ARRAY, EMPTY_ARRAY, EMPTY_ARRAY, EMPTY_ARRAY,
    ])


def _command_docs(c: "Command", proto: int) -> bytes:
    return encode_value({"summary": c.summary, "since": c.since, "group": c.group}, proto)


INFO_SECTIONS = ("server", "clients", "stats", "replication", "quorum", "keyspace")


def cmd_info(s, node, args):
    wanted = {_lower(a) for a in args[1:]} or {"default"}
    if wanted & {"all", "everything", "default"}:
        wanted = set(INFO_SECTIONS)
    now = node.now_ms()
    st = node.stats
    core = node.core_statistics()
    sections = {
        "server": [
            ("redis_version", REDIS_COMPAT_VERSION), ("quorumkv_version", _version()),
            ("redis_mode", "standalone"), ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("arch_bits", 64), ("process_id", os.getpid()),
            ("tcp_port", node.resp_listen.rpartition(":")[2]),
            ("uptime_in_seconds", (now - node.started_ms) // 1000),
            ("uptime_in_days", (now - node.started_ms) // 86_400_000),
        ],
        "clients": [("connected_clients", st["connected_clients"])],
        "stats": [
            ("total_connections_received", st["total_connections_received"]),
            ("total_commands_processed", st["total_commands_processed"]),
            ("rejected_connections", 0),
            ("total_error_replies", st["total_error_replies"]),
            ("protocol_errors", st["protocol_errors"]),
        ],
        # Every node accepts writes for every key: "master" in Redis's vocabulary.
        "replication": [("role", "master"), ("connected_slaves", 0)],
        "quorum": [
            ("node_id", node.node_id), ("replicas_n", node.n),
            ("default_r", node.default_r), ("default_w", node.default_w),
            ("members", ",".join(f"{k}={v}" for k, v in node.members.items())),
            ("storage", node.storage_name()),
            *((f"coordinator_{k}", v) for k, v in core.items()),
        ],
        # Only the local node's records (tombstones included) are known here.
        "keyspace": [("db0", f"keys={node.local_records()},scope=local_node_records_incl_tombstones")],
    }
    out = []
    for name in INFO_SECTIONS:
        if name in wanted:
            out.append(f"# {name.capitalize()}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in sections[name]))
    return encode_bulk("\r\n".join(out))


def _version() -> str:
    from .. import __version__

    return __version__


# ------------------------------------------------------------------- the table
_NOKEY = (0, 0, 0)
COMMANDS: dict[str, Command] = {c.name: c for c in [
    _c("ping", cmd_ping, -1, ["fast"], _NOKEY, "connection", "Returns the server's liveliness response."),
    _c("echo", cmd_echo, 2, ["fast"], _NOKEY, "connection", "Returns the given string."),
    _c("hello", cmd_hello, -1, ["noauth", "fast"], _NOKEY, "connection", "Handshakes with the server.",
       "6.0.0", needs_auth=False),
    _c("auth", cmd_auth, -2, ["noauth", "fast"], _NOKEY, "connection", "Authenticates the connection.",
       needs_auth=False),
    _c("client", cmd_client, -2, ["admin"], _NOKEY, "connection",
       "CLIENT SETNAME/GETNAME/ID/SETINFO/INFO/LIST.", "2.4.0"),
    _c("select", cmd_select, 2, ["fast"], _NOKEY, "connection", "Only database 0 exists."),
    _c("quit", cmd_quit, -1, ["noauth", "fast"], _NOKEY, "connection", "Closes the connection.",
       needs_auth=False),
    _c("command", cmd_command, -1, ["loading"], _NOKEY, "server", "COMMAND COUNT/LIST/INFO/DOCS.", "2.8.13"),
    _c("info", cmd_info, -1, ["loading"], _NOKEY, "server", "Node information and statistics."),
    _c("config", cmd_config, -2, ["admin"], _NOKEY, "server",
       "CONFIG GET matches nothing; a node is configured by its node.toml.", "2.0.0"),
    _c("dbsize", cmd_dbsize, 1, ["readonly", "fast"], _NOKEY, "server",
       "An estimate: records in this node's local storage (tombstones included); KEYS or SCAN count exactly."),
    _c("get", cmd_get, 2, ["readonly", "fast"], (1, 1, 1), "string", "Reads a key at the connection's R."),
    _c("set", cmd_set, -3, ["write"], (1, 1, 1), "string",
       "Writes a key at W. NX/XX/GET/KEEPTTL: one atomic CASPaxos proposal."),
    _c("mget", cmd_mget, -2, ["readonly", "fast"], (1, -1, 1), "string", "Reads several keys in parallel."),
    _c("mset", cmd_mset, -3, ["write"], (1, -1, 2), "string",
       "Writes several keys in parallel (not atomic: each key is its own quorum write).", "1.0.1"),
    _c("del", cmd_del, -2, ["write"], (1, -1, 1), "generic",
       "Deletes keys (tombstones); counts the keys a read at R found first."),
    _c("unlink", cmd_del, -2, ["write", "fast"], (1, -1, 1), "generic", "Same as DEL.", "4.0.0"),
    _c("exists", cmd_exists, -2, ["readonly", "fast"], (1, -1, 1), "generic", "Counts the keys that exist."),
    _c("type", cmd_type, 2, ["readonly", "fast"], (1, 1, 1), "generic", "string or none."),
    _c("expire", cmd_expire, -3, ["write", "fast"], (1, 1, 1), "generic",
       "Sets a TTL in seconds: read at R, rewrite at W (not atomic)."),
    _c("pexpire", cmd_pexpire, -3, ["write", "fast"], (1, 1, 1), "generic",
       "Sets a TTL in milliseconds: read at R, rewrite at W (not atomic).", "2.6.0"),
    _c("persist", cmd_persist, 2, ["write", "fast"], (1, 1, 1), "generic",
       "Removes the TTL: read at R, rewrite at W (not atomic).", "2.2.0"),
    _c("ttl", cmd_ttl, 2, ["readonly", "fast"], (1, 1, 1), "generic", "Seconds to live; -1 none, -2 missing."),
    _c("pttl", cmd_pttl, 2, ["readonly", "fast"], (1, 1, 1), "generic",
       "Milliseconds to live; -1 none, -2 missing.", "2.6.0"),
    _c("quorum", cmd_quorum, -1, ["fast"], _NOKEY, "quorumkv",
       "QUORUM [R <level>] [W <level>] | QUORUM MODE LINEARIZABLE|LWW: this connection's consistency.",
       "0.1.0"),
    _c("qkv.cas", atomic.cmd_qkv_cas, 4, ["write"], (1, 1, 1), "quorumkv",
       "QKV.CAS key expected new: 1 applied, 0 differs (expected :absent: = key absent). Linearizable.", "0.1.0"),
    _c("incr", atomic.cmd_incr, 2, ["write", "fast"], (1, 1, 1), "string", "Atomic increment (CASPaxos)."),
    _c("decr", atomic.cmd_decr, 2, ["write", "fast"], (1, 1, 1), "string", "Atomic decrement (CASPaxos)."),
    _c("incrby", atomic.cmd_incrby, 3, ["write", "fast"], (1, 1, 1), "string", "Atomic add (CASPaxos)."),
    _c("decrby", atomic.cmd_decrby, 3, ["write", "fast"], (1, 1, 1), "string", "Atomic subtract (CASPaxos)."),
    _c("setnx", atomic.cmd_setnx, 3, ["write", "fast"], (1, 1, 1), "string", "Set if absent, atomically."),
    _c("getdel", atomic.cmd_getdel, 2, ["write", "fast"], (1, 1, 1), "string",
       "Get and delete, atomically.", "6.2.0"),
    _c("qkv.version", cmd_qkv_version, 2, ["readonly"], (1, 1, 1), "quorumkv",
       "The version (HLC timestamp and node) of a key's newest record.", "0.1.0"),
]}


# Sets, hashes, counters, causal siblings (issue 15): their own module, one table.
from .commands_crdt import redis_type, register as _register_crdt, typed_get  # noqa: E402

_register_crdt(COMMANDS)

from .transactions import TRANSACTION_COMMANDS, refuse_transaction  # noqa: E402


def unknown_command_error(args: list[bytes]) -> str:
    """Redis's exact wording: ``unknown command 'x', with args beginning with: 'a' 'b' ``."""
    name = args[0].decode("utf-8", "replace")[:ERROR_ARGS_CHARS_MAX]
    quoted = ""
    for a in args[1:]:
        piece = f"'{a.decode('utf-8', 'replace')}' "
        if len(quoted) + len(piece) > ERROR_ARGS_CHARS_MAX:
            piece = piece[: max(0, ERROR_ARGS_CHARS_MAX - len(quoted))]
        quoted += piece
        if len(quoted) >= ERROR_ARGS_CHARS_MAX:
            break
    return f"ERR unknown command '{name}', with args beginning with: {quoted}"


def lookup(args: list[bytes], session: Session):
    """The handler for a command, or an encoded error (unknown, arity, auth)."""
    name = args[0].lower().decode("latin-1")
    if session.multi_refused or name in TRANSACTION_COMMANDS:
        refused = refuse_transaction(name, session)
        if refused is not None:
            return None, encode_error(refused) if refused else OK
    cmd = COMMANDS.get(name)
    if cmd is None:
        return None, encode_error(unknown_command_error(args))
    if not session.authenticated and cmd.needs_auth:
        return None, encode_error("NOAUTH Authentication required.")
    if session.role == "readonly" and "write" in cmd.flags:
        return None, encode_error(f"NOPERM User has no permissions to run the '{name}' command")
    arity = cmd.arity
    if (arity > 0 and len(args) != arity) or len(args) < -arity:
        return None, encode_error(f"ERR wrong number of arguments for '{name}' command")
    session.last_cmd = name
    return cmd.handler, None


# Command families in their own modules register here.
from .commands_scan import SCAN_COMMANDS  # noqa: E402

COMMANDS.update({c.name: c for c in SCAN_COMMANDS})
