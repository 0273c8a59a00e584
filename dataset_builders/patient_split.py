"""Train/test split by participant, never by window (paper §II-C: 80/20 by patient).

Default: within each study group, a seeded shuffle puts round(n * test_fraction) of its
participants in test, so every group is represented on both sides. Alternative: the
release's own `recommended_split` column (train/val/test; val joins train, since the
cohort contract has only train and test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sensecf.rundir import GROUP_COL, SPLIT_COL


class SplitError(ValueError):
    """A split that would leak participants or cannot be made; the message says which."""


def stratified_split(participants: pd.DataFrame, test_fraction: float, seed: int, by: str = "study_group") -> dict:
    """{"train", "test", "method", "seed", "test_fraction"} from one row per participant."""
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rows = participants[[GROUP_COL, by]].drop_duplicates()
    if rows[GROUP_COL].duplicated().any():
        twice = rows[GROUP_COL][rows[GROUP_COL].duplicated()].tolist()
        raise SplitError(f"participants with more than one '{by}': {twice[:10]}")
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for _, group in sorted(rows.groupby(by, sort=True), key=lambda kv: str(kv[0])):
        ids = np.array(sorted(group[GROUP_COL].astype(str)))
        n_test = int(np.floor(len(ids) * test_fraction + 0.5))
        test.extend(rng.permutation(ids)[:n_test].tolist())
    train = sorted(set(rows[GROUP_COL].astype(str)) - set(test))
    split = {"train": train, "test": sorted(test), "method": f"stratified_by_{by}", "seed": seed,
             "test_fraction": test_fraction}
    check_disjoint(split)
    return split


def recommended_split(participants: pd.DataFrame, column: str = "recommended_split") -> dict:
    """The release's recommended_split: train and val -> train, test -> test."""
    rows = participants[[GROUP_COL, column]].drop_duplicates()
    values = rows[column].astype(str).str.strip().str.lower()
    bad = rows[~values.isin(["train", "val", "test"])]
    if len(bad):
        examples = [f"{p}={v!r}" for p, v in zip(bad[GROUP_COL], bad[column], strict=True)][:10]
        raise SplitError(f"participants.tsv: column '{column}': values must be train/val/test; got {examples}")
    ids = rows[GROUP_COL].astype(str)
    split = {"train": sorted(ids[values != "test"]), "test": sorted(ids[values == "test"]),
             "method": column, "seed": None}
    check_disjoint(split)
    return split


def check_disjoint(split: dict) -> None:
    """Raise when a participant sits in both train and test."""
    both = sorted(set(split["train"]) & set(split["test"]))
    if both:
        raise SplitError(f"participants in both train and test: {both[:10]} ({len(both)} in all)")


def assign_split(frame: pd.DataFrame, split: dict) -> pd.Series:
    """The split of each window from its participant; every participant must be in the split."""
    check_disjoint(split)
    side = {**{p: "train" for p in split["train"]}, **{p: "test" for p in split["test"]}}
    out = frame[GROUP_COL].astype(str).map(side)
    if out.isna().any():
        missing = sorted(frame.loc[out.isna(), GROUP_COL].astype(str).unique())
        raise SplitError(f"participants without a split: {missing[:10]}")
    return out.rename(SPLIT_COL)
