"""``quorumkv math``: quorum arithmetic and PBS staleness from the command line.

Mounted by the main CLI as ``app.add_typer(math_app, name="math")``; also runnable
on its own with ``python -m quorumkv.cli.math``.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..analysis import pbs as pbs_lib
from ..analysis import quorum as quorum_lib

math_app = typer.Typer(
    help="Quorum math: exact intersection/availability figures and PBS staleness "
    "(Bailis et al., VLDB 2012).",
    no_args_is_help=True,
)

#: Read delays (ms after commit) shown in the human-readable PBS curve.
T_GRID_MS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


OutputOpt = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table (human) or json (one object).")
]


def _check_size(name: str, value: int, n: int) -> None:
    if not 1 <= value <= n:
        raise typer.BadParameter(f"must be between 1 and N={n} (got {value})", param_hint=f"--{name}")


def _check_n(n: int) -> None:
    if n < 1:
        raise typer.BadParameter(f"must be >= 1 (got {n})", param_hint="--n")


def _check_prob(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise typer.BadParameter(f"must be between 0 and 1 (got {value})", param_hint=f"--{name}")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _fmt_avail(x: float) -> str:
    """Availabilities near 1 need more digits to show their nines."""
    return f"{x:.12g}"


def _emit_json(obj: dict[str, object]) -> None:
    typer.echo(json.dumps(obj))


def _kv_table(title: str, rows: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for row in rows:
        table.add_row(*row)
    return table


@math_app.command("quorum")
def quorum_cmd(
    n: Annotated[int, typer.Option("--n", help="Replicas per key (N).")],
    r: Annotated[Optional[int], typer.Option("--r", help="Read quorum size (R).")] = None,
    w: Annotated[Optional[int], typer.Option("--w", help="Write quorum size (W).")] = None,
    k: Annotated[
        Optional[int], typer.Option("--k", help="Availability of a single K-of-N quorum instead.")
    ] = None,
    p: Annotated[
        float, typer.Option("--p", help="Probability each replica is independently unavailable.")
    ] = quorum_lib.DEFAULT_UNAVAILABILITY,
    k_versions: Annotated[
        int, typer.Option("--k-versions", help="Report PBS k-staleness for k = 1..K.")
    ] = quorum_lib.DEFAULT_K_VERSIONS,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Exact figures for an (N, R, W) configuration, or for one K-of-N quorum."""
    _check_n(n)
    _check_prob("p", p)
    if k is not None:
        if r is not None or w is not None:
            raise typer.BadParameter("use either --k or --r/--w, not both", param_hint="--k")
        _check_size("k", k, n)
        rep = quorum_lib.k_of_n_report(n, k, p)
        if output is OutputFormat.json:
            _emit_json(rep.to_dict())
            return
        Console().print(
            _kv_table(
                f"{k}-of-{n} quorum, replica unavailability p={p:g}",
                [
                    ("available", _fmt_avail(rep.available), f"P(at least {k} of {n} replicas up)"),
                    ("unavailable", _fmt(rep.unavailable), "1 - available"),
                    ("failures tolerated", str(rep.failures_tolerated), "N - K"),
                ],
            )
        )
        return
    if r is None or w is None:
        raise typer.BadParameter("give both --r and --w (or --k for a single quorum)", param_hint="--r/--w")
    _check_size("r", r, n)
    _check_size("w", w, n)
    if k_versions < 1:
        raise typer.BadParameter(f"must be >= 1 (got {k_versions})", param_hint="--k-versions")
    rep = quorum_lib.quorum_report(n, r, w, p, k_versions)
    if output is OutputFormat.json:
        _emit_json(rep.to_dict())
        return
    rows = [
        ("strict (R+W>N)", str(rep.strict), "every read quorum meets every write quorum"),
        ("write_overlap (2W>N)", str(rep.write_overlap), "any two write quorums share a replica"),
        ("read_failures_tolerated", str(rep.read_failures_tolerated), "N - R"),
        ("write_failures_tolerated", str(rep.write_failures_tolerated), "N - W"),
        ("read_available", _fmt_avail(rep.read_available), f"P(>= {r} of {n} up), p={p:g}"),
        ("read_unavailable", _fmt(rep.read_unavailable), "1 - read_available"),
        ("write_available", _fmt_avail(rep.write_available), f"P(>= {w} of {n} up), p={p:g}"),
        ("write_unavailable", _fmt(rep.write_unavailable), "1 - write_available"),
        (
            "p_stale_immediate",
            _fmt(rep.p_stale_immediate)
            + ("" if rep.strict else f" (= {rep.p_stale_immediate_exact})"),
            "C(N-W,R)/C(N,R): read misses the write just after it commits",
        ),
    ]
    rows += [
        (f"k_staleness k={row.k}", _fmt(row.p_stale), f"P(read returns none of the last {row.k} version(s))")
        for row in rep.k_staleness
    ]
    Console().print(_kv_table(f"N={n} R={r} W={w}", rows))


