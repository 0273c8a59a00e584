"""The fine-tune's learning curve: validity against examples seen, both protocols -> JSON + figure.

    python -m benchmarks.bench_finetune --run runs/demo [--examples 40,100,200,400,800] [--n 200]
        [--protocols paper,sensecf] [--out runs/bench/finetune.json]

One Axolotl run of `recipes/smollm2-cpu.yml` (launch.train) on SFT pairs built for a scratch copy of
RUN's cohort and classifier (RUN is never touched), checkpointed at every point of --examples
(examples seen = optimizer steps x micro batch x gradient accumulation). So the points are
checkpoints of one run with the largest point's cosine schedule, not separate runs each with its
own full decay. `0` in --examples scores the base model (zero-shot).

Each checkpoint generates CFs for the same --n test factuals (half per predicted class) in each
protocol (DESIGN.md "Protocols"): `paper` (free decoding, lenient parser) and `sensecf` (the
grammar), greedy. Per point, protocol and factual class: validity with its 95 % Wilson interval,
parse rate, distance over parsed and over valid CFs, seconds per CF. Figure: validity against
examples seen with the intervals, next to the JSON (same stem, .png).

Cost on 2 idle cores with AMX (bf16): `--examples 40,100,200 --n 200` took 17.8 min, of which
training to 100 steps 562 s (5.6 s per optimizer step of 2 x 768 tokens) and ~3.5 min per point
for scoring 200 factuals in both protocols (generation in bf16, eval.generate --dtype auto). An
earlier session measured ~12 s per step in fp32 on a CPU without native bf16.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml

from benchmarks.bench_baselines import scratch_copy
from eval.metrics import cf_metrics
from sensecf.atomic import write_json
from sensecf.blackbox import BlackBox
from sensecf.protocols import row_name
from sensecf.records import read_records
from sensecf.rundir import SPLIT_COL, RunDir

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2-cpu.yml"
METHOD = "smollm2_ft"
BATCH = {"paper": 50, "sensecf": 64}  # the demo's batch sizes per protocol
COLUMNS = ["n", "parse_rate", "validity", "validity_ci_low", "validity_ci_high", "distance", "distance_valid",
           "seconds_per_cf"]  # fmt: skip


def examples_per_step(recipe: dict) -> int:
    return int(recipe.get("micro_batch_size", 1)) * int(recipe.get("gradient_accumulation_steps", 1))


def steps_for(examples: list[int], per_step: int) -> list[int]:
    """Optimizer steps at which each point's checkpoint is taken; points must be whole steps."""
    bad = [e for e in examples if e % per_step]
    if bad:
        raise typer.BadParameter(f"--examples {bad}: not a multiple of {per_step} examples per optimizer step")
    return [e // per_step for e in examples]


def save_every(steps: list[int]) -> int:
    """The largest checkpoint interval that lands on every point."""
    return math.gcd(*[s for s in steps if s > 0])


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}


def _run(cmd: list[str], what: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *map(str, cmd)], cwd=REPO, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return time.perf_counter() - start


def train(scratch: RunDir, steps: list[int], epochs: int) -> dict:
    """One run to the last point, a checkpoint at every point; the launcher's train summary."""
    every = save_every(steps)
    cmd = ["launch.train", RECIPE, "--run", scratch.root, "--max-steps", max(steps),
           "--set", f"save_steps={every}", "--set", f"save_total_limit={max(steps) // every}",  # keep them all
           "--set", f"num_epochs={epochs}"]  # fmt: skip
    seconds = _run(cmd, "fine-tuning")
    summary = json.loads((scratch.checkpoints / RECIPE.stem / "train_summary.json").read_text())
    return {"wall_seconds": seconds, **{k: summary.get(k) for k in ("losses", "tokens_per_second",
                                                                   "trainable_tokens_per_second")}}  # fmt: skip


