"""A real CPU fine-tune: SFT pairs from a cohort -> `accelerate launch -m axolotl.cli.train`
with recipes/smollm2-cpu.yml on the embedded SmolLM2 -> a PEFT adapter whose loss went down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_builders.pairs import build_pairs
from sensecf.blackbox import BlackBox, build_pipeline
from sensecf.rundir import SPLIT_COL

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_lora_finetune_writes_an_adapter_and_lowers_the_loss(tiny_run):
    df, spec = tiny_run.load_cohort()
    train = df[df[SPLIT_COL] == "train"]
    BlackBox(build_pipeline(spec, seed=0).fit(train[spec.names], train[spec.label.name]), spec).save(tiny_run.model)
    summary = build_pairs(tiny_run, max_pairs=8, fewshot=2, val_fraction=0.0)
    assert summary["written"]["train"] == 8

    cmd = [
        sys.executable, "-m", "launch.train", "recipes/smollm2-cpu.yml", "--run", str(tiny_run.root),
        "--max-steps", "3", "--set", "gradient_accumulation_steps=1", "--set", "warmup_steps=0",
        "--wandb-mode", "disabled",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = tiny_run.checkpoints / "smollm2-cpu"
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").stat().st_size > 1_000_000  # r=16 on all linear layers
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    # The loss is read back from the trainer's own log history (checkpoint-3/trainer_state.json).
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    result = json.loads((out / "train_summary.json").read_text())
    assert result["global_step"] == 3 and result["loss_last"] == losses[-1] and result["loss_first"] == losses[0]
    assert result["tokens"]["trainable"] > 0