#: Exit codes of `math pbs` (as the main CLI): a file it cannot write, too few
#: samples, no node reachable.
EXIT_USAGE = 2
EXIT_TOO_FEW = 3
EXIT_UNREACHABLE = 4


def _check_writable(path: Optional[Path], hint: str) -> None:
    """Refuse, before any work, an output file whose directory does not exist."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise typer.BadParameter(f"directory {parent} does not exist", param_hint=hint)
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file name", param_hint=hint)


def _write_failed(path: Path, exc: OSError) -> None:
    _fail(EXIT_USAGE, f"cannot write {path}: {exc.strerror or exc}")


def _fail(code: int, message: str) -> None:
    Console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _live_samples(dir_: Optional[str], nodes: Optional[list[str]], min_samples: int) -> tuple[dict, dict]:
    """Pull every reachable node's WARS samples and merge them: (samples, info)."""
    from ..client import Client  # noqa: PLC0415 - only the live form talks to a cluster
    from ..errors import QuorumKVError  # noqa: PLC0415

    if nodes:
        addresses = list(nodes)
    else:
        from .localcluster import LocalCluster  # noqa: PLC0415

        cluster = LocalCluster(dir_)
        if not cluster.exists:
            raise typer.BadParameter(f"no cluster in {dir_}", param_hint="--dir")
        addresses = cluster.addresses()
    merged: dict[str, list[float]] = {k: [] for k in pbs_lib.WARS_KINDS}
    answered, unreachable, n_cluster = [], [], None
    for addr in addresses:
        try:
            with Client([addr], timeout_ms=5_000) as c:
                rep = c.latencies()
                if n_cluster is None:
                    n_cluster = c.ping().n
        except (QuorumKVError, OSError) as exc:
            unreachable.append(f"{addr} ({type(exc).__name__}: {exc})")
            continue
        answered.append(rep.node)
        for kind in pbs_lib.WARS_KINDS:
            merged[kind].extend(getattr(rep, kind))
    if not answered:
        _fail(EXIT_UNREACHABLE, "no node answered: " + "; ".join(unreachable))
    counts = {k: len(v) for k, v in merged.items()}
    if min(counts.values()) < min_samples:
        have = ", ".join(f"{k.upper()}={v}" for k, v in counts.items())
        _fail(EXIT_TOO_FEW, f"too few latency samples to predict from: {have} from {', '.join(answered)}; "
              f"need --min-samples={min_samples} of each. Send some traffic through the cluster first "
              "(reads give R/S samples, writes W/A; a node's own replica gives none).")
    info = {"samples": counts, "nodes": answered, "unreachable": unreachable, "cluster_n": n_cluster}
    return merged, info


def _load_profile(profile: Optional[str], latencies: Optional[Path]) -> pbs_lib.WarsProfile:
    if profile is not None and latencies is not None:
        raise typer.BadParameter("use either --profile or --latencies, not both", param_hint="--latencies")
    if latencies is not None:
        try:
            return pbs_lib.load_latency_file(latencies)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--latencies") from None
    try:
        return pbs_lib.get_profile(profile or "lnkd-ssd")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None


