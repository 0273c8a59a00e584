"""Speed and quality of constrained generation with SmolLM2, side by side -> JSON.

    python -m benchmarks.bench_generate --run runs/demo [--n 32] [--n-batch1 8] [--batch-size 16]
        [--configs xgrammar_jf_b16,...,hf_generate_xgrammar_b16,llamacpp_free,llamacpp_schema] [--threads N]
        [--adapter RUN/checkpoints/smollm2-cpu]
        [--llamacpp-concurrency 4] [--out runs/bench/generate.json]

One run, the same factuals for every configuration (RUN/cfs/factuals_test.json when eval.baselines
wrote it): SmolLM2-135M-Instruct, zero-shot Fig. 4 prompt, greedy, on this machine's CPU. Per
configuration (enforcer x jump-forward x batch size, plus unconstrained generation for
reference): seconds per CF, forward calls, decode steps, prefill and completion tokens per CF,
where the time goes (forward / grammar mask / grammar advance), parse rate, immutables kept,
validity, plausibility and coherence; how often greedy answers with and without jump-forward
are identical; and the grammar's mask time per token with the real Llama-3.1 and Mistral-v1
tokenizers (128k and 32k tokens) next to a measured decode step.

The library path beside the engine: `hf_generate_xgrammar_b16` runs the same prompts through
transformers' `generate()` (greedy, left-padded batches of 16) with xgrammar's own logits processor
on each factual's whole-block regex, so the hand-written loop's advantage is a ratio measured in
one run (`speedup_over_library_generate_b16`). With --adapter, the fine-tuned model decodes the
same factuals with its LoRA adapter merged into the weights (the default of eval.generate) and
unmerged; `greedy_identical` counts the answers that agree.

The same factuals also go through a real OpenAI-compatible server: llama.cpp's
(`python -m llama_cpp.server`, llama-cpp-python[server]) serving the same SmolLM2 GGUF (Q4_1, the
file the hf engine dequantises) on loopback, through the openai backend: `llamacpp_free` (the
paper protocol: free text, lenient parser) and `llamacpp_schema` (constraint json_object_schema:
the JSON schema compiled to a llama.cpp grammar). Seconds per CF there are wall clock over all
requests with `--llamacpp-concurrency` in flight; llama-cpp-python's server answers one request
at a time, so that is also the time per request. Requests send repeat_penalty 1.0 (the server's
default is 1.1 over the last 64 tokens; the hf engine applies none), so both decode greedily alike;
the answers still differ where the Q4_1 weights computed as such and dequantised to float32 do.

Records go to a scratch run (default RUN/bench/generate/, refilled each time) holding copies of
RUN's cohort and classifier, so RUN/cfs/ is never touched. The CPU may be shared: the JSON
records the load average and CPU seconds next to wall time.
"""

from __future__ import annotations

import copy
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
from launch.llamacpp_server import LLAMACPP_MODEL, LlamaCppServer
from prompts.render import apply_chat_template, build_messages
from sensecf.generate.enforcers import allocate_bitmask, make_enforcer
from sensecf.generate.grammar import BlockCursor, block_regex, number_text, scaled
from sensecf.generate.hf_backend import DecodeConfig, HFGenerator, load_model
from sensecf.generate.openai_backend import OpenAIConfig, OpenAIGenerator
from sensecf.generate.parser import parse_block
from sensecf.generate.result import GenRequest, GenResult
from sensecf.models import load_embedded_model, load_tokenizer
from sensecf.precision import cpu_has_native_bf16
from sensecf.records import RecordWriter, read_records
from sensecf.rundir import ID_COL, SPLIT_COL, RunDir

