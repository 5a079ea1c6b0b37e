"""`quorumkv sim` through typer's CliRunner on the standalone ``sim_app``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from quorumkv.cli.sim import sim_app

runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()


def invoke(*args: str):
    return runner.invoke(sim_app, list(args))


def test_json_has_the_contract_keys() -> None:
    res = invoke("--seed", "1", "--ops", "200", "-o", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("seed", "ops", "acked_writes", "lost_acked_writes", "reads", "stale_reads", "converged"):
        assert key in data
    assert data["seed"] == 1 and data["ops"] == 200 and data["lost_acked_writes"] == 0


def test_failing_run_exits_nonzero_and_prints_the_command() -> None:
    res = invoke("--seed", "2", "--ops", "300", "--faults", "crash-all", "--bug", "ack-before-persist")
    assert res.exit_code == 1
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert "quorumkv sim --seed 2" in err and "--bug ack-before-persist" in err


def test_pbs_mode_json() -> None:
    res = invoke("--seed", "1", "--pbs-t", "5", "--profile", "lnkd-disk", "--r", "1", "--w", "1",
                 "--trials", "1000", "-o", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip())
    assert data["agrees"] and 0 < data["p_consistent_sim"] < 1


def test_bad_usage_exits_2() -> None:
    assert invoke("--seed", "1", "--faults", "meteor").exit_code == 2
    assert invoke("--seed", "1", "--r", "9").exit_code == 2
