"""eval/baselines.py and its library wrappers (DiCE, cfnow, NICE) plus the teacher row."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from eval import baselines
from eval.baselines import (
    BaselineConfig,
    MethodTimeout,
    choose_cf,
    expand_methods,
    native_values,
    rounded_cf,
    run_baselines,
    sample_factuals,
    time_limit,
)
from eval.classifier import train_and_evaluate
from sensecf.blackbox import BlackBox
from sensecf.records import read_records
from sensecf.rundir import ID_COL, SPLIT_COL

FAST = BaselineConfig(seed=0, cfnow_seconds=1, timeout_seconds=60)


@pytest.fixture
def aireadi(tiny_run):
    train_and_evaluate(tiny_run, seed=0)
    return tiny_run


@pytest.fixture
def generic(generic_run):
    train_and_evaluate(generic_run, seed=0)
    return generic_run


def _check_records(run, method, n):
    """The invariants every baseline's records must satisfy; returns the records."""
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    ids = json.loads((run.cfs / "factuals_test.json").read_text())["window_ids"]
    records = read_records(run.cf_file(method))
    assert [r.window_id for r in records] == ids and len(ids) == n
    rows = df.set_index(ID_COL).loc[ids]
    assert [r.factual_pred for r in records] == list(blackbox.predict(rows))
    for r in records:
        assert r.method == method and r.candidate == 0
        assert r.desired_class == 1 - r.factual_pred
        assert r.participant_id == str(rows.loc[r.window_id, "participant_id"])
        assert r.seconds > 0
        if r.parse_status != "ok":
            assert r.cf is None and r.error
            continue
        # Immutables are fixed by every method, not just checked afterwards.
        for f in spec.immutable:
            assert r.cf[f.name] == r.factual[f.name], (method, f.name)
        assert r.immutables_ok is True
        # Values are at display precision and cf_pred is the black box's view of exactly them.
        for f in spec.numeric:
            assert round(r.cf[f.name], f.decimals) == r.cf[f.name]
        assert r.cf_pred == int(blackbox.predict([r.cf])[0])
        for g in spec.groups:
            total = sum(r.cf[m] for m in g.members)
            assert r.extra["group_sums"][g.name] == pytest.approx(total)
            assert r.extra["groups_hold"] == (abs(total - g.total) <= 0.2 + 1e-9)
    return records


