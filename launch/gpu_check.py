"""The Python half of `launch/gpu_check.sh`: the 8B stand-in, each step's record, the JSON summary.

    launch/gpu_check.sh [--out DIR] [--skip-install] [--dry-run]           # the check itself (see --help)
    python -m launch.gpu_check model --out DIR [--config-only] [--device cuda]
    python -m launch.gpu_check extra gpu                                     # the pyproject extra, one a line
    python -m launch.gpu_check record --out DIR --step NAME --status ok --seconds 12.3 --log LOG
        [--train-dir RUN/checkpoints/llama31] [--cfs RUN/cfs/ROW.jsonl --generate-seconds S] [--smi CSV]
        [--phases FILE] [--installed-python PY --packages torch,flash-attn] [--reason TEXT]
    python -m launch.gpu_check summary --out DIR --steps a,b,c [--option key=value ...]  # exit 1 if a step failed
    python -m launch.gpu_check cuda [--build-only] | imports MODULE... | free-port | api-key
    python -m launch.gpu_check wait-http URL --pid PID --timeout S

`model` writes a random-init LlamaForCausalLM of the real Llama-3.1-8B architecture (config.json of
meta-llama/Llama-3.1-8B-Instruct: hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336,
vocab 128256, rope theta 500000 with llama3 rope scaling) with the real Llama-3.1 tokenizer and chat
template (sensecf.models), in bf16, plus sensecf_tiny.json so the report calls its numbers
meaningless. A folder written with the same config and seed is reused.

`record` writes DIR/steps/NAME.json: status ok/failed/skipped, seconds, exit code, the commands the
step ran (its log's `+ ` lines), the log's tail when it failed, the packages it installed, and its
figures, each {"value", "unit", "note"}: training reads RUN/checkpoints/<recipe>/train_summary.json
(launch.train) and the trainer's log history (Axolotl logs torch.cuda.max_memory_allocated at each
logging step), generation reads the CF records (parse rate, validity, seconds per CF), nvidia-smi
samples give the device's memory peak. `summary` gathers the steps into DIR/gpu_check.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "sensecf.gpu_check/1"
STATUSES = ("ok", "failed", "skipped")
TAIL_LINES, TAIL_CHARS = 40, 4000

# config.json of meta-llama/Llama-3.1-8B-Instruct (transformers 5 folds rope_theta and rope_scaling
# into rope_parameters; the values are the release's).
LLAMA31_8B = {
    "vocab_size": 128_256,
    "hidden_size": 4096,
    "intermediate_size": 14_336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 128_000,
    "eos_token_id": [128_001, 128_008, 128_009],
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500_000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}
LLAMA31_8B_PARAMETERS = 8_030_261_248  # the release's count (embeddings untied)
MODEL_MARKER = "gpu_check_model.json"
PHASES = {  # `name seconds` lines a step may write (launch/gpu_check.sh `phase`)
    "generate_command": "wall time of the eval.generate command",
    "vllm_server_start": "from `launch/vllm_serve.sh` to /v1/models answering (model and adapter loaded)",
}


class CheckError(ValueError):
    """A helper's input is unusable; one line, exit code 2 (sensecf.cli)."""


# --- the 8B stand-in ---------------------------------------------------------------------------
def llama31_8b_config():
    import transformers

    return transformers.LlamaConfig(**LLAMA31_8B)


