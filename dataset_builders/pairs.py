"""SFT pairs for Axolotl: the Fig. 4 prompt of each training factual -> its teacher CF in Fig. 4's
answer format. The paper does not say where its targets came from; the teacher is this project's
choice (sensecf.teacher).

    python -m dataset_builders.pairs --run runs/demo [--val-fraction 0.1] [--fewshot 20] [--max-pairs N] [--seed 0]

Reads RUN/cohort (training split) and RUN/classifier/model.skops; writes RUN/sft/:
- train.jsonl, val.jsonl: {"messages": [system, user, assistant], "window_id", "participant_id",
  "desired_class"} rows for Axolotl's `type: chat_template`; val holds whole participants.
- fewshot.jsonl: a pool of {"window_id", "participant_id", "predicted_class", "features"}
  training windows, balanced over the class the classifier predicts, for few-shot prompts: Fig. 4's
  "examples with desired outcome" are windows predicted the desired class; train participants only.
- summary.json: counts (factuals, teacher valid / invalid by reason, rows per file) and token
  lengths of the full rendered chat per real tokenizer (min / mean / p95 / max).
Only factuals with a valid teacher CF become pairs; the rest are counted in summary.json.
Every example must fit `--max-tokens` (768, the recipes' sequence_len) in every tokenizer, else the build fails
naming the longest example.

The build holds the run directory's lock; each file is written atomically and provenance.json
last. Bad input ends in one line, `error: <file>: <field or row>: <reason>`, exit code 2.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import typer

from prompts.render import apply_chat_template, training_messages
from sensecf.atomic import atomic_path, run_lock, write_bytes
from sensecf.blackbox import BlackBox
from sensecf.cli import run_cli
from sensecf.models import TOKENIZER_NAMES, load_tokenizer
from sensecf.rundir import GROUP_COL, ID_COL, SPLIT_COL, RunDir, write_provenance
from sensecf.spec import DatasetSpec
from sensecf.teacher import teacher_cfs
from sensecf.wandb_log import log_metrics, stage_run

# The recipes' sequence_len. Table I says 512, but Fig. 4 verbatim with AI-READI's 12 features and
# its answer is up to 647 tokens an example (Mistral tokenizer, long study-group names), so 512
# would cut answers short.
MAX_TOKENS = 768


class PairsError(ValueError):
    """The pairs cannot be built; the message names the file, example or setting at fault."""


def _python_row(row: pd.Series, spec: DatasetSpec) -> dict:
    out = {}
    for f in spec.features:
        value = row[f.name]
        out[f.name] = str(value) if not f.is_numeric else int(value) if f.kind == "integer" else float(value)
    return out


def _val_participants(participants: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    if not 0 <= fraction < 1:
        raise PairsError(f"--val-fraction must be in [0, 1), got {fraction}")
    n_val = round(fraction * len(participants))
    if fraction > 0 and len(participants) >= 2:
        n_val = min(max(n_val, 1), len(participants) - 1)
    return set(rng.choice(participants, size=n_val, replace=False).tolist()) if n_val else set()


def _fewshot_pool(windows: list[dict], size: int, rng: np.random.Generator) -> list[dict]:
    """Up to `size` windows, half per predicted class where there are enough."""
    by_class = {c: [w for w in windows if w["predicted_class"] == c] for c in (0, 1)}
    want = {0: size // 2, 1: size - size // 2}
    # A class short of its half passes the rest to the other class.
    for c in (0, 1):
        short = want[c] - len(by_class[c])
        if short > 0:
            want[c] -= short
            want[1 - c] += short
    pool = []
    for c in (0, 1):
        n = min(want[c], len(by_class[c]))
        picks = rng.choice(len(by_class[c]), size=n, replace=False) if n else []
        pool += [by_class[c][i] for i in sorted(picks)]
    return pool


def token_lengths(rows: list[dict], tokenizer) -> list[int]:
    """Tokens of each row's full rendered chat (template's own special tokens included)."""
    texts = [apply_chat_template(tokenizer, r["messages"], add_generation_prompt=False) for r in rows]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    a = np.asarray(lengths)
    return {
        "n": len(a),
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "p95": float(np.percentile(a, 95)),
        "max": int(a.max()),
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r) + b"\n")


def build_pairs(
    run: RunDir,
    *,
    val_fraction: float = 0.1,
    fewshot: int = 20,
    max_pairs: int | None = None,
    seed: int = 0,
    max_tokens: int = MAX_TOKENS,
    tokenizers: tuple[str, ...] = TOKENIZER_NAMES,
) -> dict:
    """Build RUN/sft/{train,val,fewshot}.jsonl and summary.json under the run's lock; returns the summary."""
    with run_lock(run.root):
        return _build_pairs(
            run,
            val_fraction=val_fraction,
            fewshot=fewshot,
            max_pairs=max_pairs,
            seed=seed,
            max_tokens=max_tokens,
            tokenizers=tokenizers,
        )


