import json

import pytest
import typer
import yaml

from launch.experiment import Experiment, load_experiment, run_experiment


def _recipe(tmp_path, stages) -> Experiment:
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump({"name": "t", "run": str(tmp_path / "run"), "stages": stages}))
    return load_experiment(path)


def _stages(tmp_path):
    run = "{run}"
    return [
        {"name": "a", "cmd": f"{{python}} -c \"open('{run}/a.txt','a').write('x')\"", "outputs": [f"{run}/a.txt"]},
        {"name": "b", "cmd": f"{{python}} -c \"open('{run}/b.txt','a').write(open('{run}/a.txt').read())\"",
         "inputs": [f"{run}/a.txt"], "outputs": [f"{run}/b.txt"]},
    ]


def test_stages_run_in_order_then_skip_when_up_to_date(tmp_path):
    exp = _recipe(tmp_path, _stages(tmp_path))
    run = str(tmp_path / "run")
    first = run_experiment(exp, run, force=set(), only=set())
    assert [t["skipped"] for t in first] == [False, False]
    assert (tmp_path / "run" / "b.txt").read_text() == "x"
    second = run_experiment(exp, run, force=set(), only=set())
    assert [t["skipped"] for t in second] == [True, True]


def test_forcing_a_stage_reruns_it_and_its_changed_dependants(tmp_path):
    exp = _recipe(tmp_path, _stages(tmp_path))
    run = str(tmp_path / "run")
    run_experiment(exp, run, force=set(), only=set())
    again = run_experiment(exp, run, force={"a"}, only=set())
    # a appended another "x", so b's input hash changed and b re-ran
    assert [t["skipped"] for t in again] == [False, False]
    assert (tmp_path / "run" / "b.txt").read_text() == "x" + "xx"


def test_a_failing_stage_stops_the_experiment_with_its_exit_code(tmp_path):
    exp = _recipe(tmp_path, [{"name": "bad", "cmd": "{python} -c \"raise SystemExit(3)\"", "outputs": ["{run}/x"]}])
    with pytest.raises(typer.Exit) as err:
        run_experiment(exp, str(tmp_path / "run"), force=set(), only=set())
    assert err.value.exit_code == 3


def test_unknown_recipe_key_is_rejected(tmp_path):
    path = tmp_path / "exp.yml"
    path.write_text(json.dumps({"name": "t", "run": "r", "stages": [], "stagse": []}))
    with pytest.raises(ValueError, match=r"exp\.yml: .*stagse"):
        load_experiment(path)


def test_environment_variables_fill_commands_and_unset_ones_are_named(tmp_path, monkeypatch):
    stages = [{"name": "e", "cmd": "{python} -c \"open('${OUT_FILE}','w').write('y')\"", "outputs": ["${OUT_FILE}"]}]
    exp = _recipe(tmp_path, stages)
    monkeypatch.delenv("OUT_FILE", raising=False)
    with pytest.raises(ValueError, match=r"\['OUT_FILE'\]"):
        run_experiment(exp, str(tmp_path / "run"), force=set(), only=set())
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "o.txt"))
    run_experiment(exp, str(tmp_path / "run"), force=set(), only=set())
    assert (tmp_path / "o.txt").read_text() == "y"


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_shipped_experiments_name_real_modules_and_earlier_outputs(name):
    import importlib.util
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    exp = load_experiment(repo / "recipes" / "experiments" / f"{name}.yml")
    produced: set[str] = set()
    for stage in exp.stages:
        for module in re.findall(r"-m (\S+)", stage.cmd):
            assert importlib.util.find_spec(module) is not None, f"{stage.name}: no module {module}"
        for path in stage.inputs:
            assert path in produced or (repo / path).exists(), f"{stage.name}: input {path} comes from no earlier stage"
        produced.update(stage.outputs)


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_every_stage_command_parses_against_its_cli(name):
    """Each stage's options exist and take their values, parsed by the stage's own typer command
    (nothing runs): a renamed or misspelled option in a GPU-only recipe fails here, on a CPU."""
    import importlib
    import re
    import shlex
    from pathlib import Path

    import typer

    from launch.experiment import _fill

    repo = Path(__file__).resolve().parents[1]
    exp = load_experiment(repo / "recipes" / "experiments" / f"{name}.yml")
    env = {var: f"/x/{var.lower()}" for stage in exp.stages for var in re.findall(r"\$\{(\w+)\}", stage.cmd)}
    for stage in exp.stages:
        args = shlex.split(_fill(stage.cmd, "runs/x", env))
        module = args[args.index("-m") + 1]
        rest = args[args.index("-m") + 2 :]
        if module == "dataset_builders":
            from dataset_builders.__main__ import COMMANDS

            module, rest = COMMANDS[rest[0]][0], rest[1:]
        target = importlib.import_module(module)
        app = getattr(target, "app", None)
        if not isinstance(app, typer.Typer):
            app = typer.Typer(add_completion=False)
            app.command()(target.main)
        command = typer.main.get_command(app)
        try:
            command.make_context(module, list(rest))
        except Exception as e:  # click's UsageError / BadParameter name the option
            pytest.fail(f"{name}.yml stage {stage.name}: {module} {' '.join(rest)}: {e}")


