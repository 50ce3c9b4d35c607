"""The `bench` command: parse arguments and wire the parts together. No logic of its own lives here."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.safe import mask


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hyperparameter search and benchmarking for image classification.")
spaces_app = typer.Typer(help="List the search spaces, or show one.", invoke_without_command=True)
plot_app = typer.Typer(help="Plots of leaderboard rows.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
app.add_typer(plot_app, name="plot")
out = Console()
err = Console(stderr=True)

DataOpt = typer.Option(None, "--data", help="Data root (ROOT/train/<class>, ROOT/test/<class>). Default: $BENCH_DATA, ./data/mit8, ../shared/data/mit8.")
TestFractionOpt = typer.Option(0.3, "--test-fraction", help="Test share when the data is one ROOT/<class>/* folder (split here, stratified).")
ResultsOpt = typer.Option(Path(os.environ.get("BENCH_RESULTS", "results")), "--results", help="Output folder (leaderboard, studies, plots).")
BackendChoiceOpt = typer.Option(None, "--backend", help="Which backend's trial, when several searched the study (their trials are numbered each from 0). Default: the study's only one.")
DbOpt = typer.Option(None, "--db", help="Leaderboard database: a SQLAlchemy URL or a SQLite path. Default: RESULTS/leaderboard.db.")
ObjectiveFileOpt = typer.Option(None, "--objective-file", metavar="PATH.py:Class",
                                help="A family of your own: the Objective subclass in this file, under the OBJECTIVE name.")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(mask(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _study_name(name: Optional[str]) -> Optional[str]:
    """Every --study is checked here, before anything is written: it becomes a folder under --results."""
    from bench.safe import study_name

    if name is None:
        return None
    try:
        return study_name(name)
    except ValueError as e:
        fail(f"--study: {e}")


def _say(console: Console, text: str) -> None:
    """A line that holds names or paths from the user's data: printed as it is, never read as rich markup."""
    console.print(mask(text), markup=False, highlight=False, soft_wrap=True)


def _check_data(root: Path, test_fraction: float, val_fraction: float, seed: int) -> None:
    """Before any trial: say which images are left out and why, and refuse a validation hold-out the data cannot fill."""
    from bench.data import check_holdout, display_name, scan

    catalog = scan(root, test_fraction, seed)
    for path, why in catalog.skipped:
        _say(err, f"skipped {display_name(str(path))}: {why}")
    if catalog.skipped:
        total = len(catalog.train.paths) + len(catalog.test.paths) + len(catalog.skipped)
        _say(err, f"skipped {len(catalog.skipped)} of {total} images that cannot be used (listed above)")
    check_holdout(catalog.train.labels, val_fraction, catalog.classes)


def _board(db: Optional[str], results: Path):
    from bench.leaderboard import Leaderboard, db_url

    try:
        return Leaderboard(db_url(db, results))
    except ValueError as e:  # DatabaseUnreachable, or a postgresql:// URL without a driver
        fail(str(e))


