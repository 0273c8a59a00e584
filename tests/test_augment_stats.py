import math

import pytest

from augment.stats import mean_ci, relative_change


def test_t_interval_of_one_to_five_matches_hand_computation():
    iv = mean_ci([1, 2, 3, 4, 5])
    # s^2 = 2.5, t(0.975, df=4) = 2.776445 (table value)
    assert iv.mean == 3.0
    assert iv.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert (iv.low, iv.high) == pytest.approx((3 - 1.963237, 3 + 1.963237), abs=1e-5)
    assert iv.n == 5


def test_two_values_use_t_with_one_degree_of_freedom():
    iv = mean_ci([0.5, 0.7])
    # s = 0.141421, t(0.975, 1) = 12.706205
    assert iv.half_width == pytest.approx(12.706205 * 0.1414214 / math.sqrt(2), rel=1e-5)


def test_constant_values_have_zero_width_and_one_value_has_none():
    assert mean_ci([0.8, 0.8, 0.8]).half_width == pytest.approx(0.0, abs=1e-12)
    single = mean_ci([0.8])
    assert single.mean == 0.8 and math.isnan(single.half_width)


def test_nan_or_empty_input_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.5, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_relative_change_in_percent():
    assert relative_change(0.6, 0.8) == pytest.approx(-25.0)
    assert relative_change(0.55, 0.5) == pytest.approx(10.0)
    assert math.isnan(relative_change(0.3, 0.0))