def parameter_count(config) -> int:
    """Parameters of the model `config` describes, counted on the meta device (no memory)."""
    import torch
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def write_llama31_8b(out: Path, seed: int = 0, config_only: bool = False, device: str | None = None) -> dict:
    """Write the random-init 8B stand-in (or with config_only its config, generation config and
    tokenizer alone) to `out`; returns the facts also written to out/MODEL_MARKER."""
    import shutil

    import torch
    import transformers

    from sensecf.models import TINY_MARKER, load_tokenizer

    out = Path(out)
    config = llama31_8b_config()
    wanted = {"config": json.loads(json.dumps(LLAMA31_8B)), "seed": seed, "config_only": config_only}
    marker = out / MODEL_MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in wanted} == wanted:
            return {**done, "reused": True}
    tokenizer = load_tokenizer("llama3_1")
    if len(tokenizer) != LLAMA31_8B["vocab_size"]:
        raise CheckError(f"the Llama-3.1 tokenizer has {len(tokenizer)} tokens, expected {LLAMA31_8B['vocab_size']}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    facts = {**wanted, "architecture": "LlamaForCausalLM (Llama-3.1-8B)", "random_init": True}
    if config_only:
        config.architectures = ["LlamaForCausalLM"]
        config.dtype = torch.bfloat16
        config.save_pretrained(tmp)
        transformers.GenerationConfig.from_model_config(config).save_pretrained(tmp)
        facts["parameters"] = parameter_count(config)
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        facts["parameters"] = sum(p.numel() for p in model.parameters())
        facts["device"] = device
        model.save_pretrained(tmp, safe_serialization=True)
        del model
    tokenizer.save_pretrained(tmp)
    # the report reads this to say that numbers from this model are meaningless
    (tmp / TINY_MARKER).write_text(json.dumps({"stand_in_for": "llama31", "seed": seed, "random_init": True}))
    facts["bytes"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    facts["write_seconds"] = round(time.perf_counter() - started, 1)
    (tmp / MODEL_MARKER).write_text(json.dumps(facts, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a folder is complete or absent
    return {**facts, "reused": False}


# --- the gpu extra -----------------------------------------------------------------------------
def extra_requirements(name: str, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    extras = tomllib.loads(Path(pyproject).read_text())["project"].get("optional-dependencies", {})
    if name not in extras:
        raise CheckError(f"{pyproject}: no optional-dependencies '{name}' (has {sorted(extras)})")
    return list(extras[name])


def installed_versions(python: str, packages: list[str]) -> dict:
    """Versions of `packages` in the environment of `python` (None: not installed), plus torch's
    CUDA version when torch is among them. Runs that interpreter: it may be another venv's."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = None\n"
        "if out.get('torch'):\n"
        "    try:\n"
        "        import torch; out['torch.version.cuda'] = torch.version.cuda\n"
        "    except Exception as e: out['torch.version.cuda'] = f'import failed: {e}'\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run([python, "-c", code, *packages], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{python}: {e}"}
    if proc.returncode != 0:
        return {"error": f"{python}: {tail(proc.stderr, 5)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- figures -----------------------------------------------------------------------------------
def figure(value, unit: str, note: str | None = None) -> dict:
    out = {"value": value, "unit": unit}
    if note:
        out["note"] = note
    return out


def tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def smi_figures(csv: Path | None) -> dict:
    """Peak and first sample of `nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits`
    sampled during the step (MiB, the whole device: every process, CUDA contexts, allocator caches)."""
    if csv is None or not Path(csv).is_file():
        return {}
    used = []
    for line in Path(csv).read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[-1].isdigit():
            used.append(int(parts[-1]))
    if not used:
        return {}
    return {
        "gpu_memory_used_peak": figure(max(used), "MiB", f"nvidia-smi memory.used, max of {len(used)} samples "
                                                         "(device-wide: every process, CUDA context and cache)"),
        "gpu_memory_used_at_start": figure(used[0], "MiB", "nvidia-smi memory.used, first sample of the step"),
    }


def train_figures(train_dir: Path) -> dict:
    """Throughput and memory of an Axolotl run that launch.train finished."""
    from launch.train import _last_checkpoint, training_summary

    train_dir = Path(train_dir)
    summary_file = train_dir / "train_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else training_summary(train_dir)
    figs: dict = {}
    if "error" in summary:
        figs["train_summary_error"] = figure(summary["error"], "text")
        return figs
    figs["global_step"] = figure(summary.get("global_step"), "optimizer steps")
    figs["loss_first"] = figure(summary.get("loss_first"), "nats/token", "training loss at the first logged step")
    figs["loss_last"] = figure(summary.get("loss_last"), "nats/token", "training loss at the last logged step")
    runtime = summary.get("train_runtime_seconds")
    figs["train_runtime"] = figure(runtime, "s", "the trainer's train_runtime: the training loop, evaluation "
                                                 "included, model loading not")
    tokens = summary.get("tokens") or {}
    if tokens:
        figs["tokens_all"] = figure(tokens.get("total"), "tokens", "every token slot of the batches, padding included")
        figs["tokens_trained"] = figure(tokens.get("trainable"), "tokens",
                                        "tokens with a loss (the assistant's answers: labels != -100)")
    figs["tokens_per_second_all"] = figure(summary.get("tokens_per_second"), "tokens/s",
                                           "ALL token slots of the batches (padding included) / train_runtime")
    figs["tokens_per_second_trained"] = figure(summary.get("trainable_tokens_per_second"), "tokens/s",
                                               "TRAINED tokens only (labels != -100) / train_runtime")
    if summary.get("adapter_bytes") is not None:
        figs["adapter_size"] = figure(summary["adapter_bytes"], "bytes")
    checkpoint = _last_checkpoint(train_dir)
    if checkpoint is not None:
        history = json.loads((checkpoint / "trainer_state.json").read_text()).get("log_history", [])
        for key, name, note in (
            ("memory/max_allocated (GiB)", "peak_gpu_memory_allocated",
             "torch.cuda.max_memory_allocated, max over the logging steps (Axolotl logs and resets it each log)"),
            ("memory/max_active (GiB)", "peak_gpu_memory_active", "torch active_bytes.all.peak, max over the logs"),
            ("memory/device_reserved (GiB)", "peak_gpu_memory_reserved",
             "torch.cuda.max_memory_reserved, max over the logs"),
        ):
            values = [h[key] for h in history if isinstance(h.get(key), int | float)]
            if values:
                figs[name] = figure(max(values), "GiB", note)
    return figs


def generate_figures(cfs: Path, command_seconds: float | None) -> dict:
    """Parse rate, validity and seconds per CF of one eval.generate run's records."""
    from sensecf.records import read_records

    records = read_records(cfs)
    n = len(records)
    if not n:
        return {"records": figure(0, "CFs", f"no records in {cfs}")}
    parsed = sum(r.cf is not None for r in records)  # eval.metrics' parse_rate: a CF came out
    figs = {
        "records": figure(n, "CFs"),
        "parse_rate": figure(round(parsed / n, 4), "fraction", "records with a parsed CF / records"),
        "validity": figure(round(sum(r.valid for r in records) / n, 4), "fraction",
                           "records whose CF the classifier predicts as the desired class / records"),
        "immutables_violated": figure(sum(r.immutables_ok is False for r in records), "CFs"),
        "seconds_per_cf_records": figure(round(sum(r.seconds for r in records) / n, 4), "s/CF",
                                         "mean of the records' own seconds (eval.generate's 's per CF'): hf = a "
                                         "batch's decode time / its rows; openai = one request's latency"),
        "completion_tokens_per_cf": figure(
            round(sum(r.completion_tokens or 0 for r in records) / n, 1), "tokens/CF"),
    }
    if command_seconds:
        figs["seconds_per_cf_wall"] = figure(round(command_seconds / n, 4), "s/CF",
                                             "the eval.generate command's wall time / records (hf: model loading "
                                             "included; openai: the server already up)")
    return figs


def read_phases(path: Path | None) -> dict[str, float]:
    """`name seconds` lines a step wrote (e.g. vllm_server_start 84.2)."""
    out: dict[str, float] = {}
    if path is None or not Path(path).is_file():
        return out
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


# --- step records and the summary --------------------------------------------------------------
def step_record(
    name: str,
    status: str,
    seconds: float | None = None,
    exit_code: int | None = None,
    log: Path | None = None,
    reason: str | None = None,
    figures: dict | None = None,
    installed: dict | None = None,
    limit_seconds: float | None = None,
) -> dict:
    """One step's entry of gpu_check.json."""
    if status not in STATUSES:
        raise CheckError(f"step {name}: status must be one of {STATUSES}, got '{status}'")
    text = Path(log).read_text(errors="replace") if log is not None and Path(log).is_file() else ""
    entry: dict = {"name": name, "status": status, "seconds": seconds, "exit_code": exit_code}
    if limit_seconds is not None:
        entry["limit_seconds"] = limit_seconds
    entry["commands"] = [line[2:] for line in text.splitlines() if line.startswith("+ ")]
    if log is not None:
        entry["log"] = str(log)
    if status == "failed" and exit_code in (124, 137) and not reason:
        reason = f"timed out after {limit_seconds:g} s" if limit_seconds else "timed out"
    if reason:
        entry["reason"] = reason
    if status == "failed":
        entry["error_tail"] = tail(text) if text else None
    if installed is not None:
        entry["installed"] = installed
    entry["figures"] = figures or {}
    return entry


def assemble(steps: list[dict], started: str | None = None, options: dict | None = None,
             environment: dict | None = None, wall_seconds: float | None = None) -> dict:
    """gpu_check.json from the step entries, in plan order: ok is true when no step failed;
    seconds = the whole check's wall time when known, else the steps' sum."""
    failed = [s["name"] for s in steps if s["status"] == "failed"]
    total = wall_seconds if wall_seconds is not None else sum(s["seconds"] or 0 for s in steps)
    return {
        "schema": SCHEMA,
        "ok": not failed,
        "failed": failed,
        "skipped": [s["name"] for s in steps if s["status"] == "skipped"],
        "passed": [s["name"] for s in steps if s["status"] == "ok"],
        "started": started,
        "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(total, 1),
        "options": options or {},
        "environment": environment or {},
        "steps": steps,
        "note": "random-init model of the Llama-3.1-8B architecture: speed and memory are real, "
                "loss, parse rate and validity are meaningless",
    }


def environment() -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "host": platform.node()}
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        env["gpus"] = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        env["gpus"] = None  # no nvidia-smi
    return env


# --- CLI ---------------------------------------------------------------------------------------
app = typer.Typer(help="The Python parts of launch/gpu_check.sh.", no_args_is_help=True, add_completion=False)


@app.command("model")
def model_cmd(
    out: Path = typer.Option(..., help="folder to write the model into"),
    seed: int = typer.Option(0, help="seed of the random weights"),
    config_only: bool = typer.Option(False, "--config-only", help="config, generation config and tokenizer only"),
    device: str = typer.Option(None, help="where to initialise the weights (default: cuda if available)"),
) -> None:
    """Write a random-init model of the Llama-3.1-8B architecture with the real Llama-3.1 tokenizer."""
    facts = write_llama31_8b(out, seed=seed, config_only=config_only, device=device)
    typer.echo(f"llama31-8b: {out}  {facts['parameters']:,} parameters, {facts['bytes']:,} bytes"
               f"{' (reused)' if facts['reused'] else ''}")


@app.command("extra")
def extra_cmd(name: str = typer.Argument(..., help="an optional-dependencies group of pyproject.toml")) -> None:
    """Print the requirements of a pyproject extra, one a line."""
    for req in extra_requirements(name):
        typer.echo(req)


@app.command("record")
def record_cmd(
    out: Path = typer.Option(..., help="the check's output folder"),
    step: str = typer.Option(..., help="step name"),
    status: str = typer.Option(..., help="ok, failed or skipped"),
    seconds: float = typer.Option(None, help="the step's wall time"),
    exit_code: int = typer.Option(None, help="the step's exit code"),
    limit_seconds: float = typer.Option(None, help="the time limit it ran under"),
    log: Path = typer.Option(None, help="the step's log"),
    reason: str = typer.Option(None, help="why it was skipped (or failed)"),
    train_dir: Path = typer.Option(None, help="training output folder (train_summary.json, checkpoint-*)"),
    cfs: Path = typer.Option(None, help="CF records the step wrote"),
    generate_seconds: float = typer.Option(None, help="wall time of the eval.generate command alone"),
    smi: Path = typer.Option(None, help="nvidia-smi samples taken during the step"),
    phases: Path = typer.Option(None, help="`name seconds` lines the step wrote"),
    model_dir: Path = typer.Option(None, help="the 8B stand-in's folder"),
    sft_dir: Path = typer.Option(None, help="RUN/sft: the SFT pairs' summary.json"),
    installed_python: str = typer.Option(None, help="interpreter whose packages to list"),
    packages: str = typer.Option(None, help="comma-separated distribution names to list"),
    note: list[str] = typer.Option([], help="key=value facts to keep (repeatable)"),
) -> None:
    """Write OUT/steps/STEP.json: the step's status, time, commands, error tail, packages and figures."""
    figs: dict = {}
    problems = []
    # A figure that cannot be read must not turn the record into a crash: say so in the record.
    timed = read_phases(phases)
    if generate_seconds is None:
        generate_seconds = timed.get("generate_command")
    for label, fn in (
        ("train", (lambda: train_figures(train_dir)) if train_dir else None),
        ("generate", (lambda: generate_figures(cfs, generate_seconds)) if cfs else None),
    ):
        if fn is None or status == "skipped":
            continue
        try:
            figs.update(fn())
        except Exception as e:  # noqa: BLE001 - reported in the record
            problems.append(f"{label} figures: {type(e).__name__}: {e}")
    if status != "skipped":
        figs.update(smi_figures(smi))
        for key, value in timed.items():
            figs[f"{key}_seconds"] = figure(value, "s", PHASES.get(key))
    if model_dir and (Path(model_dir) / MODEL_MARKER).is_file():
        facts = json.loads((Path(model_dir) / MODEL_MARKER).read_text())
        figs["parameters"] = figure(facts.get("parameters"), "parameters")
        figs["model_bytes"] = figure(facts.get("bytes"), "bytes", "the folder on disk (bf16 safetensors + tokenizer)")
        figs["write_seconds"] = figure(facts.get("write_seconds"), "s", "initialise and save (the first time)")
    if sft_dir and status != "skipped" and (Path(sft_dir) / "summary.json").is_file():
        written = json.loads((Path(sft_dir) / "summary.json").read_text()).get("written", {})
        for split, count in written.items():
            figs[f"sft_pairs_{split}"] = figure(count, "pairs")
    installed = None
    if installed_python and packages:
        installed = installed_versions(installed_python, [p for p in packages.split(",") if p])
    entry = step_record(step, status, seconds, exit_code, log, reason, figs, installed, limit_seconds)
    for item in note:
        key, _, value = item.partition("=")
        entry.setdefault("notes", {})[key] = value
    if problems:
        entry["figure_errors"] = problems
    (out / "steps").mkdir(parents=True, exist_ok=True)
    from sensecf.atomic import write_json

    write_json(out / "steps" / f"{step}.json", entry)
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    why = f": {entry['reason']}" if entry.get("reason") else ""
    typer.echo(f"[{step}] {status}{took}{why}")


@app.command("summary")
def summary_cmd(
    out: Path = typer.Option(..., help="the check's output folder"),
    steps: str = typer.Option(..., help="the planned steps in order, comma-separated"),
    started: str = typer.Option(None, help="when the check began (ISO time)"),
    wall_seconds: float = typer.Option(None, help="the whole check's wall time"),
    option: list[str] = typer.Option([], help="key=value: one of the check's options (repeatable)"),
) -> None:
    """Gather OUT/steps/*.json into OUT/gpu_check.json; exit 1 when a step failed or left no record."""
    entries = []
    for name in [s for s in steps.split(",") if s]:
        path = out / "steps" / f"{name}.json"
        if path.is_file():
            entries.append(json.loads(path.read_text()))
        else:
            entries.append(step_record(name, "failed", reason="the step left no record (its recorder failed)"))
    options = dict(item.partition("=")[::2] for item in option)
    summary = assemble(entries, started=started, options=options, environment=environment(), wall_seconds=wall_seconds)
    from sensecf.atomic import write_json

    write_json(out / "gpu_check.json", summary)
    for s in entries:
        typer.echo(f"  {s['status']:<8} {s['name']:<20} {s['seconds'] if s['seconds'] is not None else '-':>8} s"
                   f"{'  ' + s['reason'] if s.get('reason') else ''}")
    typer.echo(f"{'ok' if summary['ok'] else 'FAILED: ' + ', '.join(summary['failed'])} -> {out / 'gpu_check.json'}")
    raise typer.Exit(0 if summary["ok"] else 1)


@app.command("cuda")
def cuda_cmd(
    build_only: bool = typer.Option(False, "--build-only", help="only ask whether torch is a CUDA build"),
) -> None:
    """Print torch's version, its CUDA and the GPU; exit 1 unless torch is a CUDA build that sees a GPU."""
    import torch

    typer.echo(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU available {torch.cuda.is_available()}"
               + (f": {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    if not torch.version.cuda or not (build_only or torch.cuda.is_available()):
        raise typer.Exit(1)


@app.command("imports")
def imports_cmd(modules: list[str] = typer.Argument(..., help="modules to import, e.g. flash_attn deepspeed")) -> None:
    """Import each module and print its version; exit 1 at the first that fails."""
    import importlib

    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure is the finding
            typer.echo(f"error: import {name}: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{name} {getattr(module, '__version__', '?')}")


@app.command("free-port")
def free_port_cmd() -> None:
    """Print a free TCP port on 127.0.0.1."""
    from launch.llamacpp_server import free_port

    typer.echo(free_port())


def constraints(requirements: Path = REPO / "requirements.txt") -> list[str]:
    """requirements.txt's pins as pip constraints: pip refuses extras in a constraints file
    ("Constraints cannot have extras"), so `pkg[extra]==v` becomes `pkg==v`."""
    out = []
    for line in Path(requirements).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.append(re.sub(r"\[[^\]]*\]", "", line))
    return out


@app.command("constraints")
def constraints_cmd(out: Path = typer.Argument(..., help="file to write")) -> None:
    """Write requirements.txt's pins, extras removed, as a pip constraints file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(constraints()) + "\n")


@app.command("api-key")
def api_key_cmd() -> None:
    """Print a fresh random key for the local vLLM server."""
    typer.echo(secrets.token_hex(16))


@app.command("wait-http")
def wait_http_cmd(
    url: str = typer.Argument(..., help="e.g. http://127.0.0.1:8000/v1/models"),
    pid: int = typer.Option(None, help="give up as soon as this process has exited"),
    timeout: float = typer.Option(600, help="seconds to wait"),
    api_key_env: str = typer.Option("VLLM_API_KEY", help="environment variable with the bearer key"),
) -> None:
    """Wait until URL answers 200 (a server started in the background is ready)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url)
    if os.environ.get(api_key_env):
        request.add_header("Authorization", f"Bearer {os.environ[api_key_env]}")
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            typer.echo(f"error: the server (pid {pid}) exited before {url} answered", err=True)
            raise typer.Exit(1)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    typer.echo(f"ready: {url}")
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    typer.echo(f"error: {url} did not answer within {timeout:g} s", err=True)
    raise typer.Exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent shell) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and re.search(r"\) Z ", stat.read_text()))


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(app)
