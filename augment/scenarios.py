"""Label-scarcity scenarios (paper §III-B, Table IV): remove training windows of one or both classes.

Scenario A removes 50% of the class-1 training windows, B 50% of class 0, C 50% of each.
Removal is of windows, never of participants: the cohort's participant split is kept, the test
split is never touched, and no training participant loses all of its windows while another
window of the same class could be removed instead.

Counts are exact and documented:
- windows removed from class c = floor(fraction x n_c), n_c = training windows labelled c;
- CFs added for class c at augmentation ratio r = round-half-up(r x removed_c), capped by the
  CFs available (then flagged insufficient, never padded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL

# Guards floor/round against binary fractions like 0.6 * 5 = 3.0000000000000004 or 2.9999999999999996.
_EPS = 1e-9


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    reduced_classes: tuple[int, ...]
    fraction: float = 0.5


SCENARIOS: dict[str, Scenario] = {
    "A": Scenario("A", "Positive-class scarcity (class 1 reduced by 50%)", (1,)),
    "B": Scenario("B", "Negative-class scarcity (class 0 reduced by 50%)", (0,)),
    "C": Scenario("C", "Dual-class scarcity (both classes reduced by 50%)", (0, 1)),
}


@dataclass(frozen=True)
class ReducedTraining:
    """The kept training windows of one (scenario, seed) and what was removed."""

    train: pd.DataFrame
    removed_ids: frozenset[str]
    removed_per_class: dict[int, int]
    # Training participants left with no window; 0 unless the fraction made it unavoidable.
    participants_lost: int

    @property
    def n_removed(self) -> int:
        return sum(self.removed_per_class.values())


def removal_count(n_windows: int, fraction: float) -> int:
    """Windows removed from a class of n_windows: floor(fraction x n_windows)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return math.floor(fraction * n_windows + _EPS)


def reduce_training(
    cohort: pd.DataFrame, label: str, classes: tuple[int, ...], fraction: float, seed: int
) -> ReducedTraining:
    """Remove floor(fraction x n_c) training windows of each class c in `classes`, chosen at random.

    Windows are drawn in a seeded random order (over window ids sorted first, so the row order of
    the table does not matter); a window whose removal would leave its participant with no
    training window is skipped while other candidates remain.
    """
    for col in (ID_COL, GROUP_COL, SPLIT_COL, label):
        if col not in cohort.columns:
            raise ValueError(f"cohort table has no '{col}' column")
    train = cohort[cohort[SPLIT_COL] == "train"]
    if train[ID_COL].duplicated().any():
        raise ValueError(f"cohort table: duplicate {ID_COL} values in the training split")
    rng = np.random.default_rng(seed)
    left_per_participant = train[GROUP_COL].value_counts().to_dict()
    removed: list[str] = []
    removed_per_class: dict[int, int] = {}
    for c in sorted(classes):
        members = train[train[label] == c].sort_values(ID_COL)
        n_remove = removal_count(len(members), fraction)
        order = rng.permutation(len(members))
        ids = members[ID_COL].to_numpy()[order]
        pids = members[GROUP_COL].to_numpy()[order]
        chosen, skipped = [], []
        for wid, pid in zip(ids, pids, strict=True):
            if len(chosen) == n_remove:
                break
            if left_per_participant[pid] > 1:
                chosen.append(wid)
                left_per_participant[pid] -= 1
            else:
                skipped.append((wid, pid))
        # Only when every other window was taken: remove a participant's last window after all.
        for wid, pid in skipped[: n_remove - len(chosen)]:
            chosen.append(wid)
            left_per_participant[pid] -= 1
        removed.extend(chosen)
        removed_per_class[c] = len(chosen)
    removed_set = frozenset(removed)
    kept = train[~train[ID_COL].isin(removed_set)].reset_index(drop=True)
    lost = sum(1 for n in left_per_participant.values() if n == 0)
    return ReducedTraining(kept, removed_set, removed_per_class, lost)


def reduce_for_scenario(cohort: pd.DataFrame, label: str, scenario: Scenario, seed: int) -> ReducedTraining:
    return reduce_training(cohort, label, scenario.reduced_classes, scenario.fraction, seed)


@dataclass(frozen=True)
class AugmentationCount:
    wanted: int  # round-half-up(ratio x removed)
    added: int  # min(wanted, available)
    available: int

    @property
    def sufficient(self) -> bool:
        return self.available >= self.wanted


def augmentation_count(ratio: float, removed: int, available: int) -> AugmentationCount:
    """CFs to add at an augmentation ratio of the windows removed, capped by those available."""
    if ratio < 0:
        raise ValueError(f"augmentation ratio must be >= 0, got {ratio}")
    wanted = math.floor(ratio * removed + 0.5 + _EPS)
    return AugmentationCount(wanted=wanted, added=min(wanted, available), available=available)
