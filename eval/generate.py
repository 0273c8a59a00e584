"""LLM counterfactuals for the shared factual sample -> RUN/cfs/<method>.jsonl.

    python -m eval.generate --run RUN --backend hf --method smollm2_zs [--protocol paper|sensecf]
        [--adapter PATH] [--model DIR] [--enforcer xgrammar|lmfe] [--no-jump-forward] [--batch-size 16]
        [--candidates K --temperature T] [--fewshot K] [--n 200] [--split test|train]
        [--factuals FILE] [--seed 0]
    python -m eval.generate --run RUN --backend openai --method gpt4o_fs --fewshot 5
        [--api-model gpt-4o-2024-08-06] [--base-url URL] [--api-key-env OPENAI_API_KEY]
        [--constraint json_schema|json_object_schema|regex] [--served-template DIR] [--max-tokens 512]
        [--repeat-penalty 1.0] [--concurrency 8] [--allow-external-api]

Protocols (sensecf.protocols): `--protocol paper` decodes freely and parses the <new> block
leniently (an unparsable answer is invalid), the paper's method, in row <method>;
`--protocol sensecf` (default) decodes the same prompt under the grammar (hf), a JSON schema or
a regex (openai: json_schema for OpenAI, json_object_schema for llama.cpp's server, regex for
vLLM), in row <method>+grammar.

Factuals: --factuals FILE, else RUN/cfs/factuals_<split>.json (eval.baselines' sample, so LLMs
and baselines explain the same windows), else a fresh sample drawn the same way (n split
between the two predicted classes, seeded) and written there. A file with more than --n ids
gives its first n//2 per predicted class (file order). Desired class = 1 - predicted.
Records of the test split go to RUN/cfs/<method>.jsonl, of another split to
RUN/cfs/<split>/<method>.jsonl; re-running skips records already written, so a killed run
resumes with nothing lost or duplicated. --candidates K samples K answers per factual
(candidate 0..K-1; eval.metrics.verified_records picks the nearest valid one).

A CF file is resumed only by the settings that began it (its fingerprint: decoding options,
model and adapter hashes, classifier, cohort, prompt templates, few-shot pool, factual set);
other settings stop with a message naming what changed, or --overwrite moves the old file
aside (never deleted) and starts afresh. One writer per file (.FILE.lock).

The openai backend sends rows only to a loopback server, or for a cohort whose content is
marked synthetic, or to the host named by --allow-external-api HOST; its request seeds are
keyed with the run's secret (sensecf.privacy), never derived from a window id alone.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from tqdm import tqdm

from eval.baselines import (
    balanced_head,
    factuals_file,
    immutables_kept,
    native_values,
    read_factual_ids,
    records_dir,
    sample_factuals,
)
from prompts.render import apply_chat_template, build_messages
from sensecf import fingerprint, privacy, protocols
from sensecf.atomic import run_lock, write_json
from sensecf.blackbox import BlackBox
from sensecf.cli import run_cli
from sensecf.records import CFRecord, RecordWriter, read_records
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.wandb_log import log_numbers, stage_run

REPO = Path(__file__).resolve().parents[1]
PROMPT_TEMPLATES = REPO / "prompts" / "templates"
# Options that change what an answer is (the fingerprint); batch size, device, concurrency,
# retries and timeouts change only how fast it comes.
HF_ANSWER_OPTIONS = {"enforcer": "xgrammar", "free": False, "jump_forward": True, "bound_groups": True,
                  "temperature": 0.0, "max_new_tokens": 256, "merge_adapter": True,
                  "dtype": "float32"}  # the resolved compute dtype (sensecf.precision), never "auto"
OPENAI_ANSWER_OPTIONS = ("model", "base_url", "constraint", "temperature", "max_tokens", "send_seed")


class GenerateError(ValueError):
    """Bad input for generation; the message names the file, option or value."""


# --- what to explain ------------------------------------------------------------------------
def choose_factuals(
    run: RunDir, split: str, n: int, seed: int, factuals: Path | None, desired_class: int | None = None
) -> tuple[pd.DataFrame, DatasetSpec, BlackBox, Path, str]:
    """(factual rows with `factual_pred`, spec, black box, the id file, where the ids came from).

    desired_class keeps only the factuals whose CF is sought in that class (predicted the other),
    the first n of them: augmentation of one scarce class spends the whole budget on it."""
    if desired_class not in (None, 0, 1):
        raise GenerateError(f"--desired-class must be 0 or 1, got {desired_class}")
    df, spec = run.load_cohort()
    blackbox = BlackBox.load(run.model, spec)
    pool = df[df[SPLIT_COL] == split].reset_index(drop=True)
    if pool.empty:
        raise GenerateError(f"{run.features}: no rows with {SPLIT_COL} == '{split}'")
    predicted = blackbox.predict(pool)
    shared = factuals_file(run, split)
    if factuals is not None:
        ids, source = read_factual_ids(factuals), str(factuals)
    elif shared.exists():
        ids, source = read_factual_ids(shared), str(shared)
    else:
        ids, note = sample_factuals(pool, predicted, n, seed)
        write_json(shared, {"split": split, "seed": seed, "n": n, "note": note, "window_ids": ids}, indent=1)
        source = f"sampled (seed {seed}) -> {shared}"
    known = set(pool[ID_COL].astype(str))
    missing = [i for i in ids if i not in known]
    if missing:
        raise GenerateError(f"{source}: {len(missing)} ids are not '{split}' windows of {run.features}: {missing[:5]}")
    order = {i: k for k, i in enumerate(dict.fromkeys(ids))}
    chosen = pool.assign(factual_pred=predicted)[pool[ID_COL].astype(str).isin(order)]
    chosen = chosen.sort_values(ID_COL, key=lambda s: s.astype(str).map(order)).reset_index(drop=True)
    if desired_class is not None:
        chosen = chosen[chosen["factual_pred"] == 1 - desired_class].head(n).reset_index(drop=True)
        source += f" (the first {len(chosen)} predicted {1 - desired_class}: CFs of class {desired_class})"
    elif len(chosen) > n:
        chosen = balanced_head(chosen, n)
        source += f" (the first {n}, half per predicted class)"
    return chosen, spec, blackbox, factuals or shared, source


def fewshot_examples(run: RunDir, k: int, spec: DatasetSpec) -> dict[int, list[dict]]:
    """The first k windows per desired class from RUN/sft/fewshot.jsonl: Fig. 4's "examples with
    desired outcome" are training windows the classifier predicts that class."""
    if k <= 0:
        return {0: [], 1: []}
    path = run.sft / "fewshot.jsonl"
    if not path.exists():
        raise GenerateError(f"{path}: no few-shot pool; build it with `python -m dataset_builders pairs --run ...`")
    out: dict[int, list] = {0: [], 1: []}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cls = int(row["predicted_class"])
            features = dict(row["features"])
        except (ValueError, KeyError, TypeError) as e:
            raise GenerateError(f"{path}:{i}: not a few-shot window ({type(e).__name__}: {e})") from None
        missing = [n for n in spec.names if n not in features]
        if missing:
            raise GenerateError(f"{path}:{i}: features: missing {missing}")
        if cls in out and len(out[cls]) < k:
            out[cls].append(features)
    short = {c: len(v) for c, v in out.items() if len(v) < k}
    if short:
        raise GenerateError(f"{path}: fewer than {k} examples for desired class(es) {short}")
    return out


