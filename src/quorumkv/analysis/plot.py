"""Plots of PBS t-visibility curves (matplotlib, Agg backend, imported lazily).

The curve for each (R, W) pair is ``P(consistent read at t)`` from
:class:`quorumkv.analysis.pbs.PbsResult` — Bailis et al., VLDB 2012, Figure 5 style.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .pbs import DEFAULT_TARGET, PbsResult

#: At most this many (R, W) curves on one plot.
MAX_PLOT_CURVES = 8
#: Largest R or W among the automatically chosen partial-quorum pairs.
MAX_AUTO_QUORUM = 3
#: Points per curve.
PLOT_POINTS = 400
#: Minimum x-axis extent (ms), so all-strict plots still show something.
MIN_X_MAX_MS = 1.0


def default_plot_pairs(n: int, r: int, w: int) -> list[tuple[int, int]]:
    """The requested (R, W) plus small partial quorums (R + W <= N), at most MAX_PLOT_CURVES."""
    pairs = [(r, w)]
    limit = min(n, MAX_AUTO_QUORUM)
    for rr in range(1, limit + 1):
        for ww in range(1, limit + 1):
            if rr + ww <= n and (rr, ww) not in pairs and len(pairs) < MAX_PLOT_CURVES:
                pairs.append((rr, ww))
    return sorted(pairs)


def plot_t_visibility(
    results: Sequence[PbsResult],
    path: str | Path,
    target: float = DEFAULT_TARGET,
) -> Path:
    """Write a PNG of P(consistent) vs t for each result; return the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("nothing to plot")
    x_max = max([MIN_X_MAX_MS, *(res.t_visibility(target) * 1.1 for res in results)])
    ts = np.linspace(0.0, x_max, PLOT_POINTS)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for res in results:
            label = f"R={res.r}, W={res.w}" + (" (strict)" if res.r + res.w > res.n else "")
            ax.plot(ts, res.p_consistent(ts), label=label)
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g}")
        first = results[0]
        ax.set_title(f"PBS t-visibility, N={first.n}, profile {first.profile} ({first.trials:,} trials)")
        ax.set_xlabel("t: time after write commit (ms)")
        ax.set_ylabel("P(read sees the write)")
        ax.set_xlim(0.0, x_max)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        out = Path(path)
        fig.savefig(out, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