# name -> (decode config, batch size, uses the small batch-1 subset, compute dtype)
CONFIGS = {
    "xgrammar_jf_b16": (DecodeConfig(enforcer="xgrammar"), 16, False, "float32"),
    "xgrammar_jf_b64": (DecodeConfig(enforcer="xgrammar"), 64, False, "float32"),
    "xgrammar_jf_b16_bf16": (DecodeConfig(enforcer="xgrammar"), 16, False, "bfloat16"),
    "xgrammar_jf_b64_bf16": (DecodeConfig(enforcer="xgrammar"), 64, False, "bfloat16"),
    "xgrammar_nojf_b16": (DecodeConfig(enforcer="xgrammar", jump_forward=False), 16, False, "float32"),
    "lmfe_jf_b16": (DecodeConfig(enforcer="lmfe"), 16, False, "float32"),
    "lmfe_nojf_b16": (DecodeConfig(enforcer="lmfe", jump_forward=False), 16, False, "float32"),
    "free_b16": (DecodeConfig(constrained=False, max_new_tokens=160), 16, False, "float32"),
    "free_b16_bf16": (DecodeConfig(constrained=False, max_new_tokens=160), 16, False, "bfloat16"),
    "xgrammar_jf_b1": (DecodeConfig(enforcer="xgrammar"), 1, True, "float32"),
    "xgrammar_nojf_b1": (DecodeConfig(enforcer="xgrammar", jump_forward=False), 1, True, "float32"),
    "lmfe_jf_b1": (DecodeConfig(enforcer="lmfe"), 1, True, "float32"),
}
# The library path: transformers' generate() with xgrammar's logits processor (xgrammar.contrib.hf)
# on the whole-block regex; name -> (batch size, compute dtype).
LIBRARY_CONFIGS = {"hf_generate_xgrammar_b16": (16, "float32"), "hf_generate_xgrammar_b16_bf16": (16, "bfloat16")}
# name -> (openai-backend constraint, max_tokens) against llama.cpp's server
LLAMACPP_CONFIGS = {"llamacpp_free": ("none", 160), "llamacpp_schema": ("json_object_schema", 256)}
# Pairs whose greedy answers are compared: across batch sizes, fp32 against bf16, the LoRA merged or not.
IDENTITY_PAIRS = [
    ("xgrammar_jf_b64", "xgrammar_jf_b16"),
    ("xgrammar_jf_b64_bf16", "xgrammar_jf_b16_bf16"),
    ("xgrammar_jf_b16_bf16", "xgrammar_jf_b16"),
    ("free_b16_bf16", "free_b16"),
    ("ft_merged_b16", "ft_unmerged_b16"),
]
QUALITY = ["validity", "distance", "sparsity", "plausibility", "coherence"]


