"""Node configuration: a TOML file and/or flags.

Example ``node.toml``::

    node_id = "n1"
    listen = "127.0.0.1:7101"
    data_dir = "/var/lib/quorumkv/n1"
    storage = "sqlite"        # or "memory", or "redis" (then redis_url = "redis://host:port/db")
    fsync = true              # synchronous=FULL: acked writes survive power loss
    n = 3                     # replicas per key
    r = "QUORUM"              # default read level (integer, ONE, QUORUM, ALL)
    w = "QUORUM"              # default write level
    timeout_ms_read = 2000
    timeout_ms_write = 2000

    [members]                 # every node of the cluster, itself included
    n1 = "127.0.0.1:7101"
    n2 = "127.0.0.1:7102"
    n3 = "127.0.0.1:7103"
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field

from ..core.antientropy import AESettings
from ..core.consistency import quorum_of
from ..core.hints import HintSettings, safe_with_gc
from ..core.limits import REPLICAS_MAX
from ..core.membership import DetectorSettings
from ..core.node import NodeSettings

# One place for defaults: a setting the core also has takes the core's default (its
# settings records), so the file and the core cannot drift apart.
_NODE = NodeSettings._field_defaults
_DETECTOR = DetectorSettings._field_defaults
_HINTS = HintSettings._field_defaults
_AE = AESettings._field_defaults


@dataclass
class NodeConfig:
    node_id: str
    listen: str
    data_dir: str
    members: dict[str, str] = field(default_factory=dict)
    storage: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"  # storage = "redis": the server holding this node's data
    fsync: bool = True
    n: int = _NODE["n"]
    r: int | str = "QUORUM"
    w: int | str = "QUORUM"
    #: "lww" or "linearizable": the mode of a new RESP connection's GET/SET/DEL (an
    #: unmodified Redis client gets linearizable reads and writes; docs/consistency.md)
    consistency: str = "lww"
    timeout_ms_read: int = _NODE["timeout_ms_read"]
    timeout_ms_write: int = _NODE["timeout_ms_write"]
    tick_ms: int = 5                # tick cadence while work is in flight (rounds, replay, streaming)
    #: An idle node sleeps until its core's next deadline (heartbeat, gossip), at most
    #: this long: the failure detector and periodic timers are checked this often.
    tick_ms_idle_max: int = 200
    #: "uvloop" (the default, when installed: faster sockets and timers) or "asyncio".
    event_loop: str = "uvloop"
    log_level: str = "info"
    #: addresses of existing members to join through (a new node lists only itself
    #: in ``members`` and at least one seed)
    seeds: list[str] = field(default_factory=list)
    heartbeat_interval_ms: int = _DETECTOR["heartbeat_interval_ms"]
    phi_suspect: float = _DETECTOR["phi_suspect"]
    suspect_to_down_ms: int = _DETECTOR["suspect_to_down_ms"]
    gossip_interval_ms: int = _NODE["gossip_interval_ms"]
    speculative_retry_ms: int = _NODE["speculative_retry_ms"]
    read_repair: bool = _NODE["read_repair"]
    sloppy_quorum: bool = _NODE["sloppy_quorum"]
    #: start as the replacement of a dead node with this node_id (streams its data)
    replace: bool = _NODE["replace"]
    #: wait this long after starting a join/replace/decommission before streaming
    settle_ms: int = _NODE["settle_ms"]
    read_all_replicas: bool = _NODE["read_all_replicas"]
    hint_bytes_max_per_target: int = _HINTS["bytes_max_per_target"]
    hint_age_ms_max: int = _HINTS["age_ms_max"]
    hint_replay_per_s: int = _HINTS["replay_per_s"]
    # anti-entropy and tombstone GC (docs/antientropy.md)
    ae_interval_ms: int = _AE["interval_ms"]  # a Merkle-tree sync with the next live peer this often; 0 = off
    ae_repair_per_s: int = _AE["repair_per_s"]  # keys pushed + pulled per second at most
    ae_keys_per_message: int = _AE["keys_per_message"]
    tombstone_gc: bool = _AE["gc"]
    #: > hint_age_ms_max + max_clock_skew_ms, so no hint can resurrect (core.hints.safe_with_gc)
    tombstone_gc_grace_ms: int = _AE["gc_grace_ms"]
    resp_listen: str = ""    # HOST:PORT of the Redis-protocol listener; "" = none
    resp_password: str = ""  # when set, RESP clients must AUTH / HELLO AUTH first
    #: HOST:PORT of the HTTP listener for Prometheus metrics, /health and /ready
    #: (shell/metrics.py); "" = none. Local clusters turn it on.
    metrics_listen: str = ""
    #: refuse to coordinate writes when this node's clock is further than this off
    #: from most live peers (CockroachDB's max offset; docs/consistency.md); 0 = off
    max_clock_skew_ms: int = _NODE["max_clock_skew_ms"]
    #: after a start, how long a strict request waits for this node to hear the ring of
    #: a majority of members before it is answered UNAVAILABLE (docs/ring-changes.md, "Restarts")
    timeout_ms_ring_sync: int = _NODE["timeout_ms_ring_sync"]
    # -- security (docs/operations.md, "Security"; shell/auth.py, shell/tls.py) --------
    #: ACL-style users of the native and RESP ports: ``[users.NAME]`` tables with
    #: ``password`` (or ``"sha256:HEX"``) and ``role`` (readonly, readwrite, admin, node)
    users: dict = field(default_factory=dict)
    #: what this node's links to its peers present when the peers require
    #: authentication and mutual TLS does not identify them (a user of role ``node``)
    internode_user: str = ""
    internode_password: str = ""
    #: PEM files: this node's certificate and key, and the cluster CA. All three
    #: turn TLS on for every port and mutual TLS between nodes.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    #: TEST ONLY: shift the wall clock this node's core sees by this many ms, to run
    #: a node with a skewed clock on one machine (tests/io/test_clock_safety.py)
    clock_offset_ms: int = 0

    def __post_init__(self) -> None:
        from .auth import validate_users  # noqa: PLC0415

        validate_users(self.users)
        tls = [k for k in ("tls_cert", "tls_key", "tls_ca") if getattr(self, k)]
        if tls and len(tls) != 3:
            raise ValueError(f"TLS needs tls_cert, tls_key and tls_ca together (only {', '.join(tls)} given)")
        if bool(self.internode_user) != bool(self.internode_password):
            raise ValueError("internode_user and internode_password go together")
        if self.users and not self.tls and not self.resp_password and not self.internode_user:
            raise ValueError("with users and without TLS, peers must authenticate: set internode_user and "
                             "internode_password (a user of role node), or TLS (mutual TLS identifies peers)")
        if not self.members:
            self.members = {self.node_id: self.listen}
        if self.members.get(self.node_id) not in (None, self.listen):
            raise ValueError(
                f"members[{self.node_id!r}]={self.members[self.node_id]!r} differs from listen={self.listen!r}"
            )
        self.members.setdefault(self.node_id, self.listen)
        parse_address(self.listen)
        if self.resp_listen:
            parse_address(self.resp_listen)
        if self.metrics_listen:
            parse_address(self.metrics_listen)
        for addr in self.members.values():
            parse_address(addr)
        if not 1 <= self.n <= REPLICAS_MAX:
            raise ValueError(f"n must be within 1..{REPLICAS_MAX} (REPLICAS_MAX)")
        for addr in self.seeds:
            parse_address(addr)
        if self.consistency not in ("lww", "linearizable"):
            raise ValueError(f"consistency must be 'lww' or 'linearizable', got {self.consistency!r}")
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ValueError(f"event_loop must be 'uvloop' or 'asyncio', got {self.event_loop!r}")
        if self.tick_ms_idle_max < self.tick_ms:
            raise ValueError(f"tick_ms_idle_max={self.tick_ms_idle_max} must be >= tick_ms={self.tick_ms}")
        for name in ("timeout_ms_read", "timeout_ms_write", "timeout_ms_ring_sync", "tick_ms", "heartbeat_interval_ms",
                     "suspect_to_down_ms", "gossip_interval_ms", "hint_replay_per_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("ae_repair_per_s", "ae_keys_per_message"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_clock_skew_ms < 0:
            raise ValueError("max_clock_skew_ms must be >= 0 (0 turns the max-offset rule off)")
        if self.ae_interval_ms < 0:
            raise ValueError("ae_interval_ms must be >= 0 (0 turns periodic anti-entropy off)")
        if self.hint_age_ms_max <= 0:
            raise ValueError("hint_age_ms_max must be > 0")
        if self.tombstone_gc and not safe_with_gc(self.tombstone_gc_grace_ms, self.hint_age_ms_max,
                                                  self.max_clock_skew_ms):
            raise ValueError(f"tombstone_gc_grace_ms={self.tombstone_gc_grace_ms} must be > hint_age_ms_max + "
                             f"max_clock_skew_ms = {self.hint_age_ms_max + self.max_clock_skew_ms}: a hint could "
                             "bring a purged key back")

    @classmethod
    def load(cls, path: str, **overrides) -> "NodeConfig":
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**raw)

    def to_toml(self) -> str:
        lines = []
        data = asdict(self)
        members = data.pop("members")
        users = data.pop("users")
        for key, value in data.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        lines.append("[members]")
        for node, addr in members.items():
            lines.append(f"{node} = {_toml_value(addr)}")
        for name, entry in users.items():
            lines.append("")
            lines.append(f"[users.{_toml_value(name)}]")
            for key, value in entry.items():
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {addr!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


__all__ = ["NodeConfig", "parse_address", "quorum_of"]
