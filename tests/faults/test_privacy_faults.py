"""Faults of the report stages (eval.report, augment.scarcity, augment.report): a real cohort's ids,
dates and per-window figure must not leave through report.md, intervention.md or W&B; bad CF files
and run directories end in one error line; a writer killed mid-write leaves no torn artifact."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness import REPO, Fault, Outcome, assert_one_line_error, params, run_module

from augment import report as final_report
from augment import scarcity
from eval import report as eval_report
from eval.classifier import train_and_evaluate
from eval.intervention import DATE_OR_TIME, PARTICIPANT_PSEUDONYM, WINDOW_PSEUDONYM
from sensecf.blackbox import BlackBox
from sensecf.cli import run_cli
from sensecf.records import CFRecord, RecordWriter
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.teacher import teacher_cfs

# A date and an hour the model "echoed" in every raw answer: a real report must not show them.
RAW_TIME = "2023-05-01 14:00"


@pytest.fixture(scope="module")
def base_run(request, tmp_path_factory) -> RunDir:
    """A synthetic cohort (the shared fixture's, 20 participants x 15 windows) with a classifier,
    teacher CFs of the test windows whose raw answers name the window and a time, and Table III."""
    shared = request.config.pluginmanager.get_plugin(str(REPO / "tests" / "conftest.py"))
    frame = shared._aireadi_frame(np.random.default_rng(7), 20, 15)
    run = shared.write_cohort(RunDir(tmp_path_factory.mktemp("privacy") / "base"), frame,
                              DatasetSpec.from_yaml(shared.AIREADI_SPEC))
    train_and_evaluate(run, seed=0)
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    train, test = df[df[SPLIT_COL] == "train"], df[df[SPLIT_COL] == "test"].reset_index(drop=True)
    teacher = teacher_cfs(test, train, spec, blackbox)
    ok = [i for i, cf in enumerate(teacher.cfs) if cf is not None]
    cf_pred = dict(zip(ok, blackbox.predict([teacher.cfs[i] for i in ok]), strict=True))
    with RecordWriter(run.cf_file("teacher")) as writer:
        for i, row in test.iterrows():
            pred = int(teacher.factual_pred[i])
            writer.write(CFRecord(
                window_id=str(row[ID_COL]), participant_id=str(row[GROUP_COL]), method="teacher",
                factual={n: row[n].item() if hasattr(row[n], "item") else row[n] for n in spec.names},
                factual_pred=pred, desired_class=1 - pred, cf=teacher.cfs[i],
                cf_pred=int(cf_pred[i]) if i in cf_pred else None, parse_status=teacher.status[i], seconds=0.1,
                raw_text=f"<new>...</new> for window {row[ID_COL]} of {row[GROUP_COL]} at {RAW_TIME}",
            ))
    eval_report.build_report(run, fig8_sample=20)
    return run


def copy_of(run: RunDir, tmp_path: Path) -> RunDir:
    return RunDir(shutil.copytree(run.root, tmp_path / "run"))


def mark_real(run: RunDir) -> None:
    """The cohort's provenance says it is not synthetic (an AI-READI cohort)."""
    write_provenance(run.cohort, config={"fixture": True}, source={"synthetic": False})


def replace_table(run: RunDir) -> None:
    """Another cohort table under the synthetic provenance: same rows, other bytes (its sha256 differs)."""
    pd.read_parquet(run.features).to_parquet(run.features, index=False, compression="gzip")


def leaked_ids(text: str, run: RunDir) -> list[str]:
    """The cohort's participant and window ids that `text` prints as whole tokens (the run's own
    path, which holds pytest's numbered folder, is blanked first)."""
    df = pd.read_parquet(run.features, columns=[ID_COL, GROUP_COL])
    ids = set(df[ID_COL].astype(str)) | set(df[GROUP_COL].astype(str))
    text = text.replace(str(run.root.resolve()), "RUN").replace(str(run.root), "RUN")
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, sorted(ids, key=len, reverse=True))) + r")(?![\w.])")
    return sorted(set(pattern.findall(text)))


