import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import _aireadi_frame
from typer.testing import CliRunner

from augment.scarcity import (
    EXCLUSION_REASONS,
    app,
    augmented_training,
    build_pool,
    fit_and_score,
    run_scarcity,
    table4,
)
from augment.scenarios import reduce_training
from sensecf.records import CFRecord, RecordWriter, read_records
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL


def _plain(row, spec):
    return {n: (v.item() if hasattr(v, "item") else v) for n, v in row[spec.names].items()}


def _record(row, spec, *, method="src", desired=1, cf=None, cf_pred=1, status="ok", candidate=0, window_id=None):
    factual = _plain(row, spec)
    return CFRecord(
        window_id=window_id or str(row[ID_COL]), participant_id=str(row[GROUP_COL]), method=method,
        candidate=candidate, factual=factual, factual_pred=1 - desired, desired_class=desired,
        cf=cf if cf is not None or status != "ok" else dict(factual, steps_mean=factual["steps_mean"] + 1.0),
        parse_status=status, cf_pred=cf_pred,
    )


def _write(path, records):
    with RecordWriter(path) as w:
        w.write_all(records)
    return read_records(path)


def test_cf_filter_excludes_and_counts_each_reason(tiny_run, tmp_path):
    df, spec = tiny_run.load_cohort()
    red = reduce_training(df, "high_stress", (1,), 0.5, seed=0)
    kept = red.train.set_index(ID_COL, drop=False)
    kept0 = kept[kept.high_stress == 0]
    removed_row = df[df[ID_COL].isin(red.removed_ids)].iloc[0]
    test_row = df[df[SPLIT_COL] == "test"].iloc[0]
    k = iter(range(len(kept0)))
    row = lambda: kept0.iloc[next(k)]  # noqa: E731 - a fresh kept factual per record
    shared = row()
    dup_cf = dict(_plain(shared, spec), glucose_mean=150.0)
    incomplete = _plain(row(), spec)
    del incomplete["age"]
    records = [
        _record(row(), spec, status="parse_error", cf_pred=None),
        _record(row(), spec, status="incoherent", cf_pred=None),
        _record(row(), spec, desired=0, cf_pred=0),  # class 0 is not reduced in scenario A
        _record(row(), spec, cf_pred=0),  # not predicted as the desired class
        _record(row(), spec, cf_pred=None),
        _record(row(), spec, window_id="no_such_window"),
        _record(test_row, spec),
        _record(removed_row, spec),
        _record(row(), spec, cf=incomplete),
        _record(shared, spec, cf=dup_cf),
        _record(shared, spec, cf=dup_cf, candidate=1),  # same values again
        _record(row(), spec),
        _record(row(), spec, candidate=0, method="src"),
    ]
    pool = build_pool(_write(tmp_path / "src.jsonl", records), df, spec, red, (1,), order_seed=(0,))
    assert dict(pool.excluded) == {
        "status_not_ok": 2, "other_class": 1, "not_valid": 2, "unknown_factual": 1, "test_factual": 1,
        "removed_factual": 1, "incomplete_cf": 1, "duplicate_cf": 1,
    }
    assert set(pool.excluded) <= set(EXCLUSION_REASONS)
    assert pool.available(1) == 3
    assert pool.total == len(records) == sum(pool.excluded.values()) + 3
    cfs = pool.rows[1]
    assert (cfs.high_stress == 1).all()  # label = f(x') = cf_pred
    assert set(cfs[SPLIT_COL]) == {"train"}
    assert not set(cfs[ID_COL]) & set(df[ID_COL])  # CF rows never reuse a cohort window id


def test_ratio_adds_round_of_removed_and_larger_ratios_add_supersets(tiny_run, tmp_path):
    df, spec = tiny_run.load_cohort()
    red = reduce_training(df, "high_stress", (1,), 0.5, seed=1)
    removed = red.removed_per_class[1]
    kept0 = red.train[red.train.high_stress == 0]
    records = _write(tmp_path / "s.jsonl", [_record(r, spec) for _, r in kept0.iterrows()])
    pool = build_pool(records, df, spec, red, (1,), order_seed=(1,))
    assert pool.available(1) == len(kept0) > removed
    small, counts = augmented_training(red, pool, 0.2)
    large, _ = augmented_training(red, pool, 1.0)
    assert counts[1] == {"removed": removed, "wanted": math.floor(0.2 * removed + 0.5), "added": counts[1]["wanted"],
                         "available": len(kept0)}
    assert len(small) == len(red.train) + counts[1]["wanted"]
    assert len(large) == len(red.train) + removed
    cf_ids = lambda frame: set(frame[ID_COL][frame[ID_COL].str.startswith("cf:")])  # noqa: E731
    assert cf_ids(small) < cf_ids(large)


