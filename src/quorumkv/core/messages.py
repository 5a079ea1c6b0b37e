"""Wire messages (client <-> node and node <-> node), as msgspec structs.

Frozen format: each frame is a 4-byte big-endian length followed by a msgpack
array whose first element is the message tag (below). Every request carries an
``id`` chosen by the sender; the answer on the same connection carries the same id,
so requests pipeline and answers may come back in any order.

Levels (``r``/``w``) travel as an int, or 0 meaning "the node's default"; strings
(ONE/QUORUM/ALL) are sent as negative codes so the frame stays small.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .membership import Endpoint
from .status import ReplyStatus
from .version import Record, Version

# Level codes on the wire.
LEVEL_DEFAULT = 0
LEVEL_ONE = -1
LEVEL_QUORUM = -2
LEVEL_ALL = -3
LEVEL_NAMES = {LEVEL_ONE: "ONE", LEVEL_QUORUM: "QUORUM", LEVEL_ALL: "ALL"}


class _Msg(msgspec.Struct, array_like=True, tag=True, frozen=True):
    pass


# --- client -> node -------------------------------------------------------------
class Get(_Msg, tag=1, frozen=True):
    id: int
    key: bytes
    r: int = LEVEL_DEFAULT
    primary_only: bool = False  # Riak's pr: only primaries may answer (no fallbacks)
    blocking_repair: bool = False  # answer only after stale replicas were repaired
    # Dynamic quorum (core/dynamic.py): instead of r, the smallest R whose predicted
    # P(consistent) for a read target_within_ms after commit is >= target_p_fresh.
    target_p_fresh: float = 0.0  # 0: no target
    target_within_ms: float = 0.0
    # Session guarantees (version.SessionContext): the newest version of this key the
    # client's session has seen; the coordinator answers with it or a newer one.
    floor: Version | None = None


class Put(_Msg, tag=2, frozen=True):
    id: int
    key: bytes
    value: bytes | None  # None: delete (a tombstone write)
    w: int = LEVEL_DEFAULT
    ttl_ms: int = 0  # > 0: the value expires this long after the coordinator accepts it
    primary_only: bool = False  # Riak's pw: fallbacks (hinted writes) don't count
    # Dynamic quorum: instead of w, the largest W whose predicted p99 write latency
    # is <= target_latency_ms (0: no target).
    target_latency_ms: float = 0.0
    # Session guarantees: the newest HLC timestamp the client's session has seen; the
    # coordinator stamps this write above it (0: no session).
    after_ts: int = 0


class Status(_Msg, tag=4, frozen=True):
    """The node's view of the cluster and its counters."""

    id: int


class Inspect(_Msg, tag=5, frozen=True):
    """Explain a key: its replicas and the version each holds, without repair."""

    id: int
    key: bytes


class Ping(_Msg, tag=3, frozen=True):
    id: int


class Latencies(_Msg, tag=6, frozen=True):
    """The WARS latency samples this node measured on its internode traffic."""

    id: int


# --- node -> client -------------------------------------------------------------
# status codes of Reply: core/status.py (its Status enum, and the one status -> error table);
# the short names stay here because every caller writes m.OK, m.NOT_FOUND...
OK = ReplyStatus.OK
NOT_FOUND = ReplyStatus.NOT_FOUND
UNAVAILABLE = ReplyStatus.UNAVAILABLE
TIMEOUT = ReplyStatus.TIMEOUT
INVALID = ReplyStatus.INVALID
OVERLOADED = ReplyStatus.OVERLOADED
INTERNAL = ReplyStatus.INTERNAL


class Reply(_Msg, tag=10, frozen=True):
    id: int
    status: int  # a Status; int on the wire, so an unknown code still decodes
    value: bytes | None = None
    version: Version | None = None
    message: str = ""
    warning: str = ""
    expires_ms: int = 0  # reads: absolute expiry of the value returned (0 = never)
    r_used: int = 0  # reads: the R the coordinator used (a dynamic read's choice)
    w_used: int = 0  # writes: the W the coordinator used


class Pong(_Msg, tag=11, frozen=True):
    id: int
    node: str
    n: int
    r: int
    w: int
    members: dict[str, str] = {}
    storage: str = ""
    keys: int = -1  # records (tombstones included) in the node's local storage
    peers_connected: int = -1  # outbound links to peers that are up (filled by the shell)
    #: the ring as this node routes by (its members and vnodes per member): a client
    #: builds the same ``Ring`` to send each key to one of its replicas (0: unknown)
    ring: list[str] = []
    vnodes: int = 0


class MemberView(msgspec.Struct, frozen=True):
    node: str
    address: str
    state: str  # joining / up / suspect / down / leaving / left, as this node sees it
    status: str  # gossiped status
    generation: int
    version: int
    phi: float = 0.0
    #: the member's wall clock minus ours, as its heartbeats measure it (None: not
    #: measured yet, or ourselves); see core/clock.py
    clock_offset_ms: int | None = None


