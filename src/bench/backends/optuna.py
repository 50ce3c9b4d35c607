"""Optuna backend: samplers tpe / random / grid / cmaes / nsga2, pruners none / median / hyperband.

Storage defaults to Optuna's journal file under results/ (safe with several local worker processes,
unlike SQLite); any Optuna storage URL (postgresql://..., sqlite:///...) is accepted. `--jobs N` runs N worker
processes on the same study; TensorFlow does not share one process well between threads.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime
import warnings
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import psutil

from bench import stop
from bench.backends import FAILURE_LOG, SearchConfig, execute_trial, log_failure_reason
from bench.backends.processes import WorkerEvents, first_worker, supervise
from bench.data import DataError
from bench.leaderboard import CONNECTION_ERRORS, DatabaseUnreachable, Leaderboard, driver_url, shared
from bench.recorder import KEPT_ROW, TrialRecorder, sync_study
from bench.objective import OBJECTIVES, Objective, Pruned, TrialFailed, get_objective
from bench.pareto import pareto_promotable
from bench.space import SearchSpace

JOURNAL = "optuna.journal"  # the default storage, in the results folder (journal_storage)
SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2", "motpe")
MULTI_OBJECTIVE = ("nsga2", "motpe")  # maximise validation accuracy, minimise parameters
PRUNERS = ("asha", "hyperband", "median", "pareto-asha", "none")
GROUPED_PRUNERS = ("asha", "median", "pareto-asha")  # the pruners that honour a space's prune_within
START_POINT = "start_point"  # user attribute of the space's start points: anchors the pruner measures against, never prunes
# pareto-asha: a trial goes on past epoch 1, 3, 9, ... only in the best quarter of the trials that reached it.
# A quarter, not Optuna's third: at a third (rungs 1, 3, 9), 41 of a default TinyNet run's 87 trials went past epoch 1
# and 19 past epoch 3; at a quarter, 21 of 61 past epoch 1 and 9 past epoch 4 (MIT8, 30 minutes each). Rungs 1, 3, 9
# with that quarter, not 1, 4, 16: the default run finished 128 trials in 30 minutes instead of 114, with 4 complete
# against 3, peak summed PSS 1.28 GiB against 1.37, and a sampled model under 20,000 params at test >= 0.85 in both
# (19,123 params at 0.857; 10,667 at 0.867).
PARETO_REDUCTION = 4
PARETO_RUNGS = (1, 3, 9, 27, 81)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class _QuietStoredFailures(logging.Filter):
    """Optuna logs a failed trial with its whole traceback, chained through TrialFailed, so each reason shows three
    times. bench has stored the reason, written the traceback to the study's failures.log, and shows one line."""

    def __init__(self):
        super().__init__()
        self.follow_up = False  # Optuna's "Trial N failed with value None." line that comes next

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            self.follow_up = True
            return False
        if self.follow_up and "failed with value" in record.getMessage():
            self.follow_up = False
            return False
        return True


logging.getLogger("optuna.study._optimize").addFilter(_QuietStoredFailures())


