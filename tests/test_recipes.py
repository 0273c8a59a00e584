"""Axolotl recipes: Axolotl's own validation, known keys only, Table I values, real-tokenizer
masking, CPU safety; the launchers' resolution of a run's paths; DeepSpeed and accelerate configs.

The GPU recipes name hub models that are not reachable here. Axolotl's `validate_config` needs
no model; for `normalize_config` and the tokenizer/masking check the base model is replaced by
a local folder holding the REAL tokenizer (Llama-3.1 / Mistral v1) and a tiny model config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dataset_builders.pairs import MAX_TOKENS
from launch.recipe_check import RecipeError, check_recipe, load_recipe, unknown_keys
from launch.train import main as train_main
from launch.train import resolve_recipe
from prompts.render import training_messages
from sensecf.models import _tokenizer_dir, embedded_model_dir
from sensecf.rundir import RunDir
from sensecf.spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
RECIPES = {name: REPO / "recipes" / f"{name}.yml" for name in ("llama31", "biomistral", "smollm2-cpu")}
SPEC = DatasetSpec.from_yaml(REPO / "dataset_builders" / "aireadi_spec.yaml")
FACTUAL = {
    "awake_pct": 14.8, "light_pct": 45.4, "deep_pct": 30.4, "rem_pct": 9.4, "steps_mean": 6.88,
    "glucose_mean": 169.4, "hyper_events": 2, "tir_pct": 54.2, "age": 65, "sex": "male",
    "medication": "insulin", "study_group": "insulin_dependent",
}  # fmt: skip
CF = {**FACTUAL, "awake_pct": 9.8, "deep_pct": 35.4}

# Table I, key by key (batch size 4, effective 16 with GA=4; eval every 50, checkpoint every 100).
TABLE_I = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.03,
    "num_epochs": 2,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "learning_rate": 2e-4,
    "fp16": True,
    "eval_steps": 50,
    "save_steps": 100,
}


@pytest.fixture(scope="module", autouse=True)
def offline():
    saved = {k: os.environ.get(k) for k in ("AXOLOTL_DO_NOT_TRACK", "HF_HUB_OFFLINE")}
    os.environ.update({"AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_passes_axolotl_validation_and_known_keys(name):
    recipe = load_recipe(RECIPES[name])
    assert unknown_keys(recipe) == []
    validated = check_recipe(recipe, name)
    assert validated["datasets"][0]["type"] == "chat_template"
    assert validated["datasets"][0]["roles_to_train"] == ["assistant"]


def test_misspelled_keys_are_caught_at_every_level():
    recipe = load_recipe(RECIPES["biomistral"])
    recipe["lora_rank"] = 8  # Axolotl itself would silently drop it and train with the default
    recipe["datasets"][0]["roles_to_trian"] = ["assistant"]
    recipe["special_tokens"]["pad_tokn"] = "</s>"
    assert sorted(unknown_keys(recipe)) == ["datasets[0].roles_to_trian", "lora_rank", "special_tokens.pad_tokn"]
    with pytest.raises(RecipeError, match="keys Axolotl does not know"):
        check_recipe(recipe, "typo")


def test_aliases_are_known_keys():
    # `model_type` is Axolotl's alias of `type_of_model`.
    assert unknown_keys({"model_type": "AutoModelForCausalLM", "type_of_model": "x"}) == []


def test_axolotl_rejections_become_recipe_errors():
    recipe = load_recipe(RECIPES["llama31"])
    recipe["load_in_4bit"] = False  # qlora needs 4-bit
    with pytest.raises(RecipeError, match="Axolotl rejects it"):
        check_recipe(recipe, "llama31")


@pytest.mark.parametrize("name", ["llama31", "biomistral"])
def test_gpu_recipes_carry_table_i(name):
    recipe = load_recipe(RECIPES[name])
    for key, value in TABLE_I.items():
        assert recipe[key] == value, key
    assert recipe["micro_batch_size"] * recipe["gradient_accumulation_steps"] == 16
    assert recipe["bf16"] is False
    assert recipe["lora_target_linear"] is True
    assert recipe["attn_implementation"] == "flash_attention_2"
    assert recipe["sample_packing"] is True
    # the user's WANDB_MODE decides (Axolotl would export a recipe's wandb_mode over it)
    assert "wandb_mode" not in recipe and recipe["wandb_project"] == "sensecf"
    # Table I says 512; Fig. 4 verbatim does not fit it (see the next test)
    assert recipe["sequence_len"] == MAX_TOKENS == 768
    validated = check_recipe(recipe, name)
    for key, value in TABLE_I.items():
        assert validated[key] == value, key


def test_quantisation_llama_nf4_biomistral_none():
    llama, bio = load_recipe(RECIPES["llama31"]), load_recipe(RECIPES["biomistral"])
    assert llama["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    # Axolotl hard-codes NF4 + double quant for qlora + load_in_4bit; nothing may override it.
    assert (llama["adapter"], llama["load_in_4bit"], llama["load_in_8bit"]) == ("qlora", True, False)
    assert "bnb_config_kwargs" not in llama
    assert bio["base_model"] == "BioMistral/BioMistral-7B"
    assert (bio["adapter"], bio["load_in_4bit"], bio["load_in_8bit"]) == ("lora", False, False)
    assert (llama["chat_template"], bio["chat_template"]) == ("llama3", "mistral_v1")


def test_cpu_recipe_is_cpu_safe():
    cpu = load_recipe(RECIPES["smollm2-cpu"])
    for kernel in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel"):
        assert cpu[kernel] is False, kernel  # CUDA/Triton kernels auto-enable otherwise
    assert (cpu["bf16"], cpu["fp16"], cpu["attn_implementation"]) == ("auto", False, "sdpa")  # see launch.train
    assert cpu["sample_packing"] is True and cpu["max_steps"] <= 50
    assert cpu["base_model"] == "~/.cache/sensecf/smollm2-135m-instruct"
    assert cpu["adapter"] == "lora" and not cpu["load_in_4bit"]


def _local_base(tmp_path: Path, tokenizer: str, config_cls) -> Path:
    """A folder with the real tokenizer and a tiny model config (enough for normalize_config)."""
    from transformers import AutoTokenizer

    base = tmp_path / tokenizer
    shutil.copytree(_tokenizer_dir(tokenizer), base)
    vocab = len(AutoTokenizer.from_pretrained(base))
    config_cls(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    ).save_pretrained(base)  # fmt: skip
    return base


def _tokenized_example(recipe: dict, tmp_path: Path):
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.prompt_strategies.chat_template import StrategyLoader
    from axolotl.utils.config import normalize_cfg_datasets, normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    row = {"messages": training_messages(SPEC, FACTUAL, 0, CF)}
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(row) + "\n")
    recipe["datasets"][0]["path"] = str(data)
    recipe.pop("test_datasets", None)
    recipe.pop("eval_steps", None)  # Axolotl refuses eval_steps without an eval set
    recipe["output_dir"] = str(tmp_path / "out")
    cfg = validate_config(DictDefault(recipe))
    normalize_config(cfg)
    normalize_cfg_datasets(cfg)
    tokenizer = load_tokenizer(cfg)
    out = StrategyLoader()(tokenizer, cfg, cfg.datasets[0]).tokenize_prompt(row)
    trained = [t for t, label in zip(out["input_ids"], out["labels"], strict=True) if label != -100]
    return cfg, tokenizer, out["input_ids"], trained


@pytest.mark.parametrize(
    ("name", "tokenizer", "config", "end", "start"),
    [
        ("llama31", "llama3_1", "LlamaConfig", "<|eot_id|>", "<|begin_of_text|><|start_header_id|>system"),
        ("biomistral", "mistral_v1", "MistralConfig", "</s>", "<s>  [INST] You are an expert"),
    ],
)
def test_gpu_recipe_trains_only_the_cf_block_with_the_real_tokenizer(tmp_path, name, tokenizer, config, end, start):
    import transformers

    recipe = load_recipe(RECIPES[name])
    recipe["base_model"] = str(_local_base(tmp_path, tokenizer, getattr(transformers, config)))
    cfg, tok, ids, trained = _tokenized_example(recipe, tmp_path)
    assert cfg.batch_size == 16  # 4 x GA 4
    assert tok.decode(trained) == f"{CF_BLOCK}{end}"
    assert tok.decode(ids).startswith(start)
    assert len(ids) <= 768  # longer subgroup names take Fig. 4 past Table I's 512 (pairs summary)


@pytest.mark.parametrize("name", ["llama31", "biomistral"])
def test_headline_command_trains_on_runs_paper(name):
    """`accelerate launch -m axolotl.cli.train recipes/NAME.yml` as written reads runs/paper/sft
    and writes runs/paper/checkpoints/NAME (paths relative to the repository root)."""
    recipe = load_recipe(RECIPES[name])
    assert [d["path"] for d in recipe["datasets"]] == ["runs/paper/sft/train.jsonl"]
    assert [d["path"] for d in recipe["test_datasets"]] == ["runs/paper/sft/val.jsonl"]
    assert recipe["output_dir"] == f"runs/paper/checkpoints/{name}"
    assert recipe["dataset_prepared_path"] == f"runs/paper/checkpoints/{name}/prepared"

@pytest.mark.parametrize("name", ["llama31", "biomistral"])
def test_launch_train_retargets_the_gpu_recipes_at_any_run(name, tmp_path):
    run = RunDir(tmp_path / "other")
    run.sft.mkdir(parents=True)
    (run.sft / "train.jsonl").write_text("{}\n")
    (run.sft / "val.jsonl").write_text("{}\n")
    cfg, _ = resolve_recipe(load_recipe(RECIPES[name]), name, run)
    assert cfg["datasets"][0]["path"] == str(run.sft / "train.jsonl")
    assert cfg["test_datasets"][0]["path"] == str(run.sft / "val.jsonl")
    assert cfg["output_dir"] == str(run.checkpoints / name)


def test_cpu_recipe_trains_only_the_cf_block_with_the_embedded_model(tmp_path):
    recipe = load_recipe(RECIPES["smollm2-cpu"])
    recipe["base_model"] = str(embedded_model_dir())
    cfg, tok, ids, trained = _tokenized_example(recipe, tmp_path)
    assert cfg.device == "cpu" and cfg.fp16 is False and cfg.bf16 is False
    assert tok.decode(trained) == f"{CF_BLOCK}<|im_end|>"
    assert tok.decode(ids).startswith("<|im_start|>system\nYou are an expert")


CF_BLOCK = (
    "<new>\n- Modified Awake (%): 9.8\n- Modified Light sleep (%): 45.4\n- Modified Deep sleep (%): 35.4\n"
    "- Modified REM sleep (%): 9.4\n- Modified Avg steps: 6.88\n- Modified Avg CGM (mg/dL): 169.4\n"
    "- Modified Hyperglycemia events: 2\n- Modified TIR (%): 54.2\n- Modified Age: 65\n- Modified Sex: male\n"
    "- Modified Medication: insulin\n- Modified Patient subgroup: insulin_dependent\n</new>"
)


@pytest.mark.parametrize(("stage", "file"), [(1, "zero1.json"), (2, "zero2.json"), (3, "zero3.json")])
def test_deepspeed_configs(stage, file):
    cfg = json.loads((REPO / "recipes" / "deepspeed" / file).read_text())
    assert cfg["zero_optimization"]["stage"] == stage
    # "auto" lets the HF trainer fill batch sizes and precision from the recipe.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert cfg[key] == "auto"
    assert cfg["fp16"]["enabled"] == "auto" and cfg["bf16"]["enabled"] == "auto"


def test_recipe_accepts_a_deepspeed_json():
    recipe = load_recipe(RECIPES["biomistral"])
    recipe["deepspeed"] = str(REPO / "recipes" / "deepspeed" / "zero2.json")
    assert check_recipe(recipe, "biomistral+zero2")["deepspeed"].endswith("zero2.json")


@pytest.mark.parametrize(
    ("file", "kind", "processes", "machines"),
    [("single_gpu", "NO", 1, 1), ("multi_gpu_zero2", "MULTI_GPU", 4, 1), ("multi_node", "MULTI_GPU", 16, 2)],
)
def test_accelerate_configs_load(file, kind, processes, machines):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "launch" / "accelerate" / f"{file}.yaml"))
    assert (cfg.distributed_type.value, cfg.num_processes, cfg.num_machines) == (kind, processes, machines)


# --- launch.train: resolving a recipe for a run ---------------------------------------------
def _run_with_sft(tmp_path: Path, val: str = '{"messages": []}\n') -> RunDir:
    run = RunDir(tmp_path / "exp")
    run.sft.mkdir(parents=True)
    (run.sft / "train.jsonl").write_text('{"messages": []}\n')
    (run.sft / "val.jsonl").write_text(val)
    return run


def test_resolve_points_the_recipe_at_the_run(tmp_path):
    run = _run_with_sft(tmp_path)
    cfg, notes = resolve_recipe(load_recipe(RECIPES["llama31"]), "llama31", run, overrides={"learning_rate": 1e-4})
    assert cfg["datasets"][0]["path"] == str(run.sft / "train.jsonl")
    assert cfg["test_datasets"][0]["path"] == str(run.sft / "val.jsonl")
    assert cfg["output_dir"] == str(run.checkpoints / "llama31")
    assert cfg["dataset_prepared_path"] == str(run.checkpoints / "llama31" / "prepared")
    assert cfg["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert cfg["learning_rate"] == 1e-4 and cfg["lora_r"] == 16
    assert notes == []


def test_resolve_expands_the_embedded_model_and_clamps_steps(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SENSECF_CACHE", str(cache))
    folder = cache / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / "sensecf_setup.json").write_text("{}")  # marks the conversion done
    cfg, _ = resolve_recipe(load_recipe(RECIPES["smollm2-cpu"]), "smollm2-cpu", _run_with_sft(tmp_path), max_steps=3)
    assert cfg["base_model"] == str(folder)
    assert cfg["max_steps"] == 3 and cfg["save_steps"] == 3  # the last step leaves an adapter


def test_resolve_drops_evaluation_on_an_empty_val_file(tmp_path):
    run = _run_with_sft(tmp_path, val="")
    cfg, notes = resolve_recipe(load_recipe(RECIPES["biomistral"]), "biomistral", run)
    assert "test_datasets" not in cfg and "eval_steps" not in cfg
    assert notes == [f"{run.sft / 'val.jsonl'} is empty: evaluation switched off"]


def test_resolve_requires_sft_pairs(tmp_path):
    with pytest.raises(RecipeError, match="no SFT pairs; run `python -m dataset_builders.pairs"):
        resolve_recipe(load_recipe(RECIPES["llama31"]), "llama31", RunDir(tmp_path / "empty"))


def test_dry_run_writes_a_valid_resolved_recipe_and_provenance(tmp_path):
    run = _run_with_sft(tmp_path)
    args = [str(RECIPES["biomistral"]), "--run", str(run.root), "--max-steps", "7", "--dry-run",
            "--deepspeed", str(REPO / "recipes" / "deepspeed" / "zero2.json"),
            "--accelerate-config", str(REPO / "launch" / "accelerate" / "multi_gpu_zero2.yaml")]  # fmt: skip
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    out = run.checkpoints / "biomistral"
    resolved = yaml.safe_load((out / "recipe.yml").read_text())
    assert resolved["max_steps"] == 7 and resolved["save_steps"] == 7 and resolved["eval_steps"] == 7
    assert resolved["deepspeed"].endswith("zero2.json")
    assert unknown_keys(resolved) == []
    assert "--config_file" in result.output and "-m axolotl.cli.train" in result.output
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config"]["resolved"]["max_steps"] == 7


def test_dry_run_rejects_a_misspelled_override(tmp_path):
    run = _run_with_sft(tmp_path)
    result = CliRunner().invoke(
        _cli(), [str(RECIPES["llama31"]), "--run", str(run.root), "--set", "lora_rnk=8", "--dry-run"]
    )
    # RecipeError reaches the CLI's error boundary (sensecf.cli.run_cli: one line, exit code 2).
    assert isinstance(result.exception, RecipeError)
    assert "keys Axolotl does not know" in str(result.exception) and "lora_rnk" in str(result.exception)
    assert not (run.checkpoints / "llama31" / "recipe.yml").exists()


def _cli():
    import typer

    app = typer.Typer()
    app.command()(train_main)
    return app


# --- shell launchers ------------------------------------------------------------------------
def test_train_sh_runs_plain_accelerate_with_the_embedded_model(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "accelerate").write_text('#!/usr/bin/env bash\necho "DNT=$AXOLOTL_DO_NOT_TRACK accelerate $*"\n')
    (fake_bin / "accelerate").chmod(0o755)
    cache = tmp_path / "cache"
    (cache / "smollm2-135m-instruct").mkdir(parents=True)
    (cache / "smollm2-135m-instruct" / "config.json").write_text("{}")
    env = {**os.environ, "VENV_BIN": str(fake_bin), "SENSECF_CACHE": str(cache), "ACCELERATE_CONFIG": "x.yaml"}
    out = subprocess.run(
        ["bash", "launch/train.sh", "recipes/smollm2-cpu.yml", "--max_steps=2"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out == (
        "DNT=1 accelerate launch --config_file x.yaml -m axolotl.cli.train recipes/smollm2-cpu.yml "
        f"--base_model={cache}/smollm2-135m-instruct --max_steps=2"
    )


def test_train_sh_leaves_hub_models_alone(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "accelerate").write_text('#!/usr/bin/env bash\necho "accelerate $*"\n')
    (fake_bin / "accelerate").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_CONFIG"} | {"VENV_BIN": str(fake_bin)}
    out = subprocess.run(
        ["bash", "launch/train.sh", "recipes/llama31.yml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "accelerate launch -m axolotl.cli.train recipes/llama31.yml"


def test_merge_lora_sh_needs_a_trained_checkpoint(tmp_path):
    proc = subprocess.run(["bash", "launch/merge_lora.sh", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "needs recipe.yml and adapter_config.json" in proc.stderr


def test_training_env_keeps_the_console_and_telemetry_at_home(tmp_path, monkeypatch):
    """W&B must not upload Axolotl's console (it prints sample rows); telemetry stays off."""
    from launch.train import training_env
    from sensecf.rundir import RunDir

    monkeypatch.delenv("WANDB_CONSOLE", raising=False)
    env = training_env({"base_model": "/models/x"}, RunDir(tmp_path))
    assert env["WANDB_CONSOLE"] == "off" and env["AXOLOTL_DO_NOT_TRACK"] == "1"
    assert env["WANDB_DIR"] == str(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert training_env({"base_model": "/models/x"}, RunDir(tmp_path))["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's choice wins
    assert training_env({"base_model": "/models/x"}, RunDir(tmp_path))["WANDB_MODE"] == "online"


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_on_a_cpu_follows_native_bf16_and_says_so(tmp_path, monkeypatch, native):
    import launch.train as train

    monkeypatch.setattr(train, "_cuda_available", lambda: False)
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    run = _run_with_sft(tmp_path)
    cfg, notes = resolve_recipe(load_recipe(RECIPES["smollm2-cpu"]), "smollm2-cpu", run, overrides={"bf16": "auto"})
    assert cfg["bf16"] is native
    assert cfg.get("plugins", []) == (["launch.axolotl_cpu.CPUTrainingPlugin"] if native else [])  # use_cpu
    assert notes[-1] == ("bf16: auto on CPU -> true (AVX512-BF16 present)" if native
                         else "bf16: auto on CPU -> false (no native bf16: fp32)")
    monkeypatch.setattr(train, "_cuda_available", lambda: True)  # a GPU: Axolotl resolves "auto" itself
    cfg, notes = resolve_recipe(load_recipe(RECIPES["smollm2-cpu"]), "smollm2-cpu", run, overrides={"bf16": "auto"})
    assert cfg["bf16"] == "auto" and not any(n.startswith("bf16") for n in notes)


def test_native_bf16_probe_agrees_with_the_kernels_cpu_flags():
    from sensecf.precision import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_native_bf16() is bool(flags & {"avx512_bf16", "amx_bf16"})