def test_insufficient_source_is_not_padded(tiny_run, tmp_path):
    df, spec = tiny_run.load_cohort()
    red = reduce_training(df, "high_stress", (1,), 0.5, seed=0)
    kept0 = red.train[red.train.high_stress == 0].iloc[:10]
    pool = build_pool(_write(tmp_path / "s.jsonl", [_record(r, spec) for _, r in kept0.iterrows()]),
                      df, spec, red, (1,), order_seed=(0,))
    rows, counts = augmented_training(red, pool, 1.0)
    assert rows is None
    assert counts[1]["available"] == 10 and counts[1]["wanted"] == red.removed_per_class[1] > 10


def _augmentation_f1(tiny_run, tmp_path, make_cf, seeds=(0, 1, 2)):
    """Mean test F1 over seeds: reduced (class 1 cut by 90%) and reduced + CFs at ratio 1."""
    df, spec = tiny_run.load_cohort()
    test = df[df[SPLIT_COL] == "test"]
    reduced_f1, augmented_f1 = [], []
    for seed in seeds:
        red = reduce_training(df, "high_stress", (1,), 0.9, seed)
        factuals = red.train[red.train.high_stress == 0].reset_index(drop=True)
        cfs = make_cf(red, factuals)
        records = [_record(factuals.iloc[i], spec, cf=cf, method="m") for i, cf in enumerate(cfs)]
        pool = build_pool(_write(tmp_path / f"m{seed}.jsonl", records), df, spec, red, (1,), order_seed=(seed,))
        train, counts = augmented_training(red, pool, 1.0)
        assert train is not None and counts[1]["added"] == red.removed_per_class[1]
        reduced_f1.append(fit_and_score(red.train, test, spec, seed)["F1"])
        augmented_f1.append(fit_and_score(train, test, spec, seed)["F1"])
    return float(np.mean(reduced_f1)), float(np.mean(augmented_f1))


def test_genuine_minority_samples_restore_f1(tiny_run, tmp_path):
    # CFs that are genuine class-1 windows from the same generator (another draw, not the cohort)
    _, spec = tiny_run.load_cohort()
    extra = _aireadi_frame(np.random.default_rng(99), 30, 20)
    positives = [_plain(r, spec) for _, r in extra[extra.high_stress == 1].iterrows()]
    reduced, augmented = _augmentation_f1(tiny_run, tmp_path, lambda red, factuals: positives[: len(factuals)])
    assert reduced < 0.2  # 90% of class 1 gone: the NN hardly ever predicts it
    assert augmented > reduced + 0.4


def test_label_noise_cfs_do_not_restore_f1(tiny_run, tmp_path):
    # "CFs" that are the unchanged class-0 factuals, yet claimed to be class 1 (pure label noise)
    _, spec = tiny_run.load_cohort()
    reduced, augmented = _augmentation_f1(
        tiny_run, tmp_path, lambda red, factuals: [_plain(r, spec) for _, r in factuals.iterrows()]
    )
    assert augmented <= reduced + 0.05


