"""SIGKILL the experiment runner, with its stage, at several points of a small pipeline, re-run it
each time, and compare the finished run with an uninterrupted one: same artifacts, none torn.

Stages: synthetic release -> cohort -> classifier -> NICE and teacher CFs -> SFT pairs -> Table III.
The CF stage has --overwrite, as a runner's recipe needs: a resume continues records made with
the same settings, and a re-run because an upstream stage changed starts them afresh.
The run is slow (every stage imports pandas/sklearn; minutes on 2 busy cores), hence `slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from harness import REPO, Fault, params

pytestmark = pytest.mark.slow

RECIPE = {
    "name": "kill-resume",
    "run": "unused",
    "env": {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    "stages": [
        {"name": "release", "cmd": "{python} -m dataset_builders synth --participants 12 --days 2 --seed 0 "
                                   "--out {run}/release --force",
         "outputs": ["{run}/release/synthetic_release.json"]},
        {"name": "cohort", "cmd": "{python} -m dataset_builders aireadi --root {run}/release --out {run}/cohort "
                                  "--demographics {run}/release/controlled/demographics.tsv",
         "inputs": ["{run}/release/synthetic_release.json"], "outputs": ["{run}/cohort/features.parquet"]},
        {"name": "classifier", "cmd": "{python} -m eval.classifier --run {run} --seed 0",
         "inputs": ["{run}/cohort/features.parquet"], "outputs": ["{run}/classifier/model.skops"]},
        {"name": "baselines", "cmd": "{python} -m eval.baselines --run {run} --n 10 --seed 0 "
                                     "--methods nice,teacher --overwrite",
         "inputs": ["{run}/classifier/model.skops"], "outputs": ["{run}/cfs/teacher.jsonl", "{run}/cfs/nice.jsonl"]},
        {"name": "pairs", "cmd": "{python} -m dataset_builders pairs --run {run} --max-pairs 40 --seed 0",
         "inputs": ["{run}/classifier/model.skops"], "outputs": ["{run}/sft/train.jsonl"]},
        {"name": "report", "cmd": "{python} -m eval.report --run {run}",
         "inputs": ["{run}/cfs/teacher.jsonl", "{run}/cfs/nice.jsonl"], "outputs": ["{run}/eval/table3.csv"]},
    ],
}


def _lines(path: Path) -> int:
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else 0


# Where run B is killed, in pipeline order: each point is the moment the first sign of a stage's
# output appears, so the kill lands while that stage writes. Each row is one SIGKILL of the runner's
# process group, then the next row's runner resumes the run.
KILLS = [
    Fault("kill-release", "SIGKILL while the synthetic release is being written", "resume",
          {"when": lambda run: (run / "release").exists()}),
    Fault("kill-cohort", "SIGKILL as the cohort's artifacts are written", "resume",
          {"when": lambda run: (run / "cohort").exists()}),
    Fault("kill-classifier", "SIGKILL as the classifier is saved", "resume",
          {"when": lambda run: (run / "classifier").exists()}),
    Fault("kill-baselines", "SIGKILL after the first CF record of a CF file", "resume",
          {"when": lambda run: _lines(run / "cfs" / "nice.jsonl") >= 1}),
    Fault("kill-pairs", "SIGKILL as the SFT pairs are written", "resume",
          {"when": lambda run: (run / "sft").exists()}),
    Fault("kill-report", "SIGKILL as Table III is written", "resume",
          {"when": lambda run: (run / "eval").exists()}),
]


class Runner:
    def __init__(self, tmp: Path):
        self.recipe = tmp / "exp.yml"
        self.recipe.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
        self.logs = tmp / "logs"
        self.logs.mkdir()
        # The project's interpreter writes no bytecode; a cache of our own (outside the venv)
        # saves recompiling pandas/sklearn in every stage of every resume.
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "",
                    "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
        self.env.pop("SENSECF_DEBUG", None)
        self.n = 0

    def start(self, run: Path) -> subprocess.Popen:
        self.n += 1
        log = (self.logs / f"{self.n}.log").open("w")
        return subprocess.Popen([sys.executable, "-m", "launch.experiment", str(self.recipe), "--run", str(run)],
                                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return (self.logs / f"{self.n}.log").read_text()[-4000:]

    def complete(self, run: Path) -> str:
        proc = self.start(run)
        assert proc.wait(timeout=1800) == 0, self.log()
        return self.log()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A uninterrupted; run B killed at every point of KILLS, then completed."""
    tmp = tmp_path_factory.mktemp("kill_resume")
    runner = Runner(tmp)
    t0 = time.monotonic()
    runner.complete(tmp / "A")
    seconds_a = time.monotonic() - t0
    run_b, kills = tmp / "B", {}
    for fault in KILLS:
        proc = runner.start(run_b)
        while proc.poll() is None and not fault.args["when"](run_b):
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the runner and its stage, as an OOM kill or closed laptop would
        kills[fault.id] = {"rc": proc.wait(), "log": runner.log()}
    resumed = runner.complete(run_b)
    again = runner.complete(run_b)  # a finished run stays finished
    same_model = (tmp / "A/classifier/model.skops").read_bytes() == (run_b / "classifier/model.skops").read_bytes()
    seconds_b = time.monotonic() - t0 - seconds_a
    print(f"\nkill-resume: run A {seconds_a:.0f} s; run B with {len(KILLS)} kills {seconds_b:.0f} s; "
          f"model.skops byte-identical: {same_model}")
    return {"A": tmp / "A", "B": run_b, "kills": kills, "resumed": resumed, "again": again}


