"""Fine-tune with Axolotl on one run's SFT pairs: resolve a recipe, check it, launch it.

    python -m launch.train recipes/smollm2-cpu.yml --run runs/demo [--max-steps 20]
    python -m launch.train recipes/llama31.yml --run runs/exp1 --accelerate-config launch/accelerate/single_gpu.yaml
    python -m launch.train recipes/llama31.yml --run runs/exp1 \\
        --accelerate-config launch/accelerate/multi_gpu_zero2.yaml --deepspeed recipes/deepspeed/zero2.json
    python -m launch.train recipes/biomistral.yml --run runs/exp1 --set learning_rate=1e-4 --dry-run

Writes RUN/checkpoints/<recipe>/recipe.yml: the recipe with this run's paths (datasets ->
RUN/sft/{train,val}.jsonl, output_dir -> RUN/checkpoints/<recipe>, the embedded model's cache
folder expanded) and the overrides; checks it (launch.recipe_check); then runs
`accelerate launch [--config_file ...] -m axolotl.cli.train recipe.yml` with telemetry off and
the venv's bin/ on PATH. Afterwards RUN/checkpoints/<recipe>/train_summary.json holds the
loss curve's ends, steps, runtime and token throughput read from the trainer's state;
provenance.json records the resolved recipe and input hashes. W&B runs land in RUN/wandb/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml

from launch.recipe_check import RecipeError, check_recipe, load_recipe
from sensecf.atomic import write_json, write_text
from sensecf.cli import run_cli
from sensecf.precision import cpu_has_native_bf16
from sensecf.rundir import RunDir, write_provenance
from sensecf.wandb_log import log_numbers, stage_run

EMBEDDED_PREFIX = "~/.cache/sensecf/"  # recipes name the cache this way; $SENSECF_CACHE wins


def _expand_base_model(base_model: str) -> str:
    from sensecf.models import SMOLLM2_DIR, cache_dir, embedded_model_dir

    if not base_model.startswith(EMBEDDED_PREFIX):
        return os.path.expanduser(base_model)
    rel = base_model[len(EMBEDDED_PREFIX) :].rstrip("/")
    if rel == SMOLLM2_DIR:
        return str(embedded_model_dir())  # converts it first if the cache lacks it
    return str(cache_dir() / rel)


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _parse_sets(items: list[str]) -> dict:
    """--set key=value pairs; the value is read as YAML (1e-4, true, [a, b]). Only top-level keys:
    a dotted or indexed key would land in the recipe as an unknown key of that literal name."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"--set {item}: expects key=value, e.g. --set learning_rate=1e-4")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise RecipeError(f"--set {item}: '{key}' is not a top-level recipe key (nested keys such as "
                              "datasets[0].path cannot be set; edit the recipe)")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise RecipeError(f"--set {item}: the value is not valid YAML: {getattr(e, 'problem', e)}") from None
    return out


