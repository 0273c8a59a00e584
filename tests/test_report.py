"""Report stage: every method gets its rows, the best cells are marked in the right direction,
and all files are written, on the AI-READI-spec fixture and on the generic one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from eval.classifier import train_and_evaluate
from eval.report import app, build_report, table3
from sensecf.blackbox import BlackBox
from sensecf.records import CFRecord, RecordWriter
from sensecf.rundir import GROUP_COL, ID_COL
from sensecf.teacher import teacher_cfs


def _record(row, spec, method, candidate, cf, pred, cf_pred, status="ok"):
    return CFRecord(
        window_id=str(row[ID_COL]), participant_id=str(row[GROUP_COL]), method=method, candidate=candidate,
        factual={n: row[n].item() if hasattr(row[n], "item") else row[n] for n in spec.names},
        factual_pred=int(pred), desired_class=1 - int(pred), cf=cf, cf_pred=cf_pred, parse_status=status,
        seconds=0.5, raw_text=None if cf is None else "<new>...</new>",
    )


def _write_fake_cfs(run):
    """teacher (one candidate), noisy (candidate 0 a random nudge, candidate 1 the teacher's CF),
    broken (nothing parses)."""
    train_and_evaluate(run, seed=0)
    df, spec = run.load_cohort()
    bb = BlackBox.load(run.model, spec)
    train, test = df[df.split == "train"], df[df.split == "test"].reset_index(drop=True)
    teacher = teacher_cfs(test, train, spec, bb)
    rng = np.random.default_rng(0)
    nudge = spec.mutable[0]
    moved = test[spec.names].copy()
    if nudge.is_numeric:
        moved[nudge.name] = np.clip(moved[nudge.name] + rng.normal(0, 5, len(test)), nudge.min, nudge.max)
    moved_pred = bb.predict(moved)
    ok = [i for i, cf in enumerate(teacher.cfs) if cf is not None]
    teacher_pred = dict(zip(ok, bb.predict([teacher.cfs[i] for i in ok]), strict=True))
    with RecordWriter(run.cf_file("teacher")) as t, RecordWriter(run.cf_file("noisy")) as n, \
            RecordWriter(run.cf_file("broken")) as b:
        for i, row in test.iterrows():
            pred, cf, status = teacher.factual_pred[i], teacher.cfs[i], teacher.status[i]
            cf_pred = int(teacher_pred[i]) if i in teacher_pred else None
            t.write(_record(row, spec, "teacher", 0, cf, pred, cf_pred, status))
            nudged = {k: v.item() if hasattr(v, "item") else v for k, v in moved.iloc[i].items()}
            n.write(_record(row, spec, "noisy", 0, nudged, pred, int(moved_pred[i])))
            n.write(_record(row, spec, "noisy", 1, cf, pred, cf_pred, status))
            b.write(_record(row, spec, "broken", 0, None, pred, None, "parse_error"))
    return spec


@pytest.mark.parametrize("fixture", ["tiny_run", "generic_run"])
def test_build_report_writes_every_artifact_with_every_method(fixture, request):
    run = request.getfixturevalue(fixture)
    spec = _write_fake_cfs(run)
    paths = build_report(run)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0, p
    assert paths["fig6.png"].read_bytes()[:4] == b"\x89PNG" and paths["fig8.png"].read_bytes()[:4] == b"\x89PNG"
    assert (run.eval / "provenance.json").exists()

    methods = ["broken", "noisy", "noisy+verified", "teacher"]
    table = pd.read_csv(paths["table3.csv"])
    assert table.method.tolist() == methods
    md, tex = paths["table3.md"].read_text(), paths["table3.tex"].read_text()
    for m in methods:
        assert f"| {m} |" in md and m in tex
    assert "**" in md and r"\textbf{" in tex

    row = table.set_index("method")
    assert row.loc["broken", "class0_validity"] == 0 and row.loc["broken", "class0_parse_rate"] == 0
    assert np.isnan(row.loc["broken", "class0_distance"])
    assert row.loc["teacher", "class0_validity"] > 0.8 and row.loc["teacher", "class0_immutables_violated"] == 0
    # verification never loses validity: it falls back to candidate 0 only when nothing is valid
    for c in (0, 1):
        assert row.loc["noisy+verified", f"class{c}_validity"] >= row.loc["noisy", f"class{c}_validity"]
    # the best validity per class is the maximum, and marked
    for c in (0, 1):
        top = row[f"class{c}_validity"].round(3).max()
        marked = [m for m in methods if f"class{c}_validity" in str(row.loc[m, "best"]).split(";")]
        assert marked == [m for m in methods if round(row.loc[m, f"class{c}_validity"], 3) == top]

    fig6 = pd.read_csv(paths["fig6.csv"], index_col="method")
    assert list(fig6.columns) == [f.prompt_name for f in spec.mutable] and "broken" not in fig6.index

    text = paths["intervention.md"].read_text()
    assert "## Condition" in text and "## Intervention" in text
    assert f"predicted **{spec.label.classes[1]}**" in text and " from " in text


def test_table3_marks_by_direction():
    metrics = pd.DataFrame(
        [
            {"method": "a", "class": 0, "n": 10, "validity": 0.9, "distance": 0.5},
            {"method": "b", "class": 0, "n": 10, "validity": 0.8, "distance": 0.2},
            {"method": "c", "class": 0, "n": 10, "validity": 0.9, "distance": float("nan")},
        ]
    )
    values, best = table3(metrics)
    assert best[(0, "validity")].tolist() == [True, False, True]  # ties both marked
    assert best[(0, "distance")].tolist() == [False, True, False]  # lower is better, NaN ignored
    assert not best[(0, "n")].any() and not best[(1, "validity")].any()  # counts and empty columns unmarked
    assert values.loc["b", (0, "distance")] == 0.2


def test_cli_prints_table_and_filters_methods(tiny_run):
    _write_fake_cfs(tiny_run)
    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--methods", "teacher,noisy"])
    assert result.exit_code == 0, result.output
    assert "| teacher |" in result.output and "| noisy+verified |" in result.output
    assert "broken" not in pd.read_csv(tiny_run.eval / "table3.csv").method.tolist()

    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--methods", "gpt9"])
    assert result.exit_code != 0 and "no CF file for ['gpt9']" in str(result.exception)
