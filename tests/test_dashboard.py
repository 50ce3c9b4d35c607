"""optuna-dashboard reads bench's studies: a real tiny search writes the journal, the real dashboard server serves it
on a loopback port, and its HTTP API gives the trial's params, value, intermediate values and bench's user attributes."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app

pytest.importorskip("optuna_dashboard")

SPACE = {"objective": "tinynet", "params": {"input_size": 32, "blocks": 2, "epochs": 2, "batch_size": 16,
                                            "base_filters": {"type": "int", "low": 4, "high": 8, "step": 4}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def dashboard_command() -> list[str]:
    """What the `optuna-dashboard` console script runs (its entry point, from the installed distribution), in this
    interpreter: the script itself sits in the environment that installed the package, which need not be ours."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="optuna-dashboard")
    return [sys.executable, "-c", f"import sys; from {script.module} import {script.attr}; sys.exit({script.attr}())"]


def test_optuna_dashboard_serves_a_bench_study(tmp_path, tiny_mit8):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    run = CliRunner().invoke(app, ["search", "tinynet", "--space", str(space), "--data", str(tiny_mit8), "--results",
                                   str(tmp_path / "results"), "--trials", "1", "--pruner", "none", "--study", "dash"])
    assert run.exit_code == 0, run.output
    journal = tmp_path / "results" / "optuna.journal"
    port = free_port()
    server = subprocess.Popen([*dashboard_command(), str(journal), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                studies = get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer in 20 s")
        study = next(s for s in studies if s["study_name"] == "dash")
        detail = get(f"{base}/api/studies/{study['study_id']}")
        trial = detail["trials"][0]
        assert trial["state"] == "Complete" and [p["name"] for p in trial["params"]] == ["base_filters"]
        assert [v["step"] for v in trial["intermediate_values"]] == [1, 2]  # val accuracy after each epoch
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        from bench.leaderboard import Leaderboard, db_url

        row = Leaderboard(db_url(None, tmp_path / "results")).query(study="dash")[0]
        assert float(trial["values"][0]) == pytest.approx(row["val_accuracy"])
        assert float(attrs["test_accuracy"]) == pytest.approx(row["test_accuracy"])
        assert int(attrs["n_params"]) == row["n_params"]
        assert attrs["artifacts"] == row["extras"]["artifacts"] and Path(attrs["artifacts"]).is_dir()
    finally:
        server.terminate()
        server.wait(timeout=10)