def make_sampler(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "cmaes":  # CMA-ES handles float/int; categoricals fall back to random sampling
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "motpe":  # TPE on two objectives: models are sampled near the whole front, small ones on purpose
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    raise ValueError(f"unknown sampler '{name}'; one of {SAMPLERS}")


class OwnedTrials(optuna.samplers.BaseSampler):
    """The study's sampler, which also marks each new trial with the process that runs it (`host:pid`) the moment the
    trial is created, so a trial whose process is killed is known as soon as that process is gone (fail_orphans).

    It shows the sampler the study through _RungOrder, so that TPE on two objectives learns from pruned trials."""

    def __init__(self, sampler: optuna.samplers.BaseSampler):
        self.sampler = sampler

    def before_trial(self, study, trial) -> None:
        study._storage.set_trial_user_attr(trial._trial_id, "worker", _owner())
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(_RungOrder(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(_RungOrder(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(_RungOrder(study), trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def worker_sampler(config: SearchConfig, space: SearchSpace, slot: int, trials_so_far: int) -> OwnedTrials:
    """The sampler of one worker process, seeded by the study's seed, the worker's slot and the trials the study held
    when it started: with the study's seed alone, the two workers of `--jobs 2` drew the same random points, and each
    recycled worker drew again the points its predecessor had (a random sampler's trials 10-19 repeated 0-9). The
    same command still draws the same trials with --jobs 1."""
    return OwnedTrials(make_sampler(config.sampler, space, config.seed + 7919 * slot + trials_so_far))


def rung_score(trial: optuna.trial.FrozenTrial) -> tuple[int, float]:
    """(deepest pareto-asha rung reached, validation accuracy there): how far a pruned trial got, and how well."""
    rungs = [(int(key[5:]), value[0]) for key, value in trial.user_attrs.items() if key.startswith("rung_")]
    return max(rungs, default=(0, 0.0))


class _RungOrder:
    """The study as the sampler sees it: pruned trials listed best first by rung_score.

    Why: a multi-objective study takes no intermediate values, so Optuna's TPE ranks all its pruned trials alike and
    fills the "good" half of its model, after the few complete trials, with the pruned trials it meets first (the
    earliest: the stable sort in optuna.samplers._tpe.sampler._split_pruned_trials). Listed by rung, the pruned trials
    it counts as good are the ones that went furthest and scored best. Single-objective studies rank pruned trials by
    their intermediate values already; this order changes nothing for them."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def _get_trials(self, *args, **kwargs):
        trials = self._study._get_trials(*args, **kwargs)
        pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        rest = [t for t in trials if t.state != optuna.trial.TrialState.PRUNED]
        return rest + sorted(pruned, key=rung_score, reverse=True)

    def get_trials(self, deepcopy: bool = True, states=None):
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    def __getattr__(self, name):
        return getattr(self._study, name)


class _GroupView:
    """The study as seen from one group of its trials: get_trials keeps the trials whose `param` has `value`."""

    def __init__(self, study: optuna.Study, param: str, value: Any):
        self._study, self._param, self._value = study, param, value

    def get_trials(self, *args, **kwargs):
        return [t for t in self._study.get_trials(*args, **kwargs) if t.params.get(self._param) == self._value]

    def __getattr__(self, name):
        return getattr(self._study, name)


class GroupedPruner(optuna.pruners.BasePruner):
    """Prunes a trial against the trials with the same value of `param` only (a space's prune_within)."""

    def __init__(self, base: optuna.pruners.BasePruner, param: str):
        self.base, self.param = base, param

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.param not in trial.params:
            return self.base.prune(study, trial)
        return self.base.prune(_GroupView(study, self.param, trial.params[self.param]), trial)


def make_pruner(name: str, max_epochs: int | None, within: str | None = None) -> optuna.pruners.BasePruner:
    """Pruners act on the per-epoch validation accuracy. asha is successive halving: rungs at 1, 3, 9, 27 epochs.

    within: a param whose groups are pruned apart (asha and median; hyperband keeps its own brackets)."""
    pruner = _make_pruner(name, max_epochs)
    return GroupedPruner(pruner, within) if within and name in GROUPED_PRUNERS else pruner


def _make_pruner(name: str, max_epochs: int | None) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":  # a known epoch budget sets the brackets now, not after the first full trial
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto", reduction_factor=3)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "pareto-asha":  # decided in the trial function (Optuna cannot prune multi-objective studies itself)
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner '{name}'; one of {PRUNERS}")


def is_database_url(storage: str | None) -> bool:
    return bool(storage) and storage.split("://")[0].split("+")[0] in ("postgresql", "mysql", "sqlite")


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat outlives a transient database error. Optuna records heartbeats in a thread
    that ends at the first exception (storages/_heartbeat.py: HeartbeatThread._record_heartbeat), so one failed write
    left a live trial silent: after the grace period another worker failed it and ran it again, while the first went
    on to store it too. Here a failed heartbeat is logged and the thread tries again at its next beat."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (optuna.exceptions.StorageInternalError, *CONNECTION_ERRORS) as e:  # Optuna wraps SQLAlchemy's errors
            cause = e.__cause__ or e
            lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            logging.getLogger(__name__).warning("heartbeat of trial id %s not recorded (%s); retried at the next beat",
                                                trial_id, lines[0] if lines else type(cause).__name__)


def make_storage(config: SearchConfig):
    """A database URL gets heartbeats: a worker that dies mid-trial has that trial failed and retried by the others."""
    if is_database_url(config.storage):
        warnings.filterwarnings("ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning)
        url = driver_url(config.storage)
        try:
            return PatientRDBStorage(
                url, heartbeat_interval=config.heartbeat, grace_period=2 * config.heartbeat,
                heartbeat_stale_trial_callback=_stale_trial_handler(config), engine_kwargs={"pool_pre_ping": True},
            )
        except CONNECTION_ERRORS as e:
            raise DatabaseUnreachable(url, e) from None
    if config.storage:
        return config.storage
    return journal_storage(config.results_dir)


def journal_storage(results_dir: Path, create: bool = True):
    """The default storage, RESULTS/optuna.journal; None when create is False and there is no such file."""
    path = Path(results_dir) / JOURNAL
    if not create and not path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _stale_trial_handler(config: SearchConfig):
    with warnings.catch_warnings():  # "experimental" in Optuna 5, and the supported way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)

    def handle(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _store_failed_row(config, study, trial, "its worker stopped sending heartbeats (killed?); retried as a new trial")
        retry(study, trial)

    return handle


def _store_failed_row(config: SearchConfig, study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """The leaderboard row of a trial that ended outside its own trial function (its worker died or hung); should the
    database not take it, `bench leaderboard --sync` rebuilds it from the failed trial. Its params are the sampled
    ones and the space's fixed ones, as in the rows its trial function writes."""
    space = study.user_attrs.get("space")
    fixed = SearchSpace.from_dict(space, source=f"study {config.study}").fixed() if space else {}
    TrialRecorder(config, "optuna").failed(trial.number, {**fixed, **trial.params}, reason, trial.datetime_start)


def _stored_row(config: SearchConfig, number: int) -> dict[str, Any] | None:
    """The trial's leaderboard row, if it has one (None too when the database cannot be reached)."""
    try:
        return shared(config.db_url).row(config.study, "optuna", number)
    except (DatabaseUnreachable, *CONNECTION_ERRORS):
        return None


def fail_lost_trial(config: SearchConfig, study: optuna.Study, number: int, reason: str, retry: bool = False) -> bool:
    """Store a trial whose worker process died or hung under it: failed, with the reason, in Optuna and the leaderboard.

    retry: the trial was cut short by no fault of its own (the search was killed): it does not count toward --trials
    and its params are queued to run again. Returns False when the trial had been stored after all."""
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    stored = _stored_row(config, number)
    try:  # the tell is the claim: when two processes find the same lost trial, one tell wins and the other raises
        if stored and stored["status"] == "complete":  # its process was killed after its row was written, before the tell
            study.tell(number, [stored["val_accuracy"], stored["n_params"]] if multi_objective(config) else stored["val_accuracy"])
            return False
        if stored and stored["status"] == "pruned":
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            return False
        study._storage.set_trial_user_attr(trial._trial_id, "failure_reason", reason)
        if retry:
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # "Cannot tell a FAIL trial": another one did
        return False
    if retry and trial.params:  # killed before its params were drawn, it has nothing to run again
        anchor = {START_POINT: True} if trial.user_attrs.get(START_POINT) else {}
        study.enqueue_trial(trial.params, user_attrs={"retry_of": number, **anchor})
    _store_failed_row(config, study, trial, reason)
    return True


def fail_trials_of(config: SearchConfig, study: optuna.Study, owner: str, reason: str, retry: bool = False) -> list[int]:
    """Fail the RUNNING trials of one worker process (`host:pid`); returns their numbers."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [t.number for t in running
            if t.user_attrs.get("worker") == owner and fail_lost_trial(config, study, t.number, reason, retry)]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphans(config: SearchConfig, study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a search on this machine that was killed (kill -9, OOM, power loss): their process is
    gone, and without a heartbeat (journal storage) nothing else would ever end them. Each is failed with the reason
    and run again; returns their numbers."""
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = []
    for owner in {str(t.user_attrs.get("worker", "")) for t in running}:
        if owner.startswith(host + ":") and not _alive(int(owner.rsplit(":", 1)[1])):
            orphans += fail_trials_of(config, study, owner, "its search process ended while it ran (killed?); run again",
                                      retry=True)
    now_ = datetime.now()
    for t in running:  # created, then killed before its process could mark it (a window of a fraction of a second)
        if "worker" not in t.user_attrs and not t.params and (now_ - t.datetime_start).total_seconds() > ORPHAN_GRACE:
            if fail_lost_trial(config, study, t.number, "its process ended as the trial began (killed?)", retry=True):
                orphans.append(t.number)
    return orphans


ORPHAN_GRACE = 10.0  # seconds: a live worker marks its new trial within a fraction of a second


def _alive(pid: int) -> bool:
    """A process that runs (a zombie nobody reaped, as after kill -9 of its parent, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def multi_objective(config: SearchConfig) -> bool:
    return config.sampler in MULTI_OBJECTIVE


def open_study(config: SearchConfig, space: SearchSpace) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize", "minimize"] if multi_objective(config) else ["maximize"]
    study = optuna.create_study(
        study_name=config.study, storage=make_storage(config), sampler=OwnedTrials(make_sampler(config.sampler, space, config.seed)),
        pruner=make_pruner(config.pruner, space.fixed().get("epochs"), space.prune_within), directions=directions, load_if_exists=True,
    )
    if list(study.directions) != [getattr(optuna.study.StudyDirection, d.upper()) for d in directions]:
        raise ValueError(f"study '{config.study}' exists with other directions; pick another --study name")
    if not study.trials:  # a new study evaluates the space's known-good points first
        for point in space.start:
            study.enqueue_trial(point, user_attrs={START_POINT: True}, skip_if_exists=True)
    if "space" not in study.user_attrs:  # what `bench worker` needs to join with nothing but the study's name
        study.set_user_attr("objective", config.objective)
        study.set_user_attr("space", space.model_dump(mode="json"))
        study.set_user_attr("search", {k: getattr(config, k) for k in SHARED_SETTINGS})
    return study


SHARED_SETTINGS = ("trials", "seed", "sampler", "pruner", "val_fraction", "test_fraction", "max_params")


def join(config: SearchConfig, progress=None) -> optuna.Study:
    """A worker joining an existing study: objective, space and settings come from the study itself."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=config.study, storage=make_storage(config))
    except KeyError:
        raise ValueError(f"no study '{config.study}' in {config.storage}; start it with `bench search ... --storage`") from None
    attrs = study.user_attrs
    if "space" not in attrs:
        raise ValueError(f"study '{config.study}' was not created by bench search (it has no space attached)")
    settings = dict(attrs["search"])
    if config.trials:  # a worker may ask for a different total
        settings["trials"] = config.trials
    space = SearchSpace.from_dict(attrs["space"], source=f"study {config.study}")
    joined = replace(config, objective=attrs["objective"], trial_timeout=config.trial_timeout or space.trial_timeout, **settings)
    fail_orphans(joined, study)
    _supervise(joined, space, study, progress)
    return study


def best_value(study: optuna.Study) -> float | None:
    """The best validation accuracy so far (the first objective of a multi-objective study)."""
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    return max(values, default=None)


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward --trials: a trial stopped by Ctrl-C did not finish, and a resumed search runs it again."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if not t.user_attrs.get("interrupted"))


def make_way_above(limit_mb: float | None):
    """A callback that ends this worker after a trial once its resident memory passes limit_mb: the supervisor
    starts a fresh one, so the search's memory stays near one worker's start plus one trial's."""
    def check(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if limit_mb and psutil.Process().memory_info().rss > limit_mb * 2**20:
            study.stop()
    return check


def stop_at_total(total: int):
    """A callback that stops the study once it holds `total` finished trials (all workers together)."""
    def check(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if finished_count(study) >= total:
            study.stop()
    return check


def _trial_function(objective: Objective, space: SearchSpace, config: SearchConfig, recorder: TrialRecorder, progress=None):
    multi = multi_objective(config)

    def run(trial: optuna.Trial):
        params = space.to_optuna(trial)
        anchor = bool(trial.user_attrs.get(START_POINT))  # pareto-asha runs a start point in full: the yardstick of its rungs

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            if "val_accuracy" not in metrics:
                return False
            if config.pruner == "pareto-asha":
                return _pareto_prune(trial, epoch + 1, metrics["val_accuracy"], ctx.n_params, space.prune_within) and not anchor
            if multi:  # Optuna cannot prune multi-objective studies
                return False
            trial.report(metrics["val_accuracy"], step=epoch + 1)
            return trial.should_prune()

        ctx = config.context(trial.number, "optuna", report_hook=report, progress=progress.epoch if progress else None)
        if progress:
            progress.start_trial(trial.number)
        kept = recorder.for_trial(keep=lambda row: trial.set_user_attr(KEPT_ROW, row))  # the database is down: kept here
        try:
            result = execute_trial(objective, params, ctx, kept)
        except Pruned as e:
            raise optuna.TrialPruned(str(e)) from None
        except TrialFailed as e:
            trial.set_user_attr("failure_reason", str(e))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        for key in ("test_accuracy", "test_balanced_accuracy", "n_params"):  # shown by optuna-dashboard
            trial.set_user_attr(key, getattr(result, key))
        trial.set_user_attr("artifacts", result.extras.get("artifacts"))
        return (result.val_accuracy, result.n_params) if multi else result.val_accuracy

    return run


class StopWhenAllFail:
    """Stops a search whose first `n` trials all failed for the same reason: a set-up problem (weights that cannot be
    downloaded, a missing extra) that every later trial would hit too. It reads this machine's trials from the study,
    not what its own process saw, since a worker process may run a single trial (SearchConfig.recycle).
    first: the number of this search's first trial (a resumed study's earlier trials do not count)."""

    def __init__(self, first: int = 0, n: int = 3):
        self.first, self.n = first, n
        self.reason: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.FAIL:
            return
        host = socket.gethostname() + ":"
        ours = sorted((t for t in study.get_trials(deepcopy=False) if t.number >= self.first and t.state.is_finished()
                       and str(t.user_attrs.get("worker", "")).startswith(host)), key=lambda t: t.number)[: self.n]
        reasons = {t.user_attrs.get("failure_reason", "") for t in ours if t.state == optuna.trial.TrialState.FAIL}
        if len(ours) == self.n and all(t.state == optuna.trial.TrialState.FAIL for t in ours) and len(reasons) == 1:
            self.reason = reasons.pop()
            study.stop()


def _pareto_prune(trial: optuna.Trial, epoch: int, accuracy: float, n_params: int, within: str | None = None) -> bool:
    """Asynchronous successive halving whose promotion rule is non-dominated sorting on (val accuracy, -params);
    within: compare only with trials that have the same value of this param (a space's prune_within)."""
    if epoch not in PARETO_RUNGS:
        return False
    key = f"rung_{epoch}"
    trial.set_user_attr(key, [accuracy, n_params])
    group = trial.params.get(within) if within else None
    at_rung = [t for t in trial.study.get_trials(deepcopy=False) if key in t.user_attrs and t.number != trial.number
               and (group is None or t.params.get(within) == group)]
    points = [tuple(t.user_attrs[key]) for t in at_rung] + [(accuracy, n_params)]
    return not pareto_promotable(len(points) - 1, points, reduction_factor=PARETO_REDUCTION)


def default_pruner(sampler: str) -> str:
    """The multi-objective samplers get the Pareto-aware pruner, the others ASHA."""
    return "pareto-asha" if sampler in MULTI_OBJECTIVE else PRUNERS[0]


def _optimize(config: SearchConfig, space: SearchSpace, progress=None, max_trials: int | None = None, slot: int = 0,
              first: int = 0) -> None:
    """One worker: run trials on the shared study until it holds config.trials finished trials (or, with max_trials,
    until it has run that many). slot: which of the --jobs workers it is; first: the number of the search's first
    trial."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(config, space)
    study.sampler = worker_sampler(config, space, slot, len(study.trials))
    recorder = TrialRecorder(config, "optuna")  # connects on its first write: a worker starts while the database is down
    objective = get_objective(config.objective)
    remaining = config.trials - finished_count(study)
    if max_trials is not None:
        remaining = min(remaining, max_trials)
    if remaining <= 0:
        return
    all_fail = StopWhenAllFail(first)
    callbacks = [stop_at_total(config.trials), all_fail, make_way_above(config.recycle_mb)]
    callbacks += [progress.on_trial_finished] if progress else []
    try:
        study.optimize(
            _trial_function(objective, space, config, recorder, progress), n_trials=remaining, timeout=config.timeout,
            catch=(TrialFailed,), callbacks=callbacks,  # families free their own memory (Objective.release)
        )
    except ValueError as e:  # another worker failed our trial (its heartbeat was late) and runs it again
        if not str(e).startswith("Cannot tell a"):
            raise
        logging.getLogger(__name__).warning("a trial of this worker was failed by another worker while it ran (%s); "
                                            "its first row is kept, and this worker process makes way for a fresh one", e)
        return
    if all_fail.reason is not None:
        raise ValueError(f"stopped: the first {all_fail.n} trials all failed with the same reason, which every trial "
                         f"would hit: {all_fail.reason} (tracebacks: {config.results_dir / config.study / FAILURE_LOG})")


KERAS_FAMILIES = ("tinynet", "mlp", "transfer", "inception")  # their first worker says where TensorFlow trains


def _worker(config: SearchConfig, space_dict: dict[str, Any], deadline: float | None, first: int, slot: int,
            queue) -> None:
    """A worker process (bench.backends.processes): up to config.recycle trials, then it exits and another takes over."""
    events = WorkerEvents(queue, slot)
    if deadline is not None:  # --timeout counts from the search's start, not from this worker's
        config = replace(config, timeout=max(1.0, deadline - time.time()))
    with stop.on_ctrl_c(message=""):  # the terminal's Ctrl-C reaches every worker of the process group
        try:
            if first_worker() and config.objective in KERAS_FAMILIES:
                from bench.keras_train import device_line

                events.note(device_line())
            _optimize(config, SearchSpace.from_dict(space_dict, source="worker"), events, max_trials=config.recycle, slot=slot,
                      first=first)
        except KeyboardInterrupt:
            pass  # its finished trials are stored; the supervisor reports
        except (DataError, ValueError) as e:  # every trial would hit it: the search stops
            events.fatal(str(e))


def worker_preload(objective: str) -> list[str]:
    """What the workers' forkserver imports once: this backend, TensorFlow + Keras for a Keras family, and the family's
    own module if it is one of bench's (a user's family is imported by each worker, as it is found)."""
    modules = [__name__] + (["bench.backends.preload_keras"] if objective in KERAS_FAMILIES else [])
    return modules + [OBJECTIVES[objective].split(":")[0]] if objective in OBJECTIVES else modules


def _supervise(config: SearchConfig, space: SearchSpace, study: optuna.Study, progress=None) -> None:
    """Run the study's trials in `config.jobs` recycled worker processes until it holds config.trials finished ones."""
    deadline = time.time() + config.timeout if config.timeout else None
    if config.jobs > 1:  # share the cores between the workers instead of letting each take them all
        os.environ.setdefault("BENCH_THREADS", str(max(1, (os.cpu_count() or 1) // config.jobs)))
    # glibc gives each thread its own heap arena, and TensorFlow's threads leave them fragmented: two arenas (read
    # when the workers' forkserver starts, with the first worker) took about 100 MB off a TinyNet worker after 8 trials
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")

    last_sweep = [time.time()]

    def sweep() -> None:  # trials a killed search or worker left behind, and rows the database did not take
        if time.time() - last_sweep[0] > ORPHAN_GRACE:
            last_sweep[0] = time.time()
            fail_orphans(config, study)
            write_kept_rows(config, study)

    def more() -> bool:
        return finished_count(study) < config.trials and (deadline is None or time.time() < deadline)

    def lost(pid: int, reason: str) -> None:
        for number in fail_trials_of(config, study, f"{socket.gethostname()}:{pid}", reason):
            log_failure_reason(config.results_dir / config.study / FAILURE_LOG, number, reason)
            if progress:
                progress.trial_done(number, "failed", None, 0.0, finished_count(study), failure=reason)

    with progress or nullcontext():
        if progress:
            progress.begin(study_done=finished_count(study), total=config.trials, best=best_value(study))
        if more():
            supervise(partial(_worker, config, space.model_dump(), deadline, len(study.trials)), lost, config.jobs, more, progress,
                      preload=worker_preload(config.objective),
                      trial_timeout=config.trial_timeout, memory_limit_mb=config.trial_memory, tick=sweep)
    write_kept_rows(config, study)


def write_kept_rows(config: SearchConfig, study: optuna.Study) -> None:
    """Rows the database did not take, kept with their trials: written once it answers again."""
    if not any(KEPT_ROW in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return
    try:
        sync_study(shared(config.db_url), study, config.objective, config.seed, kept_only=True)
    except (DatabaseUnreachable, *CONNECTION_ERRORS):
        pass  # still down: the next sweep, or `bench leaderboard --sync`


def refuse_a_new_study_over_old_rows(config: SearchConfig) -> None:
    """A study new to its Optuna storage numbers its trials from 0: where the leaderboard already holds rows of that
    study (its journal was deleted, or --storage changed) they would collide, and rows are never replaced."""
    if config.study in optuna.get_all_study_names(make_storage(config)):
        return
    rows = Leaderboard(config.db_url).trial_numbers(config.study, "optuna")
    if rows:
        raise ValueError(
            f"the leaderboard already holds {len(rows)} optuna rows of study '{config.study}', but its Optuna storage "
            f"({config.storage or config.results_dir / 'optuna.journal'}) has no such study (journal deleted, or another "
            f"--storage): give the storage that holds it, or pick another --study")


def run(space: SearchSpace, config: SearchConfig, progress=None) -> optuna.Study:
    """Run (or resume) the study until it has config.trials finished trials; returns the study."""
    if multi_objective(config) and config.pruner not in ("none", "pareto-asha"):
        raise ValueError(f"--sampler {config.sampler} is multi-objective: use --pruner pareto-asha or none, not {config.pruner}")
    if config.pruner == "pareto-asha" and not multi_objective(config):
        raise ValueError("--pruner pareto-asha ranks trials on (accuracy, params): use it with --sampler nsga2 or motpe")
    refuse_a_new_study_over_old_rows(config)
    study = open_study(config, space)  # created once here, so workers only load it
    fail_orphans(config, study)
    _supervise(config, space, study, progress)
    return study
