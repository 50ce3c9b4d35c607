"""Ray Tune backend: the same YAML space and objectives on a local machine or a Ray cluster.

Points come from Ray's OptunaSearch, fed by the space's Optuna converter (so conditions work); ASHA stops trials early on
the per-epoch validation accuracy. The driver writes every trial's leaderboard row as results stream in (complete,
stopped early = pruned, failed). Ray's temp and results folders live under RESULTS/<study>/. A local Ray listens on
loopback only (127.0.0.1: its GCS, raylet, workers and agents) and keeps Ray's token auth. `--resume` restores an
interrupted experiment: finished trials are neither lost nor re-run.
"""
from __future__ import annotations

import os
import tempfile
import zlib
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from bench.backends import SearchConfig
from bench.leaderboard import Leaderboard, now
from bench.recorder import TrialRecorder
from bench.objective import Pruned, Result, TrialFailed, get_objective
from bench.safe import mask
from bench.space import SearchSpace

SAMPLERS = ("tpe", "random")
PRUNERS = ("asha", "none")
GROUPED_PRUNERS: tuple[str, ...] = ()  # a space's prune_within is Optuna's only


def default_pruner(sampler: str) -> str:
    return PRUNERS[0]

RESULT_FIELDS = tuple(Result.__dataclass_fields__)


def _trainable(config: SearchConfig, cpus_per_trial: int):
    """The function each Ray worker runs: one trial of the objective, reporting every epoch to Tune."""

    def train(params: dict[str, Any]) -> None:
        os.environ["BENCH_THREADS"] = str(cpus_per_trial)  # before TensorFlow starts in this worker
        from ray import tune

        number = _trial_seed_offset(tune.get_context().get_trial_id())

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            tune.report({"val_accuracy": metrics.get("val_accuracy", 0.0), "epoch": epoch + 1, "final": False})
            return False  # ASHA stops the trial from outside

        ctx = config.context(number, "ray", report_hook=report)
        limited = None
        if config.trial_timeout or config.trial_memory:  # a child of this worker, which can be killed mid-trial
            from bench.backends.processes import TrialProcess

            limited = TrialProcess(config.trial_timeout, config.trial_memory, recycle=1)
        try:
            if limited:
                result = limited.run(config.objective, params, ctx)
            else:
                result = get_objective(config.objective).run(params, ctx)
        except Pruned as e:  # the family stopped it itself (a compute cap): a pruned row with its reason, not a failure
            tune.report({"final": True, "pruned": str(e), "epoch": e.epoch, "n_params": ctx.n_params or 0,
                         "val_accuracy": 0.0})
            return
        except Exception as e:  # reported, not raised: the driver stores the reason
            reason = str(e) if isinstance(e, TrialFailed) else f"{type(e).__name__}: {e}"
            tune.report({"final": True, "failed": reason, "n_params": ctx.n_params or 0, "val_accuracy": 0.0})
            return
        finally:
            if limited:
                limited.close()
        import ray

        result.extras["ray_node"] = ray.get_runtime_context().get_node_id()  # which machine of the cluster ran it
        tune.report({**result.as_dict(), "epoch": result.epochs, "final": True})

    return train


_PROGRESS: dict[str, Any] = {}  # the driver's live progress; kept out of what Tune pickles with its callbacks
_DB_URLS: dict[str, str] = {}  # the driver's leaderboard URL, password included; Tune's pickles hold it masked