@pytest.mark.parametrize("method", ["dice_random", "dice_genetic", "cfnow", "nice", "teacher"])
def test_each_method_on_the_aireadi_spec(aireadi, method):
    n = 4 if method == "cfnow" else 6
    summary = run_baselines(aireadi, [method], n=n, cfg=FAST, progress=False)
    assert summary["failed_methods"] == {}
    records = _check_records(aireadi, method, n)
    # n split evenly between the predicted classes (the fixture has both in its test split).
    assert sorted(r.factual_pred for r in records) == [0] * (n // 2) + [1] * (n // 2)
    ok = [r for r in records if r.parse_status == "ok"]
    assert len(ok) >= n - 1, [r.error for r in records]
    assert sum(r.cf_pred == r.desired_class for r in ok) >= len(ok) // 2
    assert summary["methods"][method]["status"] == dict(pd.Series([r.parse_status for r in records]).value_counts())


@pytest.mark.parametrize("method", ["dice_random", "cfnow", "nice", "teacher"])
def test_each_method_on_a_generic_spec_with_a_mutable_category(generic, method):
    run_baselines(generic, [method], n=4, cfg=FAST, progress=False)
    records = _check_records(generic, method, 4)
    assert all(r.parse_status == "ok" for r in records), [r.error for r in records]
    assert {r.cf["smoker"] for r in records} <= {"no", "yes"}


def test_interrupted_run_resumes_without_loss_or_duplicates(aireadi, monkeypatch):
    from eval.baseline_nice import NiceExplainer

    real_explain = NiceExplainer.explain
    calls = {"n": 0}

    def dies_on_fourth_call(self, factual, desired):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # what a kill looks like from inside the loop
        return real_explain(self, factual, desired)

    monkeypatch.setattr(NiceExplainer, "explain", dies_on_fourth_call)
    with pytest.raises(KeyboardInterrupt):
        run_baselines(aireadi, ["nice"], n=6, cfg=FAST, progress=False)
    first = aireadi.cf_file("nice").read_text().splitlines()
    assert len(first) == 3
    # The writer may also have died mid-line: a torn tail must be dropped, not kept or duplicated.
    with open(aireadi.cf_file("nice"), "a") as fh:
        fh.write('{"window_id": "torn')

    monkeypatch.setattr(NiceExplainer, "explain", real_explain)
    summary = run_baselines(aireadi, ["nice"], n=6, cfg=FAST, progress=False)
    assert summary["methods"]["nice"]["already_done"] == 3
    assert sum(summary["methods"]["nice"]["written"].values()) == 3
    lines = aireadi.cf_file("nice").read_text().splitlines()
    assert lines[:3] == first  # earlier records untouched
    _check_records(aireadi, "nice", 6)  # every id exactly once, in sample order

    again = run_baselines(aireadi, ["nice"], n=6, cfg=FAST, progress=False)
    assert again["methods"]["nice"]["written"] == {} and again["methods"]["nice"]["already_done"] == 6


def test_library_error_becomes_error_records(aireadi, monkeypatch):
    import cfnow

    def broken(**kwargs):
        raise RuntimeError("cfnow exploded")

    monkeypatch.setattr(cfnow, "find_tabular", broken)
    summary = run_baselines(aireadi, ["cfnow", "nice"], n=4, cfg=FAST, progress=False)
    records = read_records(aireadi.cf_file("cfnow"))
    assert len(records) == 4
    assert all(r.parse_status == "error" and r.cf is None for r in records)
    assert all(r.error == "RuntimeError: cfnow exploded" for r in records)
    # The other method is unaffected.
    assert summary["methods"]["nice"]["status"] == {"ok": 4}


def test_slow_method_becomes_timeout_records(aireadi, monkeypatch):
    from eval.baseline_nice import NiceExplainer

    monkeypatch.setattr(NiceExplainer, "explain", lambda self, f, d: time.sleep(5))
    cfg = BaselineConfig(timeout_seconds=0.2)
    start = time.perf_counter()
    run_baselines(aireadi, ["nice"], n=2, cfg=cfg, progress=False)
    records = read_records(aireadi.cf_file("nice"))
    assert [r.parse_status for r in records] == ["timeout", "timeout"]
    assert all(r.error == "no result within 0.2 s" and 0.2 <= r.seconds < 2 for r in records)
    assert time.perf_counter() - start < 4.5  # the 5 s sleeps were cut short


def test_empty_answer_is_no_cf(aireadi, monkeypatch):
    from eval.baseline_nice import NiceExplainer

    monkeypatch.setattr(NiceExplainer, "explain", lambda self, f, d: [])
    run_baselines(aireadi, ["nice"], n=2, cfg=FAST, progress=False)
    assert [r.parse_status for r in read_records(aireadi.cf_file("nice"))] == ["no_cf", "no_cf"]


def test_a_method_that_cannot_start_is_reported_and_the_others_run(aireadi, monkeypatch):
    real = baselines.make_explainer

    def refuse_dice(method, *args):
        if method.startswith("dice"):
            raise ValueError("bad data for DiCE")
        return real(method, *args)

    monkeypatch.setattr(baselines, "make_explainer", refuse_dice)
    summary = run_baselines(aireadi, ["dice_random", "nice"], n=2, cfg=FAST, progress=False)
    assert summary["failed_methods"] == {"dice_random": "ValueError: bad data for DiCE"}
    assert summary["methods"]["nice"]["status"] == {"ok": 2}


def test_sample_is_balanced_seeded_and_reports_a_short_class():
    frame = pd.DataFrame({ID_COL: [f"w{i}" for i in range(10)]})
    predicted = np.array([0] * 7 + [1] * 3)
    ids, note = sample_factuals(frame, predicted, 8, seed=3)
    assert len(ids) == len(set(ids)) == 7
    assert sum(i in {"w7", "w8", "w9"} for i in ids) == 3  # all of class 1
    assert note["class_1"] == {"wanted": 4, "available": 3, "taken": 3}
    assert note["class_0"] == {"wanted": 4, "available": 7, "taken": 4}
    assert sample_factuals(frame, predicted, 8, seed=3)[0] == ids


def test_factual_ids_file_and_a_conflicting_sample(aireadi, tmp_path):
    df, _ = aireadi.load_cohort()
    test_ids = list(df[df.split == "test"][ID_COL][:3])
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(test_ids))
    run_baselines(aireadi, ["teacher"], factual_ids=baselines.read_factual_ids(path), cfg=FAST, progress=False)
    assert [r.window_id for r in read_records(aireadi.cf_file("teacher"))] == test_ids
    assert json.loads((aireadi.cfs / "factuals_test.json").read_text())["window_ids"] == test_ids
    # A different sample would mix two sets of factuals in one file: refused with a clear message.
    with pytest.raises(ValueError, match="holds a different factual sample"):
        run_baselines(aireadi, ["teacher"], n=4, cfg=FAST, progress=False)
    with pytest.raises(ValueError, match="not 'test' windows"):
        run_baselines(aireadi, ["teacher"], factual_ids=["nope"], cfg=FAST, progress=False)


