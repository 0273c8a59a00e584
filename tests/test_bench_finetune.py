"""benchmarks/bench_finetune.py: points become checkpoint steps of one run; the figure is drawn."""

from __future__ import annotations

import pytest
import typer

from benchmarks.bench_finetune import examples_per_step, plot, save_every, steps_for


def test_points_are_checkpoint_steps_of_one_run():
    per_step = examples_per_step({"micro_batch_size": 1, "gradient_accumulation_steps": 2})  # the CPU recipe's
    assert per_step == 2
    steps = steps_for([0, 40, 100, 200, 400, 800], per_step)
    assert steps == [0, 20, 50, 100, 200, 400]
    assert save_every([s for s in steps if s]) == 10  # gcd(20, 50, 100, 200, 400): a checkpoint on each point
    assert save_every([20, 30]) == 10
    with pytest.raises(typer.BadParameter, match=r"\[41\]: not a multiple of 2"):
        steps_for([40, 41], per_step)


def _row(validity, low, high):
    return {"validity": validity, "validity_ci_low": low, "validity_ci_high": high}


def test_plot_writes_the_curve(tmp_path):
    result = {"n": 40, "points": [
        {"examples": 40, "scores": {"sensecf": {"by_class": {"0": _row(0.3, 0.1, 0.5), "1": _row(0.1, 0.0, 0.3)}}}},
        {"examples": 100, "scores": {"sensecf": {"by_class": {"0": _row(0.6, 0.4, 0.8)}},
                                     "paper": {"by_class": {"0": _row(None, None, None)}}}},
    ]}  # fmt: skip
    path = tmp_path / "finetune.png"
    plot(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
