"""benchmarks/bench_train_precision.py: the comparison of two loss curves and throughputs."""

from __future__ import annotations

import pytest

from benchmarks.bench_train_precision import compare


def test_compare_takes_the_worst_step_and_the_speedup():
    fp32 = {"losses": [[1, 0.50], [2, 0.40], [3, 0.20]], "tokens_per_second": 100.0}
    bf16 = {"losses": [[1, 0.51], [2, 0.36], [3, 0.21], [4, 0.1]], "tokens_per_second": 137.0}
    got = compare(fp32, bf16)
    assert got["steps_compared"] == 3  # step 4 has no fp32 loss
    assert got["worst_step"] == 2 and got["max_abs_loss_diff"] == pytest.approx(0.04)
    assert got["mean_abs_loss_diff"] == pytest.approx(0.02)  # (0.01 + 0.04 + 0.01) / 3
    assert got["max_rel_loss_diff"] == pytest.approx(0.10)  # step 2: 0.04 / 0.40 (step 3: 0.01 / 0.20)
    assert got["final_loss"] == {"fp32": 0.20, "bf16": 0.21}
    assert got["speedup_all_tokens"] == pytest.approx(1.37)


def test_compare_without_common_steps_or_rates():
    got = compare({"losses": [[1, 0.5]]}, {"losses": [[2, 0.4]]})
    assert got["steps_compared"] == 0 and got["max_abs_loss_diff"] is None and got["speedup_all_tokens"] is None