def _parse_assignments(text: Optional[str]) -> dict[str, Any]:
    """'a=1,b=adam' -> {'a': 1, 'b': 'adam'} (values read as YAML scalars)."""
    params = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            fail(f"--params: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip()] = _scalar(value)
    return params


def _scalar(text: str) -> Any:
    """A YAML scalar, read as space files are (1e-3 is a float)."""
    from bench.space import load_yaml

    return load_yaml(text)


@app.command()
def search(
    objective: str = typer.Argument(..., help="Model family: tinynet, ..."),
    space: Optional[str] = typer.Option(None, "--space", help="Space name or YAML path. Default: the objective's name."),
    trials: int = typer.Option(200, "--trials", min=1, help="Finished trials the study should hold (a re-run continues up to it)."),
    backend: str = typer.Option("optuna", "--backend", help="optuna, ray or kerastuner."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="optuna: tpe (default), random, grid, cmaes, nsga2 (accuracy vs params); ray: tpe, random; kerastuner: random (default), hyperband, bayesian."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="optuna: asha (default, successive halving), hyperband, median, none, pareto-asha (default with nsga2: promotes by non-dominated sorting on accuracy and params); ray: asha, none."),
    seed: int = typer.Option(0, "--seed"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    trial_timeout: Optional[float] = typer.Option(None, "--trial-timeout", min=1, help="Seconds: a trial running longer has its process killed and is stored as failed (every backend; kerastuner and ray then run each trial in a child process). Default: the space's trial_timeout, else none."),
    trial_memory: Optional[float] = typer.Option(None, "--trial-memory", min=1, help="MB of memory a trial's process may hold (TensorFlow alone takes about 650); past it the trial is killed and stored as failed (every backend)."),
    fix: Optional[str] = typer.Option(None, "--fix", help="Fix params of the space for this search, e.g. --fix flip=false,input_size=32 (flips are wrong for digits or text)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes on this machine."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name; an existing one is resumed. Default: the space's name."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (postgresql://... lets `bench worker` join from other machines). Default: RESULTS/optuna.journal."),
    heartbeat: int = typer.Option(30, "--heartbeat", min=1, help="With a database --storage: seconds between trial heartbeats."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: join this cluster (auto or HOST:PORT). Default: a local Ray."),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", min=1, help="Ray: CPUs reserved for each trial."),
    resume: bool = typer.Option(False, "--resume", help="Ray: restore the interrupted experiment of this study."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="Stratified validation hold-out of train."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Skip trials with more parameters, before training."),
    data: Optional[Path] = DataOpt,
    test_fraction: float = TestFractionOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
    keep_top: int = typer.Option(5, "--keep-top", help="Keep the models of the K best trials for `bench report` (0: predictions only; -1: no artifacts)."),
    keep_models: bool = typer.Option(False, "--keep-models", help="Keep every trial's model (results/<study>/<backend>-trial-<n>/)."),
    objective_file: Optional[str] = ObjectiveFileOpt,
) -> None:
    """Search an objective's space; every trial lands in the leaderboard."""
    from bench.backends import BACKENDS, FAILURE_LOG, SearchConfig, get_backend
    from bench.data import DataError, resolve_root
    from bench import stop
    from bench.progress import SearchProgress
    from bench.space import SpaceError, load_space

    _known_objective(objective, objective_file)
    if backend not in BACKENDS:
        fail(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    chosen = get_backend(backend)
    try:
        the_space = load_space(space or objective)
        if the_space.objective != objective:
            fail(f"{the_space.source}: space is for objective '{the_space.objective}', not '{objective}'")
        if fix:
            the_space = the_space.with_fixed(_parse_assignments(fix))
        root = resolve_root(data)
        name = _study_name(study if study is not None else Path(space or objective).stem)
        _check_data(root, test_fraction, val_fraction, seed)
    except (SpaceError, DataError, KeyError) as e:
        fail(str(e).strip("'\""))
    if sampler is None and pruner is None and backend == "optuna":  # how the space says it is best searched
        sampler, pruner = the_space.sampler, the_space.pruner
    sampler = sampler or chosen.SAMPLERS[0]
    pruner = pruner or chosen.default_pruner(sampler)
    if sampler not in chosen.SAMPLERS:
        fail(f"--sampler for {backend} must be one of {', '.join(chosen.SAMPLERS)}, got '{sampler}'")
    if pruner not in chosen.PRUNERS:
        fail(f"--pruner for {backend} must be one of {', '.join(chosen.PRUNERS)}, got '{pruner}'")
    trial_timeout = trial_timeout or the_space.trial_timeout
    if sampler == "grid":
        try:
            the_space.grid()
        except SpaceError as e:
            fail(str(e))
    if the_space.prune_within and pruner != "none" and pruner not in chosen.GROUPED_PRUNERS:
        err.print(f"[yellow]note: the space's prune_within: {escape(the_space.prune_within)} applies to Optuna's asha and median "
                  f"pruners only; {backend}/{pruner} compares every trial with all the others[/]")
    config = SearchConfig(
        objective=objective, study=name, trials=trials, db_url=_leaderboard_url(db, storage, results), results_dir=results, seed=seed,
        sampler=sampler, pruner=pruner, timeout=timeout, jobs=jobs, storage=storage, data_root=str(root),
        val_fraction=val_fraction, test_fraction=test_fraction, max_params=max_params, heartbeat=heartbeat,
        address=address, cpus_per_trial=cpus_per_trial, resume=resume, trial_timeout=trial_timeout,
        trial_memory=trial_memory,
    )
    config.keep_top, config.keep_models = (None if keep_top < 0 else keep_top), keep_models  # artifacts for `bench report`
    err.print(f"study [bold]{escape(name)}[/]: {objective} on {escape(str(root))} | {backend}/{sampler}, pruner {pruner}, "
              f"{trials} trials, {jobs} job(s) | results in {escape(str(results))}/", highlight=False)
    _note_resume(backend, resume, results / name)
    start = time.perf_counter()
    interrupted = False
    try:
        with stop.on_ctrl_c():
            chosen.run(the_space, config, progress=SearchProgress(err))
    except KeyboardInterrupt:
        interrupted = True
        err.print("[yellow]interrupted: every finished trial is kept; re-run the same command to continue.[/]")
    except (DataError, ValueError) as e:
        fail(str(e))
    except Exception as e:
        _database_failure(e)
        raise
    wall = time.perf_counter() - start
    from bench.leaderboard import DatabaseUnreachable, Leaderboard

    try:
        rows = [r for r in Leaderboard(config.db_url).query(study=name, sort="accuracy") if r["backend"] == backend]
    except DatabaseUnreachable as e:  # the search's results are kept (see bench.recorder); only the summary waits
        _say(err, f"search done in {wall:.1f} s, but {e}; rows it could not write are kept: "
                  f"`bench leaderboard --sync` writes them once it is back")
        return
    counts = {s: sum(r["status"] == s for r in rows) for s in ("complete", "pruned", "failed")}
    _print_rows([r for r in rows if r["status"] == "complete"][:10], f"study {name}: top trials by validation accuracy")
    failure_log = results / name / FAILURE_LOG
    tracebacks = f" (tracebacks: {failure_log})" if counts["failed"] and failure_log.exists() else ""
    err.print(f"wall time {wall:.1f} s | study holds {len(rows)} trials: {counts['complete']} complete, "
              f"{counts['pruned']} pruned, {counts['failed']} failed{tracebacks}", highlight=False)
    if interrupted:
        raise typer.Exit(130)


def _note_resume(backend: str, resume: bool, run_dir: Path) -> None:
    if backend == "ray" and resume:
        _say(err, f"note: --resume unpickles Ray's saved experiment under {run_dir}/ray/ (tuner.pkl): "
                  "resume only from a results folder you trust")


def _known_objective(name: str, objective_file: Optional[str]) -> None:
    """--objective-file registers the user's class under `name` (for the workers too); then the name must be known."""
    from bench.registry import names, register_file

    if objective_file:
        try:
            register_file(name, objective_file)
        except Exception as e:  # noqa: BLE001 - the user's file may raise anything while it is imported
            fail(f"{e}" if isinstance(e, ValueError) else f"--objective-file {objective_file}: {type(e).__name__}: {e}")
    if name not in names():
        fail(f"unknown objective '{name}'; available: {', '.join(names())} (a family of your own: "
             f"--objective-file PATH.py:Class, or an installed 'bench.objectives' entry point)")


def _leaderboard_url(db: Optional[str], storage: Optional[str], results: Path) -> str:
    """--db, else the Optuna storage's own database when it is one (workers on many machines share it), else SQLite."""
    from bench.backends.optuna import is_database_url
    from bench.leaderboard import db_url

    return db_url(db or (storage if is_database_url(storage) else None), results)


@app.command()
def worker(
    study: str = typer.Option(..., "--study", help="The study to join (created by `bench search ... --storage URL`)."),
    storage: str = typer.Option(..., "--storage", help="The study's database, e.g. postgresql://user@host/db."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Total finished trials to stop at. Default: the study's own."),
    heartbeat: int = typer.Option(30, "--heartbeat", min=1, help="Seconds between heartbeats; a trial silent for 2x is failed and retried."),
    trial_timeout: Optional[float] = typer.Option(None, "--trial-timeout", min=1, help="Seconds: a trial running longer has its worker process killed and is stored as failed. Default: the space's trial_timeout, else none."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
    objective_file: Optional[str] = typer.Option(None, "--objective-file", metavar="NAME=PATH.py:Class",
                                                 help="The study's family, when it came from --objective-file."),
) -> None:
    """Join a shared Optuna study from this machine: objective, space and settings come from the study."""
    from bench.backends import SearchConfig
    from bench.backends.optuna import join
    from bench.data import resolve_root
    from bench.progress import SearchProgress

    study = _study_name(study)
    if objective_file:
        name, _, spec = objective_file.partition("=")
        if not spec:
            fail(f"--objective-file for a worker: expected NAME=PATH.py:Class, got '{objective_file}'")
        _known_objective(name, spec)

    with _stoppable("worker interrupted: finished trials are kept in the study."):
        root = resolve_root(data)
        shared = _study_settings(study, storage, results)  # the search's split settings, to check the data as it did
        _check_data(root, float(shared.get("test_fraction", 0.3)), float(shared.get("val_fraction", 0.15)),
                    int(shared.get("seed", 0)))
        config = SearchConfig(objective="", study=study, trials=trials or 0, db_url=_leaderboard_url(db, storage, results),
                              results_dir=results, storage=storage, data_root=str(root), heartbeat=heartbeat,
                              trial_timeout=trial_timeout)
        join(config, progress=SearchProgress(err))
    _say(err, f"worker done: study {study} on {storage}")


@contextmanager
def _stoppable(interrupted: str):
    """Ctrl-C stops at the next safe point and exits 130, saying `interrupted`; bad data or settings exit 2."""
    from bench import stop
    from bench.data import DataError

    try:
        with stop.on_ctrl_c():
            yield
    except KeyboardInterrupt:
        err.print(f"[yellow]{interrupted}[/]")
        raise typer.Exit(130)
    except (DataError, ValueError) as e:
        fail(str(e))
    except Exception as e:
        _database_failure(e)
        raise


def _database_failure(e: Exception) -> None:
    """A database that cannot be reached is one line (its password masked), not a traceback of SQLAlchemy's."""
    if type(e).__module__.startswith("sqlalchemy") and hasattr(e, "orig"):
        lines = str(e.orig).strip().splitlines()
        fail(f"cannot reach the database: {lines[0] if lines else type(e.orig).__name__}")


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    """Ranked rows; params (or the failure reason) in a last column when the terminal is wide, else under the table."""
    wide = out.width >= 150
    several = len({r["study"] for r in rows}) > 1
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in ("study",) * several + ("trial", "status", "val acc", "val bal", "test acc", "params", "ratio", "ep", "fit s"):
        table.add_column(col, justify="left" if col in ("study", "status") else "right", no_wrap=True)
    if wide:
        table.add_column("params / reason", overflow="fold")
    details = []
    for r in rows:
        detail = r["failure_reason"] or ", ".join(f"{k}={_fmt(v, '.3g') if isinstance(v, float) else v}" for k, v in r["params"].items())
        details.append(f"[bold]{escape(str(r['study']))} #{r['trial_number']}[/]: {escape(mask(detail))}")
        cells = [
            *([escape(str(r["study"]))] if several else []), str(r["trial_number"]), r["status"], _fmt(r["val_accuracy"]), _fmt(r["val_balanced_accuracy"]),
            _fmt(r["test_accuracy"]), _fmt(r["n_params"], ","), _fmt(r["ratio"], ".2f"), _fmt(r["epochs"], "d"),
            _fmt(r["fit_seconds"], ".1f"),
        ]
        table.add_row(*cells, *([escape(mask(detail))] if wide else []))
    out.print(table)
    if not wide:
        for line in details:
            out.print(line, highlight=False)


@app.command()
def leaderboard(
    objective: Optional[str] = typer.Option(None, "--objective"),
    study: Optional[str] = typer.Option(None, "--study"),
    sort: str = typer.Option("accuracy", "--sort", help="accuracy (validation), ratio, params, test_accuracy, time."),
    top: Optional[int] = typer.Option(20, "--top", help="Rows to show (0 for all)."),
    status: Optional[str] = typer.Option(None, "--status", help="complete, pruned or failed."),
    fmt: Format = typer.Option(Format.table, "--format"),
    sync: bool = typer.Option(False, "--sync", help="First write the rows the leaderboard lacks: those kept while the "
                              "database was down (with the Optuna trials, or in RESULTS/<study>/unwritten-rows.jsonl), "
                              "and failed or pruned Optuna trials without a row."),
    storage: Optional[str] = typer.Option(None, "--storage", help="With --sync: the Optuna storage to read. "
                                          "Default: RESULTS/optuna.journal."),
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Ranked trials from the leaderboard (ranked on validation; test shown beside it)."""
    from bench.leaderboard import SORTS
    from bench.safe import csv_cell

    study = _study_name(study)
    if sync:
        _sync(study, storage, results, db)
    if sort not in SORTS:
        fail(f"--sort must be one of {', '.join(SORTS)}, got '{sort}'")
    rows = _board(db, results).query(objective=objective, study=study, status=status, sort=sort, top=top or None)
    if fmt is Format.table:
        if not rows:
            err.print("no trials yet: run `bench search tinynet --trials 20` first")
        _print_rows(rows, f"leaderboard ({len(rows)} rows, sorted by {sort})")
    elif fmt is Format.json:
        out.print_json(json.dumps(rows, default=str))
    else:
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: csv_cell(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows)
        sys.stdout.write(buf.getvalue())


def _sync(study: Optional[str], storage: Optional[str], results: Path, db: Optional[str]) -> None:
    """Write the missing rows of the storage's studies (or of --study) into the leaderboard; one line per study."""
    import optuna

    from bench.backends import SearchConfig
    from bench.backends.optuna import make_storage
    from bench.recorder import sync_files, sync_study

    board = _board(_leaderboard_url(db, storage, results), results)  # the search's own default
    written = sync_files(board, results)
    if written:
        _say(err, f"synced {written} rows kept in {results}/*/unwritten-rows.jsonl")
    journal = results / "optuna.journal"
    if not storage and not journal.exists():
        return
    try:
        optuna_storage = make_storage(SearchConfig(objective="", study=study or "sync", trials=0, db_url="",
                                                   results_dir=results, storage=storage))
        names = [study] if study else optuna.get_all_study_names(optuna_storage)
        for name in names:
            loaded = optuna.load_study(study_name=name, storage=optuna_storage)
            seed = (loaded.user_attrs.get("search") or {}).get("seed", 0)
            n, lost = sync_study(board, loaded, loaded.user_attrs.get("objective", ""), seed)
            lost_note = f"; {len(lost)} complete trials have no row and none kept ({lost[:10]})" if lost else ""
            _say(err, f"synced study {name}: {n} rows written{lost_note}")
    except KeyError:
        fail(f"no study '{study}' in {storage or journal}")
    except ValueError as e:
        fail(str(e))


@plot_app.command("pareto")
def plot_pareto(
    study: Optional[str] = typer.Option(None, "--study"),
    objective: Optional[str] = typer.Option(None, "--objective"),
    metric: str = typer.Option("val_accuracy", "--metric", help="val_accuracy (selection) or test_accuracy (reporting)."),
    output: Optional[Path] = typer.Option(None, "--out", help="HTML path. Default: RESULTS/plots/pareto-<study>.html"),
    png: bool = typer.Option(True, "--png/--no-png", help="Also write a PNG (needs chromium)."),
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Accuracy against parameter count (log x), the Pareto front highlighted, params on hover."""
    from bench.pareto import pareto_front
    from bench.plots import chromium, pareto_figure, write_figure

    study = _study_name(study)
    if metric not in ("val_accuracy", "test_accuracy", "val_balanced_accuracy", "test_balanced_accuracy"):
        fail(f"--metric must be an accuracy column, got '{metric}'")
    rows = _board(db, results).query(objective=objective, study=study, status="complete")
    if not rows:
        fail("no complete trials match; run a search first or check --study / --objective")
    path = output or results / "plots" / f"pareto-{study or objective or 'all'}.html"
    written = write_figure(pareto_figure(rows, metric), path, png=png)
    front = pareto_front(rows, metric)
    _print_rows(front, f"Pareto front: {len(front)} of {len(rows)} complete trials ({metric} vs params)")
    for p in written:
        _say(out, f"wrote {p}")
    if png and not chromium():
        err.print("no PNG: chromium not found (Debian: apt-get install chromium)")


@spaces_app.callback()
def spaces(ctx: typer.Context) -> None:
    """List the available search spaces."""
    if ctx.invoked_subcommand:
        return
    from bench.space import LOCAL_SPACES, SpaceError, hidden_spaces, list_spaces, load_space

    local = LOCAL_SPACES.resolve()
    table = Table(title="search spaces (bench spaces show NAME; bench search OBJECTIVE --space NAME)", title_justify="left",
                  caption=f"a name is looked up in {LOCAL_SPACES}/ of this folder first, then in bench's own spaces",
                  caption_justify="left")
    table.add_column("space", no_wrap=True)
    table.add_column("objective", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("from", no_wrap=True)
    table.add_column("description")
    for name, path in list_spaces().items():
        origin = f"./{LOCAL_SPACES}" if path.resolve().is_relative_to(local) else "bench"
        try:
            s = load_space(str(path))
            table.add_row(escape(name), escape(s.objective), str(len(s.params)), origin, escape(s.description.strip()[:100]))
        except SpaceError as e:
            table.add_row(escape(name), "[red]invalid[/]", "", origin, escape(str(e)))
    out.print(table)
    for name in hidden_spaces():
        out.print(f"./{LOCAL_SPACES}/{name}.yaml hides bench's own space '{name}'", highlight=False)


@spaces_app.command("show")
def spaces_show(name: str) -> None:
    """Print one space, validated."""
    from bench.space import SpaceError, load_space

    try:
        s = load_space(name)
    except SpaceError as e:
        fail(str(e))
    _say(out, f"# {s.source}")
    _say(out, s.to_yaml())


@app.command("lr-find")
def lr_find(
    objective: str = typer.Argument("tinynet"),
    params: Optional[str] = typer.Option(None, "--params", help="Model params as key=value,... (the rest are defaults)."),
    low: float = typer.Option(1e-6, "--low"),
    high: float = typer.Option(1.0, "--high"),
    steps: int = typer.Option(100, "--steps"),
    seed: int = typer.Option(0, "--seed"),
    data: Optional[Path] = DataOpt,
    test_fraction: float = TestFractionOpt,
    results: Path = ResultsOpt,
) -> None:
    """LR range test: print the suggested LR and plot loss against LR."""
    from bench import keras_train as kt
    from bench.data import DataError
    from bench.objective import TrialContext, get_objective
    from bench.plots import lr_find_figure, write_figure

    try:
        obj = get_objective(objective)
        p = obj.resolve(_parse_assignments(params))
        obj.set_seed(seed)
        ctx = TrialContext(seed=seed, data_root=data, test_fraction=test_fraction, split_seed=seed)
        split = obj.load_data(p, ctx)
        found = kt.lr_find(obj.build(p, split), split, p, low, high, steps)
    except (KeyError, ValueError, DataError) as e:
        fail(str(e))
    written = write_figure(lr_find_figure(found, objective), results / "plots" / f"lr-find-{objective}.html")
    out.print(f"suggested LR (steepest descent): {found['suggested_lr']:.3g}; loss minimum at {found['min_loss_lr']:.3g}")
    for path in written:
        _say(out, f"wrote {path}")


@app.command()
def report(
    trial: Optional[int] = typer.Argument(None, help="Trial number (with --study) or leaderboard row id; none: the study page."),
    study: Optional[str] = typer.Option(None, "--study", help="The study (required for the study page)."),
    backend: Optional[str] = BackendChoiceOpt,
    split: str = typer.Option("test", "--split", help="Predictions the trial page analyses: test or val."),
    output: Optional[Path] = typer.Option(None, "--out", help="HTML path. Default: RESULTS/reports/<study>/<backend>-trial-<n>.html or study.html."),
    png: bool = typer.Option(True, "--png/--no-png", help="Also a PNG of each figure (needs chromium)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage of the study. Default: RESULTS/optuna.journal."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """One self-contained HTML page: a trial's curves, confusion, ROC, Grad-CAM, activations; or a study's overview."""
    from bench.report import ReportError, find_row, study_report, trial_report

    study = _study_name(study)
    if split not in ("test", "val"):
        fail(f"--split must be test or val, got '{split}'")
    board = _board(db, results)
    start = time.perf_counter()
    try:
        if trial is None:
            if not study:
                fail("give a TRIAL, or --study NAME for the study page")
            path = output or results / "reports" / study / "study.html"
            written, timings = study_report(board, study, path, results=results, storage=storage, png=png)
        else:
            row = find_row(board, trial, study, backend)
            path = output or results / "reports" / row["study"] / f"{row['backend']}-trial-{row['trial_number']}.html"
            written, timings = trial_report(row, path, results=results, data_root=data, split=split, png=png)
    except ReportError as e:
        fail(str(e))
    for p in written:
        _say(out, f"wrote {p}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    err.print(f"report written in {time.perf_counter() - start:.1f} s ({stages})", highlight=False)


@app.command()
def confirm(
    study: str = typer.Option(..., "--study", help="The study whose best configurations to re-run."),
    top: int = typer.Option(3, "--top", min=1, help="How many of its best configurations (by validation accuracy)."),
    seeds: int = typer.Option(3, "--seeds", min=2, help="Training seeds per configuration."),
    seed: int = typer.Option(0, "--seed", help="The first training seed, and the seed of the validation split."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Only this backend's trials of the study. Default: all of them."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Re-run a study's best configurations over several seeds and rank them by mean validation accuracy."""
    from bench.confirm import confirm_study, spread
    from bench.data import resolve_root
    from bench.progress import SearchProgress

    study = _study_name(study)
    with _stoppable("interrupted: finished runs are kept; re-run the same command to continue."):
        root = resolve_root(data)
        _check_data(root, 0.3, 0.15, seed)
        confirmed = confirm_study(study, top, seeds, seed, results, db, root, backend=backend,
                                  log=lambda m: _say(err, m), progress=lambda: SearchProgress(err))
    table = Table(title=f"study {escape(study)}: its best {len(confirmed)} configurations over {seeds} seeds, by mean "
                        f"validation accuracy (test shown, never used to rank)", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("rank", "trial", "val mean ± sd", "test mean ± sd", "params", "fit s"):
        table.add_column(col, justify="right", no_wrap=True)
    for rank, c in enumerate(confirmed, 1):
        fit = f"{sum(c.fit_seconds) / len(c.fit_seconds):.1f}" if c.fit_seconds else ""
        table.add_row(str(rank), str(c.trial_number), spread(c.val), spread(c.test), _fmt(c.n_params, ","), fit)
    out.print(table)
    for c in confirmed:
        val, test = (" ".join(f"{v:.3f}" for v in values) for values in (c.val, c.test))
        failed = f"; {len(c.failed)} failed: {c.failed[0]}" if c.failed else ""
        _say(out, f"#{c.trial_number}: val {val}; test {test}{failed} (study {c.study})")


@app.command()
def objectives() -> None:
    """List the model families bench knows: its own, --objective-file ones, installed 'bench.objectives' plugins."""
    from bench.registry import GROUP, entries

    found, hidden = entries()
    table = Table(title="model families (bench search NAME; bench check-objective NAME)", title_justify="left",
                  caption=f"a family of your own: --objective-file PATH.py:Class, or a '{GROUP}' entry point",
                  caption_justify="left")
    for col in ("objective", "from", "class"):
        table.add_column(col, no_wrap=True)
    for name in sorted(found):
        table.add_row(name, found[name].origin, found[name].ref)
    out.print(table)
    for e in hidden:
        out.print(f"{e.origin}: entry point '{e.name}' = {e.ref} is hidden by a family of the same name", highlight=False)


@app.command("check-objective")
def check_objective_cmd(
    objective: str = typer.Argument(..., help="The family to check (a registered name, or the NAME for --objective-file)."),
    objective_file: Optional[str] = ObjectiveFileOpt,
    params: Optional[str] = typer.Option(None, "--params", help="Params to train with (key=value,...), instead of the class's quick_params."),
    data: Optional[Path] = DataOpt,
) -> None:
    """Run the family contract (bench.checks) on a few images per class of the data: one line per rule, exit 1 on a broken one."""
    from bench.checks import SAMPLE_TEST, SAMPLE_TRAIN, check_objective
    from bench.data import DataError, resolve_root

    _known_objective(objective, objective_file)
    try:
        root = resolve_root(data)
    except DataError as e:
        fail(str(e))
    err.print(f"checking {objective} on {SAMPLE_TRAIN} train and {SAMPLE_TEST} test images per class of {root}", highlight=False)
    marks = {"ok": "[green]ok[/]", "FAIL": "[bold red]FAIL[/]", "n/a": "[yellow]n/a[/]"}

    def show(c) -> None:
        pad = " " * (4 - len(c.status))  # markup is not printed: pad by the visible word
        out.print(f"{pad}{marks[c.status]}  {c.rule:<13} {c.message}  [dim]({c.seconds:.1f} s)[/]", highlight=False, soft_wrap=True)

    checks = check_objective(objective, root, _parse_assignments(params) if params else None, on_check=show)
    failed = [c.rule for c in checks if c.status == "FAIL"]
    held, na = sum(c.status == "ok" for c in checks), sum(c.status == "n/a" for c in checks)
    out.print(f"{objective}: {held} of {len(checks)} rules hold, {na} not applicable"
              + (f"; broken: {', '.join(failed)}" if failed else ""), highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def reproduce(
    target: str = typer.Argument("paper", help="What to reproduce: paper (arXiv:2105.04895)."),
    budget: str = typer.Option("quick", "--budget", help="quick (few epochs, one trial each: minutes) or full (the YAML as is)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated experiment ids to run (default: all)."),
    output: Optional[Path] = typer.Option(None, "--out", help="Folder for the table. Default: RESULTS/reproduce."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Run the paper's configurations and print one table: experiment, the paper's figure, ours, the difference."""
    from bench.data import DataError, resolve_root
    from bench.reproduce import BUDGETS, reproduce_paper

    if target != "paper":
        fail(f"only 'paper' can be reproduced, got '{target}'")
    if budget not in BUDGETS:
        fail(f"--budget must be one of {', '.join(BUDGETS)}, got '{budget}'")
    try:
        root = resolve_root(data)
    except DataError as e:
        fail(str(e))
    folder = output or results / "reproduce"
    table, written = reproduce_paper(budget, results, root, db, folder, only=[s for s in (only or "").split(",") if s],
                                     log=lambda m: _say(err, m))
    _say(out, table)
    for p in written:
        _say(out, f"wrote {p}")


def _study_settings(study: str, storage: Optional[str], results: Path) -> dict[str, Any]:
    """The settings a search stored on its Optuna study (seed, val_fraction, ...); {} when there is none."""
    from bench.report.metrics import load_optuna_study

    found = load_optuna_study(study, storage, results)
    return dict(found.user_attrs.get("search", {})) if found is not None else {}


def _best_or_trial(study: str, trial: Optional[int], board, backend: Optional[str] = None):
    """The study's trial `trial` (of `backend`, when two backends searched it), or its best complete one on validation."""
    from bench.report import ReportError, find_row

    if trial is not None:
        try:
            return find_row(board, trial, study, backend)
        except ReportError as e:
            fail(str(e))
    rows = [r for r in board.query(study=study, status="complete", sort="accuracy") if backend in (None, r["backend"])]
    if not rows:
        fail(f"study '{study}' has no complete trial{f' of backend {backend}' if backend else ''} (see `bench leaderboard`)")
    return rows[0]


@app.command("export")
def export_cmd(
    trial: Optional[int] = typer.Argument(None, help="Trial number in --study. Default: the study's best on validation."),
    study: str = typer.Option(..., "--study"),
    backend: Optional[str] = BackendChoiceOpt,
    fmt: str = typer.Option("keras", "--format", help="keras, savedmodel, tflite, onnx; joblib for bovw and mlp's svm / patch variants."),
    output: Optional[Path] = typer.Option(None, "--out", help="Folder. Default: RESULTS/export/<study>-<backend>-trial-<n>-<format>."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage of the study (for its seed and split). Default: RESULTS/optuna.journal."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Write a trial's model in a deployable format, with model-card.json (re-trains it when the search kept no model)."""
    from bench.export import FORMATS, ExportError, export_trial

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    row = _best_or_trial(study, trial, _board(db, results), backend)
    folder = output or results / "export" / f"{study}-{row['backend']}-trial-{row['trial_number']}-{fmt}"
    with _stoppable("interrupted: nothing exported."):
        try:
            card = export_trial(row, fmt, folder, results, data, _study_settings(study, storage, results),
                                log=lambda m: err.print(m, highlight=False))
        except ExportError as e:
            fail(str(e))
    m = card["metrics"]
    out.print(f"exported {study} #{row['trial_number']} ({row['objective']}, {_fmt(card['n_params'], ',')} params, "
              f"val acc {_fmt(m['val_accuracy'])}, test acc {_fmt(m['test_accuracy'])}) as {fmt}: "
              f"{', '.join(str(folder / f) for f in card['files'])} + {folder / 'model-card.json'}", highlight=False)


@app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="Image files or folders (FOLDER/<class>/* also gives accuracy)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A folder written by `bench export`."),
    study: Optional[str] = typer.Option(None, "--study", help="Or a study: its best trial on validation, or --trial."),
    trial: Optional[int] = typer.Option(None, "--trial"),
    backend: Optional[str] = BackendChoiceOpt,
    output: Optional[Path] = typer.Option(None, "--out", help="CSV of path, predicted class, label and per-class probabilities."),
    storage: Optional[str] = typer.Option(None, "--storage", help="With --study: its Optuna storage."),
    data: Optional[Path] = DataOpt,
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Classify images with an exported model or a study's trial: class and probabilities per image."""
    import tempfile

    from rich.progress import track

    from bench.export import JOBLIB, ExportError, export_trial, is_pipeline
    from bench.predict import image_files, load_predictor, predict_files

    if (model is None) == (study is None):
        fail("give either --model DIR (from `bench export`) or --study NAME [--trial N]")
    with _stoppable("interrupted."), tempfile.TemporaryDirectory() as tmp:
        if study:
            row = _best_or_trial(study, trial, _board(db, results), backend)
            try:
                fmt = JOBLIB if is_pipeline(row["objective"], row["params"]) else "keras"
                export_trial(row, fmt, Path(tmp), results, data, _study_settings(study, storage, results),
                             log=lambda m: err.print(m, highlight=False))
            except ExportError as e:
                fail(str(e))
            err.print(f"model: {study} #{row['trial_number']} (val acc {_fmt(row['val_accuracy'])})", highlight=False)
        predictor = load_predictor(model or Path(tmp))
        paths = image_files(images)
        preds = predict_files(predictor, paths, progress=lambda it: track(it, description=f"{len(paths)} images",
                                                                          console=err, disable=len(paths) <= 256))
    _print_predictions(preds, output)


def _print_predictions(preds, output: Optional[Path]) -> None:
    if output:
        preds.write_csv(output)
        out.print(f"wrote {output} ({len(preds.paths)} images)", highlight=False)
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("image", "predicted", "p", "label"):
            table.add_column(col, justify="right" if col == "p" else "left", overflow="fold")
        for p, k, row, y in zip(preds.paths, preds.predicted, preds.proba, preds.labels):
            table.add_row(str(p), preds.classes[k], f"{row[k]:.3f}", "" if y is None else preds.classes[y])
        out.print(table)
    scores = preds.scores()
    if scores:
        out.print(f"{scores['n']} labelled images: accuracy {scores['accuracy']:.3f}, balanced accuracy "
                  f"{scores['balanced_accuracy']:.3f}; confusion (rows: true class, columns: predicted)", highlight=False)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("")
        for i, c in enumerate(preds.classes):
            table.add_column(c[:8], justify="right")
        for c, counts in zip(preds.classes, scores["confusion"]):
            table.add_row(c, *map(str, counts))
        out.print(table)


@app.command()
def compare(
    studies: Optional[str] = typer.Option(None, "--studies", help="Comma-separated studies. Default: the best study of each objective."),
    output: Optional[Path] = typer.Option(None, "--out", help="HTML path. Default: RESULTS/plots/compare.html (+ .png)."),
    png: bool = typer.Option(True, "--png/--no-png", help="Also a PNG of the figure (needs chromium)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown (for a README)."),
    results: Path = ResultsOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """One page that answers "which family wins on my images": each study's best, the cross-family Pareto fronts."""
    from bench.compare import compare_data, default_studies, markdown_table, table_rows, write_page

    board = _board(db, results)
    chosen = [s.strip() for s in (studies or "").split(",") if s.strip()] or default_studies(board)
    if not chosen:
        fail("no complete trials in the leaderboard yet: run `bench search tinynet --trials 20` first")
    try:
        data = compare_data(board, chosen)
    except ValueError as e:
        fail(str(e))
    if markdown:
        out.print(markdown_table(data), highlight=False, soft_wrap=True)
    else:
        table = Table(title="each study's best on validation (test shown, never used to choose)",
                      title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
        for col in ("family", "study #trial", "val", "test", "bal v/t", "params", "ratio", "fit s", "wall s"):
            table.add_column(col, justify="left" if col in ("family", "study #trial") else "right", no_wrap=True)
        rows = table_rows(data)
        for r in rows:  # the COLUMNS of bench.compare, narrowed to fit 80 columns (--markdown has them all)
            table.add_row(r[0], f"{r[1]} #{r[2]}", r[3], r[5], f"{r[4]}/{r[6]}", *r[7:-1])
        out.print(table)
        for r in rows:
            out.print(f"{r[1]}: the paper's figure {r[-1] or 'none held'}", highlight=False)
    for key, cost in (("front_params", "params"), ("front_time", "fit s")):
        front = ", ".join(f"{r['family']} {r['study']} #{r['trial_number']}" for r in data[key])
        out.print(f"Pareto front, val accuracy vs {cost}: {front}", highlight=False)
    for p in write_page(data, output or results / "plots" / "compare.html", png=png):
        out.print(f"wrote {p}", highlight=False)


if __name__ == "__main__":
    app()
