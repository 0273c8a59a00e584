"""Report stage: every method gets its rows, the best cells are marked in the right direction,
and all files are written, on the AI-READI-spec fixture and on the generic one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from eval.classifier import train_and_evaluate
from eval.report import app, build_report, latex_table, markdown_table, table3
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
    protocols = {"broken": "paper", "noisy": "paper", "noisy+verified": "sensecf", "teacher": "sensecf"}
    assert table.protocol.tolist() == [protocols[m] for m in methods]
    for m in methods:
        assert f"| {m} | {protocols[m]} |" in md and f"{m} & {protocols[m]} &".replace("_", r"\_") in tex
    assert "**" in md and r"\textbf{" in tex

    row = table.set_index("method")
    # the columns other code reads keep their names; the valid-CF means and intervals are added
    old_columns = ["n", "validity", "distance", "sparsity", "plausibility", "parse_rate", "immutables_violated",
                   "coherence", "actionability", "redundancy", "ynn", "seconds_per_cf"]
    new_columns = ["n_parsed", "n_valid", "distance_valid", "sparsity_valid", "plausibility_valid",
                   "validity_ci_low", "validity_ci_high", "plausibility_ci_low", "plausibility_ci_high",
                   "plausibility_valid_ci_low", "plausibility_valid_ci_high"]
    assert {f"class{c}_{m}" for c in (0, 1) for m in old_columns + new_columns} <= set(table.columns)
    assert row.loc["broken", "class0_validity"] == 0 and row.loc["broken", "class0_parse_rate"] == 0
    assert np.isnan(row.loc["broken", "class0_distance"]) and np.isnan(row.loc["broken", "class0_distance_valid"])
    for c in (0, 1):
        n, k = row[f"class{c}_n"], row[f"class{c}_n_valid"]
        assert np.allclose(row[f"class{c}_validity"], k / n)
        assert (row[f"class{c}_validity_ci_low"] <= row[f"class{c}_validity"]).all()
        assert (row[f"class{c}_validity"] <= row[f"class{c}_validity_ci_high"]).all()
        # bold for distance and sparsity sits on the valid-CF columns only
        for method in methods:
            marked = str(row.loc[method, "best"]).split(";")
            assert f"class{c}_distance" not in marked and f"class{c}_sparsity" not in marked
        top = row[f"class{c}_distance_valid"].round(3).min()
        assert [m for m in methods if f"class{c}_distance_valid" in str(row.loc[m, "best"]).split(";")] == \
            [m for m in methods if round(row.loc[m, f"class{c}_distance_valid"], 3) == top]
    assert row.loc["teacher", "class0_validity"] > 0.8 and row.loc["teacher", "class0_immutables_violated"] == 0
    # verification never loses validity: it falls back to candidate 0 only when nothing is valid
    for c in (0, 1):
        assert row.loc["noisy+verified", f"class{c}_validity"] >= row.loc["noisy", f"class{c}_validity"]
    # the validity-against-k curve: k = 1 is candidate 0's validity, k = 2 the verified row's
    curve = pd.read_csv(paths["verification.csv"]).set_index(["method", "class", "k"])
    assert set(curve.index.get_level_values("method")) == {"noisy"}
    for c in curve.index.get_level_values("class").unique():
        assert curve.loc[("noisy", c, 1), "validity_at_k"] == pytest.approx(row.loc["noisy", f"class{c}_validity"])
        assert curve.loc[("noisy", c, 2), "validity_at_k"] == pytest.approx(
            row.loc["noisy+verified", f"class{c}_validity"])
    assert "## Verification: validity among the first k candidates" in md and "| noisy | 0 | 2 |" in md
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
            {"method": "a", "class": 0, "n": 10, "validity": 0.9, "distance_valid": 0.5, "plausibility_valid": 0.7},
            {"method": "b", "class": 0, "n": 10, "validity": 0.8, "distance_valid": 0.2, "plausibility_valid": 0.9},
            {"method": "c", "class": 0, "n": 10, "validity": 0.9, "distance_valid": float("nan")},
        ]
    )
    values, best = table3(metrics)
    assert best[(0, "validity")].tolist() == [True, False, True]  # ties both marked
    assert best[(0, "distance_valid")].tolist() == [False, True, False]  # lower is better, NaN ignored
    assert best[(0, "plausibility_valid")].tolist() == [False, True, False]  # higher is better
    assert not best[(0, "n")].any() and not best[(1, "validity")].any()  # counts and empty columns unmarked
    assert values.loc["b", (0, "distance_valid")] == 0.2


# SmolLM2 zero-shot in the demo: it copies the factual (validity 0, distance 0.056); "ft" flips the class.
COPY_VS_FLIP = pd.DataFrame(
    [
        {"method": "copy", "class": 0, "n": 20, "n_parsed": 20, "n_valid": 0, "validity": 0.0, "distance": 0.056,
         "sparsity": 0.5, "plausibility": 1.0, "distance_valid": float("nan"), "sparsity_valid": float("nan"),
         "plausibility_valid": float("nan"), "validity_ci_low": 0.0, "validity_ci_high": 0.161125,
         "plausibility_ci_low": 0.838875, "plausibility_ci_high": 1.0},
        {"method": "ft", "class": 0, "n": 20, "n_parsed": 19, "n_valid": 6, "validity": 0.3, "distance": 0.9,
         "sparsity": 3.0, "plausibility": 0.95, "distance_valid": 0.8, "sparsity_valid": 2.5,
         "plausibility_valid": 1.0, "validity_ci_low": 0.145477, "validity_ci_high": 0.518973,
         "plausibility_ci_low": 0.753613, "plausibility_ci_high": 0.991098,
         "plausibility_valid_ci_low": 0.609666, "plausibility_valid_ci_high": 1.0},
    ]
)


def test_copying_the_factual_is_not_marked_best():
    values, best = table3(COPY_VS_FLIP)
    # over all parsed CFs the copy would win distance, sparsity and plausibility: those columns are unmarked
    for m in ("distance", "sparsity", "plausibility"):
        assert not best[(0, m)].any(), m
    # over valid CFs the copy has no value, so the only method with one is not compared with anything
    assert not best[(0, "distance_valid")].any()
    assert best[(0, "validity")].tolist() == [False, True]
    assert values.loc["ft", (0, "validity_ci_low")] == 0.145477 and np.isnan(values.loc["copy", (0, "distance_valid")])


def test_markdown_and_latex_cells_carry_intervals_and_dashes():
    values, best = table3(COPY_VS_FLIP)
    classes = {0: "low", 1: "high"}
    md = markdown_table(values, best, classes)
    header, _, copy, ft = md.splitlines()[:4]
    cells = dict(zip([h.strip() for h in header.split("|")], [c.strip() for c in copy.split("|")], strict=True))
    assert cells["C0 Validity ↑"] == "0.000 [0.000, 0.161]"
    assert cells["C0 Distance ↓"] == "0.056"  # all parsed CFs: shown, not marked
    assert cells["C0 n valid"] == "0" and cells["C0 Distance (valid) ↓"] == "–"  # no valid CF: '–', not 0
    assert cells["C0 Plausibility (valid) ↑"] == "–" and cells["C0 Plausibility ↑"] == "1.000 [0.839, 1.000]"
    cells = dict(zip([h.strip() for h in header.split("|")], [c.strip() for c in ft.split("|")], strict=True))
    assert cells["C0 Validity ↑"] == "**0.300** [0.145, 0.519]" and cells["C0 n parsed"] == "19"
    assert cells["C0 Distance (valid) ↓"] == "0.800" and cells["C0 Plausibility (valid) ↑"] == "1.000 [0.610, 1.000]"
    assert "C0 Validity ci low" not in header and "ci_low" not in header  # intervals live in their metric's cell
    assert "over valid CFs only" in md and "the total number of CF instances" in md

    tex = latex_table(values, best, classes, "cap")
    assert r"ft & paper & 20 & \textbf{0.300} [0.145, 0.519] & 19 & " in tex
    copy_row = (r"copy & paper & 20 & 0.000 [0.000, 0.161] & 20 & 0.056 & 0.500 & 1.000 [0.839, 1.000] & 0 & "
                r"-- & -- & -- & ")
    assert copy_row in tex
    n_columns = len(md.splitlines()[0].split("|")) - 4  # minus the Method and Protocol cells and the outer bars
    assert rf"\begin{{tabular}}{{ll{'r' * n_columns}}}" in tex


def test_cli_prints_table_and_filters_methods(tiny_run):
    _write_fake_cfs(tiny_run)
    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--methods", "teacher,noisy"])
    assert result.exit_code == 0, result.output
    assert "| teacher | sensecf |" in result.output and "| noisy+verified | sensecf |" in result.output
    assert "broken" not in pd.read_csv(tiny_run.eval / "table3.csv").method.tolist()

    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--methods", "gpt9"])
    assert result.exit_code != 0 and "no CF file for ['gpt9']" in str(result.exception)


def test_the_intervention_example_comes_from_the_row_asked_for(tiny_run):
    from sensecf.cli import InputError

    _write_fake_cfs(tiny_run)
    build_report(tiny_run, intervention_method="noisy")
    text = (tiny_run.eval / "intervention.md").read_text()
    assert "Method: **noisy**, the row asked for;" in text or "noisy produced no valid CF" in text
    build_report(tiny_run)
    assert "the highest validity; its validity" in (tiny_run.eval / "intervention.md").read_text()
    with pytest.raises(InputError, match="--intervention-method: no row 'llama31_ft'; rows: broken, noisy"):
        build_report(tiny_run, intervention_method="llama31_ft")


def test_fig6_legend_and_fig8_panels_name_each_rows_protocol(tiny_run, monkeypatch):
    from eval import figures

    _write_fake_cfs(tiny_run)
    kept = []
    monkeypatch.setattr(figures.plt, "close", kept.append)
    build_report(tiny_run, fig8_sample=10)
    fig6, fig8 = kept[0], kept[1]
    legend = [t.get_text() for t in fig6.axes[0].get_legend().get_texts()]
    assert "noisy (paper)" in legend and "teacher (sensecf)" in legend and "noisy+verified (sensecf)" in legend
    titles = [ax.get_title() for ax in fig8.axes if ax.get_title()]
    assert any(t.startswith("noisy (paper, n=") for t in titles)
    assert any(t.startswith("teacher (sensecf, n=") for t in titles)