@math_app.command("pbs")
def pbs_cmd(
    n: Annotated[
        Optional[int], typer.Option("--n", help="Replicas per key (N); default 3, or the cluster's N.")
    ] = None,
    r: Annotated[int, typer.Option("--r", help="Read quorum size (R).")] = 1,
    w: Annotated[int, typer.Option("--w", help="Write quorum size (W).")] = 1,
    profile: Annotated[
        Optional[str],
        typer.Option(
            "--profile",
            help="lnkd-ssd (default), lnkd-disk, ymmr, exponential:LAMBDA, pareto:XM,ALPHA, constant:MS.",
        ),
    ] = None,
    t: Annotated[float, typer.Option("--t", help="Read starts t ms after the write commits.")] = 0.0,
    target: Annotated[
        float, typer.Option("--target", help="Probability target for t-visibility.")
    ] = pbs_lib.DEFAULT_TARGET,
    trials: Annotated[int, typer.Option("--trials", help="Monte Carlo trials.")] = pbs_lib.DEFAULT_TRIALS,
    seed: Annotated[int, typer.Option("--seed", help="Seed for numpy.random.default_rng.")] = 0,
    output: OutputOpt = OutputFormat.table,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write P(consistent) vs t for several (R, W) to this PNG.")
    ] = None,
    latencies: Annotated[
        Optional[Path],
        typer.Option("--latencies", help='JSON {"w": [...], "a": [...], "r": [...], "s": [...]} in ms.'),
    ] = None,
    dir: Annotated[
        Optional[str], typer.Option("--dir", help="Predict from the latencies a running cluster measured.")
    ] = None,
    node: Annotated[
        Optional[list[str]], typer.Option("--node", help="...or from these nodes, HOST:PORT (repeatable).")
    ] = None,
    min_samples: Annotated[
        int, typer.Option("--min-samples", help="With --dir/--node: refuse below this many samples of each kind.")
    ] = 100,
    save_latencies: Annotated[
        Optional[Path], typer.Option("--save-latencies", help="With --dir/--node: also write the samples (--latencies format).")
    ] = None,
) -> None:
    """PBS t-visibility by Monte Carlo over the WARS latency model (built-in, file or live)."""
    _check_writable(plot, "--plot")
    _check_writable(save_latencies, "--save-latencies")
    live = dir is not None or bool(node)
    live_info: dict = {}
    if live:
        if profile is not None or latencies is not None:
            raise typer.BadParameter("--dir/--node predict from live samples; drop --profile/--latencies",
                                     param_hint="--dir")
        if min_samples < 1:
            raise typer.BadParameter(f"must be >= 1 (got {min_samples})", param_hint="--min-samples")
        samples, live_info = _live_samples(dir, node, min_samples)
        if n is None:
            n = live_info["cluster_n"] or 3
        if save_latencies is not None:
            try:
                save_latencies.write_text(json.dumps(samples))
            except OSError as exc:
                _write_failed(save_latencies, exc)
    elif save_latencies is not None:
        raise typer.BadParameter("only with --dir/--node", param_hint="--save-latencies")
    n = 3 if n is None else n
    _check_n(n)
    _check_size("r", r, n)
    _check_size("w", w, n)
    _check_prob("target", target)
    if not (t >= 0 and math.isfinite(t)):
        raise typer.BadParameter(f"must be a non-negative number of ms (got {t})", param_hint="--t")
    if trials < 1:
        raise typer.BadParameter(f"must be >= 1 (got {trials})", param_hint="--trials")
    if seed < 0:
        raise typer.BadParameter(f"must be >= 0 (got {seed})", param_hint="--seed")
    if live:
        label = "live:" + ",".join(live_info["nodes"])
        prof = pbs_lib.profile_from_samples(samples["w"], samples["a"], samples["r"], samples["s"], name=label)
    else:
        prof = _load_profile(profile, latencies)

    if plot is not None:
        from ..analysis.plot import default_plot_pairs, plot_t_visibility

        pairs = default_plot_pairs(n, r, w)
        results = pbs_lib.simulate_many(prof, n, pairs, trials=trials, seed=seed)
        result = results[pairs.index((r, w))]
        try:
            plot_t_visibility(results, plot, target)
        except OSError as exc:
            _write_failed(plot, exc)
    else:
        result = pbs_lib.simulate(prof, n, r, w, trials=trials, seed=seed)

    report = pbs_lib.pbs_report(result, t, target)
    curve = [{"t_ms": tt, "p_consistent": result.p_consistent(tt)} for tt in T_GRID_MS]
    report["p_consistent_by_t"] = curve
    report["latency_model"] = prof.describe()
    if live:
        report["samples"] = live_info["samples"]
        report["nodes"] = live_info["nodes"]
        report["unreachable"] = live_info["unreachable"]
    if plot is not None:
        report["plot"] = str(plot)
    if output is OutputFormat.json:
        _emit_json(report)
        return

    console = Console()
    if live:
        counts = ", ".join(f"{k.upper()}={v:,}" for k, v in live_info["samples"].items())
        console.print(f"live samples from {', '.join(live_info['nodes'])}: {counts}", markup=False, highlight=False)
        for miss in live_info["unreachable"]:
            console.print(f"unreachable (skipped): {miss}", markup=False, highlight=False)
    rows = [
        ("p_consistent", _fmt(report["p_consistent"]), f"P(read {t:g} ms after commit sees the write)"),
        ("t_visibility_ms", _fmt(report["t_visibility_ms"]), f"smallest t with P(consistent) >= {target:g}"),
        ("p_stale_immediate", _fmt(report["p_stale_immediate"]), "closed form C(N-W,R)/C(N,R), no propagation"),
    ]
    for label, key in (("read latency", "read_latency_ms"), ("write latency", "write_latency_ms")):
        pct = report[key]
        rows.append((label, " / ".join(_fmt(v) for v in pct.values()), " / ".join(pct) + " (ms)"))
    console.print(
        _kv_table(
            f"PBS N={n} R={r} W={w}, profile {prof.name}, {trials:,} trials, seed {result.seed}", rows
        )
    )
    curve_table = Table(title="P(consistent) vs t")
    curve_table.add_column("t (ms)", justify="right")
    curve_table.add_column("P(consistent)", justify="right")
    for point in curve:
        curve_table.add_row(f"{point['t_ms']:g}", _fmt(point["p_consistent"]))
        if point["p_consistent"] >= 1.0:
            break
    console.print(curve_table)
    if plot is not None:
        console.print(f"plot written to {plot}")


def main() -> None:  # pragma: no cover - thin wrapper
    """Run ``math_app`` standalone."""
    math_app()


if __name__ == "__main__":  # pragma: no cover
    main()