def _finite(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _mean(values):
    values = [v for v in values if v is not None]
    return float(statistics.fmean(values)) if values else None


def scratch_copy(run: RunDir, scratch: RunDir, n: int) -> None:
    """The baselines benchmark's scratch copy, plus the baselines' factual sample when present
    and it holds at least n factuals (else a sample of n is drawn the same way)."""
    baselines_scratch_copy(run, scratch)
    shared = run.cfs / "factuals_test.json"
    if shared.exists() and json.loads(shared.read_text()).get("n", 0) >= n:  # the baselines' sample: the same factuals
        scratch.cfs.mkdir(parents=True)
        shutil.copy(shared, scratch.cfs / shared.name)


def write_records(name, jobs, results, spec, blackbox, scratch, extra) -> dict:
    """The configuration's CF records into the scratch run; what every configuration reports of them."""
    record_jobs = [(row, factual, 0, seed) for row, factual, _, seed in jobs]
    records = make_records(spec, blackbox, name, record_jobs, results, extra)
    with RecordWriter(scratch.cf_file(name)) as writer:
        writer.write_all(records)
    n = len(results)
    return {
        "status": dict(sorted(Counter(r.status for r in results).items())),
        "parse_rate": sum(r.cf is not None for r in results) / n,
        "immutables_kept": sum(r.immutables_ok is True for r in records) / n,
        "immutables_violated": sum(r.immutables_ok is False for r in records),
        "texts": {rec.window_id: rec.raw_text for rec in records},
    }


def same_answers(a: dict, b: dict) -> dict:
    """How many factuals two configurations answered with the same text."""
    common = set(a["texts"]) & set(b["texts"])
    return {"identical": sum(a["texts"][k] == b["texts"][k] for k in common), "of": len(common)}


def dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


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
    summary = write_records(name, jobs, results, spec, blackbox, scratch, {"benchmark": name})
    stats = dict(generator.stats)
    n = len(results)
    batches = math.ceil(n / batch_size)
    return {
        "n": n,
        "batch_size": batch_size,
        "dtype": dtype_name(model),
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
        **summary,
    }


def run_library_config(name, batch_size, jobs, model, tokenizer, spec, blackbox, scratch) -> dict:
    """The same prompts through transformers' `generate()` (greedy, left-padded batches, KV cache)
    with xgrammar's own logits processor on each factual's whole-block regex (block_regex: the
    group's computed member only range-bounded there), answers read by the lenient parser."""
    import xgrammar as xgr
    from xgrammar.contrib.hf import LogitsProcessor

    vocab = model.get_output_embeddings().weight.shape[0]
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab))
    prompts = [apply_chat_template(tokenizer, build_messages(spec, factual, 1 - pred)) for _, factual, pred, _ in jobs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "left"

    def generate(batch: list[int]) -> list[tuple[str, int, int]]:
        grammars = [compiler.compile_regex(block_regex(spec, jobs[i][1])) for i in batch]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=256, do_sample=False, pad_token_id=pad,
                             logits_processor=[LogitsProcessor(grammars)])  # fmt: skip
        new = out[:, enc["input_ids"].shape[1] :]
        texts = []
        for i, row in enumerate(new.tolist()):
            ids = [t for t in row if t != pad]
            prompt_tokens = int(enc["attention_mask"][i].sum())
            texts.append((tokenizer.decode(ids, skip_special_tokens=True), prompt_tokens, len(ids)))
        return texts

    try:
        with torch.inference_mode():
            generate([0])  # warm-up, as for the engine's configurations
            wall, cpu = time.perf_counter(), time.process_time()
            answers = []
            for start in range(0, len(jobs), batch_size):
                answers += generate(list(range(start, min(start + batch_size, len(jobs)))))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        tokenizer.padding_side = side
    results = []
    for (_, factual, _, _), (text, prompt_tokens, completion_tokens) in zip(jobs, answers, strict=True):
        parsed = parse_block(spec, text, factual)
        results.append(GenResult(text=text, cf=parsed.cf, status=parsed.status, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, seconds=wall / len(jobs)))  # fmt: skip
    summary = write_records(name, jobs, results, spec, blackbox, scratch, {"benchmark": name})
    n = len(results)
    return {
        "n": n,
        "batch_size": batch_size,
        "dtype": dtype_name(model),
        "path": "transformers generate() + xgrammar.contrib.hf.LogitsProcessor, block_regex per factual, greedy",
        "seconds_per_cf": wall / n,
        "cpu_seconds_per_cf": cpu / n,
        "prompt_tokens_per_cf": _mean([r.prompt_tokens for r in results]),
        "completion_tokens_per_cf": _mean([r.completion_tokens for r in results]),
        **summary,
    }


