"""What each file of a run directory is as a W&B artifact, so stages can say what they used and made.

    ref = artifact_ref(run, run.classifier / "model.skops")  # ArtifactRef(name="demo-classifier", ...)
    artifact = ref.build(log_rows=False)                       # a wandb.Artifact, ready to log

A stage's input or output path names the artifact that holds it (its folder, by the table below):
`<group>-release` (synthetic only), `-cohort`, `-classifier`, `-sft`, `-adapter-<recipe>`,
`-cfs-<split>-<row>`, `-table3`, `-table4`, `-report`. Aggregates, configs and metrics are uploaded
on sync; files that hold or could give back a participant's data (the cohort table and participant
ids, SFT pairs, CF records, per-window figures and examples, and the weights trained on them) are
uploaded only for a cohort marked synthetic (RunDir.is_synthetic) or when the user opts in
(log_rows); otherwise the artifact holds `withheld_sha256.json`, their sha256 only: the lineage and
the digest, never the content or a local path.

Offline W&B cannot declare inputs (`use_artifact` needs the server), so every artifact's version
carries the alias `sha256-<16 hex>` of its content, and a run records its inputs by name and alias
in its config (`sensecf_inputs`); `python -m sensecf.wandb_sync RUN` links them once synced.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from sensecf.fingerprint import sha256_file
from sensecf.rundir import RunDir


@dataclass(frozen=True)
class Kind:
    """A run-directory folder as an artifact: `files` always go in, `rows` only with consent."""

    type: str
    files: tuple[str, ...]
    rows: tuple[str, ...] = ()


# folder (relative to the run directory) -> what it is. The checkpoints and cfs folders hold one
# artifact per recipe / per CF file (see artifact_ref). `rows`: anything that holds or could give back
# a participant's data: the cohort table, participant ids (split, quality's skipped ids), SFT pairs,
# CF records, per-window figures and examples (Fig. 8, the intervention in Table II and the report),
# and the weights trained on them (classifier, adapter), which can memorise rows.
KINDS = {
    "release": Kind("dataset", ("synthetic_release.json",)),  # a real release never lives in a run directory
    "cohort": Kind("dataset", ("spec.yaml", "provenance.json"), ("features.parquet", "split.json", "quality.json")),
    "classifier": Kind("model", ("model.types.json", "metrics.json", "provenance.json"), ("model.skops",)),
    "sft": Kind("dataset", ("summary.json", "provenance.json"), ("train.jsonl", "val.jsonl", "fewshot.jsonl")),
    "adapter": Kind("model", ("adapter_config.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
                              "recipe.yml", "provenance.json", "train_summary.json", "sensecf_tiny.json"),
                    ("adapter_model.safetensors",)),
    "cfs": Kind("counterfactuals", ("{row}.jsonl.fingerprint.json",), ("{row}.jsonl",)),
    "table3": Kind("results", ("table3.md", "table3.csv", "table3.tex", "cf_metrics.csv", "fig6.png", "fig6.csv",
                               "provenance.json"), ("fig8.png", "intervention.md")),
    "table4": Kind("results", ("table4.md", "table4.csv", "table4.tex", "results.jsonl", "cf_pool.csv", "fig1.png",
                               "fig1_results.jsonl", "fig7.png", "provenance.json")),
    "report": Kind("results", (), ("report.md",)),
}
FOLDER_KINDS = {"release": "release", "cohort": "cohort", "classifier": "classifier", "sft": "sft",
                "eval": "table3", "augment": "table4"}
ALIAS_PREFIX = "sha256-"
WITHHELD = "withheld_sha256.json"  # what an artifact holds in place of the row-level files it leaves out
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]")  # W&B artifact names: letters, digits, - _ .


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact of a run directory: its W&B name and type, folder and files."""

    name: str
    type: str
    folder: Path
    files: tuple[str, ...]
    rows: tuple[str, ...]
    synthetic: bool

    def present(self, names) -> list[Path]:
        return [self.folder / n for n in names if (self.folder / n).is_file()]

    def digest(self) -> str:
        """sha256 over the present files' names and contents (rows included): the version's identity."""
        h = hashlib.sha256()
        for path in sorted(self.present(self.files + self.rows)):
            h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
        return h.hexdigest()

    def alias(self) -> str:
        return ALIAS_PREFIX + self.digest()[:16]

    def input_entry(self) -> dict:
        """How a run's config names this artifact as an input (sensecf.wandb_sync links it)."""
        return {"artifact": self.name, "type": self.type, "alias": self.alias()}

    def build(self, log_rows: bool = False):
        """A wandb.Artifact: files added; row-level files added only for a synthetic cohort or with
        log_rows, else as checksum-only references."""
        import wandb

        upload_rows = self.synthetic or log_rows
        withheld = {} if upload_rows else {p.name: sha256_file(p) for p in self.present(self.rows)}
        artifact = wandb.Artifact(self.name, type=self.type, metadata={
            "sensecf_sha256": self.digest(), "rows_uploaded": upload_rows, "synthetic_cohort": self.synthetic,
            "withheld_sha256": withheld})
        for path in self.present(self.files + (self.rows if upload_rows else ())):
            artifact.add_file(str(path), name=path.name)
        if withheld:  # their hashes only (no path, no content), so the version changes when they do
            with artifact.new_file(WITHHELD, mode="w") as f:
                json.dump(withheld, f, indent=1, sort_keys=True)
        return artifact