def row_seed(seed: int, window_id: str, candidate: int) -> int:
    """A sampling seed per (factual, candidate): the same answer whatever the batch or resume point."""
    return zlib.crc32(f"{seed}:{window_id}:{candidate}".encode())


# --- records ----------------------------------------------------------------------------------
def make_records(spec, blackbox, method, jobs, results, extra) -> list[CFRecord]:
    """CF records for finished jobs; the black box predicts every parsed CF in one call. A CF
    with a non-finite number (a parser that let one through) is that row's parse error, never a
    crash of the whole batch."""
    for res in results:
        if res.cf is not None and not _finite(res.cf):
            res.extra["parse_note"] = "non-finite number in the answer"
            res.cf, res.status = None, "parse_error"
    cfs = [r.cf for r in results if r.cf is not None]
    preds = iter(blackbox.predict(cfs).tolist() if cfs else [])
    out = []
    for (row, factual, candidate, _), res in zip(jobs, results, strict=True):
        counts = {"prefill_tokens": res.prefill_tokens, "sampled_tokens": res.sampled_tokens}
        out.append(
            CFRecord(
                window_id=str(row[ID_COL]),
                participant_id=str(row[GROUP_COL]),
                method=method,
                candidate=candidate,
                factual=factual,
                factual_pred=int(row["factual_pred"]),
                desired_class=1 - int(row["factual_pred"]),
                raw_text=res.text,
                cf=res.cf,
                parse_status=res.status,
                immutables_ok=immutables_kept(spec, factual, res.cf) if res.cf is not None else None,
                cf_pred=int(next(preds)) if res.cf is not None else None,
                seconds=res.seconds,
                error=res.error,
                prompt_tokens=res.prompt_tokens,
                completion_tokens=res.completion_tokens,
                decode_steps=res.decode_steps,
                extra={**extra, **{k: v for k, v in counts.items() if v is not None}, **res.extra},
            )
        )
    return out


