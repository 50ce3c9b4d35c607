"""A family of your own, with no change to bench: the example scikit-learn family (examples/pixel_pca) through
--objective-file, through a real `bench.objectives` entry point, and the contract checks' messages when a family breaks
the rules."""
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.leaderboard import Leaderboard, db_url
from bench.registry import FILES_ENV

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pixel_pca"
runner = CliRunner()


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A user's working folder: the example family's file and its search_spaces/, nothing of bench."""
    folder = tmp_path / "work"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))  # what loading its file adds (bench.registry); undone after the test
    monkeypatch.setenv(FILES_ENV, "{}")  # --objective-file writes here for the workers; undone after the test
    return folder


def rows(results: Path, study: str):
    return Leaderboard(db_url(None, results)).query(study=study)


def test_search_with_an_objective_file_and_a_local_space(user_folder, tiny_mit8, capfd):
    listed = runner.invoke(app, ["spaces"], terminal_width=200)
    assert listed.exit_code == 0 and "./search_spaces" in listed.output and "pixels" in listed.output
    # no --space: the name finds ./search_spaces/pixels.yaml; two worker processes load the file too (both may be
    # mid-trial when the study reaches 4, so it can end with 5)
    run = runner.invoke(app, ["search", "pixels", "--objective-file", "pixel_pca.py:PixelPCA", "--trials", "4", "--jobs", "2",
                              "--data", str(tiny_mit8), "--results", "results", "--pruner", "none"])
    assert run.exit_code == 0, run.output
    assert "Traceback" not in capfd.readouterr().err  # the spawned worker found the family too (it would die here)
    found = rows(user_folder / "results", "pixels")
    assert len(found) >= 4 and {r["status"] for r in found} == {"complete"} and {r["objective"] for r in found} == {"pixels"}
    assert all(0 <= r["val_accuracy"] <= 1 and r["n_params"] > 0 for r in found)
    kept = [r for r in found if (Path(r["extras"]["artifacts"]) / "model.joblib").exists()]
    assert kept  # save_model ran for the best trials: --keep-top works for a family of one's own
    # the form: --space as a path
    again = runner.invoke(app, ["search", "pixels", "--objective-file", "pixel_pca.py:PixelPCA", "--space",
                                "search_spaces/pixels.yaml", "--study", "by-path", "--trials", "1", "--data", str(tiny_mit8),
                                "--results", "results"])
    assert again.exit_code == 0, again.output
    assert len(rows(user_folder / "results", "by-path")) == 1


def test_objective_file_errors(user_folder):
    for args, message in [
        (["--objective-file", "pixel_pca.py"], "expected PATH.py:Class"),
        (["--objective-file", "nope.py:X"], "no such objective file"),
        (["--objective-file", "pixel_pca.py:Nope"], "has no 'Nope'"),
        (["--objective-file", "pixel_pca.py:PixelModel"], "not a subclass of bench.objective.Objective"),
    ]:
        run = runner.invoke(app, ["search", "pixels", *args, "--trials", "1"])
        assert run.exit_code == 2 and message in run.output, run.output
    taken = runner.invoke(app, ["search", "tinynet", "--objective-file", "pixel_pca.py:PixelPCA"])
    assert taken.exit_code == 2 and "one of bench's own families" in taken.output
    unknown = runner.invoke(app, ["search", "pixels", "--trials", "1"])
    assert unknown.exit_code == 2 and "unknown objective 'pixels'" in unknown.output and "--objective-file" in unknown.output


def installed_plugin(site: Path) -> Path:
    """What `pip install examples/pixel_pca` leaves in site-packages: the module and its dist-info with the entry
    points (written here, so the test needs no network), plus one entry point that tries to take a built-in name."""
    site.mkdir()
    shutil.copy(EXAMPLE / "pixel_pca.py", site / "pixel_pca.py")
    info = site / "bench_pixel_pca-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-pixel-pca\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[bench.objectives]\npixels = pixel_pca:PixelPCA\ntinynet = pixel_pca:PixelPCA\n")
    return site


def test_an_installed_entry_point_is_found_by_name(user_folder, tmp_path, tiny_mit8, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin(tmp_path / "site")))
    listed = runner.invoke(app, ["objectives"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "plugin bench-pixel-pca" in listed.output and "pixel_pca:PixelPCA" in listed.output
    assert "entry point 'tinynet' = pixel_pca:PixelPCA is hidden" in listed.output  # a plugin never replaces a built-in
    # no pruner: whether the second draw is pruned is beside the point here
    run = runner.invoke(app, ["search", "pixels", "--trials", "2", "--pruner", "none", "--data", str(tiny_mit8),
                              "--results", "results"])
    assert run.exit_code == 0, run.output
    assert [r["status"] for r in rows(user_folder / "results", "pixels")] == ["complete", "complete"]
    checked = runner.invoke(app, ["check-objective", "pixels", "--data", str(tiny_mit8)])
    assert checked.exit_code == 0 and "8 of 8 rules hold, 0 not applicable" in checked.output, checked.output


BROKEN = '''
import numpy as np
from pixel_pca import PixelPCA  # a helper module beside the file, as a script would import it


class Broken(PixelPCA):
    name = "wrong"
    quick_params = {"input_size": 16, "n_components": 8, "colour": True}


class Careless(PixelPCA):
    """Fits on a bag of the training images drawn by an unseeded generator, and reports no epoch."""
    name = "careless"

    def fit(self, model, split, params, ctx):
        from bench.objective import FitInfo

        bag = np.random.default_rng().choice(len(split.x_fit), len(split.x_fit) * 3 // 4, replace=False)
        x = split.x_fit[bag]
        model.pipeline.fit(x.reshape(len(x), -1) / 255.0, split.y_fit[bag])
        return FitInfo(epochs=1)


class Countless(PixelPCA):
    name = "countless"

    def count_params(self, model):
        return 0


class Quickless(PixelPCA):
    name = "quickless"
    quick_params = None  # as a family that never set them
'''


def with_space(folder: Path, objective: str) -> None:
    text = (folder / "search_spaces" / "pixels.yaml").read_text().replace("objective: pixels", f"objective: {objective}")
    (folder / "search_spaces" / f"{objective}.yaml").write_text(text)


def check(name: str, cls: str, data: Path):
    run = runner.invoke(app, ["check-objective", name, "--objective-file", f"broken.py:{cls}", "--data", str(data)],
                        terminal_width=250)
    lines = {line.split()[1]: line.strip() for line in run.output.splitlines() if line.strip().startswith(("ok", "FAIL", "n/a"))}
    return run, lines


def test_broken_rules_each_get_their_message(user_folder, tiny_mit8):
    (user_folder / "broken.py").write_text(BROKEN)
    wrong, _ = check("mine", "Broken", tiny_mit8)
    assert wrong.exit_code == 1 and "Broken.name is 'wrong', but the family is registered as 'mine'" in wrong.output

    with_space(user_folder, "careless")
    careless, lines = check("careless", "Careless", tiny_mit8)
    assert careless.exit_code == 1, careless.output
    assert all(lines[r].startswith("ok") for r in ("loads", "quick", "spaces", "result", "max_params", "save")), careless.output
    assert lines["same"].startswith("FAIL") and "set_seed(seed) must seed every random number generator" in lines["same"]
    assert lines["prune"].startswith("FAIL") and "fit never called ctx.report(epoch, metrics)" in lines["prune"]
    assert "broken: same seed, prune hook" in careless.output

    with_space(user_folder, "countless")
    countless, lines = check("countless", "Countless", tiny_mit8)
    assert countless.exit_code == 1 and "n_params = 0: count_params must count" in lines["result"]
    # the rules that need a first trial say why they were not checked, instead of guessing
    assert all("not checked: the first trial did not give a Result" in lines[r] for r in ("same", "max_params", "prune", "save"))


def test_quick_params_must_be_known_params(user_folder, tiny_mit8):
    (user_folder / "broken.py").write_text(BROKEN.replace('name = "wrong"', 'name = "mine"'))
    run, lines = check("mine", "Broken", tiny_mit8)
    assert run.exit_code == 1 and "unknown params ['colour']" in lines["quick"], run.output


def test_a_family_without_quick_params_fails_instead_of_being_skipped(user_folder, tiny_mit8):
    (user_folder / "broken.py").write_text(BROKEN)
    with_space(user_folder, "quickless")
    run, lines = check("quickless", "Quickless", tiny_mit8)
    assert run.exit_code == 1 and lines["quick"].startswith("FAIL") and "has no quick_params" in lines["quick"], run.output
    assert lines["result"].startswith("FAIL") and "no quick params" in lines["result"]

