import csv
import io
import json
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.leaderboard import Leaderboard, db_url
from test_leaderboard import record, result

runner = CliRunner()


def filled(tmp_path):
    board = Leaderboard(db_url(None, tmp_path))
    for n, (acc, size) in enumerate([(0.8, 50_000), (0.85, 400_000), (0.7, 5_000)]):
        board.append(record(n, res=result(acc, size)))
    board.append(record(3, status="failed", failure_reason="boom"))
    return tmp_path


def test_spaces_list_and_show():
    listed = runner.invoke(app, ["spaces"])
    assert listed.exit_code == 0 and "tinynet" in listed.output and "paper/tinynet_baseline" in listed.output
    shown = runner.invoke(app, ["spaces", "show", "tinynet"])
    assert shown.exit_code == 0
    body = yaml.safe_load(shown.output.split("\n", 1)[1])
    assert body["objective"] == "tinynet" and body["params"]["lr"]["log"] is True
    missing = runner.invoke(app, ["spaces", "show", "nope"])
    assert missing.exit_code == 2 and "no space named 'nope'" in missing.output


def test_leaderboard_formats(tmp_path):
    results = filled(tmp_path)
    as_json = json.loads(runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "json"]).stdout)
    assert [r["trial_number"] for r in as_json] == [1, 0, 2, 3]
    as_csv = list(csv.DictReader(io.StringIO(runner.invoke(app, ["leaderboard", "--results", str(results), "--format", "csv",
                                                                  "--sort", "ratio", "--top", "2"]).stdout)))
    assert [int(r["trial_number"]) for r in as_csv] == [2, 0] and json.loads(as_csv[0]["params"]) == {"lr": 0.03}
    table = runner.invoke(app, ["leaderboard", "--results", str(results), "--status", "failed"])
    assert table.exit_code == 0 and "boom" in table.output
    bad = runner.invoke(app, ["leaderboard", "--results", str(results), "--sort", "speed"])
    assert bad.exit_code == 2 and "--sort must be one of" in bad.output


def test_plot_pareto_writes_files_and_prints_the_front(tmp_path):
    results = filled(tmp_path)
    run = runner.invoke(app, ["plot", "pareto", "--results", str(results), "--study", "s", "--no-png"])
    assert run.exit_code == 0, run.output
    assert (results / "plots" / "pareto-s.html").exists()
    assert "Pareto front: 3 of 3 complete trials" in run.output
    empty = runner.invoke(app, ["plot", "pareto", "--results", str(results), "--study", "other"])
    assert empty.exit_code == 2 and "no complete trials" in empty.output


def test_lr_find_on_real_images(tmp_path, tiny_mit8):
    run = runner.invoke(app, ["lr-find", "tinynet", "--params", "input_size=32,blocks=2,base_filters=8,batch_size=8",
                              "--steps", "12", "--data", str(tiny_mit8), "--results", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert "suggested LR" in run.output and (tmp_path / "plots" / "lr-find-tinynet.html").exists()
    bad = runner.invoke(app, ["lr-find", "tinynet", "--params", "nonsense", "--data", str(tiny_mit8)])
    assert bad.exit_code == 2 and "expected key=value" in bad.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = "import sys, bench.cli; assert not {'tensorflow', 'keras', 'optuna', 'plotly', 'cv2'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
    run = subprocess.run([sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "search" in run.stdout
