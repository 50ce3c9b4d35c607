"""The training recipe's pure parts: the one-cycle schedule."""
import pytest

from bench import keras_train as kt


def test_one_cycle_warms_up_then_anneals():
    schedule = kt.one_cycle(0.01, 100)
    start, peak, end = (float(schedule(step)) for step in (0, 30, 99))
    assert start == pytest.approx(0.01 / 25) and peak == pytest.approx(0.01) and end < 0.01 / 1000