@pytest.mark.parametrize("fault", params(KILLS))
def test_the_runner_was_killed_at_this_point(runs, fault):
    kill = runs["kills"][fault.id]
    assert kill["rc"] == -signal.SIGKILL, kill["log"]  # killed, not finished or crashed first


def test_the_run_after_the_kills_is_finished_and_stays_so(runs):
    stages = json.loads((runs["B"] / "stages.json").read_text())
    assert [s["skipped"] for s in stages["stages"]] == [True] * len(RECIPE["stages"]), runs["again"]
    assert stages["total_seconds"] is not None


# ---- same artifacts as the uninterrupted run --------------------------------------------------

def _text(run: Path, rel: str) -> str:
    """A text artifact with its run directory's path written as {run} (quality.json names it)."""
    return (run / rel).read_text().replace(str(run), "{run}")


TIMING_FIELDS = {"seconds"}  # per-record wall time; everything else in a CF record is deterministic


def _records(path: Path) -> tuple[int, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keyed = {(r["window_id"], r["method"], r.get("candidate")): {k: v for k, v in r.items() if k not in TIMING_FIELDS}
             for r in lines}
    return len(lines), keyed


def _table3(run: Path) -> pd.DataFrame:
    """Table III without its timing: the s/CF columns, and their mention in `best`."""
    table = pd.read_csv(run / "eval" / "table3.csv")
    table = table[[c for c in table.columns if "seconds" not in c]]
    table["best"] = table["best"].map(lambda b: ";".join(x for x in str(b).split(";") if "seconds" not in x))
    return table


SAME = [
    ("cohort/features.parquet", lambda r: pd.read_parquet(r / "cohort" / "features.parquet")),
    ("cohort/split.json", lambda r: json.loads(_text(r, "cohort/split.json"))),
    ("cohort/spec.yaml", lambda r: _text(r, "cohort/spec.yaml")),
    ("cohort/quality.json", lambda r: json.loads(_text(r, "cohort/quality.json"))),
    ("classifier/metrics.json", lambda r: json.loads(_text(r, "classifier/metrics.json"))),
    ("cfs/nice.jsonl", lambda r: _records(r / "cfs" / "nice.jsonl")),
    ("cfs/teacher.jsonl", lambda r: _records(r / "cfs" / "teacher.jsonl")),
    ("sft/train.jsonl", lambda r: _text(r, "sft/train.jsonl").splitlines()),
    ("sft/val.jsonl", lambda r: _text(r, "sft/val.jsonl").splitlines()),
    ("sft/fewshot.jsonl", lambda r: _text(r, "sft/fewshot.jsonl").splitlines()),
    ("sft/summary.json", lambda r: json.loads(_text(r, "sft/summary.json"))),
    ("eval/table3.csv", _table3),
]


def test_the_resumed_run_has_the_uninterrupted_runs_artifacts(runs):
    differ = []
    for rel, read in SAME:
        a, b = read(runs["A"]), read(runs["B"])
        if isinstance(a, pd.DataFrame):
            try:
                pd.testing.assert_frame_equal(a, b)
            except AssertionError as e:
                differ.append(f"{rel}: {' '.join(str(e).split())[:300]}")
        elif rel.startswith("cfs/"):
            (n_a, rec_a), (n_b, rec_b) = a, b
            if not n_b == n_a == len(rec_a):
                differ.append(f"{rel}: {n_a} records uninterrupted, {n_b} after the kills ({len(rec_b)} distinct)")
            changed = sorted(str(k) for k in set(rec_a) | set(rec_b) if rec_a.get(k) != rec_b.get(k))
            if changed:
                differ.append(f"{rel}: records differ: {changed[:5]}")
        elif b != a:
            differ.append(f"{rel}: differs")
    assert differ == [], differ


# ---- nothing torn, nothing left behind -------------------------------------------------------

def _artifacts(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.is_file() and "wandb" not in p.relative_to(run).parts)


def _readable(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".jsonl":
        for line in path.read_text().splitlines():
            json.loads(line)
    elif suffix == ".parquet":
        pd.read_parquet(path)
    elif suffix == ".csv":
        pd.read_csv(path)
    elif suffix in (".yaml", ".yml"):
        yaml.safe_load(path.read_text())
    elif suffix == ".skops":
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None


def test_no_artifact_of_the_killed_run_is_torn(runs):
    checked, torn = 0, []
    for path in _artifacts(runs["B"]):
        try:
            _readable(path)
            checked += 1
        except Exception as e:  # noqa: BLE001 - any failure to read back is a torn file
            torn.append(f"{path.relative_to(runs['B'])}: {type(e).__name__}: {e}"[:300])
    assert torn == []
    assert checked > 50  # the release alone has ~70 files


def test_no_temporary_file_is_left_but_hidden_atomic_ones(runs):
    temporary = [p.relative_to(runs["B"]) for p in _artifacts(runs["B"]) if p.name.endswith(".tmp")]
    visible = [p for p in temporary if not p.name.startswith(".")]
    assert visible == []
    print(f"\nhidden atomic temp files left by the kills: {[str(p) for p in temporary]}")