def run_llamacpp_config(name, constraint, max_tokens, jobs, spec, blackbox, scratch, server, concurrency) -> dict:
    """The factuals through llama.cpp's server via the openai backend (greedy, zero-shot Fig. 4)."""
    config = OpenAIConfig(model=LLAMACPP_MODEL, base_url=server.base_url, constraint=constraint, max_tokens=max_tokens,
                          concurrency=concurrency, max_retries=1, repeat_penalty=1.0)  # fmt: skip
    generator = OpenAIGenerator(spec, config, api_key="EMPTY")
    requests = [GenRequest(factual, seed=seed, messages=build_messages(spec, factual, 1 - pred))
                for _, factual, pred, seed in jobs]  # fmt: skip
    generator.generate(requests[:1])  # warm-up: the server's first evaluation, grammar code paths
    wall = time.perf_counter()
    outcome = generator.generate(requests)
    wall = time.perf_counter() - wall
    if outcome.failures:
        raise RuntimeError(f"{name}: {len(outcome.failures)} requests failed: {outcome.failures[0].error}")
    results = [outcome.results[i] for i in range(len(requests))]
    extra = {"benchmark": name, "backend": "openai", "constraint": constraint, "base_url": server.base_url}
    summary = write_records(name, jobs, results, spec, blackbox, scratch, extra)
    n = len(results)
    return {
        "n": n,
        "server": "llama.cpp (llama-cpp-python[server]), SmolLM2-135M-Instruct Q4_1 GGUF, the GGUF's chat template",
        "constraint": constraint,
        "max_tokens": max_tokens,
        "repeat_penalty": config.repeat_penalty,
        "concurrency": concurrency,
        "server_parallel_requests": 1,  # llama-cpp-python's server serialises requests
        "server_threads": server.threads,
        "seconds_per_cf": wall / n,  # wall clock over all requests, `concurrency` in flight
        "seconds_per_request_mean": _mean([r.seconds for r in results]),  # includes waiting in the server's queue
        "prompt_tokens_per_cf": _mean([r.prompt_tokens for r in results]),
        "completion_tokens_per_cf": _mean([r.completion_tokens for r in results]),
        "finish_reasons": dict(sorted(Counter(str(r.extra.get("finish_reason")) for r in results).items())),
        **summary,
        "schema_violations": sum("schema_violations" in r.extra for r in results),
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
    adapter: Path | None = typer.Option(
        None,
        help="also time this LoRA adapter (RUN/checkpoints/smollm2-cpu) merged "
        "into the weights against unmerged, at --batch-size",
    ),
    n_batch1: int = typer.Option(8, help="factuals (the first of the same sample) for batch-1 configurations"),
    batch_size: int = typer.Option(16, help="batch size of the *_b16 configurations"),
    configs: str = typer.Option(
        ",".join([*CONFIGS, *LIBRARY_CONFIGS, *LLAMACPP_CONFIGS]), help="comma-separated configurations"
    ),
    mask_factuals: int = typer.Option(20, help="blocks per tokenizer for the mask-time measurement"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default); 1 avoids stalls on a busy CPU"),
    llamacpp_threads: int = typer.Option(1, help="llama.cpp server threads (1: robust on a shared CPU)"),
    llamacpp_concurrency: int = typer.Option(4, help="requests in flight to the llama.cpp server"),
    scratch_dir: Path | None = typer.Option(None, help="scratch run directory (default RUN/bench/generate)"),
    out: Path = typer.Option(Path("runs/bench/generate.json"), help="JSON output"),
) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    names = [c.strip() for c in configs.split(",") if c.strip()]
    known = [*CONFIGS, *LIBRARY_CONFIGS, *LLAMACPP_CONFIGS]
    unknown = [c for c in names if c not in known]
    if unknown:
        raise typer.BadParameter(f"unknown configurations {unknown}; choose from {known}")
    source = RunDir(run)
    scratch = RunDir(scratch_dir or run / "bench" / "generate")
    scratch_copy(source, scratch, n)
    load_before = os.getloadavg()
    chosen, spec, blackbox, _, factual_source = choose_factuals(scratch, "test", n, 0, None)
    chosen = chosen.head(n)
    jobs = [
        (row, native_values(spec, row), int(row["factual_pred"]), row_seed(0, str(row[ID_COL]), 0))
        for _, row in chosen.iterrows()
    ]
    torch.manual_seed(0)
    model, tokenizer = load_embedded_model()
    models = {"float32": model}

    def model_in(dtype: str):  # one copy per compute dtype, cast from the same fp32 weights
        if dtype not in models:
            models[dtype] = copy.deepcopy(model).to(getattr(torch, dtype))
        return models[dtype]

    df, _ = scratch.load_cohort()
    train = df[df[SPLIT_COL] == "train"]
    results: dict = {}
    served = [name for name in names if name in LLAMACPP_CONFIGS]
    if served:
        log = scratch.root / "llamacpp_server.log"
        typer.echo(f"== llama.cpp server (log {log})", err=True)
        with LlamaCppServer(threads=llamacpp_threads, log=log) as server:
            for name in served:
                constraint, max_tokens = LLAMACPP_CONFIGS[name]
                results[name] = run_llamacpp_config(
                    name, constraint, max_tokens, jobs, spec, blackbox, scratch, server, llamacpp_concurrency
                )
                results[name]["quality"] = quality(scratch, name, spec, train, blackbox)
                r = results[name]
                typer.echo(f"{name}: {r['seconds_per_cf']:.2f} s/CF, parse {r['parse_rate']:.2f}, "
                           f"{r['immutables_violated']} immutable violations", err=True)  # fmt: skip
    for name in names:
        if name in LIBRARY_CONFIGS:
            typer.echo(f"== {name}", err=True)
            size, dtype = LIBRARY_CONFIGS[name]
            results[name] = run_library_config(name, size, jobs, model_in(dtype), tokenizer, spec, blackbox, scratch)
            results[name]["quality"] = quality(scratch, name, spec, train, blackbox)
            typer.echo(f"{name}: {results[name]['seconds_per_cf']:.2f} s/CF", err=True)
        if name not in CONFIGS:
            continue
        config, size, small, dtype = CONFIGS[name]
        size = batch_size if size == 16 else size  # --batch-size sets the *_b16 configurations'
        typer.echo(f"== {name}", err=True)
        results[name] = run_config(
            name, config, size, jobs[:n_batch1] if small else jobs, model_in(dtype), tokenizer, spec, blackbox, scratch
        )
        results[name]["quality"] = quality(scratch, name, spec, train, blackbox)
        r = results[name]
        typer.echo(
            f"{name}: {r['seconds_per_cf']:.2f} s/CF, {r['forward_calls_per_batch']:.1f} forward calls per batch, "
            f"parse {r['parse_rate']:.2f}",
            err=True,
        )
    if adapter is not None:  # the fine-tuned model, the LoRA adapter merged into the weights or not
        for name, merge in (("ft_unmerged_b16", False), ("ft_merged_b16", True)):
            typer.echo(f"== {name}", err=True)
            ft_model, ft_tokenizer = load_model(None, adapter, "cpu", merge_adapter=merge)
            results[name] = run_config(name, DecodeConfig(), batch_size, jobs, ft_model, ft_tokenizer, spec,
                                       blackbox, scratch)  # fmt: skip
            results[name]["quality"] = quality(scratch, name, spec, train, blackbox)
            typer.echo(f"{name}: {results[name]['seconds_per_cf']:.2f} s/CF", err=True)
    same = {}
    for enforcer in ("xgrammar", "lmfe"):
        for size in ("b16", "b1"):
            a, b = results.get(f"{enforcer}_jf_{size}"), results.get(f"{enforcer}_nojf_{size}")
            if a and b:
                same[f"{enforcer}_{size}"] = same_answers(a, b)
    identical = {f"{a} vs {b}": same_answers(results[a], results[b]) for a, b in IDENTITY_PAIRS
                 if a in results and b in results}  # fmt: skip
    # the hand-written loop's advantage over the library path in the same dtype, in one run
    library = {LIBRARY_CONFIGS[name][1]: r["seconds_per_cf"] for name, r in results.items() if name in LIBRARY_CONFIGS}
    speedup = {
        name: library[r["dtype"]] / r["seconds_per_cf"]
        for name, r in results.items()
        if name in CONFIGS and r.get("batch_size", 0) > 1 and r["dtype"] in library
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
        r.pop("texts", None)
    report = {
        "benchmark": "generate",
        "run": str(source.root),
        "model": "SmolLM2-135M-Instruct (embedded; each configuration's dtype beside it), zero-shot Fig. 4, greedy",
        "cpu_native_bf16": cpu_has_native_bf16(),
        "factuals": {"n": len(jobs), "n_batch1": min(n_batch1, len(jobs)), "from": factual_source},
        "configs": results,
        "greedy_identical_with_and_without_jump_forward": same,
        "greedy_identical": identical,
        "speedup_over_library_generate_b16": speedup,
        "mask_time_real_tokenizers": masks,
        "goal": {"seconds_per_cf_b16": 0.5, "seconds_per_cf_b64": 0.3, "grammar_share_of_decode_step": 0.05},
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