def intervention_section(report: str) -> str:
    return report.split("## Intervention\n", 1)[1].split("\n## ", 1)[0]


class Recorder:
    """What the W&B logger would send: every logged key and value, no W&B run."""

    def __init__(self):
        self.sent: dict = {}
        self.summary: dict = {}
        self.group = "privacy"

    def log(self, data: dict, step=None):
        self.sent.update(data)


def logged_to_wandb(run: RunDir, monkeypatch, row_level: bool = False) -> dict:
    import sensecf.wandb_log
    import sensecf.wandb_report

    recorder = Recorder()

    @contextmanager
    def fake_stage_run(*args, **kwargs):
        yield recorder

    monkeypatch.setattr(sensecf.wandb_log, "stage_run", fake_stage_run)
    monkeypatch.setattr(sensecf.wandb_report, "workspaces_available", lambda: False)
    final_report.log_to_wandb(run, row_level=row_level)
    return recorder.sent


def in_process(app, *args, capsys) -> Outcome:
    """The CLI's error boundary run in this process (faster than a subprocess)."""
    with pytest.raises(SystemExit) as ended:
        run_cli(app, [str(a) for a in args])
    out = capsys.readouterr()
    return Outcome(ended.value.code, out.out, out.err)


def break_line_two(path: Path) -> None:
    """A CF file whose second of several lines is garbage (not the torn tail a kill leaves)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], '{"window_id": "oops", \n', *lines[1:3]]))


# --- the fault table -------------------------------------------------------------------------------
FAULTS = [
    Fault("real-cohort-report", "ran the report stages on a cohort not marked synthetic", "refused",
          {"stage": mark_real}),
    Fault("synthetic-label-table-replaced", "copied a real cohort table over a synthetic cohort's folder", "refused",
          {"stage": replace_table}),
    Fault("stale-example-after-table-replaced", "replaced the cohort table after eval.report had written the "
          "example with ids, then wrote report.md", "refused", {"stage": replace_table, "rerun_eval": False}),
    Fault("example-swapped-after-eval", "copied an intervention.md that names its window into a real cohort's "
          "eval/ after eval.report", "refused", {"stage": mark_real, "swap_example": True}),
    Fault("wandb-fig8-synthetic", "logged a synthetic run's report to W&B without asking for row-level data",
          "refused", {"real": False}),
    Fault("wandb-fig8-real", "logged a real cohort's report to W&B without asking for row-level data",
          "refused", {"real": True}),
    Fault("eval-report-broken-cf-line", "python -m eval.report on a CF file with a broken line 2", "error",
          {"cli": "eval.report"}),
    Fault("scarcity-broken-cf-line", "python -m augment.scarcity on a training CF file with a broken line 2",
          "error", {"cli": "scarcity"}),
    Fault("eval-report-no-cohort", "python -m eval.report on a run directory without a cohort", "error",
          {"empty": True, "names": ["cohort/features.parquet", "build the cohort first"]}),
    Fault("eval-report-no-cfs", "python -m eval.report before any CFs were generated", "error",
          {"empty": False, "names": ["cfs", "no CF files"]}),
    Fault("scarcity-no-train-cfs", "python -m augment.scarcity before CFs of training windows exist", "error",
          {"names": ["cfs/train", "no CF files"]}),
    Fault("report-missing-run-dir", "python -m augment.report --run with a mistyped run directory", "error",
          {"module": "augment.report"}),
    Fault("eval-report-missing-run-dir", "python -m eval.report --run with a mistyped run directory", "error",
          {"module": "eval.report", "slow": True}),
    Fault("scarcity-missing-run-dir", "python -m augment.scarcity --run with a mistyped run directory", "error",
          {"module": "augment.scarcity", "slow": True}),
    Fault("eval-report-killed-mid-write", "SIGKILL while eval.report writes fig8.png, then re-run", "resume",
          {"slow": True}),
]


def rows(*ids: str):
    """params() of these faults; a row that starts a heavy subprocess (the classifier stack imports
    torch through skops, ~20 s of CPU) is marked slow."""
    return [pytest.param(p.values[0], id=p.id, marks=[pytest.mark.slow] if p.values[0].args.get("slow") else [])
            for p in params([f for f in FAULTS if f.id in ids])]


@pytest.mark.parametrize("fault", rows("real-cohort-report", "synthetic-label-table-replaced",
                                        "stale-example-after-table-replaced", "example-swapped-after-eval"))
def test_a_real_cohort_report_names_no_participant_window_or_time(fault, base_run, tmp_path):
    run = copy_of(base_run, tmp_path)
    fault.args["stage"](run)
    assert not run.is_synthetic()
    if fault.args.get("rerun_eval", True):
        eval_report.build_report(run, fig8_sample=20)
        intervention = (run.eval / "intervention.md").read_text()
        assert leaked_ids(intervention, run) == []
        assert f"Window {WINDOW_PSEUDONYM} ({PARTICIPANT_PSEUDONYM})" in intervention
        assert "<new>...</new> for window window 1 of participant A at [time removed]" in intervention
        assert DATE_OR_TIME.search(intervention) is None
    if fault.args.get("swap_example"):  # its provenance no longer describes the file
        shutil.copy(base_run.eval / "intervention.md", run.eval / "intervention.md")
    final_report.write_report(run)
    report = run.report.read_text()
    assert leaked_ids(report, run) == []
    section = intervention_section(report)
    assert DATE_OR_TIME.search(section) is None
    if fault.args.get("rerun_eval", True) and not fault.args.get("swap_example"):
        assert f"Window {WINDOW_PSEUDONYM} ({PARTICIPANT_PSEUDONYM})" in section
    else:  # the example on disk names the window: left out, with the command that rewrites it
        assert "_Left out_" in section and "python -m eval.report" in section


def test_a_synthetic_cohort_keeps_its_ids(base_run, tmp_path):
    """The control: on the synthetic cohort the same check finds the example's ids and time."""
    run = copy_of(base_run, tmp_path)
    assert run.is_synthetic()
    final_report.write_report(run)
    for text in (run.report.read_text(), (run.eval / "intervention.md").read_text()):
        assert len(leaked_ids(text, run)) == 2  # the example's window and participant
        assert RAW_TIME in text


