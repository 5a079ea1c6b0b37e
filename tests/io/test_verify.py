"""``quorumkv verify`` end to end on real clusters it starts: linearizable mode is
valid under SIGKILL+restart and SIGSTOP/SIGCONT, LWW with R=W=1 is reported invalid
(with a counter-example), and the exit codes and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def verify(*args) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "quorumkv", "verify", "-o", "json", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _faults(report) -> list[str]:
    return [e["fault"] for e in report["nemesis"] if e["fault"] != "heal"]


@pytest.mark.parametrize("workload", ["register", "cas-register"])
def test_linearizable_mode_is_valid_under_kill_and_pause(workload):
    code, report = verify("--workload", workload, "--faults", "kill,pause", "--time-s", "9", "--keys", "2",
                          "--concurrency", "4", "--fault-interval-s", "0.8", "--fault-duration-s", "2",
                          "--seed", "7")
    assert report["verdict"] == "valid" and code == 0, report.get("counterexample")
    assert set(_faults(report)) == {"kill", "pause"}  # faults are injected in turn
    assert report["counts"]["ok"] > 200
    by_f = report["counts"]["by_f"]
    assert by_f["write"]["ok"] > 0 and by_f["read"]["ok"] > 0
    if workload == "cas-register":
        assert by_f["cas"]["ok"] > 0


@pytest.mark.parametrize("workload", ["register", "cas-register"])
def test_lww_r1_w1_is_reported_invalid_with_a_counterexample(workload):
    code, report = verify("--workload", workload, "--lww", "--r", "1", "--w", "1", "--faults", "pause",
                          "--time-s", "6", "--keys", "1", "--concurrency", "3", "--fault-interval-s", "0.5",
                          "--seed", "3")
    assert report["verdict"] == "invalid" and code == 1
    ce = report["counterexample"]
    assert ce["key"] == "k0" and ce["ops"]
    assert ce["ops"][-1]["type"] == "ok"


def test_bad_arguments_are_usage_errors():
    proc = subprocess.run([sys.executable, "-m", "quorumkv", "verify", "--workload", "bank"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "workload must be one of" in proc.stderr


def test_set_workload_loses_no_acknowledged_add_under_kill():
    code, report = verify("--workload", "set", "--faults", "kill", "--time-s", "5", "--concurrency", "3",
                          "--fault-interval-s", "0.5", "--seed", "2")
    assert report["verdict"] == "valid" and code == 0
    c = report["counts"]
    assert c["acked_adds"] > 100 and c["lost_adds"] == 0
    assert set(_faults(report)) == {"kill"}
