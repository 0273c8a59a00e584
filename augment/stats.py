"""Mean and 95% confidence interval over seeds (Student t), and the relative changes of Table IV."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # NaN when fewer than two values
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and half-width t_{(1+c)/2, n-1} x s / sqrt(n), s the sample standard deviation (ddof=1).

    NaN values are an error: a metric that could not be computed must be reported, not averaged away.
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    if np.isnan(x).any():
        raise ValueError(f"mean_ci: NaN among values {x.tolist()}")
    if x.size == 1:
        return Interval(float(x[0]), math.nan, 1)
    t = stats.t.ppf((1 + confidence) / 2, df=x.size - 1)
    return Interval(float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(x.size)), int(x.size))


def relative_change(new: float, reference: float) -> float:
    """(new - reference) / reference, in percent; NaN when the reference is 0."""
    if reference == 0:
        return math.nan
    return (new - reference) / reference * 100.0
