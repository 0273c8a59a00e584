"""Final report (augment/report.py): every section from small real artifacts, "not run" with the
producing command for a missing stage, no row identifiers outside the intervention example."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import AIREADI_SPEC, _aireadi_frame, write_cohort
from typer.testing import CliRunner

from augment.report import SECTIONS, app, render_report, section_table3, section_timing, training_row
from augment.scarcity import run_scarcity
from eval.classifier import train_and_evaluate
from eval.report import build_report
from sensecf.blackbox import BlackBox
from sensecf.records import CFRecord, RecordWriter
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir
from sensecf.spec import DatasetSpec

# Participant ids written into quality.json only (the fixture cohort uses 1000..1029): the report
# must never print them.
SKIPPED_IDS = {"7001": "no activity data in the release", "7002": "no valid age in participants.tsv"}


def _plain(row, names):
    return {n: row[n].item() if hasattr(row[n], "item") else row[n] for n in names}


def _write_cfs(path, frame, spec, blackbox, method, cfs):
    """Records for the rows of `frame`; cfs[i] None -> a parse error."""
    preds = blackbox.predict(frame)
    ok = [i for i, cf in enumerate(cfs) if cf is not None]
    cf_preds = dict(zip(ok, blackbox.predict([cfs[i] for i in ok]), strict=True)) if ok else {}
    with RecordWriter(path) as writer:
        for i, (_, row) in enumerate(frame.iterrows()):
            writer.write(CFRecord(
                window_id=str(row[ID_COL]), participant_id=str(row[GROUP_COL]), method=method,
                factual=_plain(row, spec.names), factual_pred=int(preds[i]), desired_class=1 - int(preds[i]),
                cf=cfs[i], cf_pred=int(cf_preds[i]) if i in cf_preds else None, seconds=0.25,
                parse_status="ok" if cfs[i] is not None else "parse_error",
                raw_text=None if cfs[i] is None else "<new>...</new>",
            ))


def _nearest_other(frame, pool, spec, blackbox):
    """CF = the nearest pool window predicted the other class, with the factual's immutables."""
    cols = ["steps_mean", "glucose_mean", "deep_pct"]
    x, y = frame[cols].to_numpy(), pool[cols].to_numpy()
    pool_pred, preds = blackbox.predict(pool), blackbox.predict(frame)
    plain = pool[spec.names].to_dict("records")
    out = []
    for i, (_, row) in enumerate(frame.iterrows()):
        others = np.flatnonzero(pool_pred != preds[i])
        j = others[np.argmin(((y[others] - x[i]) ** 2).sum(1))]
        out.append({**plain[j], **{f.name: _plain(row, [f.name])[f.name] for f in spec.immutable}})
    return out


def _quality() -> dict:
    """A hand-written AI-READI quality.json (what dataset_builders.aireadi writes)."""
    return {
        "root": "release",
        "participants": {"listed": 32, "read": 31, "with_windows": 30, "skipped": 2,
                         "skipped_by_reason": {"no activity data in the release": 1,
                                               "no valid age in participants.tsv": 1},
                         "skipped_ids": SKIPPED_IDS},
        "windows": {"built": 700, "kept": 600, "dropped_by_first_reason": {"cgm_coverage": 60, "no_activity": 0,
                                                                          "no_sleep_night": 40,
                                                                          "few_stress_values": 0},
                    "drop_reason_order": ["cgm_coverage", "no_activity", "no_sleep_night", "few_stress_values"]},
        "quirks": {"duplicates_cgm": 17, "stress_sentinel": 4321},
        "failed_files": [{"path": "release/wearable_activity_monitor/7001/x.json", "reason": "participant 7001: bad"}],
        "demographics": {"demographics_file": None, "demographics_rows_not_in_participants_tsv": 0,
                         "observation_csv_found": True, "counted_over": "participants with at least one kept window",
                         "sex_unknown": 30, "medication_unknown": 4, "sex_source": {"none": 30},
                         "medication_source": {"cmtrt_* screening items": 26, "none": 4}},
        "label": {"name": "high_stress", "scope": "day", "threshold": 75.0, "min_stress_values": 30,
                  "rule": "mean valid stress > 75.0 -> 1"},
    }