def resolve_recipe(
    recipe: dict,
    name: str,
    run: RunDir,
    *,
    max_steps: int | None = None,
    overrides: dict | None = None,
    deepspeed: Path | None = None,
    wandb_mode: str | None = None,
) -> tuple[dict, list[str]]:
    """The recipe with this run's paths and the overrides, and notes on what was changed."""
    cfg = yaml.safe_load(yaml.safe_dump(recipe))  # deep copy
    notes = []
    out_dir = run.checkpoints / name
    if not cfg.get("base_model"):
        raise RecipeError(f"{name}: base_model: missing; name the model to fine-tune (a hub id or a folder)")
    cfg["base_model"] = _expand_base_model(str(cfg["base_model"]))
    cfg["output_dir"] = str(out_dir)
    cfg["dataset_prepared_path"] = str(out_dir / "prepared")
    for key, file in (("datasets", "train.jsonl"), ("test_datasets", "val.jsonl")):
        for entry in cfg.get(key) or []:
            if Path(entry["path"]).parent.name == "sft":  # the recipes' runs/<name>/sft/ paths
                entry["path"] = str(run.sft / file)
    train_file = run.sft / "train.jsonl"
    if not _non_empty(train_file):
        raise RecipeError(f"{train_file}: no SFT pairs; run `python -m dataset_builders.pairs --run {run.root}`")
    if cfg.get("test_datasets") and not all(_non_empty(Path(e["path"])) for e in cfg["test_datasets"]):
        # Axolotl cannot evaluate on an empty file; train without evaluation rather than fail.
        cfg.pop("test_datasets")
        cfg.pop("eval_steps", None)
        notes.append(f"{run.sft / 'val.jsonl'} is empty: evaluation switched off")
    if max_steps is not None:
        cfg["max_steps"] = max_steps
        # Keep the last step a checkpoint so the adapter is written when the run stops.
        if cfg.get("save_steps") and cfg["save_steps"] > max_steps:
            cfg["save_steps"] = max_steps
        if cfg.get("eval_steps") and cfg["eval_steps"] > max_steps:
            cfg["eval_steps"] = max_steps
    if deepspeed is not None:
        cfg["deepspeed"] = str(deepspeed)
    if wandb_mode is not None:
        cfg["wandb_mode"] = wandb_mode
    cfg.update(overrides or {})
    if cfg.get("bf16") == "auto" and not _cuda_available():
        # Axolotl's "auto" looks for a bf16 GPU only; on a CPU with native bf16, bf16 autocast trained
        # SmolLM2 1.46x faster here (benchmarks/bench_train_precision.py)
        cfg["bf16"] = cpu_has_native_bf16()
        notes.append(f"bf16: auto on CPU -> {str(cfg['bf16']).lower()} "
                     f"({'AVX512-BF16 present' if cfg['bf16'] else 'no native bf16: fp32'})")
    if cfg.get("bf16") is True and not _cuda_available() and CPU_PLUGIN not in (cfg.get("plugins") or []):
        cfg["plugins"] = [*(cfg.get("plugins") or []), CPU_PLUGIN]  # TrainingArguments(use_cpu=True)
    return cfg, notes


CPU_PLUGIN = "launch.axolotl_cpu.CPUTrainingPlugin"  # bf16 on a CPU needs use_cpu (launch/axolotl_cpu.py)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_command(resolved: Path, accelerate_config: Path | None) -> list[str]:
    accelerate = shutil.which("accelerate", path=_path_with_venv())
    if accelerate is None:
        raise RecipeError("`accelerate` not found on PATH or next to this Python")
    cmd = [accelerate, "launch"]
    if accelerate_config is not None:
        cmd += ["--config_file", str(accelerate_config)]
    elif not _cuda_available():
        cmd += ["--cpu", "--num_processes", "1"]
    return [*cmd, "-m", "axolotl.cli.train", str(resolved)]


def _path_with_venv() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


AXOLOTL_JOB_TYPE = "axolotl"


def training_env(cfg: dict, run: RunDir) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = _path_with_venv()  # axolotl spawns `accelerate` by name
    env["AXOLOTL_DO_NOT_TRACK"] = "1"  # telemetry otherwise blocks ~10 s offline
    env.setdefault("WANDB_DIR", str(run.root))
    env.setdefault("WANDB_MODE", "offline")  # the recipes leave the mode to the environment
    # Axolotl's own run (loss curves, system metrics) joins the experiment's group beside the stage's
    env.setdefault("WANDB_RUN_GROUP", run.root.resolve().name)
    env.setdefault("WANDB_JOB_TYPE", AXOLOTL_JOB_TYPE)
    # W&B would upload the console (Axolotl prints sample rows and paths); aggregates only.
    env.setdefault("WANDB_CONSOLE", "off")
    if Path(cfg["base_model"]).is_dir():  # local weights: never wait on the hub
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
    return env


