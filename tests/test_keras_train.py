"""The training recipe: the one-cycle schedule, the short first epoch."""
import pytest

from bench import keras_train as kt


def test_one_cycle_warms_up_then_anneals():
    schedule = kt.one_cycle(0.01, 100)
    start, peak, end = (float(schedule(step)) for step in (0, 30, 99))
    assert start == pytest.approx(0.01 / 25) and peak == pytest.approx(0.01) and end < 0.01 / 1000


def test_a_short_first_epoch_sees_a_part_of_the_fit_split_then_training_goes_on_in_full(tiny_mit8):
    """first_epoch_data: the first rung's epoch trains on a third of the fit split; every later epoch on all of it,
    under one schedule; each epoch is reported once."""
    from bench.objective import get_objective
    from bench.trial import TrialContext

    family = get_objective("tinynet")
    params = {**family.defaults, "input_size": 32, "blocks": 2, "base_filters": 4, "epochs": 3, "batch_size": 4,
              "one_cycle": True, "first_epoch_data": 0.34}
    ctx = TrialContext(data_root=tiny_mit8)
    split = family.load_data(params, ctx)
    model = family.build(params, split)
    info = kt.fit_keras(model, split, params, ctx, family.predict_proba)
    n_fit = len(split.y_fit)
    first = round(0.34 * n_fit)
    assert int(model.optimizer.iterations) == -(-first // 4) + 2 * -(-n_fit // 4)
    assert info.epochs == 3 and [point["epoch"] for point in ctx.curve] == [0, 1, 2]
    assert len(info.history["val_accuracy"]) == 3
    elapsed = [point["seconds"] for point in ctx.curve]  # each epoch says how long the trial had run: the time axis
    assert 0 < elapsed[0] < elapsed[1] < elapsed[2] and info.history["seconds"] == elapsed
