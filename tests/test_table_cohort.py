import json

import pandas as pd
import pytest
import yaml
from conftest import GENERIC_SPEC

from dataset_builders.table import TableError, build_table_cohort
from sensecf.rundir import RunDir


def _table(n=40):
    return pd.DataFrame({
        "pid": [f"p{i // 2}" for i in range(n)],  # two rows per person
        "chol": [180.0 + i for i in range(n)],
        "bp": [120 + i % 5 for i in range(n)],
        "smoker": ["no", "yes"] * (n // 2),
        "age": [50] * n,
        "sex": ["f", "m"] * (n // 2),
        "disease": [int(i % 4 == 0) for i in range(n)],
    })


def _build(tmp_path, frame, **kw):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GENERIC_SPEC))
    frame.to_csv(tmp_path / "t.csv", index=False)
    args = dict(id_col=None, group_col="pid", test_fraction=0.25, seed=0, synthetic=False) | kw
    return build_table_cohort(tmp_path / "t.csv", tmp_path / "spec.yaml", tmp_path / "run" / "cohort", **args)


def test_table_becomes_a_cohort_split_by_group_with_learned_ranges(tmp_path):
    frame = _table()
    frame.loc[3, "chol"] = None  # one row dropped and counted
    cohort = _build(tmp_path, frame)
    run = RunDir(tmp_path / "run")
    df, spec = run.load_cohort()
    assert len(df) == 39 and len(cohort) == 39
    per_person = df.groupby("participant_id")["split"].nunique()
    assert (per_person == 1).all()
    assert set(df.split) == {"train", "test"}
    train = df[df.split == "train"]
    assert spec.feature("chol").min == train.chol.min() and spec.feature("chol").max == train.chol.max()
    quality = json.loads(run.quality.read_text())
    assert quality["rows_dropped_missing"] == 1 and quality["missing_by_column"] == {"chol": 1}
    assert df.disease.dtype.kind == "i" and not run.is_synthetic()


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("smoker", "sometimes", r"row 5, column 'smoker': value 'sometimes' is not in its categories"),
        ("bp", "high", r"row 5, column 'bp': value 'high' is not a number \(integer\)"),
        ("bp", 120.5, r"row 5, column 'bp': value 120.5 is not an integer"),
        ("disease", 2, r"row 5, column 'disease': label value 2 is not 0 or 1"),
    ],
)
def test_values_that_do_not_fit_the_spec_name_column_row_and_value(tmp_path, column, value, message):
    frame = _table()
    frame[column] = frame[column].astype(object)
    frame.loc[5, column] = value
    with pytest.raises(TableError, match=r"t\.csv: " + message):
        _build(tmp_path, frame)


def test_missing_spec_column_is_named(tmp_path):
    with pytest.raises(TableError, match=r"t\.csv: columns \['chol'\]: named by spec 'toy-heart' but missing"):
        _build(tmp_path, _table().drop(columns="chol"))