def score(scratch: RunDir, examples: int, step: int, protocol: str, n: int, judge: tuple) -> dict:
    """Generate with the checkpoint at `step` (the base model at 0) and score it per factual class;
    judge = (spec, training frame, black box)."""
    method = f"{METHOD}_e{examples}"
    cmd = ["eval.generate", "--run", scratch.root, "--backend", "hf", "--method", method, "--protocol", protocol,
           "--n", n, "--batch-size", BATCH[protocol], "--seed", 0, "--overwrite", "--quiet"]  # fmt: skip
    if step:
        cmd += ["--adapter", scratch.checkpoints / RECIPE.stem / f"checkpoint-{step}"]
    seconds = _run(cmd, f"generation ({method}, {protocol})")
    records = read_records(scratch.cf_file(row_name(method, protocol, "llm")))
    table = cf_metrics(records, *judge)
    by_class = {
        str(int(row["class"])): {c: (None if isinstance(row[c], float) and math.isnan(row[c]) else float(row[c]))
                                 for c in COLUMNS}
        for _, row in table.iterrows()
    }  # fmt: skip
    return {"wall_seconds": seconds, "by_class": by_class}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = result["points"]
    for protocol, style in (("paper", "--"), ("sensecf", "-")):
        for cls, marker in (("0", "o"), ("1", "s")):
            xs, ys, lo, hi = [], [], [], []
            for p in points:
                row = p["scores"].get(protocol, {}).get("by_class", {}).get(cls)
                if row and row["validity"] is not None:
                    xs.append(p["examples"])
                    ys.append(row["validity"])
                    lo.append(row["validity"] - row["validity_ci_low"])
                    hi.append(row["validity_ci_high"] - row["validity"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], linestyle=style, marker=marker, capsize=3,
                            label=f"{protocol}, factual class {cls}")  # fmt: skip
    ax.set_xscale("symlog", linthresh=40)
    ax.set_xticks([p["examples"] for p in points], [str(p["examples"]) for p in points])
    ax.set_xlabel("fine-tuning examples seen")
    ax.set_ylabel(f"validity, {result['n'] // 2} factuals per class (95 % CI)")
    ax.set_ylim(0, 1)
    ax.set_title("SmolLM2-135M LoRA on the demo cohort")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    run: Path = typer.Option(Path("runs/demo"), help="run directory with cohort/ and classifier/ (make demo)"),
    examples: str = typer.Option("40,100,200,400,800", help="points: examples seen (0 = the base model)"),
    n: int = typer.Option(200, help="test factuals per point and protocol (half per predicted class)"),
    protocols: str = typer.Option("paper,sensecf", help="comma-separated: paper, sensecf"),
    scratch_dir: Path | None = typer.Option(None, help="scratch run directory (default RUN/bench/finetune)"),
    out: Path = typer.Option(Path("runs/bench/finetune.json"), help="JSON output; the figure goes next to it"),
) -> None:
    """Fine-tune SmolLM2 once, checkpointed at each point, and score every checkpoint."""
    points = sorted({int(e) for e in examples.split(",") if e.strip()})
    chosen = [p.strip() for p in protocols.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in BATCH]
    if unknown:
        raise typer.BadParameter(f"--protocols {unknown}: choose from {list(BATCH)}")
    recipe = yaml.safe_load(RECIPE.read_text())
    per_step = examples_per_step(recipe)
    steps = steps_for(points, per_step)
    source = RunDir(run)
    scratch = RunDir(scratch_dir or source.root / "bench" / "finetune")
    scratch_copy(source, scratch)
    df, spec = scratch.load_cohort()
    judge = (spec, df[df[SPLIT_COL] == "train"], BlackBox.load(scratch.model, spec))
    load_before = os.getloadavg()
    pairs_needed = max(points)
    result: dict = {"benchmark": "finetune", "run": str(source.root), "recipe": str(RECIPE.relative_to(REPO)),
                    "n": n, "examples_per_step": per_step, "protocols": chosen}  # fmt: skip
    if pairs_needed:
        _run(["dataset_builders", "pairs", "--run", scratch.root, "--max-pairs", pairs_needed, "--seed", 0], "pairs")
        with open(scratch.sft / "train.jsonl") as fh:
            n_pairs = sum(1 for _ in fh)
        epochs = math.ceil(pairs_needed / n_pairs)  # fewer pairs than the last point: repeat them
        result["pairs"] = {"train": n_pairs, "epochs": epochs}
        typer.echo(f"== training to {max(steps)} steps ({n_pairs} pairs, {epochs} epoch(s))", err=True)
        result["training"] = train(scratch, [s for s in steps if s], epochs)
    result["points"] = []
    for examples_seen, step in zip(points, steps, strict=True):
        entry = {"examples": examples_seen, "step": step, "scores": {}}
        for protocol in chosen:
            typer.echo(f"== {examples_seen} examples, {protocol}", err=True)
            entry["scores"][protocol] = score(scratch, examples_seen, step, protocol, n, judge)
        result["points"].append(entry)
        write_json(out, result)  # a partial curve survives a stopped run
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    for p in result["points"]:
        cells = [f"{proto} C{c} {row['validity']:.2f} [{row['validity_ci_low']:.2f}, {row['validity_ci_high']:.2f}]"
                 for proto, s in p["scores"].items() for c, row in sorted(s["by_class"].items())]  # fmt: skip
        typer.echo(f"{p['examples']:>4} examples: " + "; ".join(cells))
    typer.echo(f"-> {out}, {out.with_suffix('.png')}")
    if scratch_dir is None:
        shutil.rmtree(scratch.checkpoints, ignore_errors=True)  # adapters: ~5 MB each, not needed after


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
