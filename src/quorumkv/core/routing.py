"""Replica choice by state and load (the seed's step 3, done properly).

* Writes go to every live primary; a primary known to be down or suspect is
  replaced by the next live node further round the ring, which keeps the write as
  a *hint* for it (Dynamo's sloppy quorum; riak_core_apl: "the primaries that are
  up, then fallbacks"). With ``primary_only`` no fallback is used and only
  primaries count.
* Reads go to the R best candidates — live primaries ranked by recent latency and
  requests in flight (Cassandra's dynamic snitch, in small) — keeping the rest as
  spares for a speculative retry or to replace a replica that fails.
"""

from __future__ import annotations

from collections.abc import Callable

#: Weight of a new latency sample in the moving average (Cassandra's dynamic
#: snitch decays similarly; 0.2 follows a change within ~10 requests).
EWMA_ALPHA = 0.2
#: Latency assumed for a replica we have not measured yet.
LATENCY_MS_UNKNOWN = 1.0


class LoadTracker:
    """Recent latency and requests in flight per replica, fed by the coordinator."""

    __slots__ = ("latency_ms", "inflight")

    def __init__(self) -> None:
        self.latency_ms: dict[str, float] = {}
        self.inflight: dict[str, int] = {}

    def sent(self, node: str) -> None:
        self.inflight[node] = self.inflight.get(node, 0) + 1

    def done(self, node: str, latency_ms: float | None) -> None:
        n = self.inflight.get(node, 0)
        self.inflight[node] = n - 1 if n > 0 else 0
        if latency_ms is not None:
            old = self.latency_ms.get(node)
            self.latency_ms[node] = latency_ms if old is None else old + EWMA_ALPHA * (latency_ms - old)

    def score(self, node: str) -> float:
        # A tenth of a millisecond floor keeps loopback replicas comparable by load.
        return max(self.latency_ms.get(node, LATENCY_MS_UNKNOWN), 0.1) * (1 + self.inflight.get(node, 0))


def write_targets(primaries: tuple[str, ...], ring_order: tuple[str, ...],
                  is_alive: Callable[[str], bool], primary_only: bool = False) -> list[tuple[str, str | None]]:
    """``[(node, hint_for)]``: live primaries (hint_for None) then fallbacks for the dead."""
    targets: list[tuple[str, str | None]] = []
    dead: list[str] = []
    for p in primaries:  # one liveness check per primary: this runs for every write
        if is_alive(p):
            targets.append((p, None))
        else:
            dead.append(p)
    if dead and not primary_only:
        taken = set(primaries)
        candidates = [n for n in ring_order if n not in taken and is_alive(n)]
        for owner, fallback in zip(dead, candidates):
            targets.append((fallback, owner))
    return targets


def read_targets(primaries: tuple[str, ...], ring_order: tuple[str, ...], is_alive: Callable[[str], bool],
                 load: LoadTracker, self_id: str, primary_only: bool = False) -> list[tuple[str, str | None]]:
    """Every candidate for a read, best first: live primaries by score, then fallbacks.

    The coordinator sends to the first R and keeps the rest as spares.
    """
    # LoadTracker.score inlined: this runs for every read.
    latency, inflight = load.latency_ms, load.inflight
    ranked = []
    for i, p in enumerate(primaries):
        if is_alive(p):
            # Ties (common on loopback) go to this node itself, then ring order.
            ranked.append((max(latency.get(p, LATENCY_MS_UNKNOWN), 0.1) * (1 + inflight.get(p, 0)),
                           p != self_id, i, p))
    ranked.sort()
    out: list[tuple[str, str | None]] = [(p, None) for _, _, _, p in ranked]
    if not primary_only and len(ranked) < len(primaries):
        out += [t for t in write_targets(primaries, ring_order, is_alive) if t[1] is not None]
    return out


def joint_read_targets(candidates: list[tuple[str, str | None]], groups: list[tuple[frozenset[str], int]],
                       all_primaries: bool = False) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """Split read ``candidates`` (best first) into targets and spares for a joint
    round: take a candidate while some group it belongs to (by the node it stands
    for) still needs replies, so each group gets its count from its best replicas.
    ``all_primaries``: every live primary is a target too (``read_all_replicas``)."""
    counts = [0] * len(groups)
    targets, spares = [], []
    for node, owner in candidates:
        ident = owner or node
        mine = [i for i, (members, _) in enumerate(groups) if ident in members]
        if any(counts[i] < groups[i][1] for i in mine) or (all_primaries and owner is None):
            targets.append((node, owner))
            for i in mine:
                counts[i] += 1
        else:
            spares.append((node, owner))
    return targets, spares
