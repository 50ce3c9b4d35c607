"""The training recipe's pure parts: the one-cycle schedule, with and without restarts at the pruner's rungs."""
import pytest

from bench import keras_train as kt


def lrs(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_one_cycle_warms_up_then_anneals():
    start, peak, end = lrs(kt.one_cycle(0.01, 100), (0, 30, 99))
    assert start == pytest.approx(0.01 / 25) and peak == pytest.approx(0.01) and end < 0.01 / 1000


def test_each_rung_is_judged_at_the_bottom_of_a_cycle():
    schedule = kt.one_cycle(0.01, 200, restarts=(10, 30, 90))
    for begin, end in ((0, 10), (10, 30), (30, 90), (90, 200)):  # each cycle: low, up to the peak, down again
        first, last = lrs(schedule, (begin, end - 1))
        peak = max(lrs(schedule, range(begin, end)))
        assert first == pytest.approx(0.01 / 25) and peak == pytest.approx(0.01, rel=0.05) and last < peak / 10
    assert lrs(schedule, (5,)) != lrs(kt.one_cycle(0.01, 200), (5,))  # restarts change the schedule
    assert lrs(kt.one_cycle(0.01, 200, restarts=(0, 200, 500)), (60,)) == lrs(kt.one_cycle(0.01, 200), (60,))