TRAINER_STATE = {
    "global_step": 6,
    "log_history": [
        {"step": 1, "loss": 0.42, "tokens/train_per_sec_per_gpu": 30.0, "tokens/trainable": 120},
        {"step": 6, "loss": 0.18, "tokens/train_per_sec_per_gpu": 40.0, "tokens/trainable": 740},
        {"step": 6, "eval_loss": 0.25},
        {"step": 6, "train_runtime": 20.0, "train_loss": 0.3},
    ],
}
SFT_SUMMARY = {
    "factuals": 480, "teacher_valid": 450, "teacher_invalid": 30, "teacher_invalid_reasons": {"no_candidate": 30},
    "dropped_by_max_pairs": 50, "written": {"train": 360, "val": 40, "fewshot": 8},
    "max_tokens": 512, "longest": {"llama31": {"window_id": "1003_004", "tokens": 401}},
    "token_lengths": {"llama31": {"n": 400, "min": 350, "mean": 371.5, "p95": 390.0, "max": 401}},
}
STAGES = {"recipe": "recipes/experiments/demo.yml", "total_seconds": 95.5,
          "stages": [{"stage": "cohort", "seconds": 12.3, "skipped": False},
                     {"stage": "classifier", "seconds": 0.0, "skipped": True}]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> RunDir:
    """A run where every stage has left small real artifacts (fine-tuning and timing by hand)."""
    run = write_cohort(RunDir(tmp_path_factory.mktemp("final") / "exp1"),
                       _aireadi_frame(np.random.default_rng(7), 30, 20), DatasetSpec.from_yaml(AIREADI_SPEC))
    run.quality.write_text(json.dumps(_quality()))
    train_and_evaluate(run, seed=0)
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    train, test = df[df[SPLIT_COL] == "train"], df[df[SPLIT_COL] == "test"].head(30)
    _write_cfs(run.cf_file("teacher"), test, spec, blackbox, "teacher", _nearest_other(test, train, spec, blackbox))
    _write_cfs(run.cf_file("smollm2_zs"), test, spec, blackbox, "smollm2_zs",
               [cf if i % 3 else None for i, cf in enumerate(_nearest_other(test, train, spec, blackbox))])
    build_report(run, fig8_sample=20)
    (run.cfs / "train").mkdir()
    _write_cfs(run.cfs / "train" / "teacher.jsonl", train, spec, blackbox, "teacher",
               _nearest_other(train, train, spec, blackbox))
    run_scarcity(run, "all", [1.0], 1, ["A"], None, jobs=1, fig1=True, fig1_fractions=[0.5])

    run.sft.mkdir()
    (run.sft / "summary.json").write_text(json.dumps(SFT_SUMMARY))
    ckpt = run.checkpoints / "smollm2-cpu"
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-6").mkdir()
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    (ckpt / "checkpoint-6" / "trainer_state.json").write_text(json.dumps(TRAINER_STATE))
    (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (run.root / "stages.json").write_text(json.dumps(STAGES))
    return run


def row(*cells) -> re.Pattern:
    """A Markdown table row starting with these cells (any padding)."""
    return re.compile(r"\|\s*" + r"\s*\|\s*".join(re.escape(str(c)) for c in cells) + r"\s*\|")


def sections(text: str) -> dict[str, str]:
    """Level-2 sections of report.md by heading (embedded files' headings are demoted below ##)."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_section_is_there_in_order_with_the_stage_results(full_run):
    text, errors = render_report(full_run)
    assert errors == {}
    by = sections(text)
    assert list(by) == SECTIONS
    assert text.startswith("# SenseCF experiment report — exp1\n")
    assert "**synthetic** cohort" in text.split("## Data quality")[0]
    assert f"_{'not run'}_" not in text  # every stage has run

    quality = by["Data quality"]
    assert "**Participants**: 32 listed, 31 read, 30 with at least one window, 2 skipped." in quality
    assert "**Windows**: 700 built, 600 kept, 100 dropped" in quality
    assert row("stress_sentinel", "4,321").search(quality)
    assert "**Files that could not be used**: 1" in quality
    assert "Controlled-access demographics file: **not given**" in quality
    assert "sex unknown for 30, medication unknown for 4" in quality
    assert row("medication", "cmtrt_* screening items", 26).search(quality)
    # quality.json has no split summary here, so the cohort table's counts are shown
    df, _ = full_run.load_cohort()
    n_test = int((df[SPLIT_COL] == "test").sum())
    assert row("test", 6, n_test).search(quality)

    metrics = json.loads((full_run.classifier / "metrics.json").read_text())
    assert row("F1", f"{metrics['F1']:.3f}", f"{metrics['train_metrics']['F1']:.3f}").search(by["Classifier"])

    table3 = by["Table III"]
    assert row("teacher").search(table3) and row("smollm2_zs").search(table3)
    assert "### Table III" in table3 and "\n# " not in table3  # the embedded heading is demoted
    # valid-CF columns and 95 % intervals show, with the note on which CFs each mean is over
    assert "C0 Distance (valid) ↓" in table3 and "C1 n valid" in table3
    assert re.search(r"\| \**\d\.\d{3}\** \[\d\.\d{3}, \d\.\d{3}\] \|", table3)
    assert "over all parsed CFs, valid or not (the paper's averaging), and over valid CFs only" in table3

    claims = by["Paper's claims"]  # smollm2_zs alone: no pair to compare, a synthetic cohort
    assert row("Fine-tuning raises validity", "Llama-3.1-8B 0.62 → 0.99",
               "no zero-shot and fine-tuned pair of paper rows", "not measured").search(claims)
    assert "needs AI-READI + 8B weights" in claims and "Only paper-protocol rows" in claims

    for section, links in [("Figs. 6 and 8", ["eval/fig6.png", "eval/fig8.png"]),
                           ("Figs. 7 and 1", ["augment/fig7.png", "augment/fig1.png"])]:
        found = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", by[section])
        assert found == links
        assert all((full_run.report.parent / link).is_file() for link in found)

    assert "#### Condition" in by["Intervention"]
    assert "Sources: teacher; scenarios A; ratios [1.0] (table at ratio 1.0); seeds 1." in by["Table IV"]
    assert "Table IV. Baseline" in by["Table IV"] and "| Baseline " in by["Table IV"]

    tuning = by["Fine-tuning"]
    assert "450, invalid for 30 (no_candidate: 30); dropped by --max-pairs 50" in tuning
    assert "train 360, val 40, few-shot pool 8" in tuning
    assert row("llama31", 400, 350, 371.5, "390.0", 401).search(tuning)
    # the last checkpoint's state: loss 0.42 -> 0.18, 740 trainable tokens in 20 s = 37 tokens/s (no
    # launcher summary: all tokens unknown); no recipe.yml: precision unknown
    assert row("smollm2-cpu", "yes", "–", 6, "0.420", "0.180", "0.250", "–", "37.0", "20.0").search(tuning)

    assert row("cohort", 12.3, "no").search(by["Timing"])
    assert row("classifier", "0.0", "yes").search(by["Timing"])
    assert "total 95.5 s" in by["Timing"]

    repro = by["Reproducibility"]
    commit = json.loads((full_run.classifier / "provenance.json").read_text())["git_commit"]
    for stage in ["`classifier`", "`eval`", "`augment`", "`cohort`"]:
        assert row(stage).search(repro), stage
    if commit:
        assert commit[:12] in repro
    assert "scikit-learn" in repro
    # seed column: the classifier's seed, augment's list of seeds (its provenance has no single seed)
    assert re.search(r"\|\s*`classifier`\s*\|[^|]*\|\s*0\s*\|", repro)
    assert re.search(r"\|\s*`augment`\s*\|[^|]*\|\s*\[0\]\s*\|", repro)

    notes = by["Notes"]
    assert "**synthetic**" in notes and "SmolLM2-135M-Instruct (smollm2-cpu, smollm2_zs)" in notes
    assert "Records per file: smollm2_zs: 30, teacher: 30;" in notes and "95 % Wilson intervals" in notes
    assert "Fine-tuning targets are the teacher's CFs" in notes and "the paper does not say" in notes
    assert "Table IV averages 1 seed(s) with 95% t-intervals; one seed gives no interval." in notes


def test_no_row_identifier_outside_the_intervention_example(full_run):
    text, _ = render_report(full_run)
    df, _ = full_run.load_cohort()
    ids = set(df[ID_COL].astype(str)) | set(df[GROUP_COL].astype(str)) | set(SKIPPED_IDS)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, sorted(ids, key=len, reverse=True))) + r")(?![\w.])")
    by = sections(text)
    assert pattern.search(by["Intervention"])  # the example names its window: the check can fire
    outside = "\n".join(body for heading, body in by.items() if heading != "Intervention")
    outside += text.split("\n## ")[0]
    assert pattern.findall(outside) == []


def test_missing_stages_say_not_run_and_name_the_command(tiny_run):
    text, errors = render_report(tiny_run)
    assert errors == {}
    by = sections(text)
    root = str(tiny_run.root)
    expected = {
        "Classifier": f"python -m eval.classifier --run {root}",
        "Table III": f"python -m eval.baselines --run {root}",  # no CF files at all: generate them first
        "Figs. 6 and 8": f"python -m eval.report --run {root}",
        "Intervention": f"python -m eval.report --run {root}",
        "Table IV": f"python -m eval.baselines --run {root} --split train",
        "Figs. 7 and 1": f"python -m augment.scarcity --run {root}",
        "Fine-tuning": f"python -m launch.train recipes/smollm2-cpu.yml --run {root}",
        "Timing": f"python -m launch.experiment recipes/experiments/demo.yml --run {root}",
    }
    for heading, command in expected.items():
        assert "_not run_" in by[heading] and command in by[heading], heading
    assert f"python -m dataset_builders pairs --run {root}" in by["Fine-tuning"]
    # the cohort exists without quality.json: its counts come from the table, quality is "not run"
    assert "`cohort/quality.json` is missing" in by["Data quality"]
    assert "600 windows from 30 participants" in by["Data quality"]
    assert "Not run: classifier, Table III, Table IV, SFT pairs, fine-tuning" in text.split("## Data quality")[0]

    # CF files present but no Table III: the report stage is the one to run
    tiny_run.cfs.mkdir()
    tiny_run.cf_file("teacher").write_text("")
    assert f"It is produced by `python -m eval.report --run {root}`" in sections(render_report(tiny_run)[0])[
        "Table III"]


def test_an_empty_run_directory_renders_every_section(tmp_path):
    run = RunDir(tmp_path / "nothing")
    run.root.mkdir()
    text, errors = render_report(run)
    assert errors == {}
    assert list(sections(text)) == SECTIONS
    assert "python -m dataset_builders aireadi --root RELEASE --out" in sections(text)["Data quality"]
    assert "no stage wrote a `provenance.json` yet" in sections(text)["Reproducibility"]


def test_an_unreadable_artifact_is_reported_in_place(tiny_run):
    tiny_run.classifier.mkdir()
    (tiny_run.classifier / "metrics.json").write_text("{not json")
    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--no-wandb"])
    assert result.exit_code == 0, result.output
    by = sections(tiny_run.report.read_text())
    assert by["Classifier"].strip().startswith("**Could not be rendered**: JSONDecodeError")
    assert "Parts that could not be rendered: Summary (JSONDecodeError" in by["Notes"]
    assert "; Classifier (JSONDecodeError" in by["Notes"]
    assert "warning: Classifier could not be rendered" in result.output
    assert "## Table IV" in tiny_run.report.read_text()  # the rest of the report is still written


def test_cli_writes_report_and_provenance(full_run):
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, ["--run", str(full_run.root), "--no-wandb"])
    assert result.exit_code == 0, result.output
    assert f"wrote {full_run.report} (0 missing artifact(s)" in result.output
    prov = json.loads((full_run.root / "provenance.json").read_text())
    assert prov["config"] == {"wandb": False, "section_errors": {}}
    assert str(full_run.classifier / "metrics.json") in prov["inputs"]
    # the report's own provenance is not listed as a stage
    assert "| `.` " not in sections(full_run.report.read_text())["Reproducibility"]
    missing = runner.invoke(app, ["--run", str(full_run.root / "nope"), "--no-wandb"])
    assert missing.exit_code != 0 and "run directory not found" in str(missing.exception)
    assert not (full_run.root / "nope").exists()  # the lock did not create it


def test_cli_logs_aggregates_offline_and_never_publishes(full_run, monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_ENTITY", raising=False)

    def no_save(self, *args, **kwargs):
        raise AssertionError("Report.save() called offline")

    monkeypatch.setattr(wr.Report, "save", no_save)
    result = CliRunner().invoke(app, ["--run", str(full_run.root)])
    assert result.exit_code == 0, result.output
    assert "W&B (offline): aggregates logged" in result.output
    import wandb

    wandb.teardown()  # in this process W&B's core writes a finished run's files out only when torn down
    runs = list((full_run.root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {p.name.split("_")[0] for p in runs[0].rglob("*") if p.suffix in (".png", ".json") and "media" in p.parts}
    assert {"table3", "table4", "fig6", "fig7", "fig1"} <= media
    assert "fig8" not in media  # a per-window scatter: only with --wandb-row-level


def test_a_non_aireadi_cohort_renders_from_its_spec(generic_run):
    text, errors = render_report(generic_run)
    assert errors == {}
    quality = sections(text)["Data quality"]
    assert "400 windows from 400 participants" in quality
    assert "label 1 (disease)" in quality
    assert "Run `generic` used a **synthetic** cohort (toy-heart)" in text


def test_timing_of_a_run_in_progress_sums_the_stages_so_far(tmp_path):
    run = RunDir(tmp_path / "r")
    run.root.mkdir()
    stages = {"stages": [{"stage": "cohort", "seconds": 12.3, "skipped": False},
                         {"stage": "table4", "seconds": 50.2, "skipped": False}]}
    (run.root / "stages.json").write_text(json.dumps(stages))
    text = section_timing(run)
    assert "while the run was in progress" in text and "their sum 62.5 s" in text
    assert "None" not in text and row("table4", 50.2, "no").search(text)


def test_training_runtime_from_the_launchers_summary_when_the_state_lacks_it(tmp_path):
    folder = tmp_path / "smollm2-cpu"
    (folder / "checkpoint-20").mkdir(parents=True)
    state = {"global_step": 20, "log_history": [{"step": 1, "loss": 0.44}, {"step": 20, "loss": 0.21}]}
    (folder / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(state))
    (folder / "train_summary.json").write_text(
        json.dumps({"train_runtime_seconds": 147.2, "tokens": {"total": 20480, "trainable": 4897}})
    )
    (folder / "recipe.yml").write_text("bf16: true\nfp16: false\n")
    got = training_row("smollm2-cpu", folder)
    assert got["runtime (s)"] == "147.2" and got["tokens/s (trained)"] == "33.3"  # 4897 / 147.2
    assert got["tokens/s (all)"] == "139.1" and got["precision"] == "bf16"  # 20480 / 147.2
    (folder / "recipe.yml").write_text("bf16: false\nfp16: false\n")
    assert training_row("smollm2-cpu", folder)["precision"] == "fp32"


def test_table4_notes_judge_f1_against_its_intervals():
    from augment.report import table4_notes

    t4 = pd.DataFrame([
        {"scenario": "A", "row": "Reduced vs baseline (%)", "method": "NN", "F1": -0.28, "F1_ci": 2.30},
        {"scenario": "B", "row": "Reduced vs baseline (%)", "method": "NN", "F1": -12.0, "F1_ci": 3.0},
        {"scenario": "B", "row": "CF added vs reduced (%), ratio 1", "method": "teacher", "F1": -20.04, "F1_ci": 10.0},
        {"scenario": "B", "row": "CF added vs reduced (%), ratio 1", "method": "nice", "F1": -1.0, "F1_ci": 2.0},
        {"scenario": "B", "row": "CF added vs reduced (%), ratio 1", "method": "llm", "F1": None, "F1_ci": None},
    ])
    flat, worse = table4_notes(t4)
    assert "scenario(s) A (-0.28% ± 2.30)" in flat and "B (" not in flat
    assert "teacher in B (-20.04% ± 10.00)" in worse and "nice" not in worse and "llm" not in worse
    assert table4_notes(t4.iloc[[1]]) == []


def test_data_quality_lists_the_implausible_readings_dropped(tmp_path):
    """quality.json's dropped_readings reach the report, one row per reason with its count."""
    from augment.report import section_data_quality
    from sensecf.spec import DatasetSpec

    run = write_cohort(RunDir(tmp_path / "run"), _aireadi_frame(np.random.default_rng(0), 5, 4),
                       DatasetSpec.from_yaml(AIREADI_SPEC))
    quality = {"participants": {"listed": 3, "read": 3}, "windows": {"built": 10, "kept": 9},
               "dropped_readings": {"cgm_date_out_of_range": 1, "glucose_out_of_range": 3}}
    run.quality.write_text(json.dumps(quality))
    text = section_data_quality(run)
    cells = [line.strip("|").split("|") for line in text.splitlines() if "out_of_range" in line]
    rows = {tuple(c.strip() for c in cell) for cell in cells}
    assert rows == {("cgm_date_out_of_range", "1"), ("glucose_out_of_range", "3")}


def test_a_table3_without_valid_cf_columns_says_to_rerun(tmp_path):
    run = RunDir(tmp_path / "old")
    run.eval.mkdir(parents=True)
    (run.eval / "table3.md").write_text("# Table III\n\n| Method | C0 Distance ↓ |\n|---|---:|\n| nice | 0.100 |\n")
    text = section_table3(run)
    assert "predates the valid-CF columns" in text and f"python -m eval.report --run {run.root}" in text
    assert "(the paper's averaging)" not in text


def test_the_templates_lay_out_a_hand_made_context_and_refuse_a_missing_value():
    """The prose is in augment/templates: a section macro and the layout render given values under
    their headings; a value left out raises instead of leaving a blank."""
    from jinja2 import UndefinedError

    from augment.report import _env, render

    body = render("classifier", model="MLPClassifier", seed=0, n_train="1,739", n_test="376",
                  balance=["0: 187", "1: 189"], table="| metric | test |\n|:--|:--|\n| F1 | 0.732 |")
    assert body.startswith("Black box: `MLPClassifier` (seed 0), trained on 1,739 windows of the training split")
    assert "376 test windows (0: 187, 1: 189). Positive class 1" in body and body.endswith("| F1 | 0.732 |")
    layout = _env().get_template("report.md.j2")
    context = dict(name="exp1", summary="What ran.", sections=[("Classifier", body), ("Timing", None)],
                   notes=["A limit."], errors={"Timing": "OSError: gone"}, failed=["Timing (OSError: gone)"])
    text = layout.render(**context)
    assert text.startswith("# SenseCF experiment report — exp1\n\nWhat ran.\n\n## Classifier\n\nBlack box: ")
    assert text.endswith("## Timing\n\n**Could not be rendered**: OSError: gone\n\n## Notes\n\n- A limit.\n"
                         "- Parts that could not be rendered: Timing (OSError: gone)\n")
    assert list(sections(text)) == ["Classifier", "Timing", "Notes"]

    with pytest.raises(UndefinedError, match="name"):
        layout.render(**{k: v for k, v in context.items() if k != "name"})
    with pytest.raises(UndefinedError, match="table"):
        render("classifier", model="m", seed=0, n_train="1", n_test="1", balance=[])