class StatusReply(_Msg, tag=12, frozen=True):
    id: int
    node: str
    members: list[MemberView]
    ring: list[str]
    stats: dict[str, int]
    hints: dict[str, int] = {}  # target node -> hints held for it
    #: what the shell knows about itself (filled by it): resp, metrics (HOST:PORT or
    #: ""), storage, version — for ``quorumkv cluster status --node``
    info: dict[str, str] = {}


class ReplicaView(msgspec.Struct, frozen=True):
    node: str
    role: str  # "primary" or "fallback"
    state: str
    answered: bool
    version: str | None = None  # None: no copy
    tombstone: bool = False
    value_bytes: int | None = None
    expires_ms: int = 0
    hint_for: str | None = None
    error: str = ""


class InspectReply(_Msg, tag=13, frozen=True):
    id: int
    key: bytes
    coordinator: str
    preference_list: list[str]
    replicas: list[ReplicaView]
    newest: str | None = None


class LatenciesReply(_Msg, tag=14, frozen=True):
    """One-way delays in ms (newest last, at most PBS_SAMPLES_MAX of each kind):
    w write request (incl. the replica's durable apply), a write ack, r read request
    (incl. the replica's read), s read response. ``recorded``: totals ever seen."""

    id: int
    node: str
    w: list[float]
    a: list[float]
    r: list[float]
    s: list[float]
    recorded: dict[str, int] = {}
    model: dict[Any, Any] = {}  # the dynamic-quorum model in force (core/dynamic.py LatencyTable.to_dict)


# --- node -> node ---------------------------------------------------------------
class RepWrite(_Msg, tag=20, frozen=True):
    id: int
    key: bytes
    record: Record
    hint_for: str = ""  # non-empty: we are a fallback; keep it as a hint for that node


class RepWriteAck(_Msg, tag=21, frozen=True):
    id: int
    ok: bool
    error: str = ""
    t_us: int = 0  # replica's wall clock (µs) when it sent this ack: latency samples
    #: ok but NOT applied: the replica already holds this newer version of the key
    #: (None: applied, or the same version was there already). A coordinator of a
    #: client write does not count such an ack towards W (core/node.py, RESTAMPS_MAX).
    newer: Version | None = None


class RepRead(_Msg, tag=22, frozen=True):
    id: int
    key: bytes
    hint_for: str = ""  # non-empty: answer from the hints held for that node


class RepReadResp(_Msg, tag=23, frozen=True):
    id: int
    ok: bool
    record: Record | None = None
    error: str = ""
    t_us: int = 0  # replica's wall clock (µs) when it sent this response


class RepPeek(_Msg, tag=24, frozen=True):
    """Inspect: the local record and any hints for a key, read without side effects."""

    id: int
    key: bytes


class RepPeekResp(_Msg, tag=25, frozen=True):
    id: int
    record: Record | None
    hints: list[tuple[str, Record]] = []


class Heartbeat(_Msg, tag=30, frozen=True):
    """One-way: feeds the phi detector and the clock-offset estimate. Sent as a SWIM
    probe to a few peers per heartbeat interval (``probe``: answer with a heartbeat),
    as that answer, to ask a peer to probe a suspect for us (``ask``) and to tell the
    asker the suspect answered (``vouch``) — core/membership.py."""

    id: int
    node: str
    generation: int
    hlc: int = 0  # the sender's HLC (receivers observe it: clocks stay close)
    wall_ms: int = 0  # the sender's wall clock at send: measures clock offsets (0: unknown)
    probe: bool = False  # answer with a heartbeat
    ask: str = ""  # probe this node for me and vouch for it if it answers
    vouch: str = ""  # this node, suspect to you, answered me
    digest: int = 0  # the sender's membership table digest (core/membership.py: gossip when it differs)


class Gossip(_Msg, tag=31, frozen=True):
    """Push-pull: our membership table; the peer answers with its own."""

    id: int
    endpoints: list[Endpoint]
    hlc: int = 0  # the sender's HLC, observed like a heartbeat's


class GossipAck(_Msg, tag=32, frozen=True):
    id: int
    endpoints: list[Endpoint]
    hlc: int = 0


class Error(_Msg, tag=99, frozen=True):
    """Sent before closing a connection that sent something unacceptable."""

    id: int
    message: str


# The base messages. Families defined in their own modules (messages_ae, _ring, _scan,
# _admin, _typed, _cas) import _Msg from here; ``wire.py`` folds every family into the
# REQUEST_TYPES/RESPONSE_TYPES tables and the Request/Response/Message unions.
BASE_REQUESTS = (Get, Put, Ping, Status, Inspect, RepWrite, RepRead, RepPeek, Heartbeat, Gossip,
                 Latencies)
BASE_RESPONSES = (Reply, Pong, StatusReply, InspectReply, RepWriteAck, RepReadResp, RepPeekResp,
                  GossipAck, Error, LatenciesReply)
ClientRequest = Get | Put | Ping | Status | Inspect | Latencies

#: Requests that get no answer (they must not count against a connection's
#: pipeline bound).
ONE_WAY = (Heartbeat,)
