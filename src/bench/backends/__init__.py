"""Backends run a search (the Backend protocol below). None of them knows a model family.

What every backend shares lives here: the contract, the search settings, and running one trial into the leaderboard.
"""
from __future__ import annotations

import importlib
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bench import stop
from bench.data import DataError
from bench.leaderboard import now
from bench.objective import Objective, Pruned, Result, TrialContext, TrialFailed
from bench.recorder import TrialRecorder
from bench.safe import study_name

if TYPE_CHECKING:
    from bench.space import SearchSpace

BACKENDS = {"optuna": "bench.backends.optuna", "ray": "bench.backends.ray", "kerastuner": "bench.backends.kerastuner"}


@runtime_checkable
class Backend(Protocol):
    """What a search backend gives bench. Each of bench's is a module (BACKENDS) holding these names at its top level.

    SAMPLERS, PRUNERS: the names --sampler and --pruner take; SAMPLERS[0] is the default sampler.
    GROUPED_PRUNERS: the pruners that honour a space's `prune_within` (compare a trial only with its own group); ().
    """

    SAMPLERS: tuple[str, ...]
    PRUNERS: tuple[str, ...]
    GROUPED_PRUNERS: tuple[str, ...]

    def default_pruner(self, sampler: str) -> str:
        """Receives the chosen sampler; returns the pruner a search gets when --pruner is not given."""

    def run(self, space: SearchSpace, config: SearchConfig, progress: Any = None) -> Any:
        """Receives the validated space, the search's settings and a bench.progress.SearchProgress (or None); runs
        config.trials trials of config.objective, each one's row in the leaderboard at config.db_url (through
        execute_trial) whatever its end; returns when they are done, or raises KeyboardInterrupt on a stop request,
        ValueError when every trial fails. What it returns is the backend's own (Optuna: the study)."""


@dataclass
class SearchConfig:
    objective: str
    study: str
    trials: int
    db_url: str
    results_dir: Path
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "none"
    timeout: float | None = None
    jobs: int = 1
    storage: str | None = None
    data_root: str | None = None
    cache_dir: Path | None = None
    keep_top: int | None = None  # artifacts for `bench report`: see TrialContext.keep_top and bench.artifacts
    keep_models: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    max_params: int | None = None
    heartbeat: int = 30  # seconds, for database storages: a trial silent for twice this is failed and retried
    address: str | None = None  # Ray: a cluster to join (auto, HOST:PORT); none starts a local one
    cpus_per_trial: int = 1  # Ray
    resume: bool = False  # Ray: restore an interrupted experiment
    trial_timeout: float | None = None  # seconds: a trial running longer has its worker process killed, and fails
    trial_memory: float | None = None  # MB: a worker process holding more has its trial failed
    # Optuna: trials per worker process before a fresh one takes over. Workers are forked from a server that has
    # imported TensorFlow, so a fresh one per trial costs about 0.4 s between trials, and its trial starts without
    # what earlier trials left behind (default search on MIT8, the first 360 s: 17 trials and a peak summed PSS of
    # 1,364 MiB, against 13 trials and 1,503 MiB with a worker for 10 trials; the draws differ after trial 5)
    recycle: int = 1
    # Optuna, with recycle above 1: a worker whose resident memory has passed this many MB after a trial makes way
    # for a fresh one sooner. At 950 MB a default MIT8 run with spawned workers for 10 trials peaked at 1.62 GiB (61
    # trials in 30 min); at 850, 1.39 GiB (71 trials; not like for like: the two runs drew different trials)
    recycle_mb: float | None = 850

    def __post_init__(self):
        study_name(self.study)  # it becomes a folder under results_dir: checked wherever a search is set up

    def context(self, trial_number: int, backend: str, report_hook=None, progress=None) -> TrialContext:
        """One trial's context: its own seed, the study's validation split, its artifact folder's backend."""
        return TrialContext(
            seed=self.seed + trial_number, data_root=self.data_root, cache_dir=self.cache_dir,
            val_fraction=self.val_fraction, test_fraction=self.test_fraction, split_seed=self.seed, max_params=self.max_params,
            report_hook=report_hook, progress=progress, run_dir=self.results_dir / self.study,
            trial_number=trial_number, backend=backend, keep_top=self.keep_top, keep_models=self.keep_models,
        )


def execute_trial(objective: Objective, params: dict[str, Any], ctx: TrialContext, recorder: TrialRecorder) -> Result:
    """Run trial ctx.trial_number and store its row whatever happens: complete, pruned, or failed with the reason.

    Pruned and TrialFailed go on to the backend; bad data ends the whole search (every trial would fail). A row the
    database does not take is kept by the recorder, never raised: a trial's result outlives a database restart.
    """
    started, number = now(), ctx.trial_number
    try:
        stop.check()  # a stop asked for during the last trial: do not start this one (its row says so)
        result = objective.run(params, ctx)
    except Pruned as e:
        recorder.pruned(number, params, e.epoch, started, ctx.curve, ctx.n_params, seed=ctx.seed, reason=str(e))
        raise
    except DataError:
        raise
    except KeyboardInterrupt:
        recorder.failed(number, params, "interrupted by the user (Ctrl-C)", started, ctx.curve, ctx.n_params, seed=ctx.seed)
        raise
    except Exception as e:  # any failure of one trial is stored, and the sweep goes on
        reason = str(e) if isinstance(e, TrialFailed) else f"{type(e).__name__}: {e}"
        log_failure(ctx.run_dir / FAILURE_LOG, number, params)
        recorder.failed(number, params, reason, started, ctx.curve, ctx.n_params, seed=ctx.seed)
        raise TrialFailed(reason) from e
    recorder.complete(number, params, result, started, seed=ctx.seed)
    return result


FAILURE_LOG = "failures.log"  # in the study's run folder


def log_failure(path: Path, trial_number: int, params: dict[str, Any]) -> None:
    """Append the traceback being handled: the console shows a failed trial in one line, and this keeps the rest."""
    log_failure_reason(path, trial_number, f"params {json.dumps(params, default=str)}\n{traceback.format_exc()}")


def log_failure_reason(path: Path, trial_number: int, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:  # several workers may append; each writes one block
        log.write(f"--- trial {trial_number}, {now()}, {text}\n")


def get_backend(name: str) -> Backend:
    """The backend named name (one of BACKENDS), imported now; KeyError for an unknown name."""
    if name not in BACKENDS:
        raise KeyError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    backend = importlib.import_module(BACKENDS[name])
    if not isinstance(backend, Backend):
        raise TypeError(f"{BACKENDS[name]} does not give every name of bench.backends.Backend")
    return backend