def _build_pairs(run: RunDir, *, val_fraction, fewshot, max_pairs, seed, max_tokens, tokenizers) -> dict:
    df, spec = run.load_cohort()
    for col in (ID_COL, GROUP_COL, SPLIT_COL):
        if col not in df.columns:
            raise PairsError(f"{run.features}: column '{col}': missing")
    train = df[df[SPLIT_COL] == "train"].reset_index(drop=True)
    if train.empty:
        raise PairsError(f"{run.features}: column '{SPLIT_COL}': no rows with {SPLIT_COL} == 'train'")
    blackbox = BlackBox.load(run.model, spec)
    rng = np.random.default_rng(seed)

    teacher = teacher_cfs(train, train, spec, blackbox)
    reasons = Counter(d for d in teacher.detail if d is not None)
    pairs = []
    for i, cf in enumerate(teacher.cfs):
        if cf is None:
            continue
        row = train.iloc[i]
        desired = int(teacher.desired_class[i])
        factual = _python_row(row, spec)
        pairs.append(
            {
                "window_id": str(row[ID_COL]),
                "participant_id": str(row[GROUP_COL]),
                "desired_class": desired,
                "factual": factual,
                "cf": cf,
                "messages": training_messages(spec, factual, desired, cf),
            }
        )
    dropped_by_cap = 0
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        dropped_by_cap = len(pairs) - max_pairs
        pairs = [pairs[i] for i in keep]

    participants = sorted({p["participant_id"] for p in pairs})
    val_ids = _val_participants(participants, val_fraction, rng)
    train_rows = [p for p in pairs if p["participant_id"] not in val_ids]
    val_rows = [p for p in pairs if p["participant_id"] in val_ids]
    # Fig. 4's few-shot examples are windows "with desired outcome": training windows of the
    # train participants (never val) as the classifier predicts them.
    windows = [
        {"window_id": str(row[ID_COL]), "participant_id": str(row[GROUP_COL]),
         "predicted_class": int(teacher.factual_pred[i]), "features": _python_row(row, spec)}
        for i, (_, row) in enumerate(train.iterrows())
        if str(row[GROUP_COL]) not in val_ids
    ]
    fewshot_rows = _fewshot_pool(windows, fewshot, rng)

    lengths, longest = {}, {}
    sft_rows = train_rows + val_rows
    for name in tokenizers:
        n_tokens = token_lengths(sft_rows, load_tokenizer(name))
        lengths[name] = _stats(n_tokens)
        if n_tokens:
            at = int(np.argmax(n_tokens))
            longest[name] = {"window_id": sft_rows[at]["window_id"], "tokens": n_tokens[at]}
            if n_tokens[at] > max_tokens:
                raise PairsError(
                    f"{run.features}: window_id {sft_rows[at]['window_id']}: the example is {n_tokens[at]} {name} "
                    f"tokens, over the "
                    f"{max_tokens}-token limit (sequence_len); shorten the prompt or the spec's names/categories"
                )

    out = run.sft
    out.mkdir(parents=True, exist_ok=True)
    # no provenance vouches for a half-replaced folder; it is written again last
    (out / "provenance.json").unlink(missing_ok=True)
    chat_keys = ("messages", "window_id", "participant_id", "desired_class")
    _write_jsonl(out / "train.jsonl", [{k: r[k] for k in chat_keys} for r in train_rows])
    _write_jsonl(out / "val.jsonl", [{k: r[k] for k in chat_keys} for r in val_rows])
    _write_jsonl(out / "fewshot.jsonl", fewshot_rows)

    summary = {
        "factuals": len(train),
        "factuals_by_predicted_class": {str(c): int((teacher.factual_pred == c).sum()) for c in (0, 1)},
        "teacher_valid": len(teacher.cfs) - sum(c is None for c in teacher.cfs),
        "teacher_invalid": sum(c is None for c in teacher.cfs),
        "teacher_invalid_reasons": dict(reasons),
        "dropped_by_max_pairs": dropped_by_cap,
        "written": {"train": len(train_rows), "val": len(val_rows), "fewshot": len(fewshot_rows)},
        "desired_class": {
            split: {str(c): sum(r["desired_class"] == c for r in rows) for c in (0, 1)}
            for split, rows in (("train", train_rows), ("val", val_rows))
        },
        "fewshot_by_predicted_class": {str(c): sum(r["predicted_class"] == c for r in fewshot_rows) for c in (0, 1)},
        "participants": {"train": len(participants) - len(val_ids), "val": len(val_ids)},
        "max_tokens": max_tokens,
        "token_lengths": lengths,
        "longest": longest,
    }
    write_bytes(out / "summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    write_provenance(
        out,
        config={
            "val_fraction": val_fraction,
            "fewshot": fewshot,
            "max_pairs": max_pairs,
            "max_tokens": max_tokens,
            "tokenizers": list(tokenizers),
        },
        inputs=[run.features, run.spec, run.model],
        seed=seed,
    )
    return summary


