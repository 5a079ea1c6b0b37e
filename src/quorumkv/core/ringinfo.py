"""What a ring looks like to an operator (``quorumkv ring``, ``cluster status``,
the ``quorumkv_ring_ownership_ratio`` metric): pure functions of a ``Ring``.

A vnode token ``t[i]`` ends the arc ``(t[i-1], t[i]]`` of the 64-bit token space;
keys hashing into it go to the preference list of position ``i``. A node's
*primary* share is the arcs it is first on; its *effective* share (Cassandra's
"Owns (effective)") the arcs it is any replica of — the shares sum to N.
"""

from __future__ import annotations

from .ring import Ring

TOKEN_SPACE = 1 << 64


def arcs(ring: Ring) -> list[tuple[int, int, tuple[str, ...]]]:
    """``[(start_exclusive, end_inclusive, preference_list)]`` in token order; the
    first arc wraps round from the last token."""
    tokens = ring.tokens
    out = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else tokens[-1]
        out.append((prev, tok, ring.preference_list_of_token(tok)))
    return out


def _size(start: int, end: int) -> int:
    return (end - start) % TOKEN_SPACE or TOKEN_SPACE


def ownership(ring: Ring) -> dict[str, dict[str, float]]:
    """Per node: ``primary`` and ``effective`` shares of the key space (0..1) and
    ``vnodes`` (tokens it holds)."""
    out = {node: {"primary": 0.0, "effective": 0.0, "vnodes": 0} for node in ring.nodes}
    for start, end, plist in arcs(ring):
        share = _size(start, end) / TOKEN_SPACE if len(ring.tokens) > 1 else 1.0
        out[plist[0]]["primary"] += share
        out[plist[0]]["vnodes"] += 1
        for node in plist:
            out[node]["effective"] += share
    return out
