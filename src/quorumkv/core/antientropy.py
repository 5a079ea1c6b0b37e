"""Anti-entropy with Merkle trees, and tombstone GC that cannot resurrect a delete.

Pure, like the rest of the core: ``install(core, settings, now_ms)`` registers this
family's handlers on a ``NodeCore`` (its public extension interface) and returns the
``AntiEntropy`` object. Nothing here runs unless the shell installs it (the
simulator does not). Its parts: ``ae_common.py`` (settings, effects, the storage
token), ``ae_session.py`` (the initiator: passes and sessions), ``ae_responder.py``
(the peer's side of a session), ``ae_gc.py`` (tombstone GC); this module wires them.

**A session** syncs this node (A, the initiator) with one peer (B) over the keys
both replicate under the current ring — ``{k : A and B in preference_list(k)}``:

====================  =========================================================
stage                 what happens
====================  =========================================================
``scan1``             A scans its storage (``ScanLocal``, in chunks) and folds
                      every shared key's ``(key, version)`` into a Merkle tree
                      (``core/merkle.py``); tombstones included. It also picks
                      tombstone-GC candidates on the way.
``tree``              A sends its leaves (``AETree``); B builds its own tree the
                      same way, descends both from the root to the differing
                      leaves, scans again for its keys in them and answers
                      ``AETreeResp`` (whole leaves, bounded; ``truncated`` when
                      more differ).
``scan2``             A scans for its own keys in those leaves and decides per
                      key (``merkle.compare_entries``): push where A is newer or
                      B lacks it, pull where B is newer or A lacks it.
``repair``            ``AEExchange`` batches (``keys_per_message``), paced by a
                      token bucket (``repair_per_s``): B stores the pushed
                      records (write-if-newer) and returns the pulled ones, which
                      A stores. The session ends when all are durable.
====================  =========================================================

Like Cassandra's validation compaction, trees are built by scanning at sync time
(two scans per side when something differs, one when nothing does), not kept
incrementally: simple, no write-path cost, memory bounded by the leaf count and
``session_keys_max``. A *pass* is a list of peers; each peer gets sessions until
one ends without truncation. Periodically (``interval_ms``) a node runs a
one-peer pass with the next live peer (round robin); ``Repair`` runs a pass over
every peer it shares ranges with and answers with the summary.

**Tombstone GC** (``gc_*`` functions below are the rule): the key's first primary
drives it. A tombstone is a candidate once older than ``gc_grace_ms`` (which the
shell requires to be >= the maximum hint age, so no hint carrying an older value
can still be replayed) while the ring has not changed for as long. The driver asks
every other ring member — not only the other primaries — whether it is safe: a
primary must hold that tombstone or something newer, any other member must hold
nothing older (``gc_holds``). Only if all say yes, it asks each (and itself) to
purge the record *exactly* at that version (compare-and-delete). A member that is
down, wiped, or holding an older value — a replica that missed the delete, or a
*leftover* copy on a node that lost the range in a join and was never cleaned up
(``quorumkv cleanup``, ``core/cleanup.py``) — stops the purge; never a timer alone.
Leftovers are never a source either: anti-entropy compares only keys both sides
replicate, streaming sends only keys the source replicates (``core/ringchange.py``),
reads and read repair go to replicas, and hints only to their owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages_ae as m
from .ae_common import (
    AE_EFFECTS, ENTRY_OVERHEAD_BYTES, EXCHANGES_SERVING_MAX, SESSION_ENTRY_BYTES_MAX, SESSIONS_PER_PEER_MAX,
    STAT_NAMES, SUMMARY_NAMES, AESettings, AeStep, AeToken, PurgeMany, ReadMany, RepairAsk, ScanLocal,
    plist_of_token, ring_digest, shares_ranges,
)
from .ae_gc import GcRound, TombstoneGc, gc_candidate, gc_confirmed, gc_holds, purge_applies
from .ae_responder import AeResponder, ServedExchange, TreeBuild
from .ae_session import Initiator, Pass, Session
from .hints import TokenBucket
from .tokens import StoreKind

if TYPE_CHECKING:
    from collections import deque

    from .node import NodeCore

_RESPONDER_STEPS = frozenset({AeStep.XSTORE, AeStep.XREAD})
_GC_STEPS = frozenset({AeStep.GCREAD, AeStep.PURGE})


def install(core: NodeCore, settings: AESettings, now_ms: int) -> AntiEntropy:
    return AntiEntropy(core, settings, now_ms)


class AntiEntropy:
    """The three parts on one node, plugged into its ``NodeCore``."""

    def __init__(self, core: NodeCore, settings: AESettings, now_ms: int) -> None:
        self.core = core
        self.s = settings
        for name in STAT_NAMES:
            core.stats.setdefault(name, 0)
        self.gc = TombstoneGc(core, settings)
        self.responder = AeResponder(core, settings)
        self.initiator = Initiator(core, settings, self.gc, now_ms)
        self.initiator.tick_all = self._tick
        core.handle_requests({m.AETree: self.responder.on_tree, m.AEExchange: self.responder.on_exchange,
                              m.AEGc: self.gc.on_gc, m.Repair: self.initiator.on_repair})
        core.handle_responses({m.AETreeResp: self.initiator.on_tree_resp,
                               m.AEExchangeResp: self.initiator.on_exchange_resp, m.AEGcResp: self.gc.on_gc_resp})
        core.handle_stored(StoreKind.AE, self._on_store)
        core.add_ticker(self._tick)

    # What the shell's busy probe and the tests look at.
    @property
    def session(self) -> Session | None:
        return self.initiator.session

    @property
    def pass_(self) -> Pass | None:
        return self.initiator.pass_

    @property
    def repairs(self) -> deque[RepairAsk]:
        return self.initiator.repairs

    @property
    def responders(self) -> dict[int, TreeBuild]:
        return self.responder.responders

    @property
    def serving(self) -> dict[int, ServedExchange]:
        return self.responder.serving

    @property
    def gc_round(self) -> GcRound | None:
        return self.gc.round

    @property
    def bucket(self) -> TokenBucket:
        return self.initiator.bucket

    @property
    def ring_stable_since_ms(self) -> int:
        return self.initiator.ring_stable_since_ms

    def _tick(self, now_ms: int, out: list[Any]) -> None:
        self.initiator.tick_session(now_ms, out)
        self.responder.tick(now_ms, out)
        self.gc.tick(now_ms, out)
        self.initiator.tick_passes(now_ms, out)

    def _on_store(self, token_: AeToken, ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        _, _, ref, step, extra = token_
        if step in _RESPONDER_STEPS:
            self.responder.on_stored(ref, step, extra, ok, result, out)
        elif step in _GC_STEPS:
            self.gc.on_stored(step, extra, ok, result, out)
        elif step == AeStep.RSCAN:
            self.responder.on_scanned(ref, ok, result, out)
        else:
            self.initiator.on_stored(ref, step, extra, ok, result, now_ms, out)


__all__ = [
    "AE_EFFECTS", "ENTRY_OVERHEAD_BYTES", "EXCHANGES_SERVING_MAX", "SESSION_ENTRY_BYTES_MAX", "SESSIONS_PER_PEER_MAX",
    "STAT_NAMES", "SUMMARY_NAMES", "AESettings", "AntiEntropy", "PurgeMany", "ReadMany", "ScanLocal",
    "gc_candidate", "gc_confirmed", "gc_holds", "install", "plist_of_token", "purge_applies", "ring_digest",
    "shares_ranges",
]