def test_table4_relative_changes_per_seed():
    def row(kind, seed, f1, scenario=None, source=None, ratio=0.0, status="ok"):
        metrics = None if status != "ok" else {m: f1 for m in ["ACC", "PRE", "REC", "F1", "AUC"]}
        out = {"kind": kind, "scenario": scenario, "source": source, "ratio": ratio, "seed": seed,
               "status": status, "metrics": metrics}
        if status == "insufficient":
            out["cf_counts"] = {1: {"removed": 40, "wanted": 40, "added": 30 + seed, "available": 30 + seed}}
        return out

    results = [
        row("baseline", 0, 0.8), row("baseline", 1, 0.6),
        row("reduced", 0, 0.4, "A"), row("reduced", 1, 0.3, "A"),
        row("augmented", 0, 0.5, "A", "good", 1.0), row("augmented", 1, 0.45, "A", "good", 1.0),
        row("augmented", 0, None, "A", "small", 1.0, "insufficient"),
        row("augmented", 1, 0.31, "A", "small", 1.0),
    ]
    table = table4(results, ["A"], ["good", "small"], 1.0).set_index("method", append=True)
    base, reduced, good, small = (table.iloc[i] for i in range(4))
    assert base["F1"] == pytest.approx(0.7)
    assert base["F1_ci"] == pytest.approx(12.706205 * math.sqrt(0.02) / math.sqrt(2), rel=1e-5)
    assert reduced["F1"] == pytest.approx(-50.0) and reduced["F1_ci"] == pytest.approx(0.0, abs=1e-9)
    # per seed: (0.5 - 0.4) / 0.4 = +25 %, (0.45 - 0.3) / 0.3 = +50 %
    assert good["F1"] == pytest.approx(37.5)
    assert good["F1_ci"] == pytest.approx(12.706205 * np.std([25, 50], ddof=1) / math.sqrt(2), rel=1e-5)
    assert math.isnan(small["F1"])
    assert small["note"] == "insufficient in 1/2 seeds (class 1: 30 of 40 CFs available)"


def _neighbour_source(run, name, n_max=None):
    """Fake-but-valid CFs from training factuals: the nearest window of the other label, immutables kept."""
    df, spec = run.load_cohort()
    train = df[df[SPLIT_COL] == "train"].reset_index(drop=True)
    x = train[["steps_mean", "glucose_mean", "deep_pct"]].to_numpy()
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    plain = train[spec.names].to_dict("records")
    records = []
    for i, r in train.iterrows():
        others = np.flatnonzero(train.high_stress != r.high_stress)
        j = others[np.argmin(((x[others] - x[i]) ** 2).sum(1))]
        cf = dict(plain[i], **{f.name: plain[j][f.name] for f in spec.mutable})
        label = int(train.high_stress[j])
        records.append(_record(r, spec, method=name, desired=label, cf=cf, cf_pred=label))
    return _write(run.cfs / "train" / f"{name}.jsonl", records[:n_max])


def test_run_scarcity_writes_every_artifact(tiny_run):
    _neighbour_source(tiny_run, "near")
    _neighbour_source(tiny_run, "few", n_max=40)
    summary = run_scarcity(tiny_run, "all", [0.5, 1.0], 2, ["A", "B", "C"], None, jobs=1, fig1=True,
                           fig1_fractions=[0.0, 0.5])
    out = tiny_run.augment
    for name in ["table4.csv", "table4.md", "table4.tex", "results.jsonl", "cf_pool.csv", "fig7.png", "fig1.png",
                 "fig1_results.jsonl", "provenance.json"]:
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # 2 seeds x (baseline + 3 scenarios x (reduced + 2 sources x 2 ratios))
    assert len(rows) == 2 * (1 + 3 * (1 + 2 * 2))
    assert summary["grid_fits"] + summary["insufficient_cells"] == len(rows)
    few = [r for r in rows if r["source"] == "few"]
    assert few and all(r["status"] == "insufficient" and r["metrics"] is None for r in few)
    assert all(set(r["metrics"]) == {"ACC", "PRE", "REC", "F1", "AUC"} for r in rows if r["status"] == "ok")
    table = pd.read_csv(out / "table4.csv")
    assert list(table["method"]) == ["NN"] + ["NN", "few", "near"] * 3
    assert table.loc[table.method == "few", "note"].str.startswith("insufficient").all()
    pool = pd.read_csv(out / "cf_pool.csv")
    assert len(pool) == 3 * 2 * 2 and (pool.test_factual == 0).all()
    assert (pool.removed_factual > 0).any()
    fig1 = [json.loads(line) for line in (out / "fig1_results.jsonl").read_text().splitlines()]
    assert len(fig1) == 2 * 2 * 4
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["sources"] == ["few", "near"]
    md = (out / "table4.md").read_text()
    assert "insufficient" in md and "removed_factual (mean)" in md


def test_cli_help_and_missing_source(tiny_run):
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, ["--run", str(tiny_run.root), "--sources", "nope", "--no-fig1"])
    assert result.exit_code != 0
    assert "nope.jsonl" in str(result.exception)
