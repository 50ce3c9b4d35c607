"""Declarative search spaces: YAML -> a typed, validated SearchSpace, and thin converters for each backend.

A space file:

    objective: tinynet
    description: free text
    params:
      lr:        {type: float, low: 1.0e-4, high: 0.1, log: true}
      blocks:    {type: int, low: 2, high: 6}
      optimizer: {type: categorical, choices: [sgd, adam]}
      momentum:  {type: float, low: 0.5, high: 0.99, when: {optimizer: sgd}}
      epochs:    20                      # a bare value is fixed
    trial_timeout: 900                   # optional: seconds before a trial is killed (--trial-timeout overrides)

`when` holds only if every named param has that value, or one of a list of values.
A param whose condition fails is absent from the sampled dict; the objective's default applies.
"""
from __future__ import annotations

import math
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Scalar = Union[bool, int, float, str, None]


class _Loader(yaml.SafeLoader):
    """YAML as a user means it: PyYAML follows YAML 1.1, which reads 1e-3 (an exponent, no dot) as a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Safe YAML (no objects built), with 1e-3 a float: for space files and --params values alike."""
    return yaml.load(text, Loader=_Loader)


class SpaceError(ValueError):
    """A bad space file; the message is one line naming the file, the param and the reason."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    when: dict[str, Union[Scalar, list[Scalar]]] = Field(default_factory=dict)


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self):
        _check_bounds(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self):
        _check_bounds(self.low, self.high, self.log, self.step)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined for int")
        return self


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)


class FixedParam(_Param):
    type: Literal["fixed"]
    value: Any


Param = Union[FloatParam, IntParam, CategoricalParam, FixedParam]


def _check_bounds(low, high, log, step):
    if low > high:
        raise ValueError(f"low ({low}) > high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got {low}")
    if step is not None and step <= 0:
        raise ValueError(f"step must be > 0, got {step}")


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    objective: str
    description: str = ""
    params: dict[str, Param]
    start: list[dict[str, Any]] = Field(default_factory=list)  # known-good points the search evaluates first
    # a categorical param whose values give learning curves that are not comparable (mlp's variant, the one-cycle
    # schedule's warm-up in transfer): the pruner compares a trial only with trials of the same value
    prune_within: str | None = None
    # how this space is best searched when the command line does not say (Optuna backend): e.g. motpe + pareto-asha
    sampler: str | None = None
    pruner: str | None = None
    # seconds a trial of this space may run before it is killed and stored as failed (`--trial-timeout` overrides it)
    trial_timeout: float | None = Field(default=None, gt=0)
    source: str = Field(default="<memory>", exclude=True)

    # --- loading ---

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<memory>") -> "SearchSpace":
        if not isinstance(raw, dict):
            raise SpaceError(f"{source}: expected a mapping with 'objective' and 'params', got {type(raw).__name__}")
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise SpaceError(f"{source}: 'params' must be a non-empty mapping of name -> spec")
        typed = {}
        for name, spec in params.items():
            if not isinstance(spec, dict):
                spec = {"type": "fixed", "value": spec}
            if "type" not in spec:
                raise SpaceError(f"{source}: param '{name}': missing 'type' (float, int, categorical or fixed)")
            if not isinstance(spec["type"], str):
                raise SpaceError(f"{source}: param '{name}': type must be one word (float, int, categorical or fixed), "
                                 f"got {spec['type']!r}")
            kind = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam, "fixed": FixedParam}.get(spec["type"])
            if kind is None:
                raise SpaceError(f"{source}: param '{name}': unknown type {spec['type']!r} (float, int, categorical or fixed)")
            try:
                typed[name] = kind(**spec)
            except ValidationError as e:
                raise SpaceError(f"{source}: param '{name}': {_first_error(e)}") from None
        for name, p in typed.items():
            for dep in p.when:
                if dep not in typed:
                    raise SpaceError(f"{source}: param '{name}': condition on unknown param '{dep}'")
        typed = _sampling_order(typed, source)
        for i, point in enumerate(raw.get("start") or []):
            unknown = set(point) - set(typed) if isinstance(point, dict) else {"<not a mapping>"}
            if unknown:
                raise SpaceError(f"{source}: start[{i}]: {sorted(unknown)} are not params of this space")
        group = raw.get("prune_within")
        if group is not None and (group not in typed or not isinstance(typed[group], CategoricalParam)):
            raise SpaceError(f"{source}: prune_within: '{group}' must name a categorical param of this space")
        rest = {k: v for k, v in raw.items() if k != "params"}
        try:
            return cls(params=typed, source=source, **rest)
        except ValidationError as e:
            raise SpaceError(f"{source}: {_first_error(e)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        try:
            raw = load_yaml(path.read_text())
        except FileNotFoundError:
            raise SpaceError(f"{path}: no such space file") from None
        except IsADirectoryError:
            raise SpaceError(f"{path}: is a folder, not a space file") from None
        except UnicodeDecodeError as e:
            raise SpaceError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8") from None
        except OSError as e:
            raise SpaceError(f"{path}: cannot read ({e.strerror})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise SpaceError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
        return cls.from_dict(raw, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_defaults=True), sort_keys=False)

    def with_fixed(self, values: dict[str, Any]) -> "SearchSpace":
        """This space with some params fixed (`bench search --fix flip=false`): a knob the data forbids, such as
        horizontal flips of digits or text, is turned off without editing the file. Start points follow."""
        raw = self.model_dump(mode="json")
        for name, value in values.items():
            raw["params"][name] = {"type": "fixed", "value": value}
        raw["start"] = [{**point, **values} for point in raw.get("start", [])]
        if raw.get("prune_within") in values:  # one value left: one group, nothing to prune apart
            raw["prune_within"] = None
        return SearchSpace.from_dict(raw, source=f"{self.source} with --fix {', '.join(f'{k}={v}' for k, v in values.items())}")

    # --- what is active ---

    def active(self, name: str, chosen: dict[str, Any]) -> bool:
        for dep, want in self.params[name].when.items():
            options = want if isinstance(want, list) else [want]
            if dep not in chosen or chosen[dep] not in options:
                return False
        return True

    def fixed(self) -> dict[str, Any]:
        return {n: p.value for n, p in self.params.items() if isinstance(p, FixedParam) and not p.when}

    # --- converters: one per backend, each thin ---

    def to_optuna(self, trial) -> dict[str, Any]:
        """Sample a point with an Optuna trial. Optuna's bounds are inclusive."""
        chosen: dict[str, Any] = {}
        for name, p in self.params.items():
            if not self.active(name, chosen):
                continue
            if isinstance(p, FloatParam):
                chosen[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, IntParam):
                chosen[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, CategoricalParam):
                chosen[name] = trial.suggest_categorical(name, p.choices)
            else:
                chosen[name] = p.value
        return chosen

    def to_kerastuner(self, hp) -> dict[str, Any]:
        """Declare the space on a keras-tuner HyperParameters (conditions become conditional scopes) and return the
        active values. On a trial's HyperParameters it reads that trial's point. keras-tuner's bounds are inclusive."""
        chosen: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, FixedParam):
                if self.active(name, chosen):
                    chosen[name] = p.value
                continue
            with ExitStack() as scopes:
                for dep, want in p.when.items():
                    scopes.enter_context(hp.conditional_scope(dep, want if isinstance(want, list) else [want]))
                if isinstance(p, FloatParam):
                    # keras-tuner floors (high - low) / step, so 0.1..0.3 step 0.1 would never give 0.3: nudge high
                    high = p.high + p.step * 1e-6 if p.step and not p.log else p.high
                    value = hp.Float(name, p.low, high, step=None if p.log else p.step, sampling="log" if p.log else "linear")
                elif isinstance(p, IntParam):
                    value = hp.Int(name, p.low, p.high, step=None if p.log else p.step, sampling="log" if p.log else "linear")
                else:
                    value = hp.Choice(name, p.choices)
            if self.active(name, chosen):
                chosen[name] = value
        return chosen

    def to_ray(self) -> dict[str, Any]:
        """A Ray Tune param_space for Ray's own samplers. Ray's integer upper bound is exclusive, so high + 1 here.
        Conditions are not expressible in a flat param_space: the Ray backend samples through OptunaSearch with
        to_optuna instead; here a conditional param is sampled always and dropped by `active` afterwards."""
        from ray import tune

        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, FloatParam):
                if p.step:
                    out[name] = (tune.qloguniform if p.log else tune.quniform)(p.low, p.high, p.step)
                else:
                    out[name] = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
            elif isinstance(p, IntParam):
                if p.log:
                    out[name] = tune.lograndint(p.low, p.high + 1)
                else:
                    out[name] = tune.qrandint(p.low, p.high, p.step) if p.step > 1 else tune.randint(p.low, p.high + 1)
            elif isinstance(p, CategoricalParam):
                out[name] = tune.choice(p.choices)
            else:
                out[name] = p.value
        return out

    def grid(self) -> dict[str, list]:
        """Every grid axis, for Optuna's GridSampler: categoricals, ints, and floats with a step."""
        axes = {}
        for name, p in self.params.items():
            if isinstance(p, CategoricalParam):
                axes[name] = list(p.choices)
            elif isinstance(p, IntParam):
                axes[name] = list(range(p.low, p.high + 1, p.step)) if not p.log else _log_ints(p.low, p.high)
            elif isinstance(p, FloatParam):
                if p.step is None:
                    raise SpaceError(f"{self.source}: param '{name}': the grid sampler needs a step (or choices) for floats")
                n = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
                axes[name] = [round(p.low + i * p.step, 12) for i in range(n)]
        return axes


