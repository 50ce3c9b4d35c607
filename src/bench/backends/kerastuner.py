"""keras-tuner backend (the paper's own tool): random, hyperband and bayesian tuners over the same YAML space.

keras-tuner only decides the points (and, for hyperband, the epochs of each); bench's objective trains and scores them
and writes the same leaderboard rows as every backend. State lives in RESULTS/kerastuner/<study>, so a re-run resumes.
keras-tuner needs `tensorboard` installed on the TensorFlow backend.
Each trial runs in a child process (bench.backends.processes.TrialProcess, reused for CHILD_TRIALS trials): a crash, an
out-of-memory kill or a hang there fails that trial only, and --trial-timeout / --trial-memory kill it at the limit.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from bench.backends import SearchConfig, execute_trial
from bench.leaderboard import Leaderboard
from bench.recorder import TrialRecorder
from bench.objective import Pruned, TrialFailed, get_objective
from bench.space import SearchSpace

SAMPLERS = ("random", "hyperband", "bayesian")
PRUNERS = ("none",)  # hyperband schedules epochs itself; keras-tuner has no per-epoch pruning
GROUPED_PRUNERS: tuple[str, ...] = ()  # a space's prune_within is Optuna's only


def default_pruner(sampler: str) -> str:
    return PRUNERS[0]



def _tuner_class(name: str):
    import keras_tuner as kt

    classes = {"random": kt.RandomSearch, "hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization}
    if name not in classes:
        raise ValueError(f"keras-tuner sampler must be one of {SAMPLERS}, got '{name}'")
    return classes[name]


# trials one child process runs before a fresh one takes over: TrialProcess spawns its children, each paying the
# 5.6-s import of TensorFlow, so they live longer than the Optuna backend's forked workers (SearchConfig.recycle)
CHILD_TRIALS = 10


def run(space: SearchSpace, config: SearchConfig, progress=None):
    import keras_tuner as kt

    from bench.backends.processes import LimitedObjective, TrialProcess

    objective = get_objective(config.objective)
    limited = TrialProcess(config.trial_timeout, config.trial_memory, recycle=CHILD_TRIALS)
    runs = LimitedObjective(config.objective, limited)  # keras-tuner's loop stays here; the training goes to the child
    recorder = TrialRecorder(config, "kerastuner")
    base = _tuner_class(config.sampler)
    max_epochs = int(space.fixed().get("epochs") or objective.defaults.get("epochs", 10))

    class BenchTuner(base):
        def run_trial(self, trial, *args, **kwargs):
            params = space.to_kerastuner(trial.hyperparameters)
            if "tuner/epochs" in trial.hyperparameters.values:  # hyperband sets each trial's epoch budget
                params["epochs"] = int(trial.hyperparameters.get("tuner/epochs"))
            number = int(trial.trial_id)
            ctx = config.context(number, "kerastuner", progress=progress.epoch if progress else None)
            if progress:
                progress.start_trial(number)
            started = time.perf_counter()
            try:
                result = execute_trial(runs, params, ctx, recorder)
            except (TrialFailed, Pruned) as e:
                if progress:
                    state = "pruned" if isinstance(e, Pruned) else "failed"  # pruned: by the family's compute cap
                    progress.trial_done(number, state, None, time.perf_counter() - started)
                raise kt.errors.FailedTrialError(str(e)) from None  # keras-tuner has no pruned state; the row has it
            if progress:
                progress.trial_done(number, "complete", result.val_accuracy, time.perf_counter() - started)
            return {"val_accuracy": result.val_accuracy}

    hp = kt.HyperParameters()
    space.to_kerastuner(hp)  # declare the whole space up front, conditions included
    options = dict(
        objective=kt.Objective("val_accuracy", "max"), hyperparameters=hp, tune_new_entries=False, seed=config.seed,
        directory=str(Path(config.results_dir) / "kerastuner"), project_name=config.study, overwrite=False,
        max_consecutive_failed_trials=max(3, config.trials),
    )
    if config.sampler == "hyperband":
        options.update(max_epochs=max_epochs, factor=3, hyperband_iterations=1)
    else:
        options.update(max_trials=config.trials)
    tuner = BenchTuner(**options)
    old = Leaderboard(config.db_url).trial_numbers(config.study, "kerastuner")
    if old and not tuner.oracle.trials:  # keras-tuner numbers from 0 again: the rows would collide, and are never replaced
        raise ValueError(f"the leaderboard already holds {len(old)} kerastuner rows of study '{config.study}', but "
                         f"keras-tuner's state for it ({Path(config.results_dir) / 'kerastuner' / config.study}) is gone: "
                         f"restore that folder, or pick another --study")
    try:
        with progress or nullcontext():
            if progress:
                progress.begin(study_done=len(tuner.oracle.trials), total=config.trials)
            tuner.search()
    finally:
        limited.close()
    return tuner
