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
