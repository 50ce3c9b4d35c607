"""End-to-end Optuna searches through the CLI on a tiny real sample: real journal storage, real SQLite leaderboard."""
import json

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from bench.backends.optuna import PARETO_RUNGS, journal_storage
from bench.cli import app
from bench.leaderboard import Leaderboard, db_url

SPACE = {
    "objective": "tinynet",
    "params": {
        "input_size": 32,
        "blocks": 2,
        "base_filters": {"type": "int", "low": 4, "high": 12, "step": 4},
        "kernel_size": {"type": "categorical", "choices": [3, 5]},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": "sgd"}},
        "epochs": 1,
        "batch_size": 16,
    },
    "start": [{"kernel_size": 5, "lr": 0.005, "optimizer": "adam", "base_filters": 8}],
}


def search(tmp_path, data, *args, space=SPACE):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    run = CliRunner().invoke(app, ["search", "tinynet", "--space", str(path), "--data", str(data),
                                   "--results", str(tmp_path / "results"), "--pruner", "none", *args])
    return run


def rows(tmp_path, **kw):
    return Leaderboard(db_url(None, tmp_path / "results")).query(**kw)


def test_search_writes_real_leaderboard_rows_and_resumes(tmp_path, tiny_mit8):
    first = search(tmp_path, tiny_mit8, "--trials", "2", "--seed", "1")
    assert first.exit_code == 0, first.output
    stored = sorted(rows(tmp_path, study="space"), key=lambda r: r["trial_number"])
    assert [r["trial_number"] for r in stored] == [0, 1]
    assert stored[0]["params"] == {**SPACE["start"][0], "input_size": 32, "blocks": 2, "epochs": 1, "batch_size": 16}
    for r in stored:
        assert r["status"] == "complete" and r["objective"] == "tinynet" and r["backend"] == "optuna"
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1 and r["n_params"] > 0
        assert r["ratio"] == pytest.approx(r["val_accuracy"] * 1e5 / r["n_params"])
        assert r["params"]["input_size"] == 32 and r["epochs"] == 1 and r["code_version"]
        assert r["extras"]["classes"][:2] == ["Opencountry", "coast"]
        assert r["seed"] == 1 + r["trial_number"]

    again = search(tmp_path, tiny_mit8, "--trials", "3", "--seed", "1")  # continues the same study
    assert again.exit_code == 0, again.output
    numbers = sorted(r["trial_number"] for r in rows(tmp_path, study="space"))
    assert numbers == [0, 1, 2]
    done = search(tmp_path, tiny_mit8, "--trials", "3", "--seed", "1")  # already complete: nothing re-run
    assert done.exit_code == 0 and len(rows(tmp_path)) == 3

    board = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path / "results"), "--format", "json", "--sort", "params"])
    listed = json.loads(board.stdout)
    assert [r["n_params"] for r in listed] == sorted(r["n_params"] for r in listed)


def test_a_failing_trial_is_stored_and_the_sweep_goes_on(tmp_path, tiny_mit8):
    space = {"objective": "tinynet", "params": {
        "input_size": 32, "blocks": 2, "base_filters": 4, "epochs": 1, "batch_size": 16,
        "padding": {"type": "categorical", "choices": ["valid", "same"]},
        "residual": {"type": "categorical", "choices": [True]},
    }}
    run = search(tmp_path, tiny_mit8, "--trials", "4", "--sampler", "random", space=space)
    assert run.exit_code == 0, run.output
    stored = rows(tmp_path)
    assert len(stored) == 4
    failed = [r for r in stored if r["status"] == "failed"]
    complete = [r for r in stored if r["status"] == "complete"]
    assert failed and complete
    assert all(r["params"]["padding"] == "valid" for r in failed)
    assert all("residual blocks need padding=same" in r["failure_reason"] for r in failed)


