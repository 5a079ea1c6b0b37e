"""Tombstone GC that cannot resurrect a delete (the rule: ``core/antientropy.py``).

The ``gc_*`` functions are the rule; ``TombstoneGc`` runs it: the key's first
primary drives a round (its candidates come from the initiator's first scan,
``ae_session.py``), asks every other ring member whether it holds each tombstone
(``AEGc`` check), and only when all said yes asks each, and itself, to purge exactly
that version. It also answers other drivers' checks and purges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from . import messages_ae as m
from .ae_common import AeStep, AESettings, PurgeMany, ReadMany, ae_token
from .effects import Log, Respond, Send
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore


def gc_candidate(rec: Record, plist: tuple[str, ...], me: str, wall_ms: int, grace_ms: int) -> bool:
    """A tombstone this node should try to purge: it is the key's first primary
    (one driver per key) and the tombstone is older than the grace period at wall
    time ``wall_ms`` (its version's timestamp is wall time)."""
    return rec.value is None and bool(plist) and plist[0] == me and wall_ms - rec.version.wall_ms >= grace_ms


def gc_holds(local: Record | None, version: Version, replica: bool = True) -> bool:
    """A node's answer to a GC check. A replica: it holds that tombstone or something
    newer. Any other ring member: it holds nothing older — a leftover copy of a range
    it lost (no cleanup ran) could become a replica again or be read one day, so an
    older one stops the purge until ``quorumkv cleanup`` drops it."""
    if local is None:
        return not replica
    return not version.newer_than(local.version)


def gc_confirmed(others: tuple[str, ...], held_by: set[str]) -> bool:
    """Purge only when every other ring member said yes (``gc_holds``)."""
    return all(p in held_by for p in others)


def purge_applies(local: Record | None, version: Version) -> bool:
    """What every engine's ``purge`` checks: the stored record is exactly that tombstone."""
    return local is not None and local.value is None and local.version.key() == version.key()


class GcCandidate(NamedTuple):
    """A tombstone a round tries to purge, and the members that must all say yes."""

    key: bytes
    version: Version
    others: tuple[str, ...]


class GcAsk(NamedTuple):
    """A GC check out to one member: the entries it was asked about, in order."""

    peer: str
    entries: list[tuple[bytes, Version]]


class GcCheck(NamedTuple):
    """``AeStep.GCREAD``'s extra: whom to answer about which entries."""

    conn: object
    req_id: int
    entries: list[tuple[bytes, Version]]


class GcPurge(NamedTuple):
    """``AeStep.PURGE``'s extra: whom to answer (``conn`` None: the driver's own purge)."""

    conn: object
    req_id: int


@dataclass(slots=True)
class GcRound:
    candidates: list[GcCandidate]
    deadline_ms: int
    waiting: dict[int, GcAsk] = field(default_factory=dict)  # request id -> the check it answers
    held: dict[bytes, set[str]] = field(default_factory=dict)  # key -> members that hold it
    purging: bool = False


def _by_peer(cands: list[GcCandidate]) -> dict[str, list[tuple[bytes, Version]]]:
    by_peer: dict[str, list[tuple[bytes, Version]]] = {}
    for key, ver, others in cands:
        for p in others:
            by_peer.setdefault(p, []).append((key, ver))
    return by_peer


class TombstoneGc:
    """One GC round at a time (driver), and the answers to other drivers (member)."""

    def __init__(self, core: NodeCore, settings: AESettings) -> None:
        self.core = core
        self.s = settings
        self.round: GcRound | None = None

    # ------------------------------------------------------------------- driver
    def start(self, candidates: list[GcCandidate], now_ms: int, out: list[Any]) -> None:
        assert self.round is None, "one GC round at a time"
        core = self.core
        members = tuple(p for p in core.ring.nodes if p != core.node_id) if core.ring is not None else ()
        if not all(core.is_alive(p) for p in members):
            return  # a down member may hold a primary's copy or a leftover: not now
        # Every member is asked (primaries: hold it; the others: hold nothing older).
        cands = [GcCandidate(c.key, c.version, members) for c in candidates]
        if not cands:
            return
        core.stats["gc_rounds"] += 1
        core.stats["gc_tombstones_checked"] += len(cands)
        g = self.round = GcRound(cands, now_ms + self.s.request_timeout_ms)
        for peer, entries in _by_peer(cands).items():
            rid = core.new_op_id()
            g.waiting[rid] = GcAsk(peer, entries)
            out.append(Send(peer, m.AEGc(rid, entries, False)))
        if not g.waiting:
            self._decide(now_ms, out)

    def on_gc_resp(self, peer: str, msg: m.AEGcResp, now_ms: int, out: list[Any]) -> None:
        g = self.round
        if g is None or g.purging or msg.id not in g.waiting:
            return
        who, entries = g.waiting.pop(msg.id)
        for (key, _), held in zip(entries, msg.held):
            if held:
                g.held.setdefault(key, set()).add(who)
        if not g.waiting:
            self._decide(now_ms, out)

    def tick(self, now_ms: int, out: list[Any]) -> None:
        g = self.round
        if g is not None and not g.purging and now_ms >= g.deadline_ms:
            self._decide(now_ms, out)

    def _decide(self, now_ms: int, out: list[Any]) -> None:
        """All answers are in (or the deadline passed: silence counts as "no")."""
        g = self.round
        assert g is not None and not g.purging
        g.purging = True
        confirmed = [c for c in g.candidates if gc_confirmed(c.others, g.held.get(c.key, set()))]
        if not confirmed:
            self.round = None
            return
        self.core.stats["gc_tombstones_confirmed"] += len(confirmed)
        for peer, entries in _by_peer(confirmed).items():
            out.append(Send(peer, m.AEGc(self.core.new_op_id(), entries, True)))
        out.append(PurgeMany(ae_token(0, AeStep.PURGE, GcPurge(None, 0)), [(c.key, c.version) for c in confirmed]))
        out.append(Log("info", "tombstones_purged", {"count": len(confirmed)}))

    # ------------------------------------------------------------------- member
    def on_gc(self, conn: object, msg: m.AEGc, now_ms: int, out: list[Any]) -> None:
        entries = list(msg.entries)
        if msg.purge:
            out.append(PurgeMany(ae_token(msg.id, AeStep.PURGE, GcPurge(conn, msg.id)), entries))
        else:
            out.append(ReadMany(ae_token(msg.id, AeStep.GCREAD, GcCheck(conn, msg.id, entries)),
                                [k for k, _ in entries]))

    def on_stored(self, step: AeStep, extra: Any, ok: bool, result: Any, out: list[Any]) -> None:
        if step == AeStep.GCREAD:  # a ring member answering a GC check
            conn, req_id, entries = extra
            ring, me = self.core.ring, self.core.node_id
            held = [ok and ring is not None and gc_holds(rec, ver, me in ring.preference_list(key))
                    for rec, (key, ver) in zip(result if ok else [None] * len(entries), entries)]
            out.append(Respond(conn, m.AEGcResp(req_id, held)))
            return
        assert step == AeStep.PURGE, step
        conn, req_id = extra
        if ok:
            self.core.stats["tombstones_purged"] += result
        if conn is not None:
            out.append(Respond(conn, m.AEGcResp(req_id, [])))
        elif self.round is not None:
            self.round = None  # the driver's own purge is durable: round over
