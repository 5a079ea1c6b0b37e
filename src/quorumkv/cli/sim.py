"""``quorumkv sim``: run the deterministic cluster simulator from the command line.

Registered by the main CLI as a plain command::

    from .sim import sim_command
    app.command("sim")(sim_command)

``sim_app`` wraps the same function as a one-command Typer app for tests and for
``python -m quorumkv.cli.sim``.

Exit codes: 0 the run passed every checker; 1 a checker failed (the one-line
command that reproduces the run is printed on stderr, and is the ``command`` key
with ``-o json``); 2 bad usage.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Annotated, Optional

import typer

from ..sim import BUGS, FAULTS, SimConfig, measure_staleness, parse_faults, run

EXIT_FAILED = 1
EXIT_USAGE = 2

#: Keys of the summary shown without ``-o json`` (json shows everything).
_TABLE_KEYS = ("seed", "nodes", "n", "r", "w", "strict", "profile", "faults", "bug", "ops", "acked_writes",
               "failed_writes", "unknown_writes", "lost_acked_writes", "reads", "failed_reads",
               "stale_reads", "strict_stale_reads", "resurrections", "converged", "convergence_expected",
               "faults_injected", "ring_changes_unfinished", "ring", "virtual_ms",
               "wall_s", "ops_per_wall_s", "history_sha256")


def _usage(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


def sim_command(
    seed: Annotated[Optional[int], typer.Option(help="Seed of the run (default: a fresh one, printed).")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes in the simulated cluster.")] = 5,
    n: Annotated[int, typer.Option("--n", help="Replicas per key (N).")] = 3,
    r: Annotated[int, typer.Option("--r", help="Read quorum R.")] = 2,
    w: Annotated[int, typer.Option("--w", help="Write quorum W.")] = 2,
    ops: Annotated[int, typer.Option(help="Client operations to run.")] = 1_000,
    clients: Annotated[int, typer.Option(help="Concurrent simulated clients.")] = 10,
    keys: Annotated[int, typer.Option(help="Size of the key space.")] = 10,
    faults: Annotated[str, typer.Option(
        help=f"Comma-separated faults: {', '.join(FAULTS)}; or all / none.")] = "none",
    profile: Annotated[str, typer.Option(
        help="Latency profile (quorumkv.analysis.pbs): lnkd-ssd, lnkd-disk, ymmr, exponential:L, "
             "pareto:XM,A, constant:MS.")] = "lnkd-ssd",
    bug: Annotated[Optional[str], typer.Option(help=f"Inject a seeded bug: {', '.join(BUGS)}.")] = None,
    primary_only: Annotated[bool, typer.Option(
        "--primary-only", help="Requests count only primaries toward R/W (Riak pr/pw), no sloppy quorum.")] = False,
    swarm: Annotated[bool, typer.Option(
        "--swarm", help="Swarm testing: the seed draws which of --faults are on, and how often each acts.")] = False,
    skew_ms_max: Annotated[int, typer.Option(
        "--skew-ms-max", help="skew fault: bound on any node's clock offset (ms).")] = 500,
    history: Annotated[Optional[str], typer.Option(help="Write the history (JSON lines) to this file.")] = None,
    pbs_t: Annotated[Optional[float], typer.Option(
        "--pbs-t", help="Measurement mode: stale-read fraction of reads issued this many ms after a "
                        "write commits, against the PBS math.")] = None,
    trials: Annotated[int, typer.Option(help="Measurement mode: write-then-read trials.")] = 4_000,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
) -> None:
    """Simulate a cluster of real NodeCores under a virtual clock, faults and a workload; check it."""
    if output not in ("table", "json"):
        _usage(f"--output must be table or json (got {output!r})")
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    if seed < 0:
        _usage(f"--seed must be >= 0 (got {seed})")
    if history and not os.path.isdir(os.path.dirname(history) or "."):
        _usage(f"--history {history}: directory {os.path.dirname(history)} does not exist")
    try:
        if pbs_t is not None:
            report = measure_staleness(profile, n, r, w, pbs_t, trials=trials, seed=seed)
        else:
            cfg = SimConfig(seed=seed, nodes=nodes, n=n, r=r, w=w, ops=ops, clients=clients, keys=keys,
                            faults=parse_faults(faults), profile=profile, bug=bug,
                            primary_only=primary_only, swarm=swarm, skew_ms_max=skew_ms_max)
    except ValueError as exc:
        _usage(str(exc))
    if pbs_t is not None:
        if output == "json":
            print(json.dumps(report, sort_keys=True))
        else:
            for key, value in report.items():
                print(f"{key:>18}  {value}")
        if not report["agrees"]:
            print(f"simulation and PBS math disagree beyond the tolerance; reproduce with: "
                  f"quorumkv sim --seed {seed} --profile {profile} --n {n} --r {r} --w {w} "
                  f"--pbs-t {pbs_t:g} --trials {trials}", file=sys.stderr)
            raise typer.Exit(EXIT_FAILED)
        return

    try:
        result = run(cfg)
    except ValueError as exc:  # e.g. an unknown --profile, found when the run builds its model
        _usage(str(exc))
    summary = result.summary()
    if history:
        try:
            with open(history, "w") as fh:
                fh.write(result.history.dumps())
        except OSError as exc:
            _usage(f"cannot write --history {history}: {exc.strerror or exc}")
    if output == "json":
        print(json.dumps(summary, sort_keys=True))
    else:
        for key in _TABLE_KEYS:
            print(f"{key:>22}  {summary[key]}")
        for kind, items in summary["examples"].items():
            for item in items:
                print(f"{kind:>22}  {item}")
    if result.failed:
        print(f"FAILED (seed {seed}); reproduce with: {result.command()}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)


sim_app = typer.Typer(add_completion=False)
sim_app.command(help=sim_command.__doc__)(sim_command)

if __name__ == "__main__":  # pragma: no cover
    sim_app()