def test_nsga2_is_multi_objective_and_asha_prunes(tmp_path, tiny_mit8):
    run = search(tmp_path, tiny_mit8, "--trials", "2", "--sampler", "nsga2", "--study", "multi")
    assert run.exit_code == 0, run.output
    assert len(rows(tmp_path, study="multi", status="complete")) == 2

    space = dict(SPACE, params={**SPACE["params"], "epochs": 4})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    run = CliRunner().invoke(app, ["search", "tinynet", "--space", str(path), "--data", str(tiny_mit8), "--results",
                                   str(tmp_path / "results"), "--pruner", "asha", "--study", "pruned", "--trials", "5"])
    assert run.exit_code == 0, run.output
    stored = rows(tmp_path, study="pruned")
    assert len(stored) == 5 and {r["status"] for r in stored} <= {"complete", "pruned"}
    for r in stored:
        if r["status"] == "pruned":  # the partial curve and size of a pruned trial are kept
            cut_at = r["epochs"]  # the epochs it trained, as data; its partial curve in the one history shape
            assert r["n_params"] > 0 and len(r["extras"]["history"]["val_accuracy"]) == cut_at
            assert r["failure_reason"] == f"pruned after epoch {cut_at}"
            assert f"trial {r['trial_number']} pruned at epoch {cut_at} val_acc=" in run.output


def test_two_worker_processes_share_one_study(tmp_path, tiny_mit8):
    run = search(tmp_path, tiny_mit8, "--trials", "4", "--jobs", "2", "--study", "parallel")
    assert run.exit_code == 0, run.output
    numbers = sorted(r["trial_number"] for r in rows(tmp_path, study="parallel"))
    assert len(numbers) >= 4 and len(set(numbers)) == len(numbers)


def test_two_workers_and_recycled_workers_draw_different_points(tmp_path, tiny_mit8):
    """Each worker process seeds its sampler by slot and by the trials the study held at its start: with the study's
    seed alone, both workers of --jobs 2 drew the same random points."""
    space = {**SPACE, "start": []}
    run = search(tmp_path, tiny_mit8, "--trials", "4", "--jobs", "2", "--sampler", "random", "--study", "draws", space=space)
    assert run.exit_code == 0, run.output
    drawn = [json.dumps(r["params"], sort_keys=True) for r in rows(tmp_path, study="draws")]
    assert len(drawn) >= 4 and len(set(drawn)) == len(drawn)


def test_same_seed_same_params_and_metrics(tmp_path, tiny_mit8):
    a = search(tmp_path / "a", tiny_mit8, "--trials", "2", "--seed", "5")
    b = search(tmp_path / "b", tiny_mit8, "--trials", "2", "--seed", "5")
    assert a.exit_code == b.exit_code == 0
    ra = sorted(rows(tmp_path / "a"), key=lambda r: r["trial_number"])
    rb = sorted(rows(tmp_path / "b"), key=lambda r: r["trial_number"])
    assert [r["params"] for r in ra] == [r["params"] for r in rb]
    assert [r["val_loss"] for r in ra] == pytest.approx([r["val_loss"] for r in rb], rel=1e-4)


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = search(tmp_path, tmp_path / "nope", "--trials", "1")
    assert run.exit_code == 2 and "no such folder" in run.output