def test_a_larger_shared_sample_of_the_same_seed_gives_its_balanced_first_n(aireadi):
    run_baselines(aireadi, ["teacher"], n=8, cfg=FAST, progress=False)  # the fast methods' 8 (the demo's 200)
    shared = json.loads((aireadi.cfs / "factuals_test.json").read_text())
    ids = shared["window_ids"]
    df, spec = aireadi.load_cohort()
    rows = df.set_index(df[ID_COL].astype(str)).loc[ids]
    pred = dict(zip(ids, BlackBox.load(aireadi.model, spec).predict(rows), strict=True))
    first = [i for i in ids if pred[i] == 0][:2] + [i for i in ids if pred[i] == 1][:2]
    run_baselines(aireadi, ["nice"], n=4, cfg=FAST, progress=False)  # the slow methods' 4 (the demo's 40)
    assert [r.window_id for r in read_records(aireadi.cf_file("nice"))] == [i for i in ids if i in first]
    assert json.loads((aireadi.cfs / "factuals_test.json").read_text()) == shared  # the shared sample is kept
    with pytest.raises(ValueError, match="holds a different factual sample"):  # another seed: another sample
        run_baselines(aireadi, ["nice"], n=4, cfg=BaselineConfig(seed=1, cfnow_seconds=1), progress=False)


def test_train_split_records_go_to_their_own_folder(aireadi):
    run_baselines(aireadi, ["teacher"], split="train", n=4, cfg=FAST, progress=False)
    ids = json.loads((aireadi.cfs / "factuals_train.json").read_text())["window_ids"]
    df, _ = aireadi.load_cohort()
    assert set(ids) <= set(df[df.split == "train"][ID_COL])
    assert [r.window_id for r in read_records(aireadi.cfs / "train" / "teacher.jsonl")] == ids
    assert not aireadi.cf_file("teacher").exists()


def test_teacher_writes_several_distinct_cfs_per_factual_as_candidates(aireadi):
    cfg = BaselineConfig(seed=0, teacher_per_factual=3)
    run_baselines(aireadi, ["teacher"], split="train", n=6, cfg=cfg, progress=False)
    records = read_records(aireadi.cfs / "train" / "teacher.jsonl")
    ids = json.loads((aireadi.cfs / "factuals_train.json").read_text())["window_ids"]
    assert list(dict.fromkeys(r.window_id for r in records)) == ids
    for window_id in ids:
        mine = [r for r in records if r.window_id == window_id]
        assert 1 <= len(mine) <= 3 and [r.candidate for r in mine] == list(range(len(mine)))
        if mine[0].parse_status == "ok":
            assert all(r.valid for r in mine)
            assert len({tuple(sorted(r.cf.items())) for r in mine}) == len(mine)
    assert any(r.candidate > 0 for r in records)  # the tiny cohort has factuals with several


def test_expand_methods():
    assert expand_methods(["dice", "nice"], ["random", "genetic"]) == ["dice_random", "dice_genetic", "nice"]
    assert expand_methods(["teacher", "cfnow", "teacher"], ["random"]) == ["teacher", "cfnow"]
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        expand_methods(["lime"], ["random"])
    with pytest.raises(ValueError, match="--dice-method"):
        expand_methods(["dice"], ["kdtree"])


class _GlucoseRule:
    """A stand-in black box: class 1 when glucose is above 150."""

    def predict(self, X):
        return (pd.DataFrame(X)["glucose_mean"].astype(float) > 150).astype(int).to_numpy()


def test_choose_cf_takes_the_nearest_valid_candidate_after_rounding(aireadi):
    _, spec = aireadi.load_cohort()
    factual = {"awake_pct": 10.0, "light_pct": 55.0, "deep_pct": 20.0, "rem_pct": 15.0, "steps_mean": 5.0,
               "glucose_mean": 140.0, "hyper_events": 0, "tir_pct": 90.0, "age": 50, "sex": "male",
               "medication": "none", "study_group": "healthy"}
    near_but_invalid_once_rounded = {**factual, "glucose_mean": 150.04}  # 150.0 after rounding: class 0
    valid_far = {**factual, "glucose_mean": 170.0}
    valid_near = {**factual, "glucose_mean": 155.0}
    cf, pred, n_valid = choose_cf(spec, _GlucoseRule(), factual, 1, [near_but_invalid_once_rounded, valid_far,
                                                                    valid_near])
    assert (cf["glucose_mean"], pred, n_valid) == (155.0, 1, 2)
    # None valid: the nearest one, with its (invalid) prediction.
    cf, pred, n_valid = choose_cf(spec, _GlucoseRule(), factual, 1, [{**factual, "glucose_mean": 120.0},
                                                                    near_but_invalid_once_rounded])
    assert (cf["glucose_mean"], pred, n_valid) == (150.0, 0, 0)


