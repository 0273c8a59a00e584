"""paper-smoke.yml: paper.yml's stages on CPU stand-ins, checked to differ only there, and run end to end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from launch.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
PAPER = load_experiment(REPO / "recipes" / "experiments" / "paper.yml")
SMOKE = load_experiment(REPO / "recipes" / "experiments" / "paper-smoke.yml")
SMOKE_ONLY_STAGES = ["release", "tiny_llama31", "tiny_biomistral"]
# Options whose values are stand-ins (data, models, device, sizes); everything else must be equal.
STAND_IN_VALUES = {"--root", "--demographics", "--n", "--cfnow-seconds", "--device", "--batch-size", "--model",
                   "--adapter", "--seeds", "--jobs"}
SMOKE_ONLY_OPTIONS = {"--max-steps", "--max-new-tokens", "--max-pairs"}
PAPER_ONLY_OPTIONS = {"--accelerate-config"}  # a GPU launch config; launch.train picks --cpu without one
CPU_SETS = {"adapter", "load_in_4bit", "fp16", "bf16", "attn_implementation", "gradient_checkpointing", "optimizer",
            "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel", "micro_batch_size",
            "gradient_accumulation_steps"}
PAPER_ROWS_III = ["dice_random", "dice_genetic", "cfnow", "nice", "gpt4o_zs", "gpt4o_fs", "biomistral_zs", "llama31_zs",
                  "biomistral_ft", "llama31_ft"]
PAPER_SOURCES_IV = ["biomistral_zs", "llama31_zs", "gpt4o_zs", "biomistral_ft", "llama31_ft"]


def parsed(cmd: str) -> tuple[list[str], dict[str, list[str]]]:
    """(module and positional words, {option: [values]}); a flag's value is ''."""
    words = shlex.split(cmd)
    words = words[words.index("-m") :]
    positional, options, i = [], {}, 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            takes_value = i + 1 < len(words) and not words[i + 1].startswith("--")
            options.setdefault(word, []).append(words[i + 1] if takes_value else "")
            i += 2 if takes_value else 1
        else:
            positional.append(word)
            i += 1
    return positional, options


def test_smoke_is_paper_yml_with_stand_ins_only():
    paper = {s.name: s for s in PAPER.stages}
    smoke_names = [s.name for s in SMOKE.stages]
    assert smoke_names == SMOKE_ONLY_STAGES + list(paper)  # every stage, in the same order
    for stage in SMOKE.stages[len(SMOKE_ONLY_STAGES):]:
        (p_pos, p_opt), (s_pos, s_opt) = parsed(paper[stage.name].cmd), parsed(stage.cmd)
        assert p_pos == s_pos, stage.name
        assert stage.outputs == paper[stage.name].outputs, stage.name
        for option in set(p_opt) | set(s_opt):
            if option in SMOKE_ONLY_OPTIONS:
                assert option not in p_opt, (stage.name, option)
            elif option in PAPER_ONLY_OPTIONS:
                assert option not in s_opt, (stage.name, option)
            elif option == "--set":  # the same keys, plus the CPU ones
                p_keys = {v.split("=")[0] for v in p_opt[option]}
                s_keys = {v.split("=")[0] for v in s_opt.get(option, [])}
                assert p_keys <= s_keys and s_keys - p_keys <= CPU_SETS, (stage.name, s_keys - p_keys)
            elif option in STAND_IN_VALUES:
                assert len(p_opt.get(option, [])) == len(s_opt.get(option, [])), (stage.name, option)
            else:
                assert p_opt.get(option) == s_opt.get(option), (stage.name, option)


@pytest.mark.slow
def test_paper_smoke_runs_every_stage_and_row(tmp_path):
    from test_openai_backend import FakeEndpoint

    endpoint = FakeEndpoint()  # the loopback stand-in for GPT-4o: the block, or the JSON it is asked for
    run = tmp_path / "paper-smoke"
    env = {**os.environ, "OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": "sk-smoke",
           "OPENAI_ALLOWED_HOST": "api.openai.com", "WANDB_SILENT": "true"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "launch.experiment", str(REPO / "recipes/experiments/paper-smoke.yml"),
             "--run", str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
        )
    finally:
        endpoint.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == [s.name for s in SMOKE.stages] and not any(s["skipped"] for s in stages)
    print("\npaper-smoke wall time per stage (s):", {s["stage"]: s["seconds"] for s in stages})

    table3 = pd.read_csv(run / "eval" / "table3.csv").set_index("method")
    for row in PAPER_ROWS_III:
        assert table3.loc[row, "protocol"] == "paper", row
    ours = ["dice_random+best_of_k", "cfnow+best_of_k", "llama31_ft+grammar", "biomistral_zs+grammar",
            "gpt4o_fs+grammar", "llama31_ft_sampled+grammar+verified", "teacher"]
    for row in ours:
        assert table3.loc[row, "protocol"] == "sensecf", row
    md = (run / "eval" / "table3.md").read_text()
    assert "| llama31_ft | paper |" in md and "| llama31_ft+grammar | sensecf |" in md
    assert (run / "eval" / "fig8.png").read_bytes()[:4] == b"\x89PNG"  # llama31_zs vs llama31_ft among its panels
    intervention = (run / "eval" / "intervention.md").read_text()  # Table II from the fine-tuned Llama row
    assert ("Method: **llama31_ft**, the row asked for" in intervention
            or "llama31_ft produced no valid CF" in intervention)

    table4 = pd.read_csv(run / "augment" / "table4.csv")
    sources = set(table4.loc[table4["row"].str.startswith("CF added"), "method"])
    assert set(PAPER_SOURCES_IV) <= sources and "llama31_ft+grammar" in sources

    # W&B: a run per stage in one group, Axolotl's runs beside them, lineage cohort -> ... -> tables
    from test_wandb_lineage import assert_experiment_lineage

    edges = assert_experiment_lineage(run, [s.name for s in SMOKE.stages],
                                      stand_ins=("tiny_llama31", "tiny_biomistral"))
    print(f"W&B lineage: {len(edges)} (producer, artifact, consumer) edges")

    report = (run / "report.md").read_text()
    assert "## Paper's claims" in report and "needs AI-READI + 8B weights" in report
    assert "tiny random-init stand-ins" in report and "**meaningless**" in report
