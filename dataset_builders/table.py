"""Any tabular dataset + a DatasetSpec -> a cohort (the same contract the AI-READI builder writes).

    python -m dataset_builders table --table heart.csv --spec heart.yaml --out runs/heart/cohort \
        [--group-col patient] [--id-col row_id] [--test-fraction 0.2] [--seed 0] [--synthetic]

Rows with a missing value in a spec feature or the label are dropped and counted in
quality.json; a value that does not fit the spec (a non-number, an undeclared category, a
label other than 0/1) is an error naming the column, the row and the value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from dataset_builders.patient_split import assign_split, check_disjoint, stratified_split
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, write_provenance
from sensecf.spec import DatasetSpec


class TableError(ValueError):
    """A table that does not fit its spec; the message names file, column, row and value."""


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TableError(f"{path}: table not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    raise TableError(f"{path}: unsupported table type '{path.suffix}' (csv, tsv or parquet)")


def _first_bad(column: pd.Series, bad: pd.Series) -> str:
    row = bad.idxmax()
    value = column[row]
    return f"row {row} value {value.item() if hasattr(value, 'item') else value!r}"


def conform(frame: pd.DataFrame, spec: DatasetSpec, path: Path) -> tuple[pd.DataFrame, dict]:
    """Spec columns with their declared types; rows with missing values dropped and counted."""
    needed = [*spec.names, spec.label.name]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise TableError(f"{path}: columns {absent} named by spec '{spec.name}' are missing")
    missing = frame[needed].isna()
    dropped = {c: int(n) for c, n in missing.sum().items() if n}
    frame = frame[~missing.any(axis=1)].copy()
    for f in spec.numeric:
        values = pd.to_numeric(frame[f.name], errors="coerce")
        where = f"{path}: column '{f.name}' is {f.kind} but has"
        if values.isna().any():
            raise TableError(f"{where} {_first_bad(frame[f.name], values.isna())}")
        if f.kind == "integer" and (values % 1 != 0).any():
            raise TableError(f"{where} {_first_bad(frame[f.name], values % 1 != 0)}")
        frame[f.name] = values.astype(int) if f.kind == "integer" else values.astype(float)
    for f in spec.categorical:
        values = frame[f.name].astype(str)
        unknown = ~values.isin(f.categories)
        if unknown.any():
            raise TableError(
                f"{path}: column '{f.name}' has {_first_bad(values, unknown)} not in its categories {f.categories}"
            )
        frame[f.name] = values
    label = pd.to_numeric(frame[spec.label.name], errors="coerce")
    if not label.isin([0, 1]).all():
        bad = _first_bad(frame[spec.label.name], ~label.isin([0, 1]))
        raise TableError(f"{path}: label '{spec.label.name}' has {bad} (expected 0 or 1)")
    frame[spec.label.name] = label.astype(int)
    return frame, {"rows_dropped_missing": int(missing.any(axis=1).sum()), "missing_by_column": dropped}


def build_table_cohort(
    table: Path, spec_path: Path, out: Path, *, id_col: str | None, group_col: str | None,
    test_fraction: float, seed: int, synthetic: bool,
) -> pd.DataFrame:
    spec = DatasetSpec.from_yaml(spec_path)
    raw = read_table(table)
    for col in (id_col, group_col):
        if col is not None and col not in raw.columns:
            raise TableError(f"{table}: column '{col}' not found")
    frame, quality = conform(raw, spec, table)
    frame[ID_COL] = frame[id_col].astype(str) if id_col else [f"row{i}" for i in frame.index]
    twice = frame[ID_COL][frame[ID_COL].duplicated()]
    if len(twice):
        raise TableError(f"{table}: id column '{id_col}' has duplicates, e.g. {twice.iloc[0]!r}")
    frame[GROUP_COL] = frame[group_col].astype(str) if group_col else frame[ID_COL]
    # Stratify participants by their majority label so both classes reach train and test.
    majority = frame.groupby(GROUP_COL)[spec.label.name].mean().round().astype(int).rename("stratum").reset_index()
    split = stratified_split(majority, test_fraction, seed, by="stratum")
    check_disjoint(split)
    frame[SPLIT_COL] = assign_split(frame, split)
    cohort = frame[[ID_COL, GROUP_COL, SPLIT_COL, *spec.names, spec.label.name]].reset_index(drop=True)

    out.mkdir(parents=True, exist_ok=True)
    cohort.to_parquet(out / "features.parquet", index=False)
    (out / "split.json").write_text(json.dumps(split, indent=2))
    spec.with_ranges(cohort[cohort[SPLIT_COL] == "train"]).to_yaml(out / "spec.yaml")
    quality.update(rows_read=len(raw), rows_kept=len(cohort),
                   windows_by_split=cohort[SPLIT_COL].value_counts().to_dict(),
                   label_balance=cohort[spec.label.name].value_counts().sort_index().to_dict())
    (out / "quality.json").write_text(json.dumps(quality, indent=2, default=int))
    write_provenance(out, config={"id_col": id_col, "group_col": group_col, "test_fraction": test_fraction},
                     inputs=[table, spec_path], seed=seed, source={"synthetic": synthetic, "table": str(table)})
    return cohort


def main(
    table: Path = typer.Option(..., help="CSV, TSV or parquet file, one row per sample"),
    spec: Path = typer.Option(..., help="DatasetSpec YAML naming the features and the label"),
    out: Path = typer.Option(..., help="cohort folder to write, e.g. runs/NAME/cohort"),
    id_col: str | None = typer.Option(None, help="column with unique row ids (default: row number)"),
    group_col: str | None = typer.Option(None, help="column grouping rows by person; split never divides a group"),
    test_fraction: float = typer.Option(0.2, help="share of groups in the test split"),
    seed: int = typer.Option(0, help="split seed"),
    synthetic: bool = typer.Option(False, help="mark the cohort as synthetic (allows external APIs)"),
) -> None:
    """Build a cohort from any table + spec."""
    try:
        cohort = build_table_cohort(table, spec, out, id_col=id_col, group_col=group_col,
                                    test_fraction=test_fraction, seed=seed, synthetic=synthetic)
    except (TableError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"cohort: {len(cohort)} rows -> {out}")


if __name__ == "__main__":
    typer.run(main)
