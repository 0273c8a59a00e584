"""What produced an artifact, as one hash and its named parts (DESIGN.md "Trust in artifacts").

A resumable artifact (a CF file) is continued only by the settings that began it: the parts
(method config, model/adapter/classifier/cohort hashes, prompt templates, factual set) are
stored beside it, and a resume with other parts stops and names the ones that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sensecf.atomic import write_json


def normalize(parts: dict) -> dict:
    """The parts as they read back from JSON (paths and tuples as strings and lists)."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(normalize(parts), sort_keys=True).encode()).hexdigest()


def changed_parts(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every part that differs (values shortened)."""

    def short(v) -> str:
        s = json.dumps(v, sort_keys=True, default=str)
        return s if len(s) <= 60 else s[:57] + "..."

    old, new = _flat(old), _flat(new)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def _flat(parts: dict, prefix: str = "") -> dict:
    """{"config": {"temperature": 0}} -> {"config.temperature": 0}, so a message names the leaf."""
    out = {}
    for k, v in parts.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(folder: str | Path, pattern: str = "*") -> str:
    """One hash over a folder's files (names and contents), e.g. an adapter or a model folder.
    Large files are hashed once and remembered by (path, size, mtime) in the folder's cache."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(_cached_sha256(p).encode())
    return h.hexdigest()


def _cached_sha256(path: Path) -> str:
    if path.stat().st_size < (64 << 20):
        return sha256_file(path)
    cache_dir = Path(os.environ.get("SENSECF_CACHE", Path.home() / ".cache" / "sensecf")) / "hashes"
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cached = cache_dir / key
    if cached.exists():
        return cached.read_text().strip()
    value = sha256_file(path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached.write_text(value)
    except OSError:  # a read-only cache only costs time
        pass
    return value


def sidecar(path: str | Path) -> Path:
    """Where an artifact's fingerprint lives: FILE.fingerprint.json beside it."""
    path = Path(path)
    return path.with_name(path.name + ".fingerprint.json")


def read(path: str | Path) -> dict | None:
    side = sidecar(path)
    if not side.exists():
        return None
    try:
        return json.loads(side.read_text())
    except ValueError:
        return None


def write(path: str | Path, parts: dict) -> None:
    write_json(sidecar(path), {"sha256": digest(parts), "parts": normalize(parts)}, sort_keys=True)


def artifact_hash(path: str | Path | None) -> str | None:
    """sha256 of a file, tree_hash of a folder, None for nothing."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return tree_hash(path)
    return sha256_file(path) if path.exists() else f"<missing {path.name}>"


def cf_parts(run, config: dict, factual_ids: list[str], **artifacts: str | Path | None) -> dict:
    """The fingerprint parts of a CF file: the method's settings, the classifier, the cohort
    (table and spec), the factual set (ids in file order) and any model, adapter, prompt or
    few-shot artifacts that shape the answers."""
    parts = {
        "config": config,
        "classifier": artifact_hash(run.model),
        "cohort": artifact_hash(run.features),
        "spec": artifact_hash(run.spec),
        "factuals": hashlib.sha256("\n".join(factual_ids).encode()).hexdigest(),
    }
    parts.update({name: artifact_hash(p) for name, p in artifacts.items()})
    return parts
