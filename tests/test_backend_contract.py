"""The backend contract, for every backend bench has (bench.backends.BACKENDS): it satisfies the Backend protocol, and a
real search through it leaves one leaderboard row per trial whose fields fit its status (complete: every metric;
pruned: its curve up to the cut and its size; failed: the reason).

The family is one the test writes (through --objective-file, as a user would), on images the test makes: a nearest
class mean that learns a step per epoch; signal=shifted learns every class as the next one (validation accuracy near
0, a trial for the pruner to stop), signal=broken fails at its first epoch.
"""
import pytest
from typer.testing import CliRunner

from bench.backends import BACKENDS, Backend, get_backend
from bench.cli import app
from bench.leaderboard import Leaderboard, db_url
from bench.registry import FILES_ENV

runner = CliRunner()

FAMILY = '''
import numpy as np

from bench.objective import FitInfo, Objective, TrialFailed


class Scripted(Objective):
    name = "scripted"
    quick_params = {"epochs": 1}
    defaults = {"signal": "clean", "epochs": 4, "step": 0.5}

    def load_data(self, params, ctx):
        return ctx.images(8, True)

    def build(self, params, split):
        return {"means": np.zeros((split.num_classes, 8 * 8 * 3))}

    def fit(self, model, split, params, ctx):
        x = split.x_fit.reshape(len(split.x_fit), -1) / 255.0
        y = split.y_fit if params["signal"] != "shifted" else (split.y_fit + 1) % split.num_classes
        target = np.stack([x[y == c].mean(0) for c in range(split.num_classes)])
        for epoch in range(int(params["epochs"])):
            if params["signal"] == "broken":
                raise TrialFailed("signal=broken fails on purpose")
            model["means"] += params["step"] * (target - model["means"])
            ctx.report(epoch, {"val_accuracy": float((self.predict_proba(model, split.x_val).argmax(1) == split.y_val).mean())})
        return FitInfo(epochs=int(params["epochs"]))

    def predict_proba(self, model, x):
        d = ((x.reshape(len(x), -1)[:, None, :] / 255.0 - model["means"][None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)

    def count_params(self, model):
        return int(model["means"].size)
'''

SPACE = """objective: scripted
params:
  signal: {type: categorical, choices: [clean, shifted, broken]}
  step:   {type: float, low: 0.3, high: 0.9}
  epochs: 4
"""

# what each backend can end a trial as: keras-tuner has no per-epoch pruner
STATUSES = {"optuna": {"complete", "pruned", "failed"}, "ray": {"complete", "pruned", "failed"},
            "kerastuner": {"complete", "failed"}}
PRUNER = {"optuna": "asha", "ray": "asha", "kerastuner": "none"}
SLOW = {"ray"}  # starts a local Ray head
SEED = 1  # samples every signal in 9 trials on each backend (seed 0: no broken one with Optuna; 1, 2, 3, 5 checked)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_gives_the_protocol(name):
    pytest.importorskip({"optuna": "optuna", "ray": "ray.tune", "kerastuner": "keras_tuner"}[name])
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.default_pruner(backend.SAMPLERS[0]) in backend.PRUNERS
    assert set(backend.GROUPED_PRUNERS) <= set(backend.PRUNERS)
    assert set(STATUSES) == set(BACKENDS)  # a new backend gets its expected statuses here


# Ray stores its rows from the driver, apart from execute_trial: its pruned rows have neither the size nor the curve yet
# (the one TrialRecorder for every backend is under way); strict, so this mark goes when they do
KNOWN_GAPS = {"ray": pytest.mark.xfail(reason="Ray's pruned rows lack n_params and the curve", strict=True)}


def _backend_params():
    for n in sorted(BACKENDS):
        marks = [pytest.mark.slow] if n in SLOW else []
        yield pytest.param(n, marks=marks + ([KNOWN_GAPS[n]] if n in KNOWN_GAPS else []))


@pytest.mark.parametrize("name", list(_backend_params()))
def test_every_backend_writes_one_row_per_trial_as_its_status_says(name, made_images, tmp_path, monkeypatch):
    pytest.importorskip({"optuna": "optuna", "ray": "ray.tune", "kerastuner": "keras_tuner"}[name])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(FILES_ENV, "{}")  # --objective-file writes here for the workers; undone after the test
    (tmp_path / "scripted.py").write_text(FAMILY)
    (tmp_path / "scripted.yaml").write_text(SPACE)
    results, trials = tmp_path / "results", 9
    run = runner.invoke(app, ["search", "scripted", "--objective-file", "scripted.py:Scripted", "--space", "scripted.yaml",
                              "--backend", name, "--pruner", PRUNER[name], "--sampler", get_backend(name).SAMPLERS[0],
                              "--trials", str(trials), "--data", str(made_images), "--results", str(results),
                              "--study", "contract", "--keep-top", "-1", "--seed", str(SEED)])
    assert run.exit_code == 0, run.output
    rows = Leaderboard(db_url(None, results)).query(study="contract")
    assert len(rows) == trials and len({r["trial_number"] for r in rows}) == trials
    assert {r["backend"] for r in rows} == {name} and {r["objective"] for r in rows} == {"scripted"}
    seen = {r["status"] for r in rows}
    assert {"complete", "failed"} <= seen <= STATUSES[name], seen
    if name == "optuna":  # sequential and seeded: a shifted trial after a clean one is cut at the first rung
        assert "pruned" in seen
    for r in rows:
        assert r["params"]["signal"] in ("clean", "shifted", "broken") and r["seed"] is not None
        assert r["started_at"] is not None and r["finished_at"] is not None
        if r["status"] == "complete":
            assert r["params"]["signal"] != "broken" and r["failure_reason"] is None
            assert all(r[k] is not None for k in ("val_accuracy", "test_accuracy", "val_loss", "ratio", "fit_seconds"))
            assert r["n_params"] == 4 * 8 * 8 * 3 and r["epochs"] == 4
        elif r["status"] == "pruned":
            assert r["params"]["signal"] != "broken" and r["val_accuracy"] is None
            assert r["n_params"] == 4 * 8 * 8 * 3 and "epoch" in r["failure_reason"]
            history = r["extras"]["history"]  # one shape for every row: per-epoch lists, as Keras gives them
            assert history["val_accuracy"] and {len(v) for v in history.values()} == {len(history["val_accuracy"])}
        else:
            assert r["params"]["signal"] == "broken" and "signal=broken fails on purpose" in r["failure_reason"]
            assert r["val_accuracy"] is None
