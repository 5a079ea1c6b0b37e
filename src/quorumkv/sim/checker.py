"""Checkers: judge a finished history (and the replicas' storage) after healing.

They judge by **real time** — the invoke and completion times the clients saw —
never by the versions the cluster chose: a version is the system's opinion of the
order, and the checker exists to catch the system being wrong (clock skew can
make a later write carry an older version).

Every put writes a value never written before, so a read's value names the write
that produced it. A read that finds nothing names "some delete (or the key's
initial absence)". Writes whose outcome is ``fail`` or ``unknown`` may still land
(quorumkv does not roll back), so their effect may appear any time after their
invocation; only an *acknowledged* write has a known completion time. A write
refused outright (``INVALID``/``OVERLOADED``, connection refused) had no effect.

Terms, for a write ``W``: ``W`` is *before* ``X`` when ``W`` was acknowledged
before ``X`` was invoked (Jepsen's real-time order). Anything else is concurrent.

(a) **No acknowledged write lost.** After the faults heal, every key is read at
    ALL (``final``). For each acknowledged write ``W`` of the key, the final
    value must come from ``W`` itself or from a write *not before* ``W`` (a
    concurrent or later write, acked or not). A final value from a write that was
    acknowledged before ``W`` was even invoked means ``W`` was lost — whatever
    the versions say (the old ``skew_superseded`` excuse is gone: a client that
    writes v1, is told "ok", then writes v2 and is told "ok" must find v2). When
    ``W`` is a delete, that final value is a **resurrection**.

(b) **No stale strict reads.** A read that returned the value of write ``X`` is
    stale if some write ``W`` acknowledged before the read was invoked had ``X``
    before it (``X`` acknowledged before ``W`` was invoked). A read that found
    nothing is stale if such a ``W`` is a put and every delete that could explain
    "nothing" was acknowledged before ``W`` was invoked. Counted for every run;
    a failure only for strict quorums (R + W > N) with ``primary_only`` — a
    sloppy quorum (fallbacks count) does not promise it (docs/consistency.md).

(c) **No resurrection.** A read invoked after delete ``D`` was acknowledged that
    returns the value of a write acknowledged before ``D`` was invoked. Judged
    on the final reads at ALL always, and on strict reads as (b) is.

(d) **Convergence.** Every replica (under the ring *after* all changes) of every
    key holds the same version once the faults have healed and the network is
    quiet. Expected after any healed fault (hinted handoff, read repair and
    anti-entropy run in the simulator); runs with a seeded bug excepted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..core.version import Version
from .config import SimConfig
from .history import OK, History, Op

#: The recovery protocols (hinted handoff, read repair, anti-entropy) run in the
#: simulator, so replicas must converge after *any* healed fault.
RECOVERY_PROTOCOLS = True
#: Examples of each violation kept in the report (the counts are complete).
EXAMPLES_MAX = 5
INF = float("inf")


def convergence_expected(cfg: SimConfig) -> bool:
    if cfg.bug is not None:
        return False
    return not cfg.faults or RECOVERY_PROTOCOLS


def strict_reads_promised(cfg: SimConfig) -> bool:
    """Reads that must see every write acknowledged before they began: R + W > N
    and only primaries count (a sloppy quorum's fallbacks break intersection)."""
    return cfg.strict and cfg.primary_only


@dataclass
class Verdict:
    acked_writes: int = 0
    lost_acked_writes: int = 0
    resurrections: int = 0  # final reads and judged reads returning a value deleted before
    reads: int = 0
    stale_reads: int = 0
    converged: bool = True
    divergent_keys: int = 0
    final_reads_failed: int = 0
    #: of lost_acked_writes / resurrections / stale_reads: those where the two
    #: operations came from *different* clients (no session links them; only real
    #: time orders them — what clock skew within the bound can still break)
    lost_cross_session: int = 0
    resurrections_cross_session: int = 0
    stale_cross_session: int = 0
    unknown_values: int = 0  # a read returned a value no write wrote (should stay 0)
    examples: dict[str, list] = field(default_factory=dict)

    def example(self, kind: str, item) -> None:
        items = self.examples.setdefault(kind, [])
        if len(items) < EXAMPLES_MAX:
            items.append(item)


def _vkey(v: Version | None):
    return (-1, "") if v is None else v.key()


def describe(op: Op | None) -> dict | None:
    if op is None:
        return None
    return {"op": op.op_id, "client": op.client, "f": op.kind, "key": op.key.decode(errors="replace"),
            "value": op.value.decode(errors="replace") if op.value is not None else None,
            "node": op.node, "invoke_us": op.invoke_us, "complete_us": op.complete_us, "outcome": op.outcome,
            "version": str(op.version) if op.version else None}


def _acked_at(op: Op) -> float:
    """When the write was known to have happened: its ack, else never (it may land any time)."""
    return op.complete_us if op.outcome == OK else INF


class _KeyWrites:
    """One key's writes, indexed for the real-time questions the checkers ask."""

    def __init__(self, writes: list[Op]) -> None:
        self.by_value = {op.value: op for op in writes if op.kind == "put" and op.value is not None}
        self.deletes = [op for op in writes if op.kind == "del"]
        acked = sorted((op for op in writes if op.outcome == OK), key=lambda o: (o.complete_us, o.op_id))
        self.acked = acked
        self.acked_times = [op.complete_us for op in acked]
        # prefix maxima over acked writes in ack order: latest invoke of any write / of any put
        self.max_invoke: list[tuple[int, Op]] = []
        self.max_put_invoke: list[tuple[int, Op | None]] = []
        best = best_put = None
        for op in acked:
            if best is None or op.invoke_us > best.invoke_us:
                best = op
            if op.kind == "put" and (best_put is None or op.invoke_us > best_put.invoke_us):
                best_put = op
            self.max_invoke.append((best.invoke_us, best))
            self.max_put_invoke.append((best_put.invoke_us if best_put else -1, best_put))

    def acked_before(self, t_us: int) -> int:
        """How many writes were acknowledged strictly before ``t_us``."""
        return bisect.bisect_left(self.acked_times, t_us)

    def not_found_explained_after(self, t_us: float, read_complete_us: float) -> bool:
        """Some delete invoked before the read completed is not before ``t_us``
        (could have landed after a write invoked at ``t_us``)."""
        return any(d.invoke_us < read_complete_us and _acked_at(d) >= t_us for d in self.deletes)


def check(history: History, final: dict[bytes, Op], replica_versions, judge_reads: bool = True) -> Verdict:
    """``replica_versions(key) -> {replica: Version | None}`` (storage, ring after changes).

    ``judge_reads``: apply (b) and (c) to the workload's reads (strict runs); the
    final reads at ALL are always judged.
    """
    v = Verdict()
    writes: dict[bytes, list[Op]] = {}
    for op in history.ops:
        if op.is_write:
            if op.no_effect:
                continue
            writes.setdefault(op.key, []).append(op)
            v.acked_writes += op.outcome == OK
        elif op.client >= 0:
            v.reads += op.outcome == OK
    index = {key: _KeyWrites(ops) for key, ops in writes.items()}
    empty = _KeyWrites([])

    # (a) lost acknowledged writes and (c) resurrections, against the final read at ALL
    for key, fin in sorted(final.items()):
        if fin.outcome != OK:
            v.final_reads_failed += 1
            v.example("final_read_failed", describe(fin))
            continue
        kw = index.get(key, empty)
        source = kw.by_value.get(fin.value) if fin.value is not None else None
        if fin.value is not None and source is None:
            v.unknown_values += 1
            v.example("unknown_value", describe(fin))
            continue
        for w in kw.acked:
            if w is source:
                continue
            if source is not None:
                ok = _acked_at(source) >= w.invoke_us  # the final write is not before w
            else:  # nothing found: some delete not before w must explain it
                ok = w.kind == "del" or kw.not_found_explained_after(w.invoke_us, INF)
            if ok:
                continue
            cross = source is None or source.client != w.client
            if w.kind == "del":
                v.resurrections += 1
                v.resurrections_cross_session += cross
                v.example("resurrection", {"delete": describe(w), "final": describe(fin),
                                           "came_back": describe(source)})
            else:
                v.lost_acked_writes += 1
                v.lost_cross_session += cross
                v.example("lost_acked_write", {"write": describe(w), "final": describe(fin),
                                               "instead": describe(source)})

    # (b) stale reads and (c) resurrections by reads during the run
    for op in history.ops:
        if op.is_write or op.outcome != OK or op.client < 0:
            continue
        kw = index.get(op.key)
        if kw is None:
            continue
        i = kw.acked_before(op.invoke_us)
        if not i:
            continue
        if op.value is not None:
            source = kw.by_value.get(op.value)
            if source is None:
                v.unknown_values += 1
                v.example("unknown_value", describe(op))
                continue
            latest_invoke, missed = kw.max_invoke[i - 1]
            if _acked_at(source) < latest_invoke:
                v.stale_reads += 1
                v.stale_cross_session += missed.client != op.client
                v.example("stale_read", {"read": describe(op), "missed": describe(missed),
                                         "returned": describe(source)})
                if judge_reads and _resurrected(kw, source, op):
                    v.resurrections += 1
                    v.resurrections_cross_session += 1
                    v.example("resurrection", {"read": describe(op), "came_back": describe(source)})
        else:
            latest_put_invoke, missed = kw.max_put_invoke[i - 1]
            if missed is not None and not kw.not_found_explained_after(latest_put_invoke, op.complete_us):
                v.stale_reads += 1
                v.stale_cross_session += missed.client != op.client
                v.example("stale_read", {"read": describe(op), "missed": describe(missed), "returned": None})

    # (d) convergence of the replicas' storage
    for key in sorted(final):
        versions = replica_versions(key)
        if len({_vkey(x) for x in versions.values()}) > 1:
            v.divergent_keys += 1
            v.example("divergent_key", {"key": key.decode(errors="replace"),
                                        "replicas": {r: str(x) if x else None for r, x in versions.items()}})
    v.converged = v.divergent_keys == 0
    return v


def _resurrected(kw: _KeyWrites, source: Op, read: Op) -> bool:
    """A delete acknowledged before ``read`` began was invoked after ``source`` was acked."""
    return any(d.outcome == OK and d.complete_us < read.invoke_us and _acked_at(source) < d.invoke_us
               for d in kw.deletes)


# ------------------------------------------------------------ causal mode (issue 15)
@dataclass
class CausalVerdict:
    """The causal check: no acknowledged causal-mode write lost.

    Judged by what clients *observed*, not by the dots the cluster chose: a write
    ``X`` *saw* value ``v`` when the context ``X`` carried came from a read (by
    ``X``'s client) that returned ``v`` among its siblings.

    * **lost**: an acknowledged put of ``v`` that is not among the final siblings
      (read at ALL after healing) although no write that may have landed saw ``v``.
    * **resurrected**: ``v`` is among the final siblings although an *acknowledged*
      write saw it (its context supersedes ``v`` wherever it lands).
    * **convergence**: every replica holds the same version *and* state digest.
    """

    acked_writes: int = 0
    superseded: int = 0  # acked puts gone because a write saw them: allowed
    lost_acked_writes: int = 0
    resurrections: int = 0
    unknown_values: int = 0
    final_reads_failed: int = 0
    siblings_max: int = 0  # the most siblings one final read returned
    keys_with_siblings: int = 0
    divergent_keys: int = 0
    examples: dict[str, list] = field(default_factory=dict)

    def example(self, kind: str, item) -> None:
        items = self.examples.setdefault(kind, [])
        if len(items) < EXAMPLES_MAX:
            items.append(item)

    @property
    def ok(self) -> bool:
        return not (self.lost_acked_writes or self.resurrections or self.unknown_values
                    or self.final_reads_failed or self.divergent_keys)


def check_causal(history: History, final: dict[bytes, Op], saw: dict[int, frozenset],
                 replica_versions) -> CausalVerdict:
    """``saw``: op id of each causal write -> the values its context had seen."""
    from ..core import dvv, typed
    from ..core.version import Record

    v = CausalVerdict()
    writes: dict[bytes, list[Op]] = {}
    for op in history.ops:
        if op.is_write and not op.no_effect:
            writes.setdefault(op.key, []).append(op)
    for key, fin in sorted(final.items()):
        if fin.outcome != OK:
            v.final_reads_failed += 1
            v.example("final_read_failed", describe(fin))
            continue
        siblings: set[bytes] = set()
        if fin.value is not None:
            siblings = set(dvv.values(typed.state_of(Record(fin.version, fin.value), typed.CAUSAL, 0)))
        v.siblings_max = max(v.siblings_max, len(siblings))
        v.keys_with_siblings += len(siblings) > 1
        ops = writes.get(key, [])
        written = {op.value for op in ops if op.kind == "put"}
        for value in siblings - written:
            v.unknown_values += 1
            v.example("unknown_value", {"key": key.decode(errors="replace"), "value": value.decode(errors="replace")})
        seen_by_any = set().union(*(saw.get(op.op_id, frozenset()) for op in ops))
        seen_by_acked = set().union(*(saw.get(op.op_id, frozenset()) for op in ops if op.outcome == OK))
        for w in ops:
            if w.kind != "put" or w.outcome != OK:
                continue
            v.acked_writes += 1
            if w.value in siblings:
                if w.value in seen_by_acked:
                    v.resurrections += 1
                    v.example("resurrection", describe(w))
            elif w.value in seen_by_any:
                v.superseded += 1
            else:
                v.lost_acked_writes += 1
                v.example("lost_acked_write", {"write": describe(w), "final_siblings": sorted(
                    s.decode(errors="replace") for s in siblings)})
    for key in sorted(final):
        states = {(x.key(), (x.ctx or {}).get("h")) if x else None for x in replica_versions(key).values()}
        if len(states) > 1:
            v.divergent_keys += 1
            v.example("divergent_key", {"key": key.decode(errors="replace"),
                                        "replicas": {r: str(x) if x else None
                                                     for r, x in replica_versions(key).items()}})
    return v
