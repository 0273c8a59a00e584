"""One experiment = one run directory; every stage reads earlier stages' files from it.

Layout (DESIGN.md): cohort/ classifier/ sft/ checkpoints/ cfs/ eval/ augment/ report.md
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from sensecf.atomic import write_json
from sensecf.fingerprint import sha256_file as file_sha256  # noqa: F401 (stages import it from here)
from sensecf.spec import DatasetSpec

# Column names of the cohort table (features.parquet) besides the spec's features and label.
ID_COL = "window_id"
GROUP_COL = "participant_id"
SPLIT_COL = "split"

_VERSIONED = ["numpy", "pandas", "scikit-learn", "torch", "transformers", "peft", "axolotl", "xgrammar"]


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # stage folders
    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def classifier(self) -> Path:
        return self.root / "classifier"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def cfs(self) -> Path:
        return self.root / "cfs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def augment(self) -> Path:
        return self.root / "augment"

    # files
    @property
    def features(self) -> Path:
        return self.cohort / "features.parquet"

    @property
    def split(self) -> Path:
        return self.cohort / "split.json"

    @property
    def spec(self) -> Path:
        return self.cohort / "spec.yaml"

    @property
    def quality(self) -> Path:
        return self.cohort / "quality.json"

    @property
    def model(self) -> Path:
        return self.classifier / "model.skops"

    def cf_file(self, method: str) -> Path:
        return self.cfs / f"{method}.jsonl"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    # readers
    def load_spec(self) -> DatasetSpec:
        if not self.spec.exists():
            raise FileNotFoundError(f"{self.spec}: no cohort spec; build the cohort first")
        return DatasetSpec.from_yaml(self.spec)

    def load_cohort(self) -> tuple[pd.DataFrame, DatasetSpec]:
        """The cohort table and its spec (with learned ranges)."""
        if not self.features.exists():
            raise FileNotFoundError(f"{self.features}: no cohort table; build the cohort first")
        return pd.read_parquet(self.features), self.load_spec()

    def is_synthetic(self) -> bool:
        """True only when the cohort's provenance says it was built from a synthetic release AND
        the cohort table is the one that provenance describes (its sha256 recorded at build time):
        a real cohort copied over a synthetic one's folder is not synthetic."""
        prov = self.cohort / "provenance.json"
        if not prov.exists() or not self.features.exists():
            return False
        try:
            record = json.loads(prov.read_text())
        except ValueError:
            return False
        recorded = record.get("outputs", {}).get(self.features.name)
        return record.get("source", {}).get("synthetic") is True and recorded == file_sha256(self.features)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(
    stage_dir: str | Path,
    *,
    config: dict,
    inputs: list[str | Path] = (),
    seed: int | None = None,
    source: dict | None = None,
) -> Path:
    """Record what produced a stage's artifact: command, seed, config, versions, commit, input
    hashes, and the sha256 of every file the stage left in its folder (`outputs`, top level), so a
    later stage can tell the artifact is the one described. Written atomically."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        p.name: file_sha256(p)
        for p in sorted(stage_dir.iterdir())
        if p.is_file() and p.name != "provenance.json" and not p.name.startswith(".")
    }
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "seed": seed,
        "config": config,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "inputs": {str(p): file_sha256(p) for p in inputs if Path(p).is_file()},
        "outputs": outputs,
    }
    if source is not None:
        record["source"] = source
    return write_json(stage_dir / "provenance.json", record, default=str)
