"""Speed and quality of constrained generation with SmolLM2, side by side -> JSON.

    python -m benchmarks.bench_generate --run runs/demo [--n 32] [--n-batch1 8] [--batch-size 16]
        [--configs xgrammar_jf_b16,...] [--threads N] [--out runs/bench/generate.json]

One run, the same factuals for every configuration (RUN/cfs/factuals_test.json when eval.baselines
wrote it): SmolLM2-135M-Instruct, zero-shot Fig. 4 prompt, greedy, on this machine's CPU. Per
configuration (enforcer x jump-forward x batch size, plus unconstrained generation for
reference): seconds per CF, forward calls, decode steps, prefill and completion tokens per CF,
where the time goes (forward / grammar mask / grammar advance), parse rate, immutables kept,
validity, plausibility and coherence; how often greedy answers with and without jump-forward
are identical; and the grammar's mask time per token with the real Llama-3.1 and Mistral-v1
tokenizers (128k and 32k tokens) next to a measured decode step.

Records go to a scratch run (default RUN/bench/generate/, refilled each time) holding copies of
RUN's cohort and classifier, so RUN/cfs/ is never touched. The CPU may be shared: the JSON
records the load average and CPU seconds next to wall time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import typer

from benchmarks.bench_baselines import scratch_copy as baselines_scratch_copy
from eval.baselines import native_values
from eval.generate import choose_factuals, make_records, row_seed
from eval.metrics import cf_metrics, coherent, feature_frame
from prompts.render import apply_chat_template, build_messages
from sensecf.generate.enforcers import allocate_bitmask, make_enforcer
from sensecf.generate.grammar import BlockCursor, number_text, scaled
from sensecf.generate.hf_backend import DecodeConfig, HFGenerator
from sensecf.generate.result import GenRequest
from sensecf.models import load_embedded_model, load_tokenizer
from sensecf.records import RecordWriter, read_records
from sensecf.rundir import ID_COL, SPLIT_COL, RunDir

# name -> (decode config, batch size, uses the small batch-1 subset)
CONFIGS = {
    "xgrammar_jf_b16": (DecodeConfig(enforcer="xgrammar"), 16, False),
    "xgrammar_nojf_b16": (DecodeConfig(enforcer="xgrammar", jump_forward=False), 16, False),
    "lmfe_jf_b16": (DecodeConfig(enforcer="lmfe"), 16, False),
    "lmfe_nojf_b16": (DecodeConfig(enforcer="lmfe", jump_forward=False), 16, False),
    "free_b16": (DecodeConfig(constrained=False, max_new_tokens=160), 16, False),
    "xgrammar_jf_b1": (DecodeConfig(enforcer="xgrammar"), 1, True),
    "xgrammar_nojf_b1": (DecodeConfig(enforcer="xgrammar", jump_forward=False), 1, True),
    "lmfe_jf_b1": (DecodeConfig(enforcer="lmfe"), 1, True),
}
QUALITY = ["validity", "distance", "sparsity", "plausibility", "coherence"]


def _finite(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _mean(values):
    values = [v for v in values if v is not None]
    return float(statistics.fmean(values)) if values else None


def scratch_copy(run: RunDir, scratch: RunDir) -> None:
    """The baselines benchmark's scratch copy, plus the baselines' factual sample when present."""
    baselines_scratch_copy(run, scratch)
    shared = run.cfs / "factuals_test.json"
    if shared.exists():  # the baselines' sample: the same factuals
        scratch.cfs.mkdir(parents=True)
        shutil.copy(shared, scratch.cfs / shared.name)


def run_config(name, config, batch_size, jobs, model, tokenizer, spec, blackbox, scratch) -> dict:
    generator = HFGenerator(model, tokenizer, spec, config)
    requests = [
        GenRequest(factual, seed=seed, prompt=apply_chat_template(tokenizer, build_messages(spec, factual, 1 - pred)))
        for _, factual, pred, seed in jobs
    ]
    generator.generate_batch(requests[:1])  # warm-up: shared prefix KV, grammar compilation, allocator
    generator.stats.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    results = []
    for i in range(0, len(requests), batch_size):
        results += generator.generate_batch(requests[i : i + batch_size])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    record_jobs = [(row, factual, 0, seed) for row, factual, _, seed in jobs]
    records = make_records(spec, blackbox, name, record_jobs, results, {"benchmark": name})
    with RecordWriter(scratch.cf_file(name)) as writer:
        writer.write_all(records)
    stats = dict(generator.stats)
    n = len(results)
    batches = math.ceil(n / batch_size)
    return {
        "n": n,
        "batch_size": batch_size,
        "enforcer": config.enforcer if config.constrained else None,
        "jump_forward": config.jump_forward if config.constrained else None,
        "seconds_per_cf": wall / n,
        "cpu_seconds_per_cf": cpu / n,
        "forward_calls_per_batch": stats.get("forward_calls", 0) / batches,
        "decode_steps_per_cf": _mean([r.decode_steps for r in results]),
        "prefill_tokens_per_cf": _mean([r.prefill_tokens for r in results]),
        "prompt_tokens_per_cf": _mean([r.prompt_tokens for r in results]),
        "completion_tokens_per_cf": _mean([r.completion_tokens for r in results]),
        "sampled_tokens_per_cf": _mean([r.sampled_tokens for r in results]),
        "time_split_seconds": {k: stats.get(k, 0.0) for k in ("forward_s", "prefill_s", "mask_s", "advance_s")},
        # decode calls only: the first call of each batch is its prefill
        "seconds_per_decode_call": (stats["forward_s"] - stats["prefill_s"]) / (stats["forward_calls"] - batches)
        if stats.get("forward_calls", 0) > batches
        else None,
        "padding_share": 1 - stats["real_tokens"] / stats["token_slots"] if stats.get("token_slots") else None,
        "grammar_share_of_time": (stats.get("mask_s", 0) + stats.get("advance_s", 0)) / wall,
        "status": dict(sorted(Counter(r.status for r in results).items())),
        "parse_rate": sum(r.cf is not None for r in results) / n,
        "immutables_kept": sum(r.immutables_ok is True for r in records) / n,
        "texts": {rec.window_id: rec.raw_text for rec in records},
    }


def quality(scratch: RunDir, name: str, spec, train, blackbox) -> dict:
    records = read_records(scratch.cf_file(name))
    parsed = [r.cf for r in records if r.cf is not None]
    overall = {
        "validity": sum(r.valid for r in records) / len(records),
        "coherence": float(np.mean(coherent(feature_frame(parsed, spec, name), spec))) if parsed else None,
    }
    table = cf_metrics(records, spec, train, blackbox)
    by_class = {
        str(int(row["class"])): {"n": int(row["n"]), **{m: _finite(float(row[m])) for m in QUALITY}}
        for _, row in table.iterrows()
    }
    return {"overall": overall, "by_class": by_class}


def mask_cost(tokenizer_name: str, enforcer_name: str, spec, factuals: list[dict], rows: int) -> dict:
    """Grammar cost per token on the real tokenizer: mask fill + accept over the free lines of
    blocks whose values are the factuals' own (clamped into range by the grammar's bounds)."""
    tokenizer = load_tokenizer(tokenizer_name)
    start = time.perf_counter()
    enforcer = make_enforcer(enforcer_name, tokenizer)
    build = time.perf_counter() - start
    bitmask = allocate_bitmask(rows, enforcer.vocab_size)
    lead = tokenizer.encode("\n", add_special_tokens=False)
    per_token, compile_s = [], []
    for factual in factuals:
        cursor = BlockCursor.start(spec, factual)
        while True:
            cursor.take_forced()
            if cursor.done:
                break
            line = cursor.free_line()
            regex = cursor.free_regex()
            if line.kind == "choice":
                value = str(factual[line.feature.name])
            else:  # the factual's value, moved into the (group-)bounded range if outside it
                lo, hi = cursor.free_bounds()
                d = line.feature.decimals
                value = number_text(min(max(scaled(factual[line.feature.name], d), lo), hi), d)
            cursor.accept(value + "\n")
            t = time.perf_counter()
            matcher = enforcer.matcher(regex)
            compile_s.append(time.perf_counter() - t)
            full = tokenizer.encode("\n" + value + "\n", add_special_tokens=False)
            ids = (
                full[len(lead) :]
                if full[: len(lead)] == lead
                else tokenizer.encode(value + "\n", add_special_tokens=False)
            )
            for token in ids:
                t = time.perf_counter()
                matcher.fill_bitmask(bitmask, 0)
                matcher.accept_token(token)
                per_token.append(time.perf_counter() - t)
    per_token_us = np.array(per_token) * 1e6
    return {
        "vocab": len(tokenizer),
        "enforcer_build_seconds": build,
        "line_matcher_ms_mean": 1e3 * float(np.mean(compile_s)),
        "tokens": len(per_token),
        "mask_us_per_token": {
            "median": float(np.median(per_token_us)),
            "mean": float(per_token_us.mean()),
            "p95": float(np.percentile(per_token_us, 95)),
            "max": float(per_token_us.max()),
        },
    }


def main(
    run: Path = typer.Option(Path("runs/demo"), help="run directory with cohort/ and classifier/"),
    n: int = typer.Option(32, help="factuals for the batched configurations"),
    n_batch1: int = typer.Option(8, help="factuals (the first of the same sample) for batch-1 configurations"),
    batch_size: int = typer.Option(16, help="batch size of the *_b16 configurations"),
    configs: str = typer.Option(",".join(CONFIGS), help="comma-separated configurations to run"),
    mask_factuals: int = typer.Option(20, help="blocks per tokenizer for the mask-time measurement"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default); 1 avoids stalls on a busy CPU"),
    scratch_dir: Path | None = typer.Option(None, help="scratch run directory (default RUN/bench/generate)"),
    out: Path = typer.Option(Path("runs/bench/generate.json"), help="JSON output"),
) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    names = [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise typer.BadParameter(f"unknown configurations {unknown}; choose from {list(CONFIGS)}")
    source = RunDir(run)
    scratch = RunDir(scratch_dir or run / "bench" / "generate")
    scratch_copy(source, scratch)
    load_before = os.getloadavg()
    chosen, spec, blackbox, _, factual_source = choose_factuals(scratch, "test", n, 0, None)
    chosen = chosen.head(n)
    jobs = [
        (row, native_values(spec, row), int(row["factual_pred"]), row_seed(0, str(row[ID_COL]), 0))
        for _, row in chosen.iterrows()
    ]
    torch.manual_seed(0)
    model, tokenizer = load_embedded_model()
    df, _ = scratch.load_cohort()
    train = df[df[SPLIT_COL] == "train"]
    results: dict = {}
    for name in names:
        config, size, small = CONFIGS[name]
        size = 1 if size == 1 else batch_size
        typer.echo(f"== {name}", err=True)
        results[name] = run_config(
            name, config, size, jobs[:n_batch1] if small else jobs, model, tokenizer, spec, blackbox, scratch
        )
        results[name]["quality"] = quality(scratch, name, spec, train, blackbox)
        r = results[name]
        typer.echo(
            f"{name}: {r['seconds_per_cf']:.2f} s/CF, {r['forward_calls_per_batch']:.1f} forward calls per batch, "
            f"parse {r['parse_rate']:.2f}",
            err=True,
        )
    same = {}
    for enforcer in ("xgrammar", "lmfe"):
        for size in ("b16", "b1"):
            a, b = results.get(f"{enforcer}_jf_{size}"), results.get(f"{enforcer}_nojf_{size}")
            if a and b:
                common = set(a["texts"]) & set(b["texts"])
                same[f"{enforcer}_{size}"] = {
                    "identical": sum(a["texts"][k] == b["texts"][k] for k in common),
                    "of": len(common),
                }
    typer.echo("== mask time per token (real tokenizers)", err=True)
    factuals = [job[1] for job in jobs[:mask_factuals]]
    masks = {
        f"{tok}/{enf}": mask_cost(tok, enf, spec, factuals, batch_size)
        for tok in ("llama3_1", "mistral_v1")
        for enf in ("xgrammar", "lmfe")
    }
    step = results.get("xgrammar_jf_b16", {}).get("seconds_per_decode_call")
    for entry in masks.values():
        if step:
            # a decode step masks every row of the batch once
            entry["share_of_a_b16_decode_step"] = entry["mask_us_per_token"]["mean"] * 1e-6 * batch_size / step
    for r in results.values():
        r.pop("texts")
    report = {
        "benchmark": "generate",
        "run": str(source.root),
        "model": "SmolLM2-135M-Instruct (embedded, float32), zero-shot Fig. 4 prompt, greedy",
        "factuals": {"n": len(jobs), "n_batch1": min(n_batch1, len(jobs)), "from": factual_source},
        "configs": results,
        "greedy_identical_with_and_without_jump_forward": same,
        "mask_time_real_tokenizers": masks,
        "goal": {"seconds_per_cf_batched": 0.6, "grammar_share_of_decode_step": 0.05},
        "reference_plain_generate": {"batch1_s_per_cf": 9.9, "batch16_s_per_cf": 2.75, "new_tokens": 130},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    typer.echo(f"-> {out}")


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(main)
