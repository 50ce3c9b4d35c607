"""Optuna workers sharing a study on a real PostgreSQL server; one is killed with SIGKILL mid-trial."""
import subprocess
import sys
import time

import optuna
import yaml

from bench.leaderboard import Leaderboard
from bench.space import SearchSpace

SPACE = {
    "objective": "tinynet",
    "params": {
        "input_size": 32, "blocks": 2, "batch_size": 16, "epochs": 3,
        "base_filters": {"type": "int", "low": 4, "high": 16, "step": 4},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
}
TRIALS = 6
SPACE_SAMPLED = set(SPACE["params"]) - set(SearchSpace.from_dict(SPACE).fixed())  # the space's own rule for what is drawn


def bench(*args):
    return [sys.executable, "-m", "bench.cli", *map(str, args)]


def test_killed_worker_trial_is_failed_and_retried_while_two_workers_finish(tmp_path, tiny_mit8, postgres_url):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    common = ["--storage", postgres_url, "--heartbeat", "1", "--data", tiny_mit8, "--results", tmp_path / "results"]
    first = subprocess.Popen(bench("search", "tinynet", "--space", space, "--study", "shared", "--trials", TRIALS,
                                   "--pruner", "none", *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = optuna.storages.RDBStorage(postgres_url)
    running = None
    deadline = time.time() + 180
    while running is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            continue
        running = next((t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING), None)
    assert running is not None, "the first worker never started a trial"
    first.kill()  # SIGKILL: no chance to clean up; its trial stays RUNNING until its heartbeat goes stale
    first.wait()

    workers = [subprocess.Popen(bench("worker", "--study", "shared", *common), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers)))  # none lost, none duplicated
    killed = trials[running]
    assert killed.state == optuna.trial.TrialState.FAIL
    # on this machine a worker sees at once that the killed trial's process is gone; on another, its heartbeat goes stale
    retried = [t for t in trials if running in (t.system_attrs.get("failed_trial"), t.user_attrs.get("retry_of"))]
    if killed.params:  # the params it had drawn run again; a kill mid-draw leaves the rest to be drawn afresh
        assert len(retried) == 1 and killed.params.items() <= retried[0].params.items()
        assert retried[0].params.keys() == SPACE_SAMPLED
    else:  # killed as it began, before it drew any: nothing to run again, and it does not count toward --trials
        assert not retried and killed.user_attrs.get("interrupted")
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= TRIALS

    rows = {r["trial_number"]: r for r in Leaderboard(postgres_url).query(study="shared")}
    reason = rows[running]["failure_reason"]
    assert "(killed?)" in reason
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert {n for n, r in rows.items() if r["status"] == "complete"} == complete


def test_worker_needs_an_existing_study(tmp_path, postgres_url, tiny_mit8):
    run = subprocess.run(bench("worker", "--study", "nope", "--storage", postgres_url, "--data", tiny_mit8,
                               "--results", tmp_path), capture_output=True, text=True)
    assert run.returncode == 2 and "no study 'nope'" in run.stderr
