"""bf16 against fp32 fine-tuning on the CPU, same recipe, data and steps, side by side -> JSON.

    python -m benchmarks.bench_train_precision --run runs/demo [--steps 20] [--out runs/bench/train_precision.json]

Each precision trains `recipes/smollm2-cpu.yml` through launch.train (Axolotl) on a scratch copy of
RUN/sft/ (RUN/checkpoints/ is never touched), with `--set bf16=...`. Reported per precision: the loss
at every logged step, the training loop's runtime, tokens/s over all tokens (padding included) and
over trained (answer) tokens; then the largest loss difference between the two curves, absolute and
relative to fp32's, and bf16's speed-up. bf16 is measured only where the CPU computes it natively
(sensecf.precision.cpu_has_native_bf16); elsewhere the JSON says it was skipped.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from sensecf.atomic import write_json
from sensecf.precision import cpu_has_native_bf16
from sensecf.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2-cpu.yml"
PRECISIONS = {"fp32": "false", "bf16": "true"}  # name -> the recipe's bf16 (launch.train adds the CPU plugin)


def train(run: RunDir, scratch: Path, precision: str, steps: int) -> dict:
    """Fine-tune on a copy of RUN/sft/ at one precision; the launcher's train_summary.json."""
    target = RunDir(scratch / precision)
    if target.root.exists():
        shutil.rmtree(target.root)
    shutil.copytree(run.sft, target.sft)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    cmd = [sys.executable, "-m", "launch.train", str(RECIPE), "--run", str(target.root), "--max-steps", str(steps),
           "--set", f"bf16={PRECISIONS[precision]}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{precision} training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads((target.checkpoints / RECIPE.stem / "train_summary.json").read_text())
    return {k: summary.get(k) for k in ("losses", "train_runtime_seconds", "tokens", "tokens_per_second",
                                        "trainable_tokens_per_second", "wall_seconds")}


def compare(fp32: dict, bf16: dict) -> dict:
    """The largest per-step loss difference (absolute, and relative to fp32's loss) and the speed-up."""
    a, b = dict(map(tuple, fp32["losses"])), dict(map(tuple, bf16["losses"]))
    steps = sorted(set(a) & set(b))
    diffs = [abs(a[s] - b[s]) for s in steps]
    worst = max(range(len(steps)), key=diffs.__getitem__) if steps else None
    return {
        "steps_compared": len(steps),
        "mean_abs_loss_diff": sum(diffs) / len(diffs) if diffs else None,
        "max_abs_loss_diff": max(diffs) if diffs else None,
        "max_rel_loss_diff": max(d / a[s] for d, s in zip(diffs, steps, strict=True)) if diffs else None,
        "worst_step": steps[worst] if worst is not None else None,
        "final_loss": {"fp32": a[steps[-1]], "bf16": b[steps[-1]]} if steps else None,
        "speedup_all_tokens": (bf16["tokens_per_second"] / fp32["tokens_per_second"]
                               if bf16.get("tokens_per_second") and fp32.get("tokens_per_second") else None),
    }


def main(
    run: Path = typer.Option(Path("runs/demo"), help="run directory with sft/train.jsonl (make demo)"),
    steps: int = typer.Option(20, help="optimizer steps per precision (the demo's budget)"),
    scratch: Path = typer.Option(None, help="scratch folder (default RUN/bench/train_precision)"),
    out: Path = typer.Option(Path("runs/bench/train_precision.json"), help="JSON result"),
) -> None:
    """Fine-tune SmolLM2 in fp32 and in bf16 on the same pairs and steps; compare loss and speed."""
    run_dir = RunDir(run)
    if not (run_dir.sft / "train.jsonl").is_file():
        raise typer.BadParameter(f"{run_dir.sft / 'train.jsonl'}: no SFT pairs; run `make demo` first")
    scratch = scratch or run_dir.root / "bench" / "train_precision"
    native = cpu_has_native_bf16()
    result = {"cpu_native_bf16": native, "steps": steps, "recipe": str(RECIPE.relative_to(REPO)),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "load_average_start": os.getloadavg()}, "runs": {}}
    result["runs"]["fp32"] = train(run_dir, scratch, "fp32", steps)
    if native:
        result["runs"]["bf16"] = train(run_dir, scratch, "bf16", steps)
        result["comparison"] = compare(result["runs"]["fp32"], result["runs"]["bf16"])
    else:
        result["runs"]["bf16"] = {"skipped": "this CPU has no native bf16 (AVX512-BF16 / AMX)"}
    result["machine"]["load_average_end"] = os.getloadavg()
    write_json(out, result)
    typer.echo(json.dumps({k: result[k] for k in ("cpu_native_bf16", "comparison") if k in result}, indent=1))
    typer.echo(f"-> {out}")


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