# ---- freshness: what makes a stage re-run ---------------------------------------------------

import platform  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import launch.experiment as experiment  # noqa: E402

TINY = {
    "tinypkg/__init__.py": "",
    "tinypkg/work.py": "import sys\nfrom tinypkg.helper import mark\nmark(sys.argv[1])\n",
    "tinypkg/helper.py": "from .deep import LINE\n\n\ndef mark(path):\n"
                         "    with open(path, 'a') as fh:\n        fh.write(LINE)\n",
    "tinypkg/deep.py": "LINE = 'ran\\n'\n",
    "tinypkg/unused.py": "X = 1\n",
    "tinypkg/templates/t.j2": "{{ x }}\n",
}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-stage experiment that runs `-m tinypkg.work` from a tiny project tree; each run of
    the stage appends a line to its output, so the line count is the number of runs."""
    code = tmp_path / "code"
    for rel, text in TINY.items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(text)
    monkeypatch.setattr(experiment, "CODE_ROOT", code)
    monkeypatch.setattr(experiment, "PROJECT_PACKAGES", (*experiment.PROJECT_PACKAGES, "tinypkg"))
    packages = {"numpy": "1.0", "pandas": "2.0"}
    monkeypatch.setattr(experiment, "installed_distributions", lambda: dict(packages))
    (tmp_path / "input.txt").write_text("a")
    stages = [{"name": "work", "cmd": "{python} -m tinypkg.work {run}/out.txt", "inputs": [str(tmp_path / "input.txt")],
               "outputs": ["{run}/out.txt"]}]
    exp = _recipe(tmp_path, stages)
    exp.env = {"PYTHONPATH": str(code), "FOO": "1"}
    ctx = SimpleNamespace(code=code, run=tmp_path / "run", exp=exp, packages=packages, input=tmp_path / "input.txt",
                          monkeypatch=monkeypatch)
    ctx.go = lambda: run_experiment(exp, str(ctx.run), force=set(), only=set())
    ctx.runs = lambda: (ctx.run / "out.txt").read_text().count("ran")
    return ctx


def _append(path: Path, text: str = "# edited\n") -> None:
    path.write_text(path.read_text() + text)


# (what changed, how to change it, the reason printed; None = the stage stays up to date)
CHANGES = [
    ("nothing", lambda c: None, None),
    ("the module it runs", lambda c: _append(c.code / "tinypkg/work.py"), "code changed (tinypkg/work.py)"),
    ("a module it imports", lambda c: _append(c.code / "tinypkg/helper.py"), "code changed (tinypkg/helper.py)"),
    ("a module imported relatively by an import", lambda c: _append(c.code / "tinypkg/deep.py"),
     "code changed (tinypkg/deep.py)"),
    ("a template of its package", lambda c: _append(c.code / "tinypkg/templates/t.j2", "x"),
     "code changed (tinypkg/templates/t.j2)"),
    ("a module it never imports", lambda c: _append(c.code / "tinypkg/unused.py"), None),
    ("an installed package's version", lambda c: c.packages.update(numpy="2.0"),
     "environment changed (numpy 1.0 -> 2.0)"),
    ("a package installed", lambda c: c.packages.update(torch="2.5"), "environment changed (torch <none> -> 2.5)"),
    ("the recipe's env", lambda c: c.exp.env.update(FOO="2"), "environment changed (env FOO)"),
    ("the python version", lambda c: c.monkeypatch.setattr(platform, "python_version", lambda: "3.99.0"),
     "environment changed (python "),
    ("a declared input", lambda c: _append(c.input, "b"), "inputs changed ("),
    ("the command", lambda c: setattr(c.exp.stages[0], "cmd", c.exp.stages[0].cmd + " --extra"), "command changed"),
    ("an output deleted", lambda c: (c.run / "out.txt").unlink(), "output missing ("),
    ("the stamp deleted, as a kill mid-stage leaves it", lambda c: (c.run / ".stages/work.stamp").unlink(), "no stamp"),
    ("the stamp torn", lambda c: (c.run / ".stages/work.stamp").write_text('{"comm'), "stamp from an older runner"),
]


@pytest.mark.parametrize("what,change,reason", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_stage_reruns_exactly_when_its_command_inputs_code_or_environment_changed(tiny, what, change, reason):
    first = tiny.go()
    assert first[0]["skipped"] is False and tiny.runs() == 1
    change(tiny)
    second = tiny.go()[0]
    if reason is None:
        assert second["skipped"] is True
        assert tiny.runs() == 1
    else:
        assert second["skipped"] is False
        assert reason in second["reason"], second["reason"]
        assert tiny.runs() == (1 if what == "an output deleted" else 2)


def test_the_stamp_holds_its_four_parts_and_is_written_after_the_outputs(tiny):
    tiny.go()
    stamp = json.loads((tiny.run / ".stages/work.stamp").read_text())
    assert sorted(stamp) == ["code", "command", "environment", "inputs"]
    # the module, what it imports (absolute and relative), its package's templates; not unused.py
    assert sorted(stamp["code"]) == ["tinypkg/__init__.py", "tinypkg/deep.py", "tinypkg/helper.py",
                                     "tinypkg/templates/t.j2", "tinypkg/work.py"]
    assert stamp["environment"] == {"python": platform.python_version(), "packages": {"numpy": "1.0", "pandas": "2.0"},
                                    "env": {"FOO": "1", "PYTHONPATH": str(tiny.code)}}
    assert json.loads((tiny.run / "stages.json").read_text())["stages"][0]["stage"] == "work"


def test_the_code_of_the_shipped_stages_reaches_their_imports_templates_and_dispatched_modules():
    gen = {str(p.relative_to(experiment.CODE_ROOT)) for p in experiment.code_files(["eval.generate"])}
    assert {"eval/generate.py", "sensecf/records.py", "prompts/render.py", "prompts/templates/fig4.j2"} <= gen
    assert "eval/report.py" not in gen and "augment/scarcity.py" not in gen
    # `python -m dataset_builders pairs` runs a module the dispatcher names as a string
    builders = {str(p.relative_to(experiment.CODE_ROOT)) for p in experiment.code_files(["dataset_builders"])}
    assert {"dataset_builders/__main__.py", "dataset_builders/pairs.py",
            "dataset_builders/aireadi_spec.yaml"} <= builders
    assert experiment.stage_modules("python -m dataset_builders pairs --run r") == ["dataset_builders"]
    assert experiment.code_part("python -c 'print(1)'") == {}


def test_installed_distributions_name_their_versions():
    import pydantic

    assert experiment.installed_distributions()["pydantic"] == pydantic.VERSION


def test_a_stage_that_takes_the_run_lock_itself_runs_under_the_runners_lock(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    cmd = ("{python} -c \"from sensecf.atomic import run_lock\n"
           "with run_lock('{run}'): open('{run}/locked.txt', 'w').write('ok')\"")
    exp = _recipe(tmp_path, [{"name": "locker", "cmd": cmd, "outputs": ["{run}/locked.txt"]}])
    exp.env = {"PYTHONPATH": str(repo)}
    run_experiment(exp, str(tmp_path / "run"), force=set(), only=set())
    assert (tmp_path / "run" / "locked.txt").read_text() == "ok"
