"""Checkers: judge a finished history (and the replicas' storage) after healing.

(a) **No acknowledged write lost.** Last-writer-wins means a later write may
    legitimately supersede an acked one, so "lost" is judged by version: after the
    faults heal, every key is read at R=ALL; the version found must be at least as
    new as the version of *every* acknowledged write to that key. Whatever else it
    is — the newest acked write, or a newer write whose outcome was fail/unknown
    (failed writes are not rolled back) — is fine. An acked write with a newer
    version than the final one vanished: that is a lost acknowledged write.

    Reported, not failed: ``skew_superseded`` — keys whose final write *completed
    before* an acked write to the same key was even invoked, yet won because its
    coordinator's clock was ahead. That is LWW under clock skew (Cassandra has the
    same property), not lost data; the HLC only orders writes whose timestamps a
    coordinator has seen.

(b) **No stale reads under strict quorums.** A read that returned version ``v``
    is stale if some write acknowledged *before the read was invoked* has a version
    newer than ``v`` (or ``v`` is "no record"). Counted for every run; a failure
    only when R + W > N, where quorum intersection promises it cannot happen.

(c) **Convergence.** Every replica of every key holds the same version once the
    faults have healed and the network is quiet. Reported always; expected (and a
    failure when false) only where the protocols promise it — see
    ``convergence_expected``. Until hinted handoff / read repair / anti-entropy
    exist (issue 3) that is fault-free runs only.
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


def convergence_expected(cfg: SimConfig) -> bool:
    if cfg.bug is not None:
        return False
    return not cfg.faults or RECOVERY_PROTOCOLS


@dataclass
class Verdict:
    acked_writes: int = 0
    lost_acked_writes: int = 0
    reads: int = 0
    stale_reads: int = 0
    converged: bool = True
    divergent_keys: int = 0
    skew_superseded: int = 0
    final_reads_failed: int = 0
    unversioned_acked_writes: int = 0  # harness could not see the version (should stay 0)
    examples: dict[str, list] = field(default_factory=dict)

    def example(self, kind: str, item) -> None:
        items = self.examples.setdefault(kind, [])
        if len(items) < EXAMPLES_MAX:
            items.append(item)


def _vkey(v: Version | None):
    return (-1, "") if v is None else v.key()


def _describe(op: Op) -> dict:
    return {"op": op.op_id, "client": op.client, "f": op.kind, "key": op.key.decode(errors="replace"),
            "node": op.node, "invoke_us": op.invoke_us, "complete_us": op.complete_us,
            "version": str(op.version) if op.version else None}


def check(history: History, final: dict[bytes, Op], replica_versions) -> Verdict:
    """``replica_versions(key) -> {replica: Version | None}`` (from the sim storage)."""
    v = Verdict()
    acked: dict[bytes, list[Op]] = {}
    writes_by_version: dict[tuple, Op] = {}
    for op in history.ops:
        if op.is_write:
            if op.version is not None:
                writes_by_version[(op.key, op.version.key())] = op
            if op.outcome == OK:
                v.acked_writes += 1
                if op.version is None:
                    v.unversioned_acked_writes += 1
                    continue
                acked.setdefault(op.key, []).append(op)
        elif op.client >= 0:
            v.reads += op.outcome == OK

    # (a) lost acknowledged writes, judged against the final read at ALL
    for key, fin in sorted(final.items()):
        if fin.outcome != OK:
            v.final_reads_failed += 1
            v.example("final_read_failed", _describe(fin))
            continue
        vf = fin.version
        winner = writes_by_version.get((key, vf.key())) if vf is not None else None
        superseded = False
        for op in acked.get(key, ()):
            if vf is None or op.version.newer_than(vf):
                v.lost_acked_writes += 1
                v.example("lost_acked_write", dict(_describe(op), final=str(vf) if vf else None))
            elif (winner is not None and winner is not op and winner.complete_us is not None
                  and winner.complete_us < op.invoke_us):
                superseded = True
        v.skew_superseded += superseded

    # (b) stale reads: newer than the newest write acked before the read began
    prefix: dict[bytes, tuple[list[int], list]] = {}
    for key, ops in acked.items():
        ops = sorted(ops, key=lambda o: (o.complete_us, o.op_id))
        times, best, newest = [], [], None
        for op in ops:
            if newest is None or op.version.newer_than(newest.version):
                newest = op
            times.append(op.complete_us)
            best.append(newest)
        prefix[key] = (times, best)
    for op in history.ops:
        if op.is_write or op.outcome != OK or op.key not in prefix:
            continue
        times, best = prefix[op.key]
        i = bisect.bisect_left(times, op.invoke_us)  # acked strictly before the invoke
        if i and (op.version is None or best[i - 1].version.newer_than(op.version)):
            v.stale_reads += 1
            v.example("stale_read", dict(_describe(op), missed=_describe(best[i - 1])))

    # (c) convergence of the replicas' storage
    for key in sorted(final):
        versions = replica_versions(key)
        if len({_vkey(x) for x in versions.values()}) > 1:
            v.divergent_keys += 1
            v.example("divergent_key", {"key": key.decode(errors="replace"),
                                        "replicas": {r: str(x) if x else None for r, x in versions.items()}})
    v.converged = v.divergent_keys == 0
    return v
