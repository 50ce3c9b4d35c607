"""`bench reproduce paper`: the paper's figures are data with sources; missing families are 'not available'."""
import csv

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.reproduce import NOT_AVAILABLE, build_lines, difference, load_figures, table_rows


def test_the_papers_figures_are_data_with_sources():
    figures = {e["id"]: e for e in load_figures()["experiments"]}
    assert figures["abstract_range"]["paper"] == [0.6, 0.96]
    assert figures["cnn_baseline"]["paper"] == 0.78 and figures["cnn_baseline_params"]["paper"] == 34_472
    assert [figures[i]["paper"] for i in ("mlp_plain", "mlp_patches", "mlp_patch_bovw")] == [0.61, 0.72, 0.70]
    assert figures["bovw_dense_sift_svm"]["paper"] == [0.855, 0.861] and figures["bovw_fisher"]["paper"] == 0.845
    assert figures["inception_finetuned"]["paper"] == 0.96
    assert all(e["source"] for e in figures.values())


def test_families_not_built_are_not_available_never_a_number():
    figures = load_figures()
    inception = {e["id"]: e for e in figures["experiments"]}["inception_finetuned"]
    figures = dict(figures, experiments=[dict(inception, objective="not_a_family")])
    (line,) = build_lines(figures, "quick", run=None)
    assert line.ours is None and line.note.startswith(f"{NOT_AVAILABLE}: family")
    (row,) = table_rows([line])
    assert row["ours"] == NOT_AVAILABLE and row["difference"] == "" and row["paper"] == "0.960"


def test_every_paper_experiment_has_a_family_and_a_space():
    figures = load_figures()
    runs = [e for e in figures["experiments"] if e.get("kind", "run") == "run"]
    lines = build_lines(dict(figures, experiments=runs), "quick", run=None)
    assert len(lines) == len(runs) and not [x.id for x in lines if x.note.startswith(NOT_AVAILABLE)]


def test_differences():
    assert difference(0.78, 0.80, "test_accuracy") == "+0.020"
    assert difference([0.855, 0.861], 0.858, "test_accuracy") == "within"
    assert difference([0.855, 0.861], 0.80, "test_accuracy") == "-0.055"
    assert difference(34_472, 34_472, "n_params") == "+0"
    assert difference(None, 0.5, "test_accuracy") == ""


def test_reproduce_quick_runs_the_baseline_and_marks_the_rest(tmp_path, tiny_mit8):
    run = CliRunner().invoke(app, ["reproduce", "paper", "--budget", "quick", "--only", "cnn_baseline_params,mlp_plain",
                                   "--data", str(tiny_mit8), "--results", str(tmp_path)])
    assert run.exit_code == 0, run.output
    with open(tmp_path / "reproduce" / "reproduce-quick.csv") as f:
        rows = {r["experiment"].split(":")[0]: r for r in csv.DictReader(f)}
    assert rows["CNN baseline"]["ours"] == "34,472" and rows["CNN baseline"]["difference"] == "+0"
    acc = rows["CNN baseline (2x conv 5x5x32 valid + maxpool, 32x32 input)"]
    assert 0 <= float(acc["ours"]) <= 1 and "epochs=5" in acc["note"]
    mlp = rows["MLP on raw pixels"]
    assert 0 <= float(mlp["ours"]) <= 1
    low, high = sorted([float(acc["ours"]), float(mlp["ours"])])
    assert rows["All models and configurations"]["ours"] == f"{low:.3f}–{high:.3f}"
    md = (tmp_path / "reproduce" / "reproduce-quick.md").read_text()
    assert "| experiment | paper | ours | difference |" in md and "MLP section, plain MLP" in md
    again = CliRunner().invoke(app, ["reproduce", "paper", "--only", "cnn_baseline", "--data", str(tiny_mit8),
                                     "--results", str(tmp_path), "--budget", "quick"])
    assert again.exit_code == 0 and acc["ours"] in again.output  # resumed: the same study, nothing re-trained
    bad = CliRunner().invoke(app, ["reproduce", "paper", "--budget", "huge"])
    assert bad.exit_code == 2 and "--budget must be one of" in bad.output


@pytest.mark.parametrize("budget", ["quick", "full"])
def test_quick_budget_overrides_epochs_only_in_quick(budget):
    from bench.reproduce import budget_space

    exp = {e["id"]: e for e in load_figures()["experiments"]}["cnn_baseline"]
    assert budget_space(exp, budget).fixed()["epochs"] == (5 if budget == "quick" else 30)