class StreamToLeaderboard(Callback):
    """Runs in the driver: one leaderboard row per finished trial, as it finishes (module-level: pickled by name).

    first_number: Ray numbers trials from 0 in each run, so a new run of a study that has rows goes on after its
    largest trial number (rows are never replaced); Tune pickles this callback with the experiment, so a --resume
    keeps the numbering of the run it restores."""

    def __init__(self, config: SearchConfig, first_number: int = 0):
        self.config, self.first_number, self.recorder = config, first_number, None

    def __getstate__(self):  # Tune saves its callbacks with the experiment: keep the database engine and password out
        return {"config": replace(self.config, db_url=mask(self.config.db_url)), "first_number": self.first_number,
                "recorder": None}

    def __setstate__(self, state):
        self.__dict__.update({"first_number": 0, **state})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._store(trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._store(trial, trial.last_result or {}, error=f"Ray trial error: {_error_text(trial)}")

    def _store(self, trial, last: dict, error: str | None = None):
        config = self.config
        number = self.first_number + _creation_index(trial)
        result, status = None, "complete"
        if self.recorder is None:
            self.recorder = TrialRecorder(replace(config, db_url=_DB_URLS.get(config.study, config.db_url)), "ray")
        params, seed, started = dict(trial.config), config.seed + _trial_seed_offset(trial.trial_id), _started(trial)
        if error or last.get("failed"):
            status = "failed"
            self.recorder.failed(number, params, error or last["failed"], started, n_params=last.get("n_params"), seed=seed)
        elif last.get("pruned") or not last.get("final"):
            status = "pruned"
            epoch = int(last.get("epoch", 0))
            self.recorder.pruned(number, params, epoch, started, n_params=last.get("n_params"), seed=seed,
                                 reason=last.get("pruned") or f"stopped by ASHA after epoch {epoch}")
        else:
            result = Result(**{k: last[k] for k in RESULT_FIELDS})
            self.recorder.complete(number, params, result, started, seed=seed)
        progress = _PROGRESS.get(config.study)
        if progress:
            progress.trial_done(number, status, result.val_accuracy if result else None, float(last.get("time_total_s", 0.0)))


def _creation_index(trial) -> int:
    """The trial's place in creation order, from 0. Tune's search generator tags each trial `<count>_<params>`, counting
    from 1, and a restore keeps the count; its trial list is no guide, since a restore re-adds trials newest first."""
    return int(trial.experiment_tag.split("_", 1)[0]) - 1


def _started(trial):
    """When the trial began: Tune's last result gives its run time so far."""
    from datetime import timedelta

    return now() - timedelta(seconds=float((trial.last_result or {}).get("time_total_s") or 0.0))


def _trial_seed_offset(trial_id: str) -> int:
    """Ray names trials by random ids; each trial's seed is derived from its id, the same in worker and driver."""
    return zlib.crc32(trial_id.encode()) % 1_000_000


def _error_text(trial) -> str:
    path = Path(trial.error_file) if getattr(trial, "error_file", None) else None
    if path and path.exists():
        lines = [line for line in path.read_text().strip().splitlines() if line.strip()]
        return lines[-1][:500] if lines else str(path)
    return "see the Ray logs"


def run(space: SearchSpace, config: SearchConfig, progress=None):
    if config.address:  # a cluster started by hand (`ray start`) decides its own auth
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    # absolute before Ray starts: its trials chdir into Tune's folders, where a relative one would put their artifacts
    config = replace(config, results_dir=Path(config.results_dir).resolve())
    run_dir = config.results_dir / config.study
    storage = run_dir / "ray"
    storage.mkdir(parents=True, exist_ok=True)
    undo = _nothing
    if not ray.is_initialized():
        if config.address:
            ray.init(address=config.address, log_to_driver=False)
        else:
            undo = _loopback_only()
            ray.init(num_cpus=os.cpu_count(), _temp_dir=_temp_dir(run_dir), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    _PROGRESS[config.study] = progress
    _DB_URLS[config.study] = config.db_url
    # the workers never write the leaderboard (the driver does), so what Tune pickles of theirs holds no database URL
    trainable = tune.with_resources(_trainable(replace(config, db_url="", storage=None), config.cpus_per_trial),
                                    {"cpu": config.cpus_per_trial})
    experiment = storage / config.study
    try:
        if config.resume and tune.Tuner.can_restore(str(experiment)):
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
        else:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = (optuna.samplers.TPESampler(seed=config.seed) if config.sampler == "tpe"
                       else optuna.samplers.RandomSampler(seed=config.seed))
            searcher = OptunaSearch(space=space.to_optuna, metric="val_accuracy", mode="max", sampler=sampler,
                                    points_to_evaluate=space.start or None)
            max_epochs = int(space.fixed().get("epochs") or 20)
            first_number = Leaderboard(config.db_url).next_trial_number(config.study, "ray")  # after the study's rows
            # max_t one past the last epoch: ASHA must not stop a trial before it sends its final result
            scheduler = (ASHAScheduler(time_attr="epoch", max_t=max_epochs + 1, grace_period=1, reduction_factor=3)
                         if config.pruner == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", search_alg=searcher, scheduler=scheduler,
                                            num_samples=config.trials, time_budget_s=config.timeout),
                run_config=tune.RunConfig(name=config.study, storage_path=str(storage), verbose=0,
                                          callbacks=[StreamToLeaderboard(config, first_number)]),
            )
        with progress or nullcontext():
            if progress:
                progress.begin(study_done=0, total=config.trials)
            return tuner.fit()
    finally:
        ray.shutdown()
        undo()


def _loopback_only():
    """Make a local Ray listen on 127.0.0.1 only; returns what undoes it once Ray is shut down.

    ray.init(_node_ip_address="127.0.0.1") alone is not enough: Ray swaps a loopback address for the machine's own
    (services.resolve_ip_for_localhost), and its gRPC servers then listen on every interface. Ray keeps to loopback
    where it sees no cluster (its macOS/Windows default, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): set here for this
    process (ray_constants read it at import, so it is set there too) and inherited by the GCS, raylet, agents and
    workers Ray starts. Never for --address: the cluster's other machines must reach its driver."""
    import ray._private.ray_constants as ray_constants

    saved_env, saved_flag = os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False

    def undo() -> None:
        os.environ.pop(LOCAL_ONLY_ENV) if saved_env is None else os.environ.__setitem__(LOCAL_ONLY_ENV, saved_env)
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag

    return undo


def _nothing() -> None:
    pass


LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _temp_dir(run_dir: Path) -> str:
    """Ray's temp dir under the run folder; Unix sockets cap paths near 107 bytes, so a long one goes through a short link."""
    target = run_dir / "ray-tmp"
    target.mkdir(parents=True, exist_ok=True)
    if len(str(target)) <= 40:
        return str(target)
    link = Path(tempfile.gettempdir()) / f"bench-ray-{zlib.crc32(str(target).encode()):08x}"  # stable across runs
    if link.is_symlink() and link.resolve() != target.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(target)
    return str(link)

