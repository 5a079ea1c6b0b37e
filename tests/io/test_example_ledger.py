"""examples/ledger.py: concurrent CAS transfers with a node SIGKILLed and restarted
mid-run; the total is unchanged and no balance goes negative."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ledger.py")


def test_ledger_keeps_the_total_with_a_node_killed_mid_run():
    proc = subprocess.run([sys.executable, EXAMPLE, "--accounts", "5", "--clients", "4", "--seconds", "6",
                           "--seed", "4"], capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "killed" in out and "restarted" in out
    assert "LEDGER OK" in out and "closing total 500 (opening 500)" in out
    done = int(out.split("transfers: ")[1].split(" done")[0])
    assert done > 20  # transfers really ran, also while a node was down