@pytest.mark.parametrize("fault", rows("wandb-fig8-synthetic", "wandb-fig8-real"))
def test_wandb_gets_no_per_window_figure_unless_asked(fault, base_run, tmp_path, monkeypatch):
    run = copy_of(base_run, tmp_path)
    if fault.args["real"]:
        mark_real(run)
    sent = logged_to_wandb(run, monkeypatch)
    assert (run.eval / "fig8.png").is_file()  # there was one to send
    assert "fig8" not in sent
    assert {"fig6", "table3", "classifier_metrics", "classifier/F1"} <= set(sent)
    tables = [v.get_dataframe() for v in sent.values() if hasattr(v, "get_dataframe")]
    assert tables and all(leaked_ids(t.to_csv(), run) == [] for t in tables)
    assert "fig8" in logged_to_wandb(run, monkeypatch, row_level=True)  # the user asked


@pytest.mark.parametrize("fault", rows("eval-report-broken-cf-line", "scarcity-broken-cf-line"))
def test_a_broken_cf_line_is_one_error_naming_file_and_line(fault, base_run, tmp_path, capsys):
    run = copy_of(base_run, tmp_path)
    if fault.args["cli"] == "eval.report":
        break_line_two(run.cf_file("teacher"))
        before = (run.eval / "table3.csv").read_bytes()
        out = in_process(eval_report.app, "--run", run.root, capsys=capsys)
        assert_one_line_error(out, "cfs/teacher.jsonl", "line 2")
        assert (run.eval / "table3.csv").read_bytes() == before  # nothing rewritten
    else:
        (run.cfs / "train").mkdir()
        shutil.copy(run.cf_file("teacher"), run.cfs / "train" / "teacher.jsonl")
        break_line_two(run.cfs / "train" / "teacher.jsonl")
        out = in_process(scarcity.app, "--run", run.root, "--seeds", "1", "--no-fig1", capsys=capsys)
        assert_one_line_error(out, "train/teacher.jsonl", "line 2")
        assert not (run.augment / "table4.csv").exists()


