"""CLI start-up cost: how long ``quorumkv get/put/delete/cluster status`` take as
whole processes against a running local cluster, next to a bare ``python -c pass``.

    python benchmarks/bench_cli_startup.py [--runs 21] [--entry module|script]

Each command runs ``--runs`` times (after one warm-up), one after the other. For each
it prints the median and min/max of the child's CPU time (user + system, from the
kernel's accounting of the finished child; steady on a loaded machine) and of the
wall time. The cluster is 3 nodes with in-memory storage; a request itself costs
well under a millisecond, so what is measured is interpreter start, imports and
argument parsing.

Children run with bytecode caching on, as on a user's machine (``pip install`` writes
``.pyc`` files; an editable install writes them on first import), even when this
shell exports ``PYTHONDONTWRITEBYTECODE`` (these sandboxes do: then every start
compiles ~15 modules from source, ~30 ms). ``--no-bytecode`` measures that case.

``--entry module`` runs ``python -m quorumkv``; ``--entry script`` runs the
``quorumkv`` console script found next to this interpreter (what users type).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port


def _child_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float], int]:
    """(cpu seconds per run, wall seconds per run, last exit code)."""
    cpu, wall = [], []
    code = 0
    for i in range(runs + 1):
        c0, t0 = _child_cpu_s(), time.perf_counter()
        code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env).returncode
        t1, c1 = time.perf_counter(), _child_cpu_s()
        if i:  # the first run warms the page cache (and writes .pyc files): not counted
            cpu.append(c1 - c0)
            wall.append(t1 - t0)
    return cpu, wall, code


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:7.1f} ms  ({min(xs) * 1000:.1f} .. {max(xs) * 1000:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--entry", choices=("module", "script"), default="module")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as exported (every start compiles from source)")
    args = ap.parse_args()
    env = dict(os.environ)
    if not args.no_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.entry == "script":
        script = os.path.join(os.path.dirname(sys.executable), "quorumkv")
        if not os.path.exists(script):
            sys.exit(f"no console script at {script}")
        qkv = [script]
    else:
        qkv = [sys.executable, "-m", "quorumkv"]

    root = tempfile.mkdtemp(prefix="quorumkv-bench-cli-")
    cluster = LocalCluster(root)
    try:
        cluster.create(3, base_port=free_base_port(6), replicas=3, storage="memory")
        cluster.up()
        subprocess.run([*qkv, "put", "bench-key", "v", "--dir", root], check=True, capture_output=True)
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("--version", [*qkv, "--version"]),
            ("get", [*qkv, "get", "bench-key", "--dir", root]),
            ("put", [*qkv, "put", "bench-key", "v2", "--dir", root]),
            ("delete", [*qkv, "delete", "gone-key", "--dir", root]),
            ("cluster status", [*qkv, "cluster", "status", "--dir", root]),
        ]
        print(f"{'command':<16} {'cpu median (min .. max)':<34} wall median (min .. max)   [{args.runs} runs]")
        for name, cmd in cases:
            cpu, wall, code = measure(cmd, args.runs, env)
            note = "" if code == 0 else f"   exit {code}"
            print(f"{name:<16} {_fmt(cpu):<34} {_fmt(wall)}{note}")
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
