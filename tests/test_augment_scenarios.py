import pandas as pd
import pytest

from augment.scenarios import SCENARIOS, augmentation_count, reduce_for_scenario, reduce_training, removal_count
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL


def _frame(rows):
    """rows: (participant, split, label, how many windows)."""
    out = []
    for pid, split, label, n in rows:
        for _ in range(n):
            out.append({ID_COL: f"{pid}_{len(out):03d}", GROUP_COL: pid, SPLIT_COL: split, "y": label})
    return pd.DataFrame(out)


def test_removal_count_is_floor_of_fraction():
    assert removal_count(7, 0.5) == 3
    assert removal_count(8, 0.5) == 4
    assert removal_count(5, 0.6) == 3  # 0.6 * 5 = 3.0000000000000004 in binary
    assert removal_count(10, 0.9) == 9
    assert removal_count(0, 0.5) == 0
    with pytest.raises(ValueError, match="fraction"):
        removal_count(10, 1.5)


def test_exact_counts_removed_per_scenario(tiny_run):
    df, spec = tiny_run.load_cohort()
    train = df[df[SPLIT_COL] == "train"]
    n1 = int((train.high_stress == 1).sum())
    n0 = int((train.high_stress == 0).sum())
    a = reduce_for_scenario(df, "high_stress", SCENARIOS["A"], seed=0)
    b = reduce_for_scenario(df, "high_stress", SCENARIOS["B"], seed=0)
    c = reduce_for_scenario(df, "high_stress", SCENARIOS["C"], seed=0)
    assert a.removed_per_class == {1: n1 // 2}
    assert b.removed_per_class == {0: n0 // 2}
    assert c.removed_per_class == {0: n0 // 2, 1: n1 // 2}
    assert (a.train.high_stress == 1).sum() == n1 - n1 // 2 and (a.train.high_stress == 0).sum() == n0
    assert (b.train.high_stress == 0).sum() == n0 - n0 // 2 and (b.train.high_stress == 1).sum() == n1
    assert len(c.train) == len(train) - n0 // 2 - n1 // 2
    assert c.n_removed == len(c.removed_ids)


def test_same_seed_same_windows_other_seed_other_windows(tiny_run):
    df, _ = tiny_run.load_cohort()
    first = reduce_training(df, "high_stress", (1,), 0.5, seed=3)
    again = reduce_training(df.sample(frac=1.0, random_state=1), "high_stress", (1,), 0.5, seed=3)  # row order
    other = reduce_training(df, "high_stress", (1,), 0.5, seed=4)
    assert first.removed_ids == again.removed_ids
    assert first.removed_ids != other.removed_ids


def test_no_test_window_touched_and_train_is_partitioned(tiny_run):
    df, _ = tiny_run.load_cohort()
    before = df.copy()
    red = reduce_training(df, "high_stress", (0, 1), 0.5, seed=0)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    train_ids = set(df.loc[df[SPLIT_COL] == "train", ID_COL])
    test_ids = set(df.loc[df[SPLIT_COL] == "test", ID_COL])
    assert red.removed_ids <= train_ids
    assert set(red.train[ID_COL]).isdisjoint(test_ids)
    assert set(red.train[ID_COL]) | red.removed_ids == train_ids
    assert set(red.train[ID_COL]).isdisjoint(red.removed_ids)


def test_participants_remain_in_training(tiny_run):
    df, _ = tiny_run.load_cohort()
    train_pids = set(df.loc[df[SPLIT_COL] == "train", GROUP_COL])
    for seed in range(5):
        red = reduce_training(df, "high_stress", (0, 1), 0.9, seed=seed)
        assert set(red.train[GROUP_COL]) == train_pids
        assert red.participants_lost == 0


def test_a_participants_last_window_is_kept_while_others_can_go():
    # class 1: p1 has one window, p2 has five (and one class-0 window); floor(0.5 * 6) = 3 removed
    df = _frame([("p1", "train", 1, 1), ("p2", "train", 1, 5), ("p2", "train", 0, 1), ("p3", "test", 1, 4)])
    p1_window = df.loc[df[GROUP_COL] == "p1", ID_COL].item()
    for seed in range(20):
        red = reduce_training(df, "y", (1,), 0.5, seed)
        assert red.removed_per_class == {1: 3}
        assert p1_window not in red.removed_ids
        assert red.participants_lost == 0


def test_last_windows_go_only_when_the_fraction_demands_it_and_are_counted():
    df = _frame([("p1", "train", 1, 1), ("p2", "train", 1, 2), ("p2", "train", 0, 2), ("p3", "test", 1, 1)])
    red = reduce_training(df, "y", (1,), 1.0, seed=0)
    assert red.removed_per_class == {1: 3}
    assert red.participants_lost == 1  # p1 had only its class-1 window
    assert set(red.train[GROUP_COL]) == {"p2"}


def test_missing_column_is_a_clear_error(tiny_run):
    df, _ = tiny_run.load_cohort()
    with pytest.raises(ValueError, match="'split'"):
        reduce_training(df.drop(columns=[SPLIT_COL]), "high_stress", (1,), 0.5, 0)


@pytest.mark.parametrize(
    "ratio, removed, available, wanted, added, sufficient",
    [
        (0.2, 123, 1000, 25, 25, True),  # 24.6 -> 25
        (0.4, 123, 1000, 49, 49, True),  # 49.2 -> 49
        (0.5, 5, 10, 3, 3, True),  # 2.5 rounds half up
        (0.6, 5, 3, 3, 3, True),  # exactly enough
        (1.0, 50, 37, 50, 37, False),  # capped by availability, flagged
        (0.8, 10, 0, 8, 0, False),
        (1.0, 0, 0, 0, 0, True),
    ],
)
def test_augmentation_count(ratio, removed, available, wanted, added, sufficient):
    n = augmentation_count(ratio, removed, available)
    assert (n.wanted, n.added, n.sufficient) == (wanted, added, sufficient)