def _last_checkpoint(out_dir: Path) -> Path | None:
    found = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def _train_runtime(debug_log: Path) -> float | None:
    """The trainer's final `train_runtime` (seconds of the training loop), from Axolotl's debug.log."""
    if not debug_log.is_file():
        return None
    found = re.findall(r"'train_runtime': '([0-9.]+)'", debug_log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def training_summary(out_dir: Path, wall_seconds: float | None = None) -> dict:
    """Loss at the first and last logged step, eval losses, tokens and throughput, adapter size,
    read from the last checkpoint's trainer_state.json (Axolotl writes no final state file);
    tokens/s = tokens processed (padding included) / the training loop's runtime."""
    checkpoint = _last_checkpoint(out_dir)
    if checkpoint is None:
        return {"error": f"no checkpoint-*/trainer_state.json under {out_dir}"}
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    history = state.get("log_history", [])
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    summary = {
        "checkpoint": checkpoint.name,
        "global_step": state.get("global_step"),
        "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None,
        "losses": losses,
        "eval_losses": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h],
        "wall_seconds": wall_seconds,
    }
    tokens_file = checkpoint / "tokens_state.json"
    runtime = _train_runtime(out_dir / "debug.log")
    if tokens_file.is_file():
        tokens = json.loads(tokens_file.read_text())  # {"total": incl. padding, "trainable": unmasked}
        summary["tokens"] = tokens
        if runtime:
            summary["train_runtime_seconds"] = runtime
            summary["tokens_per_second"] = round(tokens["total"] / runtime, 1)
            summary["trainable_tokens_per_second"] = round(tokens["trainable"] / runtime, 1)
    adapter = out_dir / "adapter_model.safetensors"
    if adapter.is_file():
        summary["adapter_bytes"] = adapter.stat().st_size
    return summary


def main(
    recipe: Path = typer.Argument(..., help="Axolotl recipe, e.g. recipes/smollm2-cpu.yml"),
    run: Path = typer.Option(..., "--run", help="run directory holding sft/train.jsonl (and val.jsonl)"),
    max_steps: int = typer.Option(None, help="stop after this many optimizer steps"),
    set_: list[str] = typer.Option([], "--set", help="override a recipe key: --set learning_rate=1e-4 (repeatable)"),
    accelerate_config: Path = typer.Option(None, help="accelerate config, e.g. launch/accelerate/single_gpu.yaml"),
    deepspeed: Path = typer.Option(None, help="DeepSpeed JSON, e.g. recipes/deepspeed/zero2.json"),
    wandb_mode: str = typer.Option(None, help="offline, online or disabled (default: WANDB_MODE, else offline)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="write and check recipe.yml, print the command, stop"),
) -> None:
    """Resolve RECIPE for RUN, check it with Axolotl's schema, and train with accelerate + Axolotl."""
    run_dir = RunDir(run)
    name = recipe.stem
    out_dir = run_dir.checkpoints / name
    # A RecipeError (bad recipe, --set or run) ends in one `error:` line, exit code 2 (run_cli).
    cfg, notes = resolve_recipe(
        load_recipe(recipe),
        name,
        run_dir,
        max_steps=max_steps,
        overrides=_parse_sets(set_),
        deepspeed=deepspeed,
        wandb_mode=wandb_mode,
    )
    check_recipe(cfg, f"{recipe} (resolved for {run_dir.root})")
    for note in notes:
        typer.echo(f"note: {note}")
    resolved = out_dir / "recipe.yml"
    write_text(resolved, yaml.safe_dump(cfg, sort_keys=False))
    cmd = launch_command(resolved, accelerate_config)
    typer.echo(f"recipe: {resolved}\n$ {' '.join(cmd)}")
    write_provenance(
        out_dir,
        config={"recipe": str(recipe), "resolved": cfg, "command": cmd, "notes": notes},
        inputs=[recipe, run_dir.sft / "train.jsonl", run_dir.sft / "val.jsonl"],
        seed=cfg.get("seed"),
    )
    if dry_run:
        return
    with stage_run(run_dir, "finetune", inputs=[run_dir.sft / "train.jsonl"], outputs=[out_dir],
                   mode=wandb_mode) as wb:
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=training_env(cfg, run_dir))
        if proc.returncode != 0:
            typer.echo(f"error: training exited with {proc.returncode}", err=True)
            raise typer.Exit(proc.returncode)
        summary = training_summary(out_dir, wall_seconds=round(time.perf_counter() - started, 1))
        write_json(out_dir / "train_summary.json", summary)
        for step, loss in summary.get("losses", []):  # the loss curve, also when Axolotl's own run is off
            wb.log({"train/loss": loss}, step=step)
        log_numbers(wb, summary)
    typer.echo(
        f"adapter: {out_dir}  steps {summary.get('global_step')}  "
        f"loss {summary.get('loss_first')} -> {summary.get('loss_last')}"
    )


if __name__ == "__main__":
    run_cli(main)