def test_rounded_cf_uses_display_precision(aireadi):
    _, spec = aireadi.load_cohort()
    raw = {"awake_pct": 10.04, "light_pct": 55.06, "deep_pct": 20.0, "rem_pct": 15.0, "steps_mean": 5.126,
           "glucose_mean": np.float32(140.26), "hyper_events": 1.6, "tir_pct": 90.0, "age": 50.0, "sex": "male",
           "medication": "none", "study_group": "healthy"}
    cf = rounded_cf(spec, raw)
    assert (cf["awake_pct"], cf["light_pct"], cf["steps_mean"], cf["glucose_mean"]) == (10.0, 55.1, 5.13, 140.3)
    assert cf["hyper_events"] == 2 and isinstance(cf["hyper_events"], int) and cf["age"] == 50


def test_time_limit_interrupts_and_restores_an_outer_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        with pytest.raises(MethodTimeout):
            with time_limit(0.1):
                time.sleep(2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90 < left <= 100  # the outer timer is back, less the time spent
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_cli_help_and_run(aireadi, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runner = CliRunner()
    assert runner.invoke(baselines.app, ["--help"]).exit_code == 0
    result = runner.invoke(baselines.app, ["--run", str(aireadi.root), "--methods", "nice,teacher", "--n", "4",
                                           "--quiet"])
    assert result.exit_code == 0, result.output
    assert "nice: ok 4; 4 new, 0 already done" in result.output
    provenance = json.loads((aireadi.cfs / "baselines" / "provenance.json").read_text())
    assert provenance["config"]["methods"] == ["nice", "teacher"] and provenance["seed"] == 0
    assert list((aireadi.root / "wandb").glob("offline-run-*"))
    bad = runner.invoke(baselines.app, ["--run", str(aireadi.root), "--methods", "lime"])
    assert bad.exit_code != 0 and "unknown method 'lime'" in bad.output


def test_cfnow_import_attempts_no_download():
    """cfnow calls nltk.download('wordnet') at import when the corpus is absent (a network call)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import nltk\n"
        "def refuse(*a, **k): raise RuntimeError('network download attempted')\n"
        "nltk.download = refuse\n"
        "from eval.baseline_cfnow import _offline_nltk\n"
        "_offline_nltk()\n"
        "import cfnow\n"
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_one_library_call_writes_the_papers_first_cf_and_our_nearest_valid(aireadi, monkeypatch):
    """DiCE's paper row keeps the library's first CF (here the factual itself: it counts as
    invalid), our +best_of_k row the valid one nearest the factual; both from the same call."""
    df, spec = aireadi.load_cohort()
    blackbox = BlackBox.load(aireadi.model, spec)
    train = df[df[SPLIT_COL] == "train"]
    predicted = blackbox.predict(train)
    calls = []

    def candidates(factual, desired):
        """The factual, then training windows predicted `desired` with the factual's immutables."""
        windows = [native_values(spec, row) for (_, row), p in zip(train.iterrows(), predicted, strict=True)
                   if p == desired][:6]
        return [dict(factual)] + [{**w, **{f.name: factual[f.name] for f in spec.immutable}} for w in windows]

    class Scripted:
        def explain(self, factual, desired):
            calls.append(factual)
            return candidates(factual, desired)

    monkeypatch.setattr(baselines, "make_explainer", lambda *a, **k: Scripted())
    summary = run_baselines(aireadi, ["dice_random"], n=4, cfg=FAST, progress=False)
    assert len(calls) == 4  # one call per factual for both rows
    assert set(summary["methods"]) == {"dice_random", "dice_random+best_of_k"}
    assert summary["methods"]["dice_random"]["protocol"] == "paper"
    assert summary["methods"]["dice_random+best_of_k"]["protocol"] == "sensecf"
    first = {r.window_id: r for r in read_records(aireadi.cf_file("dice_random"))}
    best = {r.window_id: r for r in read_records(aireadi.cf_file("dice_random+best_of_k"))}
    assert set(first) == set(best) and len(first) == 4
    for wid, r in first.items():
        assert r.cf == rounded_cf(spec, r.factual) and not r.valid  # the library's first, as it came
        assert r.extra["pick"] == "first" and r.extra["candidates"] == 7
        b = best[wid]
        assert b.extra["pick"] == "nearest_valid" and b.protocol == "sensecf"
        expected, _, n_valid = choose_cf(spec, blackbox, r.factual, r.desired_class, candidates(r.factual,
                                                                                                r.desired_class))
        assert b.cf == expected and b.valid == (n_valid > 0)
    assert any(b.valid for b in best.values())
    # a re-run resumes both rows without calling the library again
    run_baselines(aireadi, ["dice_random"], n=4, cfg=FAST, progress=False)
    assert len(calls) == 4
