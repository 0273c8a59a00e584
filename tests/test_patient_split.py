"""Participant-level split: no leakage, stratified by study group, deterministic."""

import pandas as pd
import pytest

from dataset_builders.patient_split import (
    SplitError,
    assign_split,
    check_disjoint,
    recommended_split,
    stratified_split,
)

GROUPS = {"healthy": 40, "pre_diabetes_lifestyle_controlled": 30,
          "oral_medication_and_or_non_insulin_injectable_medication_controlled": 20, "insulin_dependent": 10}


def participants() -> pd.DataFrame:
    rows, n = [], 0
    for group, count in GROUPS.items():
        for _ in range(count):
            rows.append({"participant_id": str(1000 + n), "study_group": group})
            n += 1
    return pd.DataFrame(rows)


def windows(people: pd.DataFrame, per: int = 5) -> pd.DataFrame:
    return people.loc[people.index.repeat(per)].reset_index(drop=True)


def test_stratified_split_takes_a_fifth_of_every_group():
    people = participants()
    split = stratified_split(people, 0.2, seed=0)
    group_of = people.set_index("participant_id")["study_group"]
    test_counts = group_of[split["test"]].value_counts().to_dict()
    assert test_counts == {g: n // 5 for g, n in GROUPS.items()}  # 8, 6, 4, 2
    assert len(split["train"]) == 80 and len(split["test"]) == 20
    assert split["method"] == "stratified_by_study_group" and split["seed"] == 0


def test_no_participant_on_both_sides_and_windows_follow_their_participant():
    people = participants()
    split = stratified_split(people, 0.2, seed=1)
    assert not set(split["train"]) & set(split["test"])
    assert set(split["train"]) | set(split["test"]) == set(people["participant_id"])
    frame = windows(people)
    side = assign_split(frame, split)
    assert (pd.DataFrame({"p": frame["participant_id"], "s": side}).groupby("p")["s"].nunique() == 1).all()
    assert (side == "test").sum() == 20 * 5


def test_same_seed_same_split_other_seed_other_split():
    people = participants()
    a, b = stratified_split(people, 0.2, seed=5), stratified_split(people.sample(frac=1, random_state=9), 0.2, seed=5)
    assert a == b  # row order of the input does not matter
    assert stratified_split(people, 0.2, seed=6)["test"] != a["test"]


def test_rounding_per_group_half_up():
    people = pd.DataFrame({"participant_id": ["1", "2", "3", "4", "5"], "study_group": ["a", "a", "a", "b", "b"]})
    split = stratified_split(people, 0.5, seed=0)
    # a: 3 * 0.5 = 1.5 -> 2; b: 2 * 0.5 = 1
    assert len(split["test"]) == 3


def test_leakage_and_bad_inputs_raise():
    with pytest.raises(SplitError, match=r"participants in both train and test: \['7'\]"):
        check_disjoint({"train": ["1", "7"], "test": ["7"]})
    with pytest.raises(SplitError, match="participants in both"):
        assign_split(pd.DataFrame({"participant_id": ["1"]}), {"train": ["1"], "test": ["1"]})
    with pytest.raises(SplitError, match=r"participants without a split: \['9'\]"):
        assign_split(pd.DataFrame({"participant_id": ["1", "9"]}), {"train": ["1"], "test": []})
    with pytest.raises(SplitError, match="test_fraction"):
        stratified_split(participants(), 1.0, seed=0)
    two_groups = pd.DataFrame({"participant_id": ["1", "1"], "study_group": ["a", "b"]})
    with pytest.raises(SplitError, match=r"more than one 'study_group': \['1'\]"):
        stratified_split(two_groups, 0.2, seed=0)


def test_recommended_split_val_joins_train():
    people = pd.DataFrame({"participant_id": ["1", "2", "3", "4"],
                           "recommended_split": ["train", "val", "test", "Test"]})
    split = recommended_split(people)
    assert split == {"train": ["1", "2"], "test": ["3", "4"], "method": "recommended_split", "seed": None}
    people.loc[0, "recommended_split"] = ""
    with pytest.raises(SplitError, match=r"participants.tsv: column 'recommended_split': values must be "
                                         r"train/val/test; got \[\"1=''\"\]"):
        recommended_split(people)