def _finite(cf: dict) -> bool:
    return all(np.isfinite(v) for v in cf.values() if isinstance(v, int | float) and not isinstance(v, bool))


def record_parts(run: RunDir, backend: str, ids_file: Path, seed: int, fewshot: int, hf: dict, api: dict) -> dict:
    """What makes this method's answers what they are (the CF file's fingerprint)."""
    if backend == "hf":
        options = {k: hf.get(k, default) for k, default in HF_ANSWER_OPTIONS.items()}
        config = {"backend": "hf", "seed": seed, "fewshot": fewshot, **options}
        from sensecf.models import embedded_model_dir

        model_dir = Path(hf["model"]) if hf.get("model") else embedded_model_dir()
        adapter = Path(hf["adapter"]) if hf.get("adapter") else None
        models = {
            "model": fingerprint.tree_hash(model_dir, "*.safetensors"),
            "model_config": fingerprint.artifact_hash(model_dir / "config.json"),
            "adapter": fingerprint.artifact_hash(adapter / "adapter_model.safetensors") if adapter else None,
            "adapter_config": fingerprint.artifact_hash(adapter / "adapter_config.json") if adapter else None,
        }
    else:
        options = {k: api.get(k) for k in OPENAI_ANSWER_OPTIONS}
        if api.get("system_role") is False:  # the system turn folded: other text (absent when sent as is)
            options["system_role"] = False
        if api.get("repeat_penalty") is not None:  # absent when not sent (the server's own default)
            options["repeat_penalty"] = api["repeat_penalty"]
        config = {"backend": "openai", "seed": seed, "fewshot": fewshot, **options}
        models = {}
    return fingerprint.cf_parts(
        run, config, read_factual_ids(ids_file), prompts=PROMPT_TEMPLATES,
        fewshot_pool=run.sft / "fewshot.jsonl" if fewshot else None, **models,
    )


