"""Trial artifacts: one folder per (study, backend, trial), and no save, however it ends, leaves a partial file.

A tiny optuna run and a tiny kerastuner run of one study train real TinyNets; each backend's trial 0 keeps its own
folder, and `bench report` / `bench export` pick the right one (or ask which, naming both). The saves below are cut by
a real exception raised part-way through writing the file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bench.artifacts import _save_model
from bench.cli import app
from bench.data import write_atomically
from bench.leaderboard import Leaderboard, db_url

runner = CliRunner()
SPACE = {"objective": "tinynet", "params": {
    "input_size": 32, "blocks": 2, "epochs": 1, "batch_size": 16,
    "base_filters": {"type": "int", "low": 4, "high": 12, "step": 4},
}}


class Unconvertible:
    """np.savez writes the arrays before this one into its zip, then fails on this one: a save cut part-way."""

    def __array__(self, *args, **kwargs):
        raise RuntimeError("cut mid-write")


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "trial" / "predictions.npz"
    write_atomically(path, lambda tmp: np.savez_compressed(tmp, a=np.arange(3)))
    with pytest.raises(RuntimeError, match="cut mid-write"):
        write_atomically(path, lambda tmp: np.savez_compressed(tmp, big=np.zeros(1 << 20), bad=Unconvertible()))
    with np.load(path) as f:  # the old file, whole
        assert f["a"].tolist() == [0, 1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["predictions.npz"]
    with pytest.raises(RuntimeError):  # and a first save that fails leaves nothing at all
        write_atomically(tmp_path / "new.npz", lambda tmp: np.savez_compressed(tmp, big=np.zeros(10), bad=Unconvertible()))
    assert not list(tmp_path.glob("*new.npz"))


class HalfSaver:
    """A family whose save_model writes half a model file and then fails, as a kill or a full disk would leave it."""

    def save_model(self, model, folder: Path) -> Path:
        path = folder / "model.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{")
        raise OSError("no space left on device")


class WholeSaver:
    def save_model(self, model, folder: Path) -> Path:
        path = folder / "model.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{}")
        return path


def test_an_interrupted_model_save_leaves_the_old_model(tmp_path):
    assert _save_model(WholeSaver(), None, tmp_path) == tmp_path / "model.keras"
    with pytest.raises(OSError, match="no space left"):
        _save_model(HalfSaver(), None, tmp_path)
    with zipfile.ZipFile(tmp_path / "model.keras") as z:
        assert z.read("config.json") == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no scratch folder left behind


def _search(tmp_path: Path, data: Path, backend: str, *extra: str):
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump(SPACE))
    run = runner.invoke(app, ["search", "tinynet", "--backend", backend, "--space", str(tmp_path / "shared.yaml"),
                              "--trials", "1", "--data", str(data), "--results", str(tmp_path / "results"),
                              "--sampler", "random", "--keep-top", "1", *extra])
    assert run.exit_code == 0, run.output


def test_optuna_and_kerastuner_runs_of_one_study_keep_separate_artifacts(tmp_path, tiny_mit8):
    from bench.report import artifacts_folder

    _search(tmp_path, tiny_mit8, "optuna", "--pruner", "none")
    _search(tmp_path, tiny_mit8, "kerastuner")
    results = tmp_path / "results"
    rows = {r["backend"]: r for r in Leaderboard(db_url(None, results)).query(study="shared")}
    assert sorted(rows) == ["kerastuner", "optuna"] and {r["trial_number"] for r in rows.values()} == {0}
    for backend, row in rows.items():
        folder = results / "shared" / f"{backend}-trial-0"
        assert row["extras"]["artifacts"] == str(folder) and artifacts_folder(row, results) == folder
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["backend"] == backend and meta["val_accuracy"] == pytest.approx(row["val_accuracy"])
        with np.load(folder / "predictions.npz") as f:
            assert f["test_proba"].shape == (24, 8)
        assert not list(folder.glob("tmp-*")) and not list(folder.glob(".saving-*"))
    # the study's best 1 keeps its model, whichever backend found it
    kept = sorted(p.parent.name for p in (results / "shared").glob("*trial-*/model.keras"))
    best = max(rows.values(), key=lambda r: (r["val_accuracy"], r["backend"] == "kerastuner"))
    assert kept == [f"{best['backend']}-trial-0"]

    ambiguous = runner.invoke(app, ["report", "0", "--study", "shared", "--results", str(results), "--no-png"])
    assert ambiguous.exit_code == 2
    assert "--backend kerastuner or --backend optuna" in " ".join(ambiguous.output.split())
    for backend in rows:
        page = results / f"{backend}.html"
        run = runner.invoke(app, ["report", "0", "--study", "shared", "--backend", backend, "--results", str(results),
                                  "--no-png", "--out", str(page)])
        assert run.exit_code == 0, run.output
        assert f"{backend}-trial-0" in page.read_text()  # the page names the folder it read
    export = runner.invoke(app, ["export", "0", "--study", "shared", "--results", str(results), "--data", str(tiny_mit8)])
    assert export.exit_code == 2 and "give --backend" in export.output


def test_old_layout_is_still_read(tmp_path):
    from bench.report import artifacts_folder

    old = tmp_path / "s" / "trial-3"
    old.mkdir(parents=True)
    np.savez(old / "predictions.npz", a=np.zeros(1))
    row = {"study": "s", "trial_number": 3, "backend": "optuna", "extras": {}}
    assert artifacts_folder(row, tmp_path) == old
    (old / "meta.json").write_text(json.dumps({"trial": 3, "backend": "kerastuner"}))
    assert artifacts_folder(row, tmp_path) is None  # another backend's trial 3 is never shown as this one
