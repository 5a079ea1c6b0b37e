"""`quorumkv math quorum|pbs` through typer's CliRunner on the standalone ``math_app``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorumkv.cli.math import math_app

runner = CliRunner()
SMALL = ["--trials", "20000", "--seed", "1"]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(math_app, list(args))
    return result.exit_code, result.output


def run_json(*args: str) -> dict:
    code, out = run(*args, "-o", "json")
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one JSON object
    return json.loads(lines[0])


def test_no_args_shows_help() -> None:
    code, out = run()
    assert "quorum" in out and "pbs" in out


def test_quorum_seed_case_json() -> None:
    data = run_json("quorum", "--n", "5", "--r", "3", "--w", "3")
    assert data["strict"] is True and data["write_overlap"] is True
    assert data["p_stale_immediate"] == 0.0
    assert data["read_available"] == pytest.approx(0.9999901494, abs=1e-12)
    assert data["write_available"] == data["read_available"]
    assert data["read_failures_tolerated"] == 2 and data["write_failures_tolerated"] == 2
    assert [row["k"] for row in data["k_staleness"]] == [1, 2, 3]


def test_quorum_partial_json_and_k_versions() -> None:
    data = run_json("quorum", "--n", "3", "--r", "1", "--w", "1", "--p", "0.1", "--k-versions", "2")
    assert data["strict"] is False
    assert data["p_stale_immediate"] == pytest.approx(2 / 3)
    assert data["read_available"] == pytest.approx(1 - 0.1**3)
    assert data["k_staleness"] == [{"k": 1, "p_stale": pytest.approx(2 / 3)}, {"k": 2, "p_stale": pytest.approx(4 / 9)}]


def test_quorum_k_of_n() -> None:
    data = run_json("quorum", "--n", "5", "--k", "3", "--p", "0.5")
    assert data == {"n": 5, "k": 3, "p": 0.5, "available": 0.5, "unavailable": 0.5, "failures_tolerated": 2}


def test_quorum_table() -> None:
    code, out = run("quorum", "--n", "5", "--r", "2", "--w", "2")
    assert code == 0
    assert "p_stale_immediate" in out and "3/10" in out and "False" in out


@pytest.mark.parametrize(
    "args",
    [
        ["quorum", "--n", "5", "--r", "6", "--w", "1"],
        ["quorum", "--n", "5", "--r", "0", "--w", "1"],
        ["quorum", "--n", "5", "--r", "1", "--w", "1", "--p", "1.5"],
        ["quorum", "--n", "5", "--r", "1"],
        ["quorum", "--n", "5", "--k", "3", "--r", "1"],
        ["quorum", "--n", "5", "--k", "7"],
        ["quorum", "--n", "0", "--k", "1"],
        ["pbs", "--n", "3", "--r", "4"],
        ["pbs", "--target", "2"],
        ["pbs", "--t", "-1"],
        ["pbs", "--trials", "0"],
        ["pbs", "--profile", "nope"],
        ["pbs", "--profile", "pareto:1"],
    ],
)
def test_bad_input_exits_2(args: list[str]) -> None:
    code, out = run(*args)
    assert code == 2, out
    assert "Invalid value" in out or "Error" in out


def test_pbs_json() -> None:
    data = run_json("pbs", "--n", "3", "--r", "1", "--w", "1", "--profile", "lnkd-disk", "--t", "5", *SMALL)
    for key in ("p_consistent", "t_visibility_ms", "n", "r", "w", "profile", "trials", "seed", "t"):
        assert key in data
    assert data["profile"] == "lnkd-disk" and data["trials"] == 20000 and data["seed"] == 1 and data["t"] == 5.0
    assert 0.5 < data["p_consistent"] < 1
    assert set(data["read_latency_ms"]) == {"p50", "p99", "p99.9"}
    assert set(data["write_latency_ms"]) == {"p50", "p99", "p99.9"}
    # Seeded: the same command gives the same answer.
    again = run_json("pbs", "--n", "3", "--r", "1", "--w", "1", "--profile", "lnkd-disk", "--t", "5", *SMALL)
    assert again == data


def test_pbs_strict_is_one() -> None:
    data = run_json("pbs", "--n", "3", "--r", "2", "--w", "2", "--profile", "ymmr", *SMALL)
    assert data["p_consistent"] == 1.0 and data["t_visibility_ms"] == 0.0


def test_pbs_table_and_parametric_profile() -> None:
    code, out = run("pbs", "--profile", "exponential:0.5", *SMALL)
    assert code == 0, out
    assert "t_visibility_ms" in out and "P(consistent) vs t" in out


def test_pbs_latencies_file(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"w": [1, 4, 9], "a": [0.5, 1], "r": [0.2, 0.4], "s": [0.3]}))
    data = run_json("pbs", "--latencies", str(path), *SMALL)
    assert data["profile"] == "empirical:lat.json"
    code, out = run("pbs", "--latencies", str(path), "--profile", "ymmr")
    assert code == 2
    code, out = run("pbs", "--latencies", str(tmp_path / "missing.json"))
    assert code == 2


def test_pbs_plot(tmp_path: Path) -> None:
    path = tmp_path / "pbs.png"
    data = run_json("pbs", "--n", "3", "--profile", "lnkd-ssd", "--plot", str(path), "--trials", "5000")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["plot"] == str(path)


def test_pbs_output_files_in_a_missing_directory_are_refused_up_front(tmp_path: Path) -> None:
    # Usage errors (exit 2) before any simulation, not an OSError traceback after it.
    # (The one-line wording is checked through the real command in test_cli.py.)
    for args in (["--plot", str(tmp_path / "missing" / "p.png")],
                 ["--save-latencies", str(tmp_path / "missing" / "s.json"), "--node", "127.0.0.1:1"],
                 ["--plot", str(tmp_path)]):  # a directory, not a file
        result = runner.invoke(math_app, ["pbs", *args, *SMALL])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (args, result.output)
    assert list(tmp_path.iterdir()) == []
