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
    with pytest.raises(typer.BadParameter, match="stagse"):
        load_experiment(path)


def test_environment_variables_fill_commands_and_unset_ones_are_named(tmp_path, monkeypatch):
    stages = [{"name": "e", "cmd": "{python} -c \"open('${OUT_FILE}','w').write('y')\"", "outputs": ["${OUT_FILE}"]}]
    exp = _recipe(tmp_path, stages)
    monkeypatch.delenv("OUT_FILE", raising=False)
    with pytest.raises(typer.BadParameter, match=r"\['OUT_FILE'\]"):
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