# --- the stage --------------------------------------------------------------------------------
def generate(
    run: RunDir,
    method: str,
    backend: str = "hf",
    *,
    split: str = "test",
    n: int = 200,
    seed: int = 0,
    factuals: Path | None = None,
    candidates: int = 1,
    desired_class: int | None = None,
    fewshot: int = 0,
    batch_size: int = 16,
    protocol: str = "sensecf",
    hf_options: dict | None = None,
    openai_options: dict | None = None,
    allow_external_api: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the records still missing; returns a summary (counts, timings, failures).
    method: the base name (`llama31_ft`); the protocol names the row (`llama31_ft` under the
    paper's, `llama31_ft+grammar` under ours) and decides the decoding (sensecf.protocols).
    allow_external_api: the remote host that may receive a non-synthetic cohort's rows."""
    hf, api = dict(hf_options or {}), dict(openai_options or {})
    try:
        rules = protocols.get(protocol)
        method = protocols.row_name(method, protocol, "llm")
    except ValueError as e:
        raise GenerateError(str(e)) from None
    hf["free"] = rules.free_decoding
    if rules.openai_constraint is not None:
        api["constraint"] = rules.openai_constraint
    elif backend == "openai" and api.get("constraint") == "none":
        raise GenerateError("--constraint none is free decoding, the paper protocol: use --protocol paper")
    temperature = float((hf if backend == "hf" else api).get("temperature", 0.0))
    if backend not in ("hf", "openai"):
        raise GenerateError(f"--backend must be hf or openai, got '{backend}'")
    if candidates < 1:
        raise GenerateError(f"--candidates must be >= 1, got {candidates}")
    if candidates > 1 and temperature <= 0:
        raise GenerateError(f"--candidates {candidates} needs --temperature > 0 (greedy answers are all the same)")
    if backend == "openai":
        # With no --base-url the OpenAI SDK sends to $OPENAI_BASE_URL when set: check that host, not OpenAI's.
        api["base_url"] = api.get("base_url") or os.environ.get("OPENAI_BASE_URL") or None
        try:
            privacy.check_endpoint(api.get("base_url"), synthetic=run.is_synthetic(),
                                   allowed_host=allow_external_api, cohort=run.cohort)
        except ValueError as e:
            raise GenerateError(str(e)) from None
    with run_lock(run.root):
        return _generate_locked(run, method, backend, split, n, seed, factuals, candidates, desired_class, fewshot,
                                batch_size, hf, api, overwrite, progress)


def _generate_locked(run, method, backend, split, n, seed, factuals, candidates, desired_class, fewshot, batch_size,
                     hf, api, overwrite, progress) -> dict:
    temperature = float((hf if backend == "hf" else api).get("temperature", 0.0))
    chosen, spec, blackbox, ids_file, source = choose_factuals(run, split, n, seed, factuals, desired_class)
    examples = fewshot_examples(run, fewshot, spec)
    path = records_dir(run, split) / f"{method}.jsonl"
    summary: dict = {"method": method, "protocol": protocols.protocol_of(method), "backend": backend,
                     "factuals": len(chosen), "factuals_from": source}
    parts = record_parts(run, backend, ids_file, seed, fewshot, hf, api)
    # A provider sees a keyed seed (unlinkable to the window); local sampling keeps the plain one.
    secret = privacy.run_secret(run.root) if backend == "openai" else None
    with RecordWriter(path, parts, overwrite=overwrite) as writer:
        if writer.moved_aside:
            summary["moved_aside"] = str(writer.moved_aside)
        jobs = []
        for _, row in chosen.iterrows():
            factual = native_values(spec, row)
            window = str(row[ID_COL])
            for c in range(candidates):
                if not writer.is_done(window, method, c):
                    s = privacy.keyed_seed(secret, seed, window, c) if secret else row_seed(seed, window, c)
                    jobs.append((row, factual, c, s))
        summary["already_done"] = len(chosen) * candidates - len(jobs)
        bar = tqdm(total=len(jobs), desc=method, unit="cf", disable=not progress)
        extra = {"backend": backend, "temperature": temperature, "fewshot": fewshot}
        if backend == "hf":
            failures = _run_hf(spec, blackbox, method, jobs, examples, batch_size, hf, extra, writer, bar)
        else:
            failures = _run_openai(spec, blackbox, method, jobs, examples, api, extra, writer, bar)
        bar.close()
    wanted = set(chosen[ID_COL].astype(str))
    records = [r for r in read_records(path) if r.window_id in wanted]
    summary.update(
        written=len(jobs) - len(failures),
        failed=failures,
        records=len(records),
        status=dict(Counter(r.parse_status for r in records)),
        immutables_violated=sum(r.immutables_ok is False for r in records),
        seconds_per_cf=float(np.mean([r.seconds for r in records])) if records else None,
        decode_steps_per_cf=_mean([r.decode_steps for r in records]),
        file=str(path),
    )
    config = {"method": method, "backend": backend, "split": split, "n": n, "candidates": candidates}
    config.update(desired_class=desired_class)
    config.update(fewshot=fewshot, batch_size=batch_size, summary=summary)
    config["options"] = hf if backend == "hf" else api
    inputs = [run.features, run.spec, run.model, ids_file, run.sft / "fewshot.jsonl" if fewshot else None]
    if hf.get("adapter"):
        inputs.append(Path(hf["adapter"]) / "adapter_model.safetensors")
    config["fingerprint"] = fingerprint.digest(parts)
    write_provenance(path.parent / "generate" / method, config=config, inputs=[p for p in inputs if p], seed=seed)
    return summary


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _messages(spec, job, examples):
    row, factual, _, _ = job
    desired = 1 - int(row["factual_pred"])
    return build_messages(spec, factual, desired, examples=examples[desired])


def stage_inputs(run: RunDir, adapter: Path | None, fewshot: int) -> list[Path]:
    """What a generate stage reads from the run directory, for W&B lineage."""
    return [run.model, *([adapter] if adapter else []), *([run.sft / "fewshot.jsonl"] if fewshot else [])]


def stage_outputs(run: RunDir, method: str, protocol: str, split: str) -> list[Path]:
    try:
        return [records_dir(run, split) / f"{protocols.row_name(method, protocol, 'llm')}.jsonl"]
    except ValueError:  # an unknown protocol: generate() says so
        return []


def _run_hf(spec, blackbox, method, jobs, examples, batch_size, opts, extra, writer, bar) -> list:
    from sensecf.generate.hf_backend import DecodeConfig, HFGenerator, load_model
    from sensecf.generate.result import GenRequest

    if not jobs:
        return []
    opts = {**HF_ANSWER_OPTIONS, **opts}
    model, tokenizer = load_model(opts.get("model"), opts.get("adapter"), opts.get("device"), opts["merge_adapter"],
                                  opts["dtype"])
    config = DecodeConfig(
        constrained=not opts["free"],
        enforcer=opts["enforcer"],
        jump_forward=opts["jump_forward"],
        temperature=float(opts["temperature"]),
        max_new_tokens=int(opts["max_new_tokens"]),
        bound_groups=opts["bound_groups"],
    )
    generator = HFGenerator(model, tokenizer, spec, config)
    extra = {**extra, "model": str(opts.get("model") or "embedded:smollm2"), "adapter": opts.get("adapter")}
    if opts.get("adapter"):
        extra["adapter_merged"] = opts["merge_adapter"]
    extra.update(free=not config.constrained, enforcer=config.enforcer, jump_forward=config.jump_forward)
    extra["dtype"] = opts["dtype"]
    extra["batch_size"] = batch_size
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        requests = [
            GenRequest(job[1], seed=job[3], prompt=apply_chat_template(tokenizer, _messages(spec, job, examples)))
            for job in batch
        ]
        results = generator.generate_batch(requests)
        writer.write_all(make_records(spec, blackbox, method, batch, results, extra))
        bar.update(len(batch))
    return []


def _run_openai(spec, blackbox, method, jobs, examples, opts, extra, writer, bar) -> list:
    from sensecf.generate.openai_backend import OpenAIConfig, OpenAIGenerator
    from sensecf.generate.result import GenRequest

    config = OpenAIConfig(**opts)
    generator = OpenAIGenerator(spec, config)
    extra = {**extra, "model": config.model, "constraint": config.constraint, "base_url": config.base_url}
    requests = [GenRequest(job[1], seed=job[3], messages=_messages(spec, job, examples)) for job in jobs]

    def write(index, result):
        writer.write_all(make_records(spec, blackbox, method, [jobs[index]], [result], extra))
        bar.update(1)

    outcome = generator.generate(requests, on_result=write)
    return [
        {"window_id": str(jobs[f.index][0][ID_COL]), "candidate": jobs[f.index][2], "error": f.error}
        for f in outcome.failures
    ]


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    run: Path = typer.Option(..., help="run directory with cohort/ and classifier/"),
    method: str = typer.Option(..., help="base name of the method; records go to RUN/cfs/<row>.jsonl, row = "
                                         "<method> (paper protocol) or <method>+grammar (sensecf)"),
    protocol: str = typer.Option("sensecf", help="paper: free decoding, lenient parsing (the paper's method); "
                                                 "sensecf: the grammar (hf), JSON schema or regex (openai)"),
    backend: str = typer.Option("hf", help="hf (local transformers model) or openai (any OpenAI-compatible endpoint)"),
    n: int = typer.Option(200, help="factuals (half per predicted class): sampled, or the first of a factual file"),
    split: str = typer.Option("test", help="split of the factuals (train: CFs for augmentation)"),
    factuals: Path | None = typer.Option(None, help="JSON list of window ids (or factuals_<split>.json) to explain"),
    seed: int = typer.Option(0, help="seed of the factual sample and of sampling"),
    candidates: int = typer.Option(1, help="answers sampled per factual (verification keeps the nearest valid)"),
    desired_class: int | None = typer.Option(
        None, help="only factuals whose CF is sought in this class (0 or 1): augmentation of one scarce class"
    ),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    fewshot: int = typer.Option(0, help="examples per prompt from RUN/sft/fewshot.jsonl (0 = zero-shot)"),
    batch_size: int = typer.Option(16, help="hf: rows decoded together"),
    model: Path | None = typer.Option(None, help="hf: a local transformers model folder (default: embedded SmolLM2)"),
    adapter: Path | None = typer.Option(None, help="hf: a PEFT adapter folder (e.g. RUN/checkpoints/<recipe>)"),
    device: str | None = typer.Option(None, help="hf: cpu, cuda, cuda:1 (default: cuda if available)"),
    dtype: str = typer.Option("auto", help="hf: auto (bf16 on CUDA and on a CPU with native bf16, else float32), "
                              "float32 or bfloat16"),
    enforcer: str = typer.Option("xgrammar", help="hf: xgrammar or lmfe (lm-format-enforcer)"),
    no_jump_forward: bool = typer.Option(False, "--no-jump-forward", help="hf: sample forced text token by token"),
    no_group_bounds: bool = typer.Option(
        False, "--no-group-bounds", help="hf: do not bound group members so the computed one stays in range"
    ),
    max_new_tokens: int = typer.Option(256, help="hf, paper protocol: answer token budget"),
    no_merge_adapter: bool = typer.Option(
        False, "--no-merge-adapter", help="hf: keep the LoRA adapter apart (default: merged into the weights, faster)"
    ),
    api_model: str = typer.Option("gpt-4o-2024-08-06", help="openai: model (the LoRA name for vllm serve)"),
    base_url: str | None = typer.Option(
        None, help="openai: endpoint, e.g. http://localhost:8000/v1 (vllm serve); default $OPENAI_BASE_URL, else OpenAI"
    ),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai: environment variable holding the key"),
    constraint: str = typer.Option(
        "json_schema", help="openai, sensecf protocol: json_schema (GPT-4o), json_object_schema (llama.cpp server: "
                            "response_format json_object + schema) or regex (vLLM)"
    ),
    served_template: Path | None = typer.Option(
        None, help="openai: the adapter folder or chat-template file the server renders with (vllm_serve.sh's); "
                   "a template without a system role gets the system turn folded into the first user turn, as the "
                   "hf backend folds it (default: sent as a system turn)"
    ),
    max_tokens: int = typer.Option(512, help="openai: answer token budget"),
    repeat_penalty: float | None = typer.Option(
        None, help="openai, llama.cpp server only: its repeat_penalty (default 1.1 there); 1.0 decodes greedily as "
                   "the hf backend does. Not sent when unset (OpenAI rejects it)"
    ),
    concurrency: int = typer.Option(8, help="openai: requests in flight"),
    max_retries: int = typer.Option(5, help="openai: SDK retries for 429/5xx/timeouts"),
    timeout: float = typer.Option(120.0, help="openai: seconds to wait for one answer"),
    allow_external_api: str | None = typer.Option(
        None, metavar="HOST", help="openai: the remote host that may receive a cohort not marked synthetic"
    ),
    overwrite: bool = typer.Option(False, help="records made with other settings: move them aside and start afresh"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Generate CFs for the shared factuals and write CF records."""
    from sensecf.precision import default_device, resolve_dtype

    try:  # resolved here, so the CF file's fingerprint names the dtype the answers were computed in
        if backend == "hf":
            dtype = resolve_dtype(dtype, device or default_device())
    except ValueError as e:
        typer.secho(f"error: --dtype: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    hf = dict(
        model=str(model) if model else None,
        dtype=dtype,
        adapter=str(adapter) if adapter else None,
        device=device,
        enforcer=enforcer,
        jump_forward=not no_jump_forward,
        bound_groups=not no_group_bounds,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        merge_adapter=not no_merge_adapter,
    )
    from prompts.render import served_template_has_system_role
    from sensecf.generate.openai_backend import EndpointError, OpenAIConfig

    try:
        system_role = served_template_has_system_role(served_template) if served_template else True
    except FileNotFoundError as e:
        typer.secho(f"error: --served-template: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    api = asdict(
        OpenAIConfig(
            model=api_model,
            base_url=base_url,
            api_key_env=api_key_env,
            constraint=constraint,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
            system_role=system_role,
            repeat_penalty=repeat_penalty,
        )
    )
    run_dir = RunDir(run)
    # W&B (WANDB_MODE decides; offline by default): counts, seconds per CF, the CF file's lineage
    with stage_run(run_dir, "generate", inputs=stage_inputs(run_dir, adapter, fewshot),
                   outputs=stage_outputs(run_dir, method, protocol, split)) as wb:
        try:
            summary = generate(
                run_dir,
                method,
                backend,
                split=split,
                n=n,
                seed=seed,
                factuals=factuals,
                candidates=candidates,
                desired_class=desired_class,
                fewshot=fewshot,
                batch_size=batch_size,
                protocol=protocol,
                hf_options=hf,
                openai_options=api,
                allow_external_api=allow_external_api,
                overwrite=overwrite,
                progress=not quiet,
            )
        except EndpointError as e:  # the endpoint refused the key, the model or the account's quota
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None
        log_numbers(wb, summary)
        status = ", ".join(f"{k} {v}" for k, v in sorted(summary["status"].items()))
        typer.echo(
            f"{summary['method']} ({summary['protocol']} protocol): {summary['records']} records ({status}); "
            f"{summary['written']} new, {summary['already_done']} "
            f"already done; {summary['immutables_violated']} immutable violations; "
            f"{summary['seconds_per_cf'] or 0:.2f} s per CF -> {summary['file']}"
        )
        if summary.get("moved_aside"):
            typer.echo(f"the records made with other settings were moved to {summary['moved_aside']}")
        if summary["failed"]:
            typer.secho(f"{len(summary['failed'])} requests failed after retries (not written; re-run to retry):",
                        err=True)
            for f in summary["failed"][:10]:
                typer.echo(f"  {f['window_id']} candidate {f['candidate']}: {f['error']}", err=True)
            raise typer.Exit(1)


if __name__ == "__main__":
    run_cli(app)
