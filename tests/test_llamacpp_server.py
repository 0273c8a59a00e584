"""eval.generate against a real OpenAI-compatible server: llama.cpp's (`python -m llama_cpp.server`,
llama-cpp-python[server]) serving the embedded SmolLM2 GGUF on a loopback port.

The paper protocol (free text, lenient parser) and ours with the schema llama.cpp takes
(`--constraint json_object_schema`: its grammar from grammar.json_schema), a prompt token for
token what the hf backend renders, and a server killed mid-run: the stage fails naming the
endpoint, and once the server is back the same command finishes the file with nothing lost or
duplicated. llama-cpp-python is a locked dev pin (`make setup` builds it), so these tests never skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import AIREADI_SPEC, _aireadi_frame, write_cohort

from eval.classifier import train_and_evaluate
from eval.generate import choose_factuals
from launch.llamacpp_server import LLAMACPP_MODEL, LlamaCppServer
from prompts.render import apply_chat_template, build_messages
from sensecf.cfblock import render_block
from sensecf.generate.grammar import json_schema
from sensecf.generate.openai_backend import llamacpp_schema
from sensecf.models import load_tokenizer, smollm2_gguf
from sensecf.records import read_records
from sensecf.rundir import RunDir
from sensecf.spec import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
N = 4  # factuals per run (half per predicted class)
N_KILL = 6  # factuals of the killed-and-resumed run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    s = LlamaCppServer(log=log).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """The conftest cohort (synthetic, AI-READI spec) with its classifier and a shared sample of
    N_KILL test factuals (each test takes its --n balanced head), shared by the tests."""
    run = RunDir(tmp_path_factory.mktemp("llamacpp-run") / "run")
    write_cohort(run, _aireadi_frame(np.random.default_rng(7), 30, 20), DatasetSpec.from_yaml(AIREADI_SPEC))
    train_and_evaluate(run, seed=0)
    choose_factuals(run, "test", N_KILL, 0, None)  # writes RUN/cfs/factuals_test.json
    return run


def generate_cmd(run: RunDir, server: LlamaCppServer, method: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "eval.generate", "--run", str(run.root), "--method", method, "--backend", "openai",
            "--base-url", server.base_url, "--api-model", LLAMACPP_MODEL, "--quiet", *args]  # fmt: skip


def cli_env() -> dict:
    return {**os.environ, "OPENAI_API_KEY": "EMPTY"}  # the server was started without --api_key


def cli(run, server, method, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(generate_cmd(run, server, method, *args), cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@functools.cache
def smollm2_tokenizer():
    return load_tokenizer("smollm2")


def hf_prompt_tokens(spec, record) -> int:
    """Tokens of the prompt the hf backend renders for this record (SmolLM2's tokenizer and template)."""
    tokenizer = smollm2_tokenizer()
    text = apply_chat_template(tokenizer, build_messages(spec, record.factual, record.desired_class))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_common(run, server, records, method, constraint, max_tokens):
    _, spec = run.load_cohort()
    factual_ids = json.loads(run.cfs.joinpath("factuals_test.json").read_text())["window_ids"]
    assert len(records) == N and len({r.key for r in records}) == N
    assert {r.window_id for r in records} <= set(factual_ids)
    assert sorted(r.factual_pred for r in records) == [0] * (N // 2) + [1] * (N // 2)  # half per predicted class
    for r in records:
        assert r.method == method and r.candidate == 0 and r.desired_class == 1 - r.factual_pred
        assert r.error is None and r.raw_text.strip()
        assert r.extra["backend"] == "openai" and r.extra["constraint"] == constraint
        assert r.extra["base_url"] == server.base_url and r.extra["model"] == LLAMACPP_MODEL
        assert r.extra["finish_reason"] in ("stop", "length")
        assert 0 < r.completion_tokens <= max_tokens and r.seconds > 0
        # the text the model saw: the hf backend's rendering, token for token (same GGUF template)
        assert r.prompt_tokens == hf_prompt_tokens(spec, r)
        if r.cf is None:
            assert r.parse_status == "parse_error" and r.immutables_ok is None and r.cf_pred is None
        else:
            assert set(r.cf) == set(spec.names) and r.cf_pred in (0, 1) and isinstance(r.immutables_ok, bool)
    return spec


def test_the_server_renders_the_prompt_the_hf_backend_renders():
    """llama-cpp-python (no --chat_format) formats chats with the GGUF's tokenizer.chat_template:
    the same template and the same text as the hf backend's converted SmolLM2 tokenizer."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from test_grammar import FACTUAL, SPEC

    llm = llama_cpp.Llama(str(smollm2_gguf()), vocab_only=True, verbose=False)
    assert llm.chat_format == "chat_template.default"  # the GGUF's template, not a built-in format
    template = llm.metadata["tokenizer.chat_template"]
    tokenizer = load_tokenizer("smollm2")
    assert template == tokenizer.chat_template
    formatter = Jinja2ChatFormatter(template, eos_token=llm._model.token_get_text(llm.token_eos()),
                                    bos_token=llm._model.token_get_text(llm.token_bos()))  # as Llama builds it
    for desired in (0, 1):
        messages = build_messages(SPEC, FACTUAL, desired)
        assert formatter(messages=messages).prompt == apply_chat_template(tokenizer, messages)


def test_the_schema_sent_to_llamacpp_compiles_to_a_grammar_it_parses():
    """llama-cpp-python's converter copies a pattern's `\\.` into a GBNF literal (an unknown escape
    that kills the server); llamacpp_schema writes it as `[.]`, which matches the same strings."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    from test_grammar import FACTUAL, SPEC

    schema = json_schema(SPEC, FACTUAL)
    sent = llamacpp_schema(schema)
    assert "\\." in json.dumps(schema) and "\\." not in json.dumps(sent)
    gbnf = json_schema_to_gbnf(json.dumps(sent))
    assert "\\." not in gbnf and "root ::=" in gbnf
    for name, rule in schema["properties"].items():
        if "pattern" in rule:
            for text in ("0.0", "12.5", "9.34", "40.0", "400.0", "12x5", "7", "12", "1.", "-1.0"):
                original = re.fullmatch(rule["pattern"][1:-1], text)
                rewritten = re.fullmatch(sent["properties"][name]["pattern"][1:-1], text)
                assert bool(original) == bool(rewritten), (name, text)
        else:
            assert sent["properties"][name] == rule


@pytest.mark.slow
def test_paper_protocol_free_decoding(run, server):
    out = cli(run, server, "smollm2_llamacpp", "--protocol", "paper", "--n", str(N), "--max-tokens", "160",
              "--repeat-penalty", "1.0")  # greedy as the hf backend decodes (llama.cpp's default is 1.1)
    assert out.returncode == 0, out.stderr[-3000:]
    provenance = json.loads((run.cfs / "generate" / "smollm2_llamacpp" / "provenance.json").read_text())
    options = provenance["config"]["options"]
    assert options["repeat_penalty"] == 1.0 and options["constraint"] == "none" and options["max_tokens"] == 160
    assert f"{N} new, 0 already done" in out.stdout
    records = read_records(run.cf_file("smollm2_llamacpp"))
    check_common(run, server, records, "smollm2_llamacpp", "none", 160)
    for r in records:
        assert "json" not in r.extra and "schema_violations" not in r.extra  # free text, read by the lenient parser
        if r.cf is not None:
            assert r.parse_status == "ok"


@pytest.mark.slow
def test_sensecf_protocol_json_object_schema(run, server):
    method = "smollm2_llamacpp+grammar"
    out = cli(run, server, "smollm2_llamacpp", "--constraint", "json_object_schema", "--n", str(N),
              "--max-tokens", "256", "--repeat-penalty", "1.0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "0 immutable violations" in out.stdout
    records = read_records(run.cf_file(method))
    spec = check_common(run, server, records, method, "json_object_schema", 256)
    props = json_schema(spec, records[0].factual)["properties"]
    for r in records:
        # the grammar guarantees the format: every answer parses, keeps the immutables, fits the schema
        assert r.cf is not None and r.parse_status in ("ok", "incoherent"), r.raw_text
        assert r.immutables_ok is True and r.extra["finish_reason"] == "stop"
        assert "schema_violations" not in r.extra
        answer = json.loads(r.extra["json"])
        assert set(answer) == set(json_schema(spec, r.factual)["properties"]) and set(answer) == set(props)
        assert r.raw_text == render_block(spec, r.cf)  # the block the JSON stands for
        for f in spec.features:
            if not f.mutable:
                assert r.cf[f.name] == r.factual[f.name]
        if r.parse_status == "incoherent":
            assert r.extra["incoherent_groups"]


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_server_killed_mid_run_then_resumed(run, server):
    """SIGKILL the server after k records: the stage fails naming the endpoint and writes nothing
    more; with the server back, the same command writes exactly the missing records."""
    n, k = N_KILL, 2
    method, path = "smollm2_kill+grammar", run.cf_file("smollm2_kill+grammar")
    args = ("--constraint", "json_object_schema", "--n", str(n), "--max-tokens", "256", "--max-retries", "1",
            "--concurrency", "2")  # fmt: skip
    proc = subprocess.Popen(generate_cmd(run, server, "smollm2_kill", *args), cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while lines(path) < k and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the stage ended before k records: " + proc.stderr.read()[-2000:]
    server.kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    before = path.read_bytes()
    written = before.count(b"\n")
    assert k <= written < n
    assert f"{n - written} requests failed after retries (not written; re-run to retry)" in stderr
    assert f"APIConnectionError from {server.base_url}" in stderr  # names the endpoint
    assert f"{written} records" in stdout

    server.start()  # the same port: the same base URL, the same fingerprint
    out = cli(run, server, "smollm2_kill", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{n - written} new, {written} already done" in out.stdout
    after = path.read_bytes()
    assert after[: len(before)] == before  # the first records byte for byte
    records = read_records(path)
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == n  # one record per (factual, candidate): nothing lost or duplicated
    ids = json.loads(run.cfs.joinpath("factuals_test.json").read_text())["window_ids"]
    assert {r.window_id for r in records} <= set(ids)
    assert all(r.method == method and r.cf is not None and r.immutables_ok is True for r in records)
