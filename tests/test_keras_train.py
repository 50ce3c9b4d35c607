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


def test_count_macs_counts_every_kernel_weight_once_per_output_position():
    k = kt.keras()
    L = k.layers
    inputs = k.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inputs)  # 8x8 positions, 3*3*3*8 weights
    x = L.BatchNormalization()(x)  # element-wise: not counted
    x = L.SeparableConv2D(16, 3, padding="same")(x)  # 8x8 positions, 3*3*8 depthwise + 8*16 pointwise weights
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4)(x)  # 16*4 weights, once
    model = k.Model(inputs, outputs)
    assert kt.count_macs(model) == 64 * 3 * 3 * 3 * 8 + 64 * (3 * 3 * 8 + 8 * 16) + 16 * 4


def test_a_network_over_max_mmacs_is_pruned_before_it_trains_and_the_search_goes_on(tmp_path, tiny_mit8):
    """The compute cap: a start point of 0.69 million MACs per image is stopped at epoch 0 with the reason stored;
    the one of 0.05 million under the 0.2 cap trains."""
    from test_search import SPACE, rows, search

    big = {**SPACE["start"][0], "kernel_size": 5, "base_filters": 12}
    small = {**SPACE["start"][0], "kernel_size": 3, "base_filters": 4}
    space = {**SPACE, "params": {**SPACE["params"], "max_mmacs": 0.2}, "start": [big, small]}
    run = search(tmp_path, tiny_mit8, "--trials", "2", "--study", "capped", space=space)
    assert run.exit_code == 0, run.output
    stored = {r["trial_number"]: r for r in rows(tmp_path, study="capped")}
    assert stored[0]["status"] == "pruned" and stored[0]["epochs"] == 0
    assert stored[0]["failure_reason"] == ("0.691 million multiply-accumulates per image exceed max_mmacs 0.2; "
                                           "skipped before training")
    assert stored[0]["extras"]["history"].get("val_accuracy", []) == []
    assert stored[1]["status"] == "complete" and stored[1]["epochs"] == 1
