from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.objective import get_objective
from bench.space import SearchSpace, SpaceError, list_spaces, load_space

GOOD = {
    "objective": "tinynet",
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        "blocks": {"type": "int", "low": 2, "high": 6},
        "filters": {"type": "int", "low": 8, "high": 32, "step": 8},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        "epochs": 3,
        "batch_size": {"type": "fixed", "value": 16},
    },
}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_param(name, spec):
    return {"objective": "tinynet", "params": {"optimizer": {"type": "categorical", "choices": ["sgd", "adam"]}, name: spec}}


@pytest.mark.parametrize("data, needle", [
    (with_param("lr", {"type": "float", "low": 1, "high": 0.1}), "param 'lr': low (1.0) > high (0.1)"),
    (with_param("lr", {"type": "float", "low": 0.1, "high": 1, "colour": 3}), "param 'lr': unknown key 'colour'"),
    (with_param("lr", {"type": "float", "low": "tiny", "high": 1}), "param 'lr': low: Input should be a valid number"),
    (with_param("n", {"type": "int", "low": 1.5, "high": 4}), "param 'n': low: Input should be a valid integer"),
    (with_param("lr", {"type": "float", "low": 0, "high": 1, "log": True}), "param 'lr': log scale needs low > 0"),
    (with_param("m", {"type": "float", "low": 0, "high": 1, "when": {"solver": "sgd"}}), "param 'm': condition on unknown param 'solver'"),
    (with_param("lr", {"low": 0, "high": 1}), "param 'lr': missing 'type'"),
    (with_param("lr", {"type": "double", "low": 0, "high": 1}), "param 'lr': unknown type 'double'"),
    (with_param("act", {"type": "categorical", "choices": []}), "param 'act': choices"),
    ({"objective": "tinynet", "params": {}}, "'params' must be a non-empty mapping"),
    ({"objective": "tinynet", "params": {"a": 1}, "start": [{"b": 2}]}, "start[0]: ['b'] are not params of this space"),
    ({"objective": "tinynet", "params": {"a": 1}, "budget": 3}, "unknown key 'budget'"),
    ({"objective": "tinynet", "params": {"a": 1}, "trial_timeout": 0}, "trial_timeout: Input should be greater than 0"),
    ({"objective": "tinynet", "params": {"a": 1}, "trial_timeout": "soon"}, "trial_timeout: Input should be a valid number"),
    ("objective: tinynet\nparams: {lr: [1, 2\n", "invalid YAML"),
    ({"objective": "tinynet", "params": {
        "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
        "opt": {"type": "categorical", "choices": ["sgd"], "when": {"m": 0.5}}}}, "conditions form a cycle"),
])
def test_bad_spaces_give_one_line_naming_file_param_and_reason(tmp_path, data, needle):
    path = write(tmp_path, data)
    with pytest.raises(SpaceError) as e:
        SearchSpace.from_yaml(path)
    message = str(e.value)
    assert str(path) in message and needle in message, message
    assert "\n" not in message


def test_bad_space_on_the_command_line_exits_2_and_writes_nothing(tmp_path, tiny_mit8):
    path = write(tmp_path, with_param("lr", {"type": "float", "low": 1, "high": 0.1}))
    results = tmp_path / "results"
    run = CliRunner().invoke(app, ["search", "tinynet", "--space", str(path), "--trials", "1",
                                   "--data", str(tiny_mit8), "--results", str(results)])
    assert run.exit_code == 2
    assert "low (1.0) > high (0.1)" in run.output
    assert not results.exists()


@pytest.mark.parametrize("name, low, high, kind", [
    ("lr", 1e-4, 1e-1, float), ("dropout", 0.0, 0.5, float), ("blocks", 2, 6, int), ("filters", 8, 32, int),
])
def test_optuna_samples_stay_in_inclusive_bounds(tmp_path, name, low, high, kind):
    space = SearchSpace.from_dict(GOOD)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(200):
        value = space.to_optuna(study.ask())[name]
        assert isinstance(value, kind) and low <= value <= high
        seen.add(value)
    if kind is int:  # Optuna's integer bounds are inclusive: both ends are reachable
        assert low in seen and high in seen
    if name == "filters":
        assert seen == {8, 16, 24, 32}
    if name == "dropout":
        assert all(abs(v * 10 - round(v * 10)) < 1e-9 for v in seen)


def test_conditions_and_fixed_values():
    space = SearchSpace.from_dict(GOOD)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(50):
        params = space.to_optuna(study.ask())
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        assert params["epochs"] == 3 and params["batch_size"] == 16
    assert space.fixed() == {"epochs": 3, "batch_size": 16}


def test_condition_with_a_list_of_values():
    space = SearchSpace.from_dict({"objective": "x", "params": {
        "opt": {"type": "categorical", "choices": ["sgd", "rmsprop", "adam"]},
        "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"opt": ["sgd", "rmsprop"]}}}})
    assert space.active("momentum", {"opt": "rmsprop"}) and not space.active("momentum", {"opt": "adam"})


def test_a_condition_may_name_a_param_declared_after_it():
    space = SearchSpace.from_dict({"objective": "x", "params": {
        "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"opt": "sgd"}},
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]}}})
    assert list(space.params) == ["opt", "momentum"]


def test_grid_axes():
    grid = SearchSpace.from_dict({"objective": "x", "params": {
        "k": {"type": "int", "low": 1, "high": 7, "step": 2},
        "d": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        "c": {"type": "categorical", "choices": ["a", "b"]}, "e": 3}}).grid()
    assert grid == {"k": [1, 3, 5, 7], "d": [0.0, 0.1, 0.2], "c": ["a", "b"]}
    with pytest.raises(SpaceError, match="grid sampler needs a step"):
        SearchSpace.from_dict(GOOD).grid()


def test_every_shipped_space_loads_and_fits_its_objective():
    spaces = list_spaces()
    assert "tinynet" in spaces and "paper/tinynet_baseline" in spaces
    for name in spaces:
        space = load_space(name)
        objective = get_objective(space.objective)
        unknown = set(space.params) - set(objective.defaults)
        assert not unknown, f"{name}: {sorted(unknown)} are not params of {space.objective}"


def test_yaml_round_trip():
    space = SearchSpace.from_dict(GOOD)
    again = SearchSpace.from_dict(yaml.safe_load(space.to_yaml()))
    assert again.params == space.params


def test_a_space_may_set_a_trial_timeout(tmp_path):
    space = SearchSpace.from_yaml(write(tmp_path, {"objective": "tinynet", "params": {"a": 1}, "trial_timeout": 900}))
    assert space.trial_timeout == 900 and SearchSpace.from_dict(space.model_dump()).trial_timeout == 900


def test_fixing_params_keeps_the_space_valid():
    """`bench search --fix`: the fixed params leave the sampled ones and the start points, and a prune_within param
    that is fixed (one group left) no longer groups the pruning."""
    space = SearchSpace.from_dict({**GOOD, "prune_within": "optimizer", "start": [{"optimizer": "sgd", "lr": 0.01}]})
    fixed = space.with_fixed({"optimizer": "adam", "blocks": 3})
    assert fixed.fixed()["optimizer"] == "adam" and fixed.fixed()["blocks"] == 3
    assert fixed.prune_within is None and space.prune_within == "optimizer"
    assert fixed.start == [{"optimizer": "adam", "lr": 0.01, "blocks": 3}]
    assert space.with_fixed({"lr": 0.01}).prune_within == "optimizer"