def main(
    run: Path = typer.Option(..., "--run", help="run directory with cohort/ and classifier/"),
    val_fraction: float = typer.Option(0.1, help="share of training participants held out for val.jsonl"),
    fewshot: int = typer.Option(20, help="size of the few-shot pool (half per desired class)"),
    max_pairs: int = typer.Option(None, help="keep at most this many pairs (random, seeded) for train + val"),
    seed: int = typer.Option(0),
    max_tokens: int = typer.Option(MAX_TOKENS, help="fail if a rendered example is longer (any tokenizer)"),
) -> None:
    """Build SFT pairs (Fig. 4 prompt -> teacher CF block) into RUN/sft/."""
    if not run.is_dir():
        raise PairsError(f"{run}: --run: no such run directory")
    run_dir = RunDir(run)
    with stage_run(run_dir, "sft_pairs", inputs=[run_dir.features, run_dir.model],
                   outputs=[run_dir.sft / "train.jsonl"]) as wb:
        summary = build_pairs(
            run_dir,
            val_fraction=val_fraction,
            fewshot=fewshot,
            max_pairs=max_pairs,
            seed=seed,
            max_tokens=max_tokens,
        )
        log_metrics(wb, {k: summary[k] for k in ("factuals", "teacher_valid", "teacher_invalid", "written")
                         if isinstance(summary.get(k), int)})
    typer.echo(
        f"factuals {summary['factuals']}: teacher valid {summary['teacher_valid']}, invalid "
        f"{summary['teacher_invalid']} {summary['teacher_invalid_reasons']}; dropped by --max-pairs "
        f"{summary['dropped_by_max_pairs']}"
    )
    typer.echo(f"written {summary['written']} -> {RunDir(run).sft}")
    for name, s in summary["token_lengths"].items():
        typer.echo(f"tokens {name}: {s}")


if __name__ == "__main__":
    run_cli(main)
