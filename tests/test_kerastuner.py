"""keras-tuner backend: real keras-tuner tuners over the YAML space, a few 1-epoch trials writing real leaderboard rows."""
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.leaderboard import Leaderboard, db_url

pytest.importorskip("keras_tuner")

SPACE = {"objective": "tinynet", "params": {
    "input_size": 32, "blocks": 2, "batch_size": 16, "epochs": 1,
    "base_filters": {"type": "int", "low": 4, "high": 12, "step": 4},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": "sgd"}},
}}


@pytest.mark.parametrize("sampler, trials", [("random", 3), ("bayesian", 3), ("hyperband", 2)])
def test_kerastuner_trials_write_rows(tmp_path, tiny_mit8, sampler, trials):
    space = dict(SPACE, params={**SPACE["params"], "epochs": 2 if sampler == "hyperband" else 1})
    path = tmp_path / "kt.yaml"
    path.write_text(yaml.safe_dump(space))
    run = CliRunner().invoke(app, ["search", "tinynet", "--backend", "kerastuner", "--sampler", sampler, "--space", str(path),
                                   "--trials", str(trials), "--data", str(tiny_mit8), "--results", str(tmp_path)])
    assert run.exit_code == 0, run.output
    rows = Leaderboard(db_url(None, tmp_path)).query(study="kt")
    assert len(rows) >= trials and all(r["backend"] == "kerastuner" for r in rows)
    assert len({r["trial_number"] for r in rows}) == len(rows)
    for r in rows:
        assert r["status"] == "complete" and 0 <= r["val_accuracy"] <= 1 and r["n_params"] > 0
        assert ("momentum" in r["params"]) == (r["params"]["optimizer"] == "sgd")
        assert r["params"]["epochs"] in (1, 2)
    assert (tmp_path / "kerastuner" / "kt").is_dir()
    if sampler == "random":  # keras-tuner's state gone, the rows kept: a re-run would number from 0 again, so it refuses
        import shutil

        shutil.rmtree(tmp_path / "kerastuner" / "kt")
        again = CliRunner().invoke(app, ["search", "tinynet", "--backend", "kerastuner", "--sampler", sampler, "--space",
                                         str(path), "--trials", str(trials), "--data", str(tiny_mit8), "--results", str(tmp_path)])
        assert again.exit_code == 2 and "already holds 3 kerastuner rows of study 'kt'" in again.output, again.output
        assert Leaderboard(db_url(None, tmp_path)).query(study="kt") == rows


def test_kerastuner_rejects_optuna_samplers(tmp_path, tiny_mit8):
    run = CliRunner().invoke(app, ["search", "tinynet", "--backend", "kerastuner", "--sampler", "tpe",
                                   "--data", str(tiny_mit8), "--results", str(tmp_path)])
    assert run.exit_code == 2 and "must be one of random, hyperband, bayesian" in run.output
