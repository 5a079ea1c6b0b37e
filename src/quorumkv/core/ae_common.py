"""The vocabulary anti-entropy's parts share (``core/antientropy.py`` tells the story):
settings, the storage effects the shell executes for it, the storage token and its
steps, bounds, stat names and the ring helpers. Pure; imports nothing of its parts."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from .merkle import LEAF_BITS_DEFAULT
from .ring import Ring, token
from .tokens import StoreKind
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore

#: Sessions one pass runs against one peer at most (each repairs up to
#: ``session_keys_max`` keys), so a pass always ends.
SESSIONS_PER_PEER_MAX = 1_000
#: Bytes of (key, version) entries kept in memory by one session's second scan.
SESSION_ENTRY_BYTES_MAX = 32 * 1024 * 1024
#: Per-entry overhead assumed when sizing entries and records against the bounds.
ENTRY_OVERHEAD_BYTES = 40
#: Peers' exchanges this node serves at once (each holds one message of records,
#: <= message_bytes_max, until its storage work is done). A peer's session has one
#: exchange in flight, so this is 16 peers syncing with us at once; past it the
#: exchange is refused "busy" and the peer's session ends and retries next pass.
EXCHANGES_SERVING_MAX = 16


class AESettings(NamedTuple):
    #: A session with the next live peer this often; 0 turns periodic sync off
    #: (``Repair`` still works). Cassandra leaves repair to the operator; Riak's
    #: active anti-entropy exchanges continuously — this is the middle.
    interval_ms: int = 60_000
    #: Keys pushed + pulled per second at most (token bucket): repair never starves
    #: client traffic.
    repair_per_s: int = 5_000
    #: Keys per AEExchange message at most.
    keys_per_message: int = 500
    #: Bytes of records per message at most (well under FRAME_BYTES_MAX).
    message_bytes_max: int = 4 * 1024 * 1024
    #: Differing keys one session handles at most; the rest go to the next session.
    session_keys_max: int = 20_000
    leaf_bits: int = LEAF_BITS_DEFAULT
    #: Records per storage scan chunk (between chunks the event loop runs).
    scan_chunk_keys: int = 1_000
    #: A peer that does not answer a session step within this long fails the session.
    request_timeout_ms: int = 60_000
    #: Peers' trees built concurrently at most; more get "busy".
    responders_max: int = 2
    #: Repair requests queued at most while a pass runs.
    repairs_queued_max: int = 16
    gc: bool = True
    #: A tombstone younger than this is never purged (>= the max hint age).
    gc_grace_ms: int = 4 * 3600 * 1000
    #: Tombstones checked per GC round at most.
    gc_keys_per_round_max: int = 1_000


# --- effects (executed by the shell: shell/antientropy.py) -----------------------
class ScanLocal(NamedTuple):
    """Next ``limit`` records of this scan (a new scan on first use of ``token``):
    ``on_store_done(token, True, (chunk, last))`` with ``chunk`` a list of
    ``(key, record)``. ``limit`` 0 abandons the scan."""

    token: object
    limit: int


class ReadMany(NamedTuple):
    """``on_store_done(token, True, [record or None per key])``."""

    token: object
    keys: list[bytes]


class PurgeMany(NamedTuple):
    """Delete each ``(key, version)`` only if the stored record is exactly that
    tombstone; ``on_store_done(token, True, purged_count)``."""

    token: object
    entries: list[tuple[bytes, Version]]


AE_EFFECTS = (ScanLocal, ReadMany, PurgeMany)


class AeStep(StrEnum):
    """What a storage completion of anti-entropy is for (``AeToken.step``)."""

    SCAN1 = "scan1"  # initiator: first scan (tree + GC candidates)
    SCAN2 = "scan2"  # initiator: second scan (its entries in the differing leaves)
    PUSHREAD = "pushread"  # initiator: read the records it pushes
    PULLSTORE = "pullstore"  # initiator: store a pulled record
    RSCAN = "rscan"  # responder: scan for the tree, then for the differing leaves
    XSTORE = "xstore"  # responder: store a pushed record of an exchange
    XREAD = "xread"  # responder: read the records an exchange pulls
    GCREAD = "gcread"  # any member: read tombstones a GC check asks about
    PURGE = "purge"  # any member: purge confirmed tombstones


class AeToken(NamedTuple):
    """The storage token of every anti-entropy effect. A tuple like every token
    (``NodeCore.on_store_done`` reads ``kind, conn, id = token[:3]``); ``ref`` names
    the session, responder or exchange it belongs to, ``extra`` is the step's own."""

    kind: str
    conn: object
    ref: int
    step: AeStep
    extra: Any


def ae_token(ref: int, step: AeStep, extra: Any) -> AeToken:
    return AeToken(StoreKind.AE, None, ref, step, extra)


class RepairAsk(NamedTuple):
    """A client's ``Repair`` waiting for a pass."""

    conn: object
    req_id: int


STAT_NAMES = ("ae_passes", "ae_sessions", "ae_sessions_failed", "ae_buckets_compared",
              "ae_buckets_differing", "ae_keys_compared", "ae_keys_pushed", "ae_keys_pulled",
              "gc_rounds", "gc_tombstones_checked", "gc_tombstones_confirmed", "tombstones_purged")
#: What a pass summary (RepairReply.summary) reports.
SUMMARY_NAMES = ("sessions", "buckets_compared", "buckets_differing", "keys_compared",
                 "keys_pushed", "keys_pulled")


# --- pure helpers -----------------------------------------------------------------
def ring_digest(ring: Ring) -> int:
    return token(("|".join(ring.nodes) + f"/{ring.n}/{ring.vnodes}").encode())


def plist_of_token(ring: Ring, tok: int) -> tuple[str, ...]:
    return ring.preference_list_of_token(tok)


def shares_ranges(ring: Ring, a: str, b: str) -> bool:
    return any(a in pl and b in pl for pl in ring._plists)  # noqa: SLF001


def shared(core: NodeCore, tok: int, peer: str) -> bool:
    """This node and ``peer`` both replicate the key of token ``tok``."""
    ring = core.ring
    assert ring is not None, "anti-entropy compares keys only under a ring"
    pl = plist_of_token(ring, tok)
    return peer in pl and core.node_id in pl


def record_bytes(key: bytes, rec: Record) -> int:
    """A record's size against ``message_bytes_max``."""
    return len(key) + len(rec.value or b"") + ENTRY_OVERHEAD_BYTES