def _name(group: str, *parts: str) -> str:
    return _NOT_IN_NAMES.sub("-", "-".join((group, *parts)))


def inside(run: RunDir, path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(run.root.resolve())


def artifact_ref(run: RunDir, path: str | Path, synthetic: bool | None = None) -> ArtifactRef:
    """The artifact holding `path` (a file or folder inside the run directory). `synthetic`: the
    run's RunDir.is_synthetic(), when the caller already has it (it hashes the cohort table)."""
    root = run.root.resolve()
    path = Path(path).resolve()
    try:
        rel = path.relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path}: not inside the run directory {root}; no W&B artifact holds it") from None
    group = root.name
    synthetic = run.is_synthetic() if synthetic is None else synthetic
    if rel == ("report.md",):
        kind = KINDS["report"]
        return ArtifactRef(_name(group, "report"), kind.type, root, kind.files, kind.rows, synthetic)
    if rel and rel[0] in FOLDER_KINDS:
        key = FOLDER_KINDS[rel[0]]
        kind = KINDS[key]
        return ArtifactRef(_name(group, key), kind.type, root / rel[0], kind.files, kind.rows, synthetic)
    if len(rel) >= 2 and rel[0] == "checkpoints":
        kind = KINDS["adapter"]
        return ArtifactRef(_name(group, "adapter", rel[1]), kind.type, root / "checkpoints" / rel[1],
                           kind.files, kind.rows, synthetic)
    if len(rel) >= 2 and rel[0] == "cfs" and rel[-1].endswith(".jsonl"):
        if len(rel) > 3:
            raise ValueError(f"{path}: CF files lie in cfs/ (test split) or cfs/<split>/, not deeper")
        split = rel[1] if len(rel) == 3 else "test"
        row = rel[-1].removesuffix(".jsonl")
        kind = KINDS["cfs"]
        fill = lambda names: tuple(n.format(row=row) for n in names)  # noqa: E731
        return ArtifactRef(_name(group, "cfs", split, row), kind.type, path.parent, fill(kind.files),
                           fill(kind.rows), synthetic)
    raise ValueError(f"{path}: no W&B artifact kind for this part of the run directory "
                     f"(known: report.md, {', '.join(FOLDER_KINDS)}, checkpoints/<recipe>, cfs/[<split>/]<row>.jsonl)")