@pytest.mark.parametrize("fault", rows("eval-report-no-cohort", "eval-report-no-cfs", "scarcity-no-train-cfs"))
def test_a_missing_input_is_one_error_naming_it(fault, base_run, tmp_path, capsys):
    if fault.args.get("empty"):
        run = RunDir(tmp_path / "empty")
        run.root.mkdir()
    else:
        run = copy_of(base_run, tmp_path)
        shutil.rmtree(run.cfs if fault.id == "eval-report-no-cfs" else run.augment, ignore_errors=True)
    app = scarcity.app if fault.id.startswith("scarcity") else eval_report.app
    out = in_process(app, "--run", run.root, capsys=capsys)
    assert_one_line_error(out, str(run.root), *fault.args["names"])


@pytest.mark.parametrize("fault", rows("report-missing-run-dir", "eval-report-missing-run-dir",
                                        "scarcity-missing-run-dir"))
def test_a_missing_run_directory_is_one_error_and_not_created(fault, tmp_path):
    """End to end, as a user runs each stage: a subprocess, no traceback, no folder made by the lock."""
    missing = tmp_path / "runs" / "demo-typo"
    out = run_module(fault.args["module"], "--run", missing)
    assert_one_line_error(out, str(missing), "run directory not found")
    assert not missing.exists()


# eval.report as a user runs it, killed while Fig. 8's bytes are half written: savefig writes the
# file, which is then cut to half its size before the process dies.
KILL_IN_FIG8 = """
import os, signal, sys
from matplotlib.figure import Figure
from eval.report import app
from sensecf.cli import run_cli

savefig = Figure.savefig

def torn_savefig(self, fname, **kwargs):
    savefig(self, fname, **kwargs)
    if "fig8.png" in str(fname):
        os.truncate(fname, os.path.getsize(fname) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

Figure.savefig = torn_savefig
run_cli(app, sys.argv[1:])
"""


@pytest.mark.parametrize("fault", rows("eval-report-killed-mid-write"))
def test_a_kill_mid_write_tears_nothing_and_the_rerun_matches(fault, base_run, tmp_path):
    run = copy_of(base_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.eval.iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-c", KILL_IN_FIG8, "--run", str(run.root)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # Every artifact is the old one or a whole new one: fig8.png and the files after it are untouched.
    for name in ("fig8.png", "intervention.md", "provenance.json"):
        assert (run.eval / name).read_bytes() == before[name], name
    assert pd.read_csv(run.eval / "table3.csv").method.tolist() == ["teacher"]
    left = [p.name for p in run.eval.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".fig8.png.")  # only the killed writer's own temp file

    eval_report.build_report(run, fig8_sample=20)
    after = {p.name: p.read_bytes() for p in run.eval.iterdir() if p.is_file() and not p.name.endswith(".tmp")}
    for name in ("table3.csv", "table3.md", "table3.tex", "cf_metrics.csv", "fig6.csv", "intervention.md"):
        assert after[name] == before[name], name
    assert after["fig8.png"][:4] == b"\x89PNG"


def test_no_temporary_file_is_left_after_complete_stages(base_run, tmp_path):
    run = copy_of(base_run, tmp_path)
    (run.cfs / "train").mkdir()
    shutil.copy(run.cf_file("teacher"), run.cfs / "train" / "teacher.jsonl")
    scarcity.run_scarcity(run, "all", [1.0], 1, ["A"], None, jobs=1, fig1=False)
    final_report.write_report(run)
    assert [p for p in run.root.rglob("*") if p.name.endswith(".tmp")] == []
    assert (run.augment / "table4.md").is_file() and run.report.is_file()
