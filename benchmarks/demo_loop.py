"""Run ``quorumkv demo`` many times in a row and count the runs that pass.

    python benchmarks/demo_loop.py [--runs 20]

A run passes when the demo exits 0. Each run gets its own free ports. For every
failure the last lines of its output are printed; the last line is ``passed/runs``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from quorumkv.cli.testing import free_base_port

#: One demo run takes ~10 s on an idle machine; a hung run is a failure after this.
RUN_TIMEOUT_S = 300


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    passed = 0
    for i in range(1, args.runs + 1):
        t0 = time.monotonic()
        try:
            res = subprocess.run([sys.executable, "-m", "quorumkv", "demo", "--base-port", str(free_base_port(10))],
                                 capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            code, output = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = "timeout", (exc.stdout or b"").decode(errors="replace")
        took = time.monotonic() - t0
        if code == 0:
            passed += 1
            print(f"run {i}: pass ({took:.1f} s)", flush=True)
        else:
            tail = "\n    ".join(output.strip().splitlines()[-6:])
            print(f"run {i}: FAIL exit {code} ({took:.1f} s)\n    {tail}", flush=True)
    print(f"{passed}/{args.runs}")
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
