"""Shared fixtures: small cohorts written in the cohort contract (RUN/cohort/...).

`tiny_run` uses the AI-READI spec; `generic_run` a made-up non-AI-READI spec with a mutable
categorical feature, to prove the later stages depend on the spec alone.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
# Unit tests write no W&B runs (each would cost ~2 s); the W&B tests set WANDB_MODE=offline themselves,
# and the experiment recipes (paper-smoke) set it in their env.
os.environ["WANDB_MODE"] = "disabled"
AIREADI_SPEC = REPO / "dataset_builders" / "aireadi_spec.yaml"

GENERIC_SPEC = {
    "name": "toy-heart",
    "label": {"name": "disease", "classes": {0: "no disease", 1: "disease"}},
    "features": [
        {"name": "chol", "prompt_name": "Cholesterol", "kind": "continuous", "mutable": True, "decimals": 1},
        {"name": "bp", "prompt_name": "Blood pressure", "kind": "integer", "mutable": True},
        {"name": "smoker", "prompt_name": "Smoker", "kind": "categorical", "mutable": True,
         "categories": ["no", "yes"]},
        {"name": "age", "prompt_name": "Age", "kind": "integer", "mutable": False},
        {"name": "sex", "prompt_name": "Sex", "kind": "categorical", "mutable": False, "categories": ["f", "m"]},
    ],
}


def _aireadi_frame(rng: np.random.Generator, n_participants: int, windows_per: int) -> pd.DataFrame:
    spec = DatasetSpec.from_yaml(AIREADI_SPEC)
    groups = spec.feature("study_group").categories
    meds = ["none", "none", "oral_or_noninsulin_injectable", "insulin"]
    rows = []
    for p in range(n_participants):
        g = int(rng.integers(0, 4))
        age = int(rng.integers(40, 80))
        sex = str(rng.choice(["female", "male"]))
        for w in range(windows_per):
            stages = rng.dirichlet([2, 10, 3, 3]) * 100
            stages = np.round(stages, 1)
            stages[1] = round(100 - stages[0] - stages[2] - stages[3], 1)
            glucose = float(rng.normal(110 + 25 * g, 25))
            rows.append(
                {
                    ID_COL: f"{1000 + p}_{w:03d}",
                    GROUP_COL: str(1000 + p),
                    "awake_pct": stages[0],
                    "light_pct": stages[1],
                    "deep_pct": stages[2],
                    "rem_pct": stages[3],
                    "steps_mean": round(float(rng.gamma(2, 4)), 2),
                    "glucose_mean": round(glucose, 1),
                    "hyper_events": int(rng.poisson(max(glucose - 140, 0) / 40)),
                    "tir_pct": round(float(np.clip(100 - max(glucose - 120, 0) * 0.8 + rng.normal(0, 5), 0, 100)), 1),
                    "age": age,
                    "sex": sex,
                    "medication": meds[g],
                    "study_group": groups[g],
                }
            )
    df = pd.DataFrame(rows)
    z = (
        0.08 * (df.awake_pct - 10)
        - 0.15 * (df.deep_pct - 17)
        - 0.12 * (df.steps_mean - 8)
        + 0.03 * (df.glucose_mean - 130)
        + rng.normal(0, 0.8, len(df))
    )
    df["high_stress"] = (z > np.quantile(z, 0.7)).astype(int)
    return df


def _generic_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            ID_COL: [f"r{i:04d}" for i in range(n)],
            GROUP_COL: [f"r{i:04d}" for i in range(n)],
            "chol": np.round(rng.normal(200, 30, n), 1),
            "bp": rng.integers(100, 180, n),
            "smoker": rng.choice(["no", "yes"], n),
            "age": rng.integers(30, 80, n),
            "sex": rng.choice(["f", "m"], n),
        }
    )
    z = 0.03 * (df.chol - 200) + 0.04 * (df.bp - 140) + 1.2 * (df.smoker == "yes") + rng.normal(0, 0.7, n)
    df["disease"] = (z > 0.6).astype(int)
    return df


def write_cohort(run: RunDir, df: pd.DataFrame, spec: DatasetSpec, seed: int = 0) -> RunDir:
    """Split by participant 80/20 and write features.parquet, split.json, spec.yaml (with ranges)."""
    rng = np.random.default_rng(seed)
    pids = sorted(df[GROUP_COL].unique())
    test = set(rng.choice(pids, size=max(1, len(pids) // 5), replace=False))
    df = df.copy()
    df[SPLIT_COL] = np.where(df[GROUP_COL].isin(test), "test", "train")
    run.cohort.mkdir(parents=True, exist_ok=True)
    df.to_parquet(run.features, index=False)
    run.split.write_text(json.dumps({"train": [p for p in pids if p not in test], "test": sorted(test)}))
    spec.with_ranges(df[df[SPLIT_COL] == "train"]).to_yaml(run.spec)
    write_provenance(run.cohort, config={"fixture": True}, seed=seed, source={"synthetic": True, "fixture": True})
    return run


@pytest.fixture
def tiny_run(tmp_path) -> RunDir:
    """AI-READI-spec cohort: 30 participants x 20 windows, label with learnable structure."""
    rng = np.random.default_rng(7)
    return write_cohort(RunDir(tmp_path / "run"), _aireadi_frame(rng, 30, 20), DatasetSpec.from_yaml(AIREADI_SPEC))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-init Llama with SmolLM2's real tokenizer, saved as a transformers folder."""
    from test_hf_backend import tiny_llama

    from sensecf.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def trained_run(tiny_run) -> RunDir:
    """`tiny_run` with its classifier trained (seed 0)."""
    from eval.classifier import train_and_evaluate

    train_and_evaluate(tiny_run, seed=0)
    return tiny_run


@pytest.fixture
def generic_run(tmp_path) -> RunDir:
    """A non-AI-READI spec (toy heart disease) with a mutable categorical feature."""
    rng = np.random.default_rng(11)
    spec = DatasetSpec.model_validate(GENERIC_SPEC)
    return write_cohort(RunDir(tmp_path / "generic"), _generic_frame(rng, 400), spec)


# The fault suite's tally (tests/faults/): after the run, how many faults were tried and how
# each was judged, by its expected outcome (the prefix of the test id).
def pytest_terminal_summary(terminalreporter):
    tally: Counter = Counter()
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "tests/faults/" not in report.nodeid or report.when != "call" and outcome != "error":
                continue
            expect = report.nodeid.split("[", 1)[1].split(":", 1)[0] if "[" in report.nodeid else "other"
            tally[(expect, outcome)] += 1
    if not tally:
        return
    tried = sum(tally.values())
    handled = sum(v for (_, o), v in tally.items() if o == "passed")
    kinds = sorted({k for k, _ in tally})
    terminalreporter.write_sep("-", f"fault suite: {tried} faults tried, {handled} handled as expected")
    for kind in kinds:
        failed = tally[(kind, "failed")] + tally[(kind, "error")]
        terminalreporter.write_line(f"  {kind:8s} passed {tally[(kind, 'passed')]:3d}  failed {failed:3d}")