def _sampling_order(params: dict[str, Param], source: str) -> dict[str, Param]:
    """Declaration order, except that a param comes after the params its condition reads."""
    ordered: dict[str, Param] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise SpaceError(f"{source}: param '{name}': conditions form a cycle")
        visiting.add(name)
        for dep in params[name].when:
            visit(dep)
        visiting.discard(name)
        ordered[name] = params[name]

    for name in params:
        visit(name)
    return ordered


def _log_ints(low: int, high: int) -> list[int]:
    out, v = [], low
    while v <= high:
        out.append(v)
        v *= 2
    return out


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not isinstance(x, int))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key '{err['loc'][-1]}'"
    return f"{loc}: {msg}" if loc else msg


# --- finding spaces ---


LOCAL_SPACES = Path("search_spaces")  # the working folder's own spaces, relative to where bench runs


def shipped_space_dir() -> Path:
    """bench's own spaces: the package data of bench.search_spaces (the repo's search_spaces/ in a checkout)."""
    from importlib.resources import files

    return Path(str(files("bench.search_spaces")))  # a real folder: pip never installs bench zipped


def space_dirs() -> list[Path]:
    """Where named spaces live, in the order a name is looked up: ./search_spaces of the working folder first (so a
    user's own `tinynet.yaml` there is the one `--space tinynet` means), then bench's shipped spaces."""
    dirs = [LOCAL_SPACES.resolve(), shipped_space_dir().resolve()]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def _all_spaces() -> list[tuple[str, Path]]:
    return [(f.relative_to(d).with_suffix("").as_posix(), f) for d in space_dirs() for f in sorted(d.rglob("*.yaml"))]


def list_spaces() -> dict[str, Path]:
    """name -> file of every space a name finds; a working-folder space hides a shipped one of the same name."""
    found: dict[str, Path] = {}
    for name, f in _all_spaces():
        found.setdefault(name, f)
    return found


def hidden_spaces() -> dict[str, Path]:
    """Shipped spaces that a working-folder space of the same name hides: name -> the hidden file."""
    seen, hidden = list_spaces(), {}
    for name, f in _all_spaces():
        if seen[name] != f:
            hidden.setdefault(name, f)
    return hidden


def find_space(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise SpaceError(f"{p}: no such space file")
        return p
    spaces = list_spaces()
    if name_or_path not in spaces:
        raise SpaceError(f"no space named '{name_or_path}'; available: {', '.join(spaces) or 'none'}")
    return spaces[name_or_path]


def load_space(name_or_path: str) -> SearchSpace:
    return SearchSpace.from_yaml(find_space(name_or_path))
