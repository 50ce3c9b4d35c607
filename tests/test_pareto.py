import pytest

from bench.pareto import pareto_front
from bench.plots import chromium, pareto_figure, write_figure


def row(n, acc, params, **kw):
    return {"study": "s", "trial_number": n, "val_accuracy": acc, "n_params": params, "test_accuracy": acc, "params": {"k": n}, **kw}


TABLE = [
    row(0, 0.80, 50_000),
    row(1, 0.85, 400_000),
    row(2, 0.70, 5_000),
    row(3, 0.75, 60_000),   # dominated by 0 (less accurate, larger)
    row(4, 0.85, 500_000),  # dominated by 1 (as accurate, larger)
    row(5, 0.60, 5_000),    # dominated by 2 (same size, less accurate)
    row(6, None, 1_000),    # no accuracy: ignored
    row(7, 0.90, None),     # no size: ignored
]


def test_front_is_the_non_dominated_rows_by_size():
    assert [r["trial_number"] for r in pareto_front(TABLE)] == [2, 0, 1]


def test_front_on_another_metric():
    rows = [row(0, 0.8, 10, test_accuracy=0.5), row(1, 0.7, 5, test_accuracy=0.6)]
    assert [r["trial_number"] for r in pareto_front(rows, "test_accuracy")] == [1]
    assert [r["trial_number"] for r in pareto_front(rows)] == [1, 0]


def test_empty_and_single():
    assert pareto_front([]) == []
    assert [r["trial_number"] for r in pareto_front([row(9, 0.5, 10)])] == [9]


def test_plot_writes_html_with_the_front_and_hover_params(tmp_path):
    written = write_figure(pareto_figure(TABLE), tmp_path / "pareto.html", png=chromium() is not None)
    html = written[0].read_text()
    assert "Pareto front" in html and "k=4" in html and '"type":"log"' in html
    if chromium():
        png = tmp_path / "pareto.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


from bench.pareto import hypervolume, nondominated_ranks, pareto_promotable  # noqa: E402

# (val accuracy, parameters) of six trials at one rung
RUNG = [(0.80, 50_000), (0.85, 400_000), (0.70, 5_000), (0.75, 60_000), (0.60, 500_000), (0.82, 45_000)]


def test_nondominated_sorting_on_a_hand_made_table():
    # front 0: 0.85@400k, 0.70@5k, 0.82@45k; 1: 0.80@50k (beaten by 0.82@45k); 2: 0.75@60k; 3: 0.60@500k
    assert nondominated_ranks(RUNG) == [1, 0, 0, 2, 3, 0]


def test_pareto_promotion_picks_the_non_dominated_trials_above_the_median():
    # the median accuracy is 0.80: 0.70@5k is on the front (nothing is smaller) but not promoted for its size alone
    promoted = [i for i in range(len(RUNG)) if pareto_promotable(i, RUNG, reduction_factor=2)]
    assert promoted == [0, 1, 5]
    assert [i for i in range(len(RUNG)) if pareto_promotable(i, RUNG, reduction_factor=3)] == [1, 5]
    # above the median, a front member goes on before a more accurate dominated one: 0.82@45k before 0.83@500k
    rung = [(0.85, 400_000), (0.82, 45_000), (0.60, 5_000), (0.83, 500_000), (0.50, 600_000), (0.40, 700_000)]
    assert [i for i in range(6) if pareto_promotable(i, rung, reduction_factor=3)] == [0, 1]


def test_below_reduction_factor_trials_a_rung_promotes_only_what_beats_all_there():
    assert not pareto_promotable(0, [(0.9, 10)], reduction_factor=3)  # a rung's first trial stops
    assert pareto_promotable(0, [(0.9, 10), (0.1, 20)], reduction_factor=3)  # better than the one before it
    assert not pareto_promotable(1, [(0.9, 10), (0.1, 20)], reduction_factor=3)
    assert not pareto_promotable(0, [(0.9, 10), (0.9, 20)], reduction_factor=3)  # a tie does not beat it
    assert pareto_promotable(0, [(0.9, 10), (0.1, 20), (0.2, 30)], reduction_factor=3)


def test_hypervolume_against_hand_computed_areas():
    assert hypervolume([(0.5, 2.0)], (0.0, 4.0)) == 1.0
    # two points: 0.5 from cost 1 to 3, then 0.8 from 3 to 4 -> 0.5*2 + 0.8*1
    assert hypervolume([(0.5, 1.0), (0.8, 3.0)], (0.0, 4.0)) == pytest.approx(1.8)
    assert hypervolume([(0.5, 1.0), (0.8, 3.0), (0.4, 2.0)], (0.0, 4.0)) == pytest.approx(1.8)  # dominated adds nothing
    assert hypervolume([(0.5, 5.0)], (0.0, 4.0)) == 0.0


def test_two_objective_tpe_counts_the_pruned_trials_that_went_furthest_as_good():
    import optuna
    from optuna.samplers._tpe.sampler import _split_trials
    from optuna.trial import TrialState

    from bench.backends.optuna import _RungOrder

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, values=[0.9, 100]))
    rungs = [{"rung_1": [0.3, 10]}, {"rung_1": [0.5, 10]}, {"rung_1": [0.6, 10], "rung_3": [0.7, 10]}, {"rung_1": [0.2, 10]}]
    for x, attrs in zip((0.1, 0.2, 0.3, 0.4), rungs):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, state=TrialState.PRUNED, user_attrs=attrs))
    trials = study.get_trials(deepcopy=False)
    plain, _ = _split_trials(study, trials, 3)  # Optuna alone: the first pruned trials by number
    ranked, _ = _split_trials(_RungOrder(study), _RungOrder(study)._get_trials(deepcopy=False), 3)
    assert [t.params["x"] for t in plain] == [0.5, 0.1, 0.2]
    assert sorted(t.params["x"] for t in ranked) == [0.2, 0.3, 0.5]  # the one at rung 3, then the best of rung 1
