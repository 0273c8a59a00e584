"""Faults of the experiment runner (launch.experiment): bad stage names and recipes, a stage that
fails, is killed or writes nothing, the runner killed mid-stage, two runners on one run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from harness import REPO, Fault, assert_one_line_error, params, run_module

from sensecf.atomic import run_lock

# A stage as a tiny script: it logs each run, writes "part " then, as the mode file says, fails,
# is killed, hangs or writes nothing, and otherwise finishes its output with "done".
STAGE = '''\
import os, signal, sys, time
name, out, mode_file = sys.argv[1:4]
mode = open(mode_file).read().strip() if os.path.exists(mode_file) else ""
with open(os.path.join(os.path.dirname(out), "log.txt"), "a") as fh:
    fh.write(name + "\\n")
if mode == "nooutput":
    sys.exit(0)
with open(out, "w") as fh:
    fh.write("part ")
    fh.flush()
    if mode == "fail":
        sys.exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(120)
    fh.write("done")
'''


def _experiment(tmp_path: Path) -> tuple[Path, Path, Path]:
    """recipe, run dir, mode file: stages `first` then `second`; the mode file steers `second`."""
    script, mode = tmp_path / "stage.py", tmp_path / "mode"
    script.write_text(STAGE)
    stage = lambda name, mode_file: {  # noqa: E731
        "name": name, "cmd": f"{{python}} {script} {name} {{run}}/{name}.txt {mode_file}",
        "outputs": [f"{{run}}/{name}.txt"]}
    recipe = tmp_path / "exp.yml"
    recipe.write_text(yaml.safe_dump({"name": "faults", "run": str(tmp_path / "run"),
                                      "stages": [stage("first", tmp_path / "never"), stage("second", mode)]}))
    run = tmp_path / "run"
    run.mkdir()
    return recipe, run, mode


def _log(run: Path) -> list[str]:
    return (run / "log.txt").read_text().split() if (run / "log.txt").exists() else []


def _resumes(recipe: Path, run: Path, mode: Path) -> None:
    """With the fault gone, a re-run skips `first`, runs `second` again and completes it."""
    mode.unlink(missing_ok=True)
    before = _log(run)
    out = run_module("launch.experiment", recipe, "--run", run)
    assert out.rc == 0, out.stderr[-2000:]
    assert _log(run) == before + ["second"]
    assert (run / "second.txt").read_text() == "part done"
    assert (run / ".stages/second.stamp").is_file()


def bad_argument(tmp_path, args):
    recipe, run, _ = _experiment(tmp_path)
    out = run_module("launch.experiment", recipe, "--run", run, *args["argv"])
    assert_one_line_error(out, *args["names"])
    assert _log(run) == []  # refused before any stage ran


def bad_recipe(tmp_path, args):
    recipe = tmp_path / "exp.yml"
    recipe.write_text(args["text"])
    out = run_module("launch.experiment", recipe, "--run", tmp_path / "run")
    assert_one_line_error(out, str(recipe), *args["names"])


def stage_fault(tmp_path, args):
    recipe, run, mode = _experiment(tmp_path)
    mode.write_text(args["mode"])
    out = run_module("launch.experiment", recipe, "--run", run)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.rc == args["rc"], (out.rc, out.stderr[-2000:])
    assert args["message"] in out.stderr, out.stderr[-2000:]
    assert _log(run) == ["first", "second"]
    assert (run / ".stages/first.stamp").is_file()
    assert not (run / ".stages/second.stamp").exists()  # so the next run runs it again
    if args.get("line"):
        assert_one_line_error(out, *args["line"], rc=args["rc"])
    _resumes(recipe, run, mode)


def runner_killed(tmp_path, args):
    recipe, run, mode = _experiment(tmp_path)
    mode.write_text("hang")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "launch.experiment", str(recipe), "--run", str(run)], cwd=REPO,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (run / "second.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its stage, as a closed terminal or OOM would
    proc.wait()
    assert (run / "second.txt").read_text() == "part "  # a partial output is there...
    assert not (run / ".stages/second.stamp").exists()  # ...but no stamp vouches for it
    _resumes(recipe, run, mode)


def second_runner(tmp_path, args):
    recipe, run, _ = _experiment(tmp_path)
    with run_lock(run):  # a runner (or any writer) is at work on this run directory
        out = run_module("launch.experiment", recipe, "--run", run)
    assert_one_line_error(out, str(run / ".lock"), "another writer holds this lock")
    assert _log(run) == []
    assert run_module("launch.experiment", recipe, "--run", run).rc == 0  # once it is free, it runs


FAULTS = [
    Fault("unknown-force-stage", "--force names a stage the recipe does not have", "error",
          {"run": bad_argument, "argv": ["--force", "secnd"], "names": ["--force", "secnd", "first, second"]}),
    Fault("unknown-only-stage", "--only names a stage the recipe does not have (beside a real one)", "error",
          {"run": bad_argument, "argv": ["--only", "first", "--only", "thrid"],
           "names": ["--only", "thrid", "first, second"]}),
    Fault("recipe-broken-yaml", "the experiment recipe is not valid YAML", "error",
          {"run": bad_recipe, "text": "name: x\nstages: [\n", "names": ["line 3", "not valid YAML"]}),
    Fault("recipe-without-stages", "the experiment recipe has no `stages`", "error",
          {"run": bad_recipe, "text": "name: x\nrun: r\n", "names": ["stages", "Field required"]}),
    Fault("recipe-unknown-key", "the experiment recipe misspells a key", "error",
          {"run": bad_recipe, "text": "name: x\nrun: r\nstages: []\nstagse: []\n", "names": ["stagse"]}),
    Fault("stage-fails", "a stage fails with exit code 3 after writing part of its output", "resume",
          {"run": stage_fault, "mode": "fail", "rc": 3, "message": "stage 'second' failed (exit 3)"}),
    Fault("stage-killed", "a stage is killed by SIGKILL (the OOM killer) mid-way", "resume",
          {"run": stage_fault, "mode": "kill", "rc": 137, "message": "stage 'second' failed (killed by SIGKILL)"}),
    Fault("stage-writes-nothing", "a stage exits 0 without writing its declared output", "stop",
          {"run": stage_fault, "mode": "nooutput", "rc": 1, "message": "did not write",
           "line": ["stage 'second'", "second.txt"]}),
    Fault("runner-killed-mid-stage", "the runner and its stage are SIGKILLed after part of the output", "resume",
          {"run": runner_killed}),
    Fault("second-runner", "a second runner starts on a run directory that another writer holds", "stop",
          {"run": second_runner}),
]


@pytest.mark.parametrize("fault", params(FAULTS))
def test_runner_fault(fault, tmp_path):
    fault.args["run"](tmp_path, fault.args)