def test_ctrl_c_stops_cleanly_keeps_finished_trials_and_resumes(tmp_path, tiny_mit8):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    cmd = [sys.executable, "-m", "bench.cli", "search", "tinynet", "--space", str(path), "--data", str(tiny_mit8),
           "--results", str(tmp_path / "results"), "--pruner", "none"]
    proc = subprocess.Popen(cmd + ["--trials", "50"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600  # a loaded machine is slow; the interrupt must land mid-search, not mid-import
    two_done = False
    while time.time() < deadline and proc.poll() is None and not two_done:
        two_done = (tmp_path / "results" / "leaderboard.db").exists() and len(rows(tmp_path, status="complete")) >= 2
        time.sleep(0.5)
    if not two_done:
        proc.kill()
        pytest.fail(f"the search did not finish 2 trials: {proc.communicate()[0][-2000:]}")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "every finished trial is kept" in output
    kept = rows(tmp_path)
    assert len([r for r in kept if r["status"] == "complete"]) >= 2
    assert all(r["status"] == "complete" or "interrupted" in (r["failure_reason"] or "") for r in kept)

    complete = len([r for r in kept if r["status"] == "complete"])
    resumed = subprocess.run(cmd + ["--trials", str(complete + 1)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = rows(tmp_path)
    numbers = [r["trial_number"] for r in after]
    assert len(set(numbers)) == len(numbers)
    assert len([r for r in after if r["status"] == "complete"]) == complete + 1  # an interrupted trial does not count


def test_a_trial_interrupted_at_its_start_is_run_again_on_resume(tmp_path, tiny_mit8):
    from bench import stop

    assert search(tmp_path, tiny_mit8, "--trials", "2").exit_code == 0
    stop._requested.set()  # what the first Ctrl-C does, landing just before the third trial starts
    interrupted = search(tmp_path, tiny_mit8, "--trials", "3")
    assert interrupted.exit_code == 130 and "every finished trial is kept" in interrupted.output
    assert not stop._requested.is_set() and len(rows(tmp_path)) == 2  # nothing of the third trial ran

    resumed = search(tmp_path, tiny_mit8, "--trials", "3")  # Optuna holds the third as failed: it must not count
    assert resumed.exit_code == 0, resumed.output
    stored = rows(tmp_path)
    assert len(stored) == 3 and all(r["status"] == "complete" for r in stored)


def test_pareto_asha_prunes_a_multi_objective_search(tmp_path, tiny_mit8):
    space = dict(SPACE, params={**SPACE["params"], "epochs": 3, "base_filters": {"type": "int", "low": 4, "high": 24, "step": 4}})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    base = ["search", "tinynet", "--space", str(path), "--data", str(tiny_mit8), "--results", str(tmp_path / "results")]
    run = CliRunner().invoke(app, base + ["--sampler", "nsga2", "--study", "moasha", "--trials", "6"])  # pareto-asha by default
    assert run.exit_code == 0, run.output
    stored = rows(tmp_path, study="moasha")
    assert len(stored) == 6 and {r["status"] for r in stored} <= {"complete", "pruned"}
    assert any(r["status"] == "pruned" for r in stored)
    for r in stored:
        if r["status"] == "pruned":
            assert r["epochs"] in PARETO_RUNGS and r["epochs"] < space["params"]["epochs"] and len(r["extras"]["history"]["val_accuracy"]) == r["epochs"]  # at a rung
    # each rung judged the trial on its validation accuracy and params there (what the sampler's rung order reads too)
    histories = {r["trial_number"]: (r["extras"]["history"], r["n_params"]) for r in stored}
    judged = optuna.load_study(study_name="moasha", storage=journal_storage(tmp_path / "results")).trials
    assert {t.number for t in judged if "rung_3" in t.user_attrs}, "no trial reached rung 3"
    for t in judged:
        history, n_params = histories[t.number]
        for rung in (1, 3):
            if f"rung_{rung}" in t.user_attrs:
                assert t.user_attrs[f"rung_{rung}"] == [pytest.approx(history["val_accuracy"][rung - 1]), n_params]
    wrong = CliRunner().invoke(app, base + ["--sampler", "tpe", "--pruner", "pareto-asha", "--study", "x", "--trials", "1"])
    assert wrong.exit_code == 2 and "use it with --sampler nsga2" in wrong.output


@pytest.mark.parametrize("within, b_pruned", [(None, True), ("variant", False)])
def test_prune_within_compares_a_trial_only_with_its_own_group(within, b_pruned):
    """Variant a learns fast and b slowly: a plain pruner cuts b at its first rung; pruning within variant does not."""

    from bench.backends.optuna import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", 9, within))
    for variant in ("a", "a", "a", "b"):
        study.enqueue_trial({"variant": variant})

    def objective(trial):
        level = 0.9 if trial.suggest_categorical("variant", ["a", "b"]) == "a" else 0.3
        for step in range(9):
            trial.report(level + 0.001 * step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return level

    study.optimize(objective, n_trials=4)
    b = study.trials[-1]
    assert b.params["variant"] == "b"
    assert (b.state == optuna.trial.TrialState.PRUNED) == b_pruned


def test_a_pruner_that_ignores_prune_within_says_so(tmp_path, tiny_mit8):
    space = {**SPACE, "prune_within": "optimizer"}
    run = search(tmp_path, tiny_mit8, "--trials", "1", "--pruner", "hyperband", space=space)
    assert run.exit_code == 0, run.output
    assert "prune_within: optimizer applies to Optuna's asha and median pruners only" in " ".join(run.output.split())
    quiet = search(tmp_path, tiny_mit8, "--trials", "1", "--study", "unpruned", space=space)  # --pruner none: nothing to say
    assert quiet.exit_code == 0 and "prune_within" not in quiet.output


def test_prune_within_must_name_a_categorical_param():
    from bench.space import SearchSpace, SpaceError

    raw = {"objective": "mlp", "params": {"variant": {"type": "categorical", "choices": ["a", "b"]},
                                          "lr": {"type": "float", "low": 0.001, "high": 0.1}}}
    assert SearchSpace.from_dict({**raw, "prune_within": "variant"}).prune_within == "variant"
    with pytest.raises(SpaceError, match="prune_within: 'lr' must name a categorical param"):
        SearchSpace.from_dict({**raw, "prune_within": "lr"})


def test_first_ctrl_c_is_a_stop_request_the_second_stops_at_once():
    import os
    import signal

    from bench import stop

    before = signal.getsignal(signal.SIGINT)  # default, or SIG_IGN for a job started in the background with `&`
    with stop.on_ctrl_c(message="test"):
        os.kill(os.getpid(), signal.SIGINT)  # handled: no exception here, only a request
        with pytest.raises(KeyboardInterrupt):
            stop.check()  # ... which the next safe point honours
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one raises where it lands
            signal.pause() if hasattr(signal, "pause") else None
    stop.check()  # outside, nothing is pending
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back


def test_a_search_whose_first_trials_all_fail_alike_stops_and_says_why(tmp_path, tiny_mit8):
    space = {"objective": "tinynet", "params": {"input_size": 32, "blocks": 2, "base_filters": 4, "epochs": 1,
                                                "padding": "valid", "residual": True,
                                                "lr": {"type": "float", "low": 0.001, "high": 0.01}}}
    import logging

    optuna_said = []  # what reaches Optuna's console handler
    catcher = logging.Handler()
    catcher.emit = optuna_said.append
    logging.getLogger("optuna").addHandler(catcher)
    try:
        run = search(tmp_path, tiny_mit8, "--trials", "20", space=space)
    finally:
        logging.getLogger("optuna").removeHandler(catcher)
    assert run.exit_code == 2
    assert "the first 3 trials all failed with the same reason" in run.output and "padding=same" in run.output
    stored = rows(tmp_path)
    assert len(stored) == 3 and all(r["status"] == "failed" for r in stored)

    # one line per failure on the console; the tracebacks go to the study's failures.log
    assert not [r for r in optuna_said if r.exc_info or "failed with" in r.getMessage()]
    log = tmp_path / "results" / "space" / "failures.log"
    assert str(log) in run.output.replace("\n", "")
    blocks = log.read_text().split("--- trial ")[1:]
    assert [b.split(",")[0] for b in blocks] == ["0", "1", "2"]
    assert all("Traceback (most recent call last)" in b and "padding=same" in b for b in blocks)


def test_the_all_fail_stop_reads_this_searchs_trials_from_the_study():
    """Each trial may run in its own worker process, so the stop counts the study's trials, not a process's: the
    first three of this search (from `first`, on this machine) failed alike."""
    import socket

    from bench.backends.optuna import StopWhenAllFail

    def trial(state, reason="", host=socket.gethostname()):
        attrs = {"worker": f"{host}:1", **({"failure_reason": reason} if reason else {})}
        return optuna.trial.create_trial(state=state, user_attrs=attrs, **({"value": 0.5} if state.name == "COMPLETE" else {}))

    fail, done = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE
    cases = [  # (trials already in the study, this search's first trial, whether it stops)
        ([trial(fail, "no weights")] * 3, 0, True),
        ([trial(fail, "no weights"), trial(fail, "no weights"), trial(fail, "out of memory")], 0, False),
        ([trial(done), trial(fail, "no weights"), trial(fail, "no weights"), trial(fail, "no weights")], 0, False),
        ([trial(done), trial(fail, "no weights"), trial(fail, "no weights"), trial(fail, "no weights")], 1, True),  # resumed
        ([trial(fail, "no weights", host="elsewhere")] + [trial(fail, "no weights")] * 2, 0, False),  # 2 of ours so far
    ]
    for trials, first, stops in cases:
        study = optuna.create_study()
        for t in trials:
            study.add_trial(t)
        check = StopWhenAllFail(first)  # called as a callback of optimize, the only place Study.stop may be called
        study.optimize(lambda t: 0.0, n_trials=1, callbacks=[lambda s, _: check(s, s.trials[len(trials) - 1])])
        assert (check.reason is not None) == stops, (trials, first)
        assert check.reason in (None, "no weights")


def test_progress_best_counts_complete_trials_only():
    import io

    from rich.console import Console

    from bench.progress import SearchProgress

    out = io.StringIO()
    with SearchProgress(Console(file=out, width=200)) as progress:  # not a terminal: a line per trial
        progress.begin(study_done=0, total=3)
        progress.trial_done(0, "complete", 0.5, 1.0)
        progress.trial_done(1, "pruned", 0.9, 1.0)  # its value is from a run cut short at a rung
        progress.trial_done(2, "fail", None, 1.0, failure="out of memory")
    lines = [line for line in out.getvalue().splitlines() if line.startswith("trial ")]
    assert lines == ["trial 0 complete val_acc=0.500 in 1.0 s (1/3) best val_acc=0.500",
                     "trial 1 pruned val_acc=0.900 in 1.0 s (2/3) best val_acc=0.500",
                     "trial 2 fail in 1.0 s (3/3) best val_acc=0.500: out of memory"]


def test_confirm_reruns_the_best_configurations_over_seeds(tmp_path, tiny_mit8):
    assert search(tmp_path, tiny_mit8, "--trials", "3").exit_code == 0
    original = {r["trial_number"]: r for r in rows(tmp_path, study="space")}
    common = ["confirm", "--study", "space", "--top", "2", "--seeds", "2", "--data", str(tiny_mit8),
              "--results", str(tmp_path / "results")]
    run = CliRunner().invoke(app, common)
    assert run.exit_code == 0, run.output
    assert "by mean validation accuracy" in " ".join(run.output.split())
    assert "trial 1 complete val_acc=" in run.output  # each configuration's runs show their progress

    table = [line.split() for line in run.output.splitlines()]
    ranked = [int(cells[1]) for cells in table if len(cells) > 2 and cells[0] in ("1", "2") and cells[1].isdigit()]
    second_best = sorted((r["val_accuracy"] for r in original.values()), reverse=True)[1]
    assert len(ranked) == 2 and all(original[n]["val_accuracy"] >= second_best for n in ranked)
    means = []
    for number in ranked:
        row = original[number]
        runs = sorted(rows(tmp_path, study=f"space-confirm-{number}"), key=lambda r: r["trial_number"])
        assert [r["status"] for r in runs] == ["complete", "complete"] and [r["seed"] for r in runs] == [0, 1]
        assert all(r["params"] == row["params"] for r in runs)  # the same configuration, other training seeds
        if number < 2:  # (2 of trials 0-2 always include 0 or 1) a run at the trial's own seed and split reproduces it
            again = runs[number]
            assert again["val_loss"] == pytest.approx(row["val_loss"], rel=1e-5)
            assert again["test_accuracy"] == row["test_accuracy"]
        means.append(sum(r["val_accuracy"] for r in runs) / 2)
    assert means == sorted(means, reverse=True)  # ranked by mean validation accuracy

    before = len(rows(tmp_path))
    assert CliRunner().invoke(app, common).exit_code == 0 and len(rows(tmp_path)) == before  # resumes: nothing re-run
    missing = CliRunner().invoke(app, ["confirm", "--study", "nope", "--results", str(tmp_path / "results"),
                                       "--data", str(tiny_mit8)])
    assert missing.exit_code == 2 and "study 'nope' has no complete trial" in missing.output
