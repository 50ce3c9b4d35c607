"""The family contract as checks anyone can run, the way scikit-learn's `check_estimator` does: `bench check-objective
NAME` on a family of your own, and bench's own test suite (tests/test_objective.py) on every registered family.

The family trains with its `quick_params` (a class attribute: 1 epoch, small inputs; a family without them fails the
first rule), on a small sample of the data. The rules, each with its own message:

- loads:          the name gives an `Objective` subclass whose `__init__()` takes no argument, named by its `name`
- quick params:   `quick_params` exists and names only params of `defaults`
- spaces:         every space for this objective names only params of `defaults`
- result:         build -> fit -> a `Result` with accuracies in [0, 1], finite losses, `n_params` > 0, epochs >= 1
- same seed:      the same seed gives the same metrics and parameter count
- max_params:     a `--max-params` below the model's size fails the trial before `fit` runs
- prune hook:     `fit` calls `ctx.report(epoch, {"val_accuracy": ...})`, and a backend's prune stops the trial there
- save -> load:   where `save_model` writes a model and the family has `load_model(folder)`, the loaded model predicts
                  what the trained one did (a family that saves nothing: not applicable)

Each run is a real trial on real images: nothing here stands in for the family.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

SAMPLE_TRAIN, SAMPLE_TEST = 8, 3  # images per class of the sample the checks train on


@dataclass
class Check:
    rule: str
    status: str  # "ok", "FAIL" or "n/a"
    message: str = ""
    seconds: float = 0.0


class ContractError(AssertionError):
    """A broken rule; the message says which and how to mend it."""


class NotApplicable(Exception):
    """The rule does not apply to this family (the message says why)."""


@dataclass
class _State:
    """What the checks share, so each trains as little as it can."""

    name: str
    data_root: Path
    work: Path
    params: dict[str, Any] | None
    cls: type | None = None
    first: Any = None  # the first run's Result
    first_ctx: Any = None
    notes: dict[str, Any] = field(default_factory=dict)

    def objective(self):
        return self.cls()

    def ctx(self, **kw):
        from bench.objective import TrialContext

        return TrialContext(seed=kw.pop("seed", 0), data_root=self.data_root, val_fraction=0.25,
                            cache_dir=self.work / "cache", **kw)

    def need_run(self):
        if self.first is None:
            raise ContractError("not checked: the first trial did not give a Result (see the result rule)")


def _loads(s: _State) -> str:
    from bench.objective import Objective
    from bench.registry import objective_class

    cls = objective_class(s.name)
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ContractError(f"'{s.name}' names {cls!r}, not a subclass of bench.objective.Objective")
    try:
        cls()
    except TypeError as e:
        raise ContractError(f"{cls.__name__}() must work with no arguments (__init__ only stores options): {e}") from None
    if cls.name != s.name:
        raise ContractError(f"{cls.__name__}.name is '{cls.name}', but the family is registered as '{s.name}': "
                            f"set name = '{s.name}' (artifacts and messages use it)")
    s.cls = cls
    return f"{cls.__module__}.{cls.__name__}"


def _quick_params(s: _State) -> str:
    if s.cls is None:
        raise ContractError("not checked: the family does not load")
    if s.params is None:
        s.params = getattr(s.cls, "quick_params", None)
        if not isinstance(s.params, dict):
            raise ContractError(f"{s.cls.__name__} has no quick_params: give it a class attribute quick_params = {{...}}, "
                                "params for a trial of seconds (1 epoch, small inputs) the contract checks train with")
    try:
        s.objective().resolve(s.params)
    except ValueError as e:
        raise ContractError(f"quick_params: {e}") from None
    return json.dumps(s.params, default=str)


def _spaces(s: _State) -> str:
    from bench.space import SpaceError, list_spaces, load_space

    if s.cls is None:
        raise ContractError("not checked: the family does not load")
    known, checked = set(s.cls.defaults), []
    for name, path in list_spaces().items():
        try:
            space = load_space(str(path))
        except SpaceError:
            continue  # a broken file is `bench spaces`' to report, whatever family it is for
        if space.objective != s.name:
            continue
        unknown = set(space.params) - known
        if unknown:
            raise ContractError(f"{path}: params {sorted(unknown)} are not in {s.cls.__name__}.defaults")
        checked.append(name)
    if not checked:
        raise NotApplicable(f"no space names objective '{s.name}' (looked in ./search_spaces and bench's own)")
    return ", ".join(checked)


def _result(s: _State) -> str:
    from bench.objective import Result

    if s.params is None:
        raise ContractError("not checked: no quick params")
    ctx = s.ctx(run_dir=s.work / "run", trial_number=0, keep_top=1, keep_models=True)
    result = s.objective().run(s.params, ctx)
    if not isinstance(result, Result):
        raise ContractError(f"run() gave {type(result).__name__}, not a bench.objective.Result")
    problems = []
    for f in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "test_accuracy", "test_balanced_accuracy", "test_macro_f1"):
        v = getattr(result, f)
        if not (isinstance(v, float) and 0.0 <= v <= 1.0):
            problems.append(f"{f} = {v!r} is not in [0, 1]")
    for f in ("val_loss", "test_loss"):
        if not math.isfinite(getattr(result, f)):
            problems.append(f"{f} is not finite (predict_proba must give probabilities)")
    if not (isinstance(result.n_params, int) and result.n_params > 0):
        problems.append(f"n_params = {result.n_params!r}: count_params must count the model's learned numbers (> 0)")
    if not result.epochs >= 1:
        problems.append(f"epochs = {result.epochs!r}: fit must return FitInfo(epochs >= 1)")
    if list(result.extras.get("classes", [])) != list(ctx.catalog.classes):
        problems.append("the result's classes are not the data's class folders")
    if problems:
        raise ContractError("; ".join(problems))
    s.first, s.first_ctx = result, ctx
    return (f"val acc {result.val_accuracy:.3f}, test acc {result.test_accuracy:.3f}, {result.n_params:,} params, "
            f"{result.epochs} epoch(s), fit {result.fit_seconds:.2f} s")


def _same_seed(s: _State) -> str:
    s.need_run()
    again = s.objective().run(s.params, s.ctx())
    a, b = s.first, again
    diffs = [f"{f}: {getattr(a, f)!r} then {getattr(b, f)!r}" for f in ("val_accuracy", "test_accuracy", "n_params")
             if getattr(a, f) != getattr(b, f)]
    if not math.isclose(a.val_loss, b.val_loss, rel_tol=1e-4, abs_tol=1e-6):
        diffs.append(f"val_loss: {a.val_loss!r} then {b.val_loss!r}")
    if diffs:
        raise ContractError("seed 0 twice gave different results (" + "; ".join(diffs) + "): set_seed(seed) must seed "
                            "every random number generator the family uses")
    return f"val loss {a.val_loss:.6f} twice"


def _max_params(s: _State) -> str:
    from bench.objective import TrialFailed

    s.need_run()
    obj, fitted = s.objective(), []
    fit = obj.fit
    obj.fit = lambda *a, **kw: fitted.append(1) or fit(*a, **kw)  # a spy: Objective.run must not reach fit
    ctx = s.ctx(max_params=1)
    try:
        obj.run(s.params, ctx)
    except TrialFailed as e:
        if fitted:
            raise ContractError(f"--max-params 1 failed the trial, but only after fit ran: {e}") from None
        return str(e)
    raise ContractError("--max-params 1 did not stop the trial: count_params must count the built model before fit")


def _prune_hook(s: _State) -> str:
    from bench.objective import Pruned

    s.need_run()
    seen: list[dict] = []
    ctx = s.ctx(report_hook=lambda epoch, metrics: seen.append(dict(metrics)) or True)
    try:
        s.objective().run(s.params, ctx)
    except Pruned as e:
        if seen and "val_accuracy" not in seen[0]:
            raise ContractError(f"fit reported {sorted(seen[0])}, without val_accuracy, which the pruners compare") from None
        return f"{e}; the trial's curve kept {len(ctx.curve)} point(s)"
    if not seen:
        raise ContractError("fit never called ctx.report(epoch, metrics): backends can neither prune it nor show its "
                            "progress (a family that fits in one go reports once, as epoch 0)")
    raise ContractError("ctx.report was called but the trial went on after the backend said prune: let Pruned propagate")


def _save_load(s: _State) -> str:
    from bench.artifacts import trial_dir

    s.need_run()
    folder = trial_dir(s.first_ctx.run_dir, 0)
    meta = json.loads((folder / "meta.json").read_text())
    if "artifacts_error" in s.first.extras:
        raise ContractError(f"keeping the trial's model failed: {s.first.extras['artifacts_error']}")
    if not meta.get("model"):
        raise NotApplicable("save_model saves nothing (bench report then shows no model-based figures)")
    if not s.cls.can_load():
        raise NotApplicable(f"save_model wrote {meta['model']}; the family has no load_model(folder), so the round "
                            "trip is not checked")
    obj = s.objective()
    model = obj.load_model(folder)
    split = obj.load_data(obj.resolve(s.params), s.ctx())
    stored = np.load(folder / "predictions.npz")["test_proba"]
    proba = np.asarray(obj.predict_proba(model, split.x_test), np.float32)
    if proba.shape != stored.shape or not np.allclose(proba, stored, atol=1e-5):
        diff = np.abs(proba - stored).max() if proba.shape == stored.shape else f"shape {proba.shape} vs {stored.shape}"
        raise ContractError(f"the model load_model read back predicts otherwise than the trained one (max diff {diff})")
    return f"{meta['model']} read back; the same test probabilities"


RULES: list[tuple[str, Callable[[_State], str]]] = [
    ("loads", _loads), ("quick params", _quick_params), ("spaces", _spaces), ("result", _result),
    ("same seed", _same_seed), ("max_params", _max_params), ("prune hook", _prune_hook), ("save -> load", _save_load),
]


def sample_images(root: Path, dest: Path, train: int = SAMPLE_TRAIN, test: int = SAMPLE_TEST) -> Path:
    """A few images per class of a data root, symlinked into dest (ROOT/train|test/<class> or ROOT/<class>)."""
    splits = [("train", train), ("test", test)] if (root / "train").is_dir() else [("", train + test)]
    for split, n in splits:
        for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            out = dest / split / cls.name
            out.mkdir(parents=True)
            for f in sorted(p for p in cls.iterdir() if p.is_file())[:n]:
                (out / f.name).symlink_to(f.resolve())
    return dest


def check_objective(name: str, data_root: Path, params: dict[str, Any] | None = None, sample: bool = True,
                    on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Run every rule on family `name` (params: instead of its quick_params), on a small sample of data_root."""
    checks = []
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        work = Path(tmp)
        root = sample_images(Path(data_root), work / "data") if sample else Path(data_root)
        state = _State(name, root, work, params)
        for rule, fn in RULES:
            start = time.perf_counter()
            try:
                check = Check(rule, "ok", fn(state))
            except NotApplicable as e:
                check = Check(rule, "n/a", str(e))
            except ContractError as e:
                check = Check(rule, "FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - a family's own error breaks this rule, not the others
                check = Check(rule, "FAIL", f"{type(e).__name__}: {e}")
            check.seconds = time.perf_counter() - start
            checks.append(check)
            if on_check:
                on_check(check)
    return checks
