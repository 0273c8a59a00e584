"""Any tabular dataset + a DatasetSpec -> a cohort (the same contract the AI-READI builder writes).

    python -m dataset_builders table --table heart.csv --spec heart.yaml --out runs/heart/cohort \
        [--group-col patient] [--id-col row_id] [--test-fraction 0.2] [--seed 0] [--synthetic]

Rows with a missing value in a spec feature or the label are dropped and counted in
quality.json; a value that does not fit the spec (a non-number, inf, an undeclared category, a
label other than 0/1) is an error naming the row, the column and the value, and so is a table
that cannot make a cohort (no rows, one label class, one group). Errors read
`error: <file>: <row/column>: <reason>` (exit code 2). The cohort's files are written atomically
under the run directory's lock, provenance.json last so it records their sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from dataset_builders.patient_split import assign_split, check_disjoint, stratified_split
from sensecf.atomic import atomic_path, run_lock, write_json
from sensecf.cli import InputError, run_cli
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import stage_run


class TableError(InputError):
    """A table that does not fit its spec: `TableError(file, where, reason)` reads
    `file: where: reason`, where names the row and column."""


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TableError(path, None, "table not found")
    if path.suffix not in (".parquet", ".csv", ".tsv", ".txt"):
        raise TableError(path, None, f"unsupported table type '{path.suffix}' (csv, tsv or parquet)")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except pd.errors.EmptyDataError:
        raise TableError(path, None, "the file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, OSError, ValueError) as e:
        raise TableError(path, None, f"cannot read it as a table: {' '.join(str(e).split())}") from None


def _first_bad(column: pd.Series, bad: pd.Series) -> tuple[str, str]:
    """(`row R, column 'C'`, `value V`) of the first flagged row."""
    row = bad.idxmax()
    value = column[row]
    return f"row {row}, column '{column.name}'", f"value {value.item() if hasattr(value, 'item') else value!r}"


def conform(frame: pd.DataFrame, spec: DatasetSpec, path: Path) -> tuple[pd.DataFrame, dict]:
    """Spec columns with their declared types; rows with missing values dropped and counted."""
    needed = [*spec.names, spec.label.name]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise TableError(path, f"columns {absent}", f"named by spec '{spec.name}' but missing")
    if frame.empty:
        raise TableError(path, "rows", "the table has a header but no rows")
    missing = frame[needed].isna()
    dropped = {c: int(n) for c, n in missing.sum().items() if n}
    frame = frame[~missing.any(axis=1)].copy()
    if frame.empty:
        raise TableError(path, "rows", f"all {len(missing)} rows miss a value in a spec column {sorted(dropped)}")
    for f in spec.numeric:
        values = pd.to_numeric(frame[f.name], errors="coerce")
        checks = [(values.isna(), f"is not a number ({f.kind})"), (np.isinf(values), "is not finite")]
        if f.kind == "integer":
            checks.append((values % 1 != 0, "is not an integer"))
        for bad, why in checks:
            if bad.any():
                where, value = _first_bad(frame[f.name], bad)
                raise TableError(path, where, f"{value} {why}")
        frame[f.name] = values.astype(int) if f.kind == "integer" else values.astype(float)
    for f in spec.categorical:
        values = frame[f.name].astype(str)
        unknown = ~values.isin(f.categories)
        if unknown.any():
            where, value = _first_bad(values.rename(f.name), unknown)
            raise TableError(path, where, f"{value} is not in its categories {f.categories}")
        frame[f.name] = values
    label = pd.to_numeric(frame[spec.label.name], errors="coerce")
    if not label.isin([0, 1]).all():
        where, value = _first_bad(frame[spec.label.name], ~label.isin([0, 1]))
        raise TableError(path, where, f"label {value} is not 0 or 1")
    frame[spec.label.name] = label.astype(int)
    if label.nunique() < 2:
        raise TableError(path, f"column '{spec.label.name}'",
                         f"the label has a single class {int(label.iloc[0])} in all {len(label)} rows; "
                         "a classifier needs both 0 and 1")
    return frame, {"rows_dropped_missing": int(missing.any(axis=1).sum()), "missing_by_column": dropped}


def build_table_cohort(
    table: Path, spec_path: Path, out: Path, *, id_col: str | None, group_col: str | None,
    test_fraction: float, seed: int, synthetic: bool,
) -> pd.DataFrame:
    spec = DatasetSpec.from_yaml(spec_path)
    raw = read_table(table)
    for col in (id_col, group_col):
        if col is not None and col not in raw.columns:
            raise TableError(table, f"column '{col}'", "not found")
    frame, quality = conform(raw, spec, table)
    frame[ID_COL] = frame[id_col].astype(str) if id_col else [f"row{i}" for i in frame.index]
    twice = frame[ID_COL][frame[ID_COL].duplicated()]
    if len(twice):
        raise TableError(table, f"row {twice.index[0]}, column '{id_col}'", f"duplicate id {twice.iloc[0]!r}")
    frame[GROUP_COL] = frame[group_col].astype(str) if group_col else frame[ID_COL]
    groups = frame[GROUP_COL].unique()
    if len(groups) < 2:
        raise TableError(table, f"column '{group_col or id_col or 'row number'}'",
                         f"a single group {groups[0]!r}: no test split possible without sharing it with train")
    # Stratify participants by their majority label so both classes reach train and test.
    majority = frame.groupby(GROUP_COL)[spec.label.name].mean().round().astype(int).rename("stratum").reset_index()
    split = stratified_split(majority, test_fraction, seed, by="stratum")
    check_disjoint(split)
    if not split["train"] or not split["test"]:
        raise TableError(table, f"column '{group_col or id_col or 'row number'}'",
                         f"{len(groups)} groups with --test-fraction {test_fraction} leave "
                         f"{len(split['train'])} in train and {len(split['test'])} in test; both need one")
    frame[SPLIT_COL] = assign_split(frame, split)
    cohort = frame[[ID_COL, GROUP_COL, SPLIT_COL, *spec.names, spec.label.name]].reset_index(drop=True)
    ranged = spec.with_ranges(cohort[cohort[SPLIT_COL] == "train"])
    quality.update(rows_read=len(raw), rows_kept=len(cohort),
                   windows_by_split=cohort[SPLIT_COL].value_counts().to_dict(),
                   label_balance=cohort[spec.label.name].value_counts().sort_index().to_dict())

    with run_lock(out.parent):
        with atomic_path(out / "features.parquet") as tmp:
            cohort.to_parquet(tmp, index=False)
        write_json(out / "split.json", split)
        ranged.to_yaml(out / "spec.yaml")
        write_json(out / "quality.json", quality, default=int)
        # Last: it records the sha256 of the files above (is_synthetic checks features.parquet's).
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
    with stage_run(RunDir(out.resolve().parent), "cohort", outputs=[out / "features.parquet"], creates_run=True):
        cohort = build_table_cohort(table, spec, out, id_col=id_col, group_col=group_col,
                                    test_fraction=test_fraction, seed=seed, synthetic=synthetic)
    typer.echo(f"cohort: {len(cohort)} rows -> {out}")


if __name__ == "__main__":
    run_cli(main)
