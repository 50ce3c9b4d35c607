"""The same space through each backend's converter, bounds included: Optuna and keras-tuner are inclusive,
Ray's randint/lograndint upper bound is exclusive (so the converter adds one), quantised ones inclusive."""
import numpy as np
import pytest

from bench.space import SearchSpace

SPACE = SearchSpace.from_dict({"objective": "x", "params": {
    "n": {"type": "int", "low": 2, "high": 4},
    "q": {"type": "int", "low": 8, "high": 16, "step": 4},
    "g": {"type": "int", "low": 1, "high": 8, "log": True},
    "f": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
    "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"opt": "sgd"}},
    "epochs": 3,
}})
EXPECTED_VALUES = {"n": {2, 3, 4}, "q": {8, 12, 16}, "opt": {"sgd", "adam"}}
RANGES = {"g": (1, 8), "f": (0.1, 0.3), "lr": (1e-3, 1e-1), "momentum": (0.5, 0.9)}


def optuna_samples(k):
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [SPACE.to_optuna(study.ask()) for _ in range(k)]


def kerastuner_samples(k):
    kt = pytest.importorskip("keras_tuner")
    hp = kt.HyperParameters()
    SPACE.to_kerastuner(hp)
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=k, seed=0,
                                           hyperparameters=hp, tune_new_entries=False)
    out = []
    for i in range(k):
        values = oracle.populate_space(str(i))["values"]
        trial_hp = hp.copy()
        trial_hp.values = values
        out.append(SPACE.to_kerastuner(trial_hp))
    return out


def ray_samples(k):
    pytest.importorskip("ray")
    from ray.tune.search.sample import Domain

    rng = np.random.default_rng(0)
    space = SPACE.to_ray()
    out = []
    for _ in range(k):
        point = {n: (d.sample(random_state=rng) if isinstance(d, Domain) else d) for n, d in space.items()}
        out.append({n: v for n, v in point.items() if SPACE.active(n, point)})
    return out


@pytest.mark.parametrize("sample", [optuna_samples, kerastuner_samples, ray_samples], ids=["optuna", "kerastuner", "ray"])
def test_each_converter_covers_the_space_with_its_bounds(sample):
    points = sample(300)
    for name, values in EXPECTED_VALUES.items():
        assert {p[name] for p in points} == values, name  # both ends of every int range are reached, nothing beyond
    for name, (low, high) in RANGES.items():
        seen = [p[name] for p in points if name in p]
        assert seen and low - 1e-9 <= min(seen) and max(seen) <= high + 1e-9, name
    assert {round(p["f"], 6) for p in points} == {0.1, 0.2, 0.3}
    assert {p["g"] for p in points} >= {1, 8} or sample is ray_samples  # Ray's lograndint rarely hits the top
    for p in points:
        assert ("momentum" in p) == (p["opt"] == "sgd") and p["epochs"] == 3


def test_ray_integer_bounds_are_shifted_for_exclusive_upper():
    pytest.importorskip("ray")
    space = SPACE.to_ray()
    assert (space["n"].lower, space["n"].upper) == (2, 5)  # randint: upper exclusive
    assert (space["q"].lower, space["q"].upper) == (8, 16)  # qrandint: upper inclusive
