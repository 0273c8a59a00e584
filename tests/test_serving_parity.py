"""Train/serve parity: for each recipe's chat template, the text the model sees through the hf
backend (the adapter folder's tokenizer, prompts.render.apply_chat_template) and through the
openai backend against `launch/vllm_serve.sh` (the messages the backend sends, rendered with the
template the script hands vLLM, as vLLM renders them) is identical."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from test_grammar import FACTUAL, SPEC
from test_openai_backend import CF, FakeEndpoint
from test_prompts import MISTRAL_NO_SYSTEM
from transformers import PreTrainedTokenizerFast

from prompts.render import (
    apply_chat_template,
    build_messages,
    chat_template_text,
    served_template_has_system_role,
    system_prompt,
)
from sensecf.generate.openai_backend import OpenAIConfig, OpenAIGenerator
from sensecf.generate.result import GenRequest
from sensecf.models import _axolotl_chat_template, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "launch" / "vllm_serve.sh"
# recipe -> the offline tokenizer of its base model (sensecf.models.load_tokenizer)
RECIPE_TOKENIZERS = {"smollm2-cpu": "smollm2", "llama31": "llama3_1", "biomistral": "mistral_v1"}


def recipe_template(recipe: str) -> str:
    return yaml.safe_load((REPO / "recipes" / f"{recipe}.yml").read_text())["chat_template"]


def axolotl_output(folder: Path, tokenizer_name: str, chat_template: str, base_template: str | None = None) -> Path:
    """What Axolotl leaves in output_dir besides the adapter weights: the base tokenizer, its
    chat_template set from the recipe (`tokenizer_default` keeps the base's own), saved with
    save_pretrained (transformers writes the template to chat_template.jinja)."""
    tok = copy.deepcopy(load_tokenizer(tokenizer_name))
    if base_template is not None:
        tok.chat_template = base_template
    if chat_template != "tokenizer_default":
        tok.chat_template = _axolotl_chat_template(chat_template)
    folder.mkdir(parents=True)
    tok.save_pretrained(folder)
    (folder / "adapter_config.json").write_text("{}")  # what vllm_serve.sh checks for
    return folder


def vllm_serve_args(adapter: Path, tmp_path: Path, **env) -> tuple[int, list[str], str]:
    """(exit code, the arguments launch/vllm_serve.sh gives `vllm serve`, stderr), with a stand-in
    vllm that records them."""
    record = tmp_path / "vllm_args.txt"
    fake = tmp_path / "fake_vllm"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["bash", str(SERVE), "base/model", str(adapter)],
        env={"PATH": os.environ["PATH"], "VLLM_API_KEY": "k", "VLLM_BIN": str(fake), "TMPDIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=60,
    )
    return out.returncode, record.read_text().splitlines() if record.is_file() else [], out.stderr


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def served_template(adapter: Path, tmp_path: Path) -> str:
    rc, args, err = vllm_serve_args(adapter, tmp_path)
    assert rc == 0, err
    assert args[:2] == ["serve", "base/model"] and option(args, "--lora-modules") == f"sensecf={adapter}"
    assert option(args, "--chat-template-content-format") == "string"  # each message's text as the hf path has it
    return Path(option(args, "--chat-template")).read_text()


def vllm_render(base_tokenizer, template: str, messages: list[dict]) -> str:
    """What vLLM's chat endpoint renders: the base model's tokenizer (LoRA adapters share it) with
    the --chat-template text, a generation prompt appended."""
    return base_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                              add_generation_prompt=True)


def requests() -> list[GenRequest]:
    zero_shot = [GenRequest(FACTUAL, seed=10 + c, messages=build_messages(SPEC, FACTUAL, c)) for c in (0, 1)]
    few_shot = [GenRequest(FACTUAL, seed=20, messages=build_messages(SPEC, FACTUAL, 0, examples=[CF]))]
    return zero_shot + few_shot


def sent_messages(system_role: bool) -> dict[int, list[dict]]:
    """seed -> the messages the openai backend put on the wire, as the server received them."""
    endpoint = FakeEndpoint()
    try:
        config = OpenAIConfig(base_url=endpoint.base_url, model="sensecf", constraint="regex", system_role=system_role)
        outcome = OpenAIGenerator(SPEC, config, api_key="EMPTY").generate(requests())
        assert not outcome.failures and len(outcome.results) == len(requests())
        return {body["seed"]: body["messages"] for body in endpoint.bodies}
    finally:
        endpoint.close()


# (case, tokenizer, the recipe's chat_template, the base model's own template if not the tokenizer's)
CASES = [(recipe, name, recipe_template(recipe), None) for recipe, name in RECIPE_TOKENIZERS.items()]
# A model whose own template has no system role (Mistral-7B-Instruct-v0.1's), trained with it
# (chat_template: tokenizer_default): the one case where both backends must fold.
CASES.append(("mistral-own-template", "mistral_v1", "tokenizer_default", MISTRAL_NO_SYSTEM))


def test_every_recipe_is_covered():
    assert {p.stem for p in (REPO / "recipes").glob("*.yml")} == set(RECIPE_TOKENIZERS)


@pytest.mark.parametrize(("case", "name", "chat_template", "base_template"), CASES, ids=[c[0] for c in CASES])
def test_hf_and_openai_backends_render_the_same_text(tmp_path, case, name, chat_template, base_template):
    adapter = axolotl_output(tmp_path / "adapter", name, chat_template, base_template)
    # hf backend: sensecf.models.with_adapter loads the tokenizer from the adapter folder
    assert (adapter / "tokenizer_config.json").is_file()
    hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(adapter)
    # openai backend: vllm_serve.sh serves the adapter's template; the client folds when it has no system role
    template = served_template(adapter, tmp_path)
    assert template == hf_tokenizer.chat_template == chat_template_text(adapter)
    system_role = served_template_has_system_role(adapter)
    assert system_role is (case != "mistral-own-template")
    sent = sent_messages(system_role)
    base_tokenizer = copy.deepcopy(load_tokenizer(name))  # vLLM's tokenizer: the base model's
    for req in requests():
        hf_text = apply_chat_template(hf_tokenizer, req.messages)
        served_text = vllm_render(base_tokenizer, template, sent[req.seed])
        assert served_text == hf_text
        assert system_prompt() in hf_text and hf_text.count(system_prompt()) == 1
    if not system_role:  # folded on the wire, as the hf path folds it
        first = sent[10][0]
        assert [m["role"] for m in sent[10]] == ["user"]
        assert first["content"].startswith(system_prompt() + "\n\n")


def test_without_the_fold_a_template_lacking_a_system_role_rejects_the_request(tmp_path):
    """The mismatch this guards against: the system turn sent as is to a Mistral-v1-style template."""
    adapter = axolotl_output(tmp_path / "adapter", "mistral_v1", "tokenizer_default", MISTRAL_NO_SYSTEM)
    template = served_template(adapter, tmp_path)
    with pytest.raises(jinja2.TemplateError, match="roles must alternate"):
        vllm_render(load_tokenizer("mistral_v1"), template, sent_messages(system_role=True)[10])


def test_llama31_served_template_is_the_recipes_not_the_base_models(tmp_path):
    adapter = axolotl_output(tmp_path / "adapter", "llama3_1", "llama3")
    template = served_template(adapter, tmp_path)
    assert template == _axolotl_chat_template("llama3") != load_tokenizer("llama3_1").chat_template


def test_vllm_serve_finds_the_template_in_tokenizer_config_or_stops(tmp_path):
    adapter = axolotl_output(tmp_path / "adapter", "mistral_v1", "mistral_v1")
    expected = (adapter / "chat_template.jinja").read_text()
    # older transformers: the template inside tokenizer_config.json only
    (adapter / "chat_template.jinja").unlink()
    config = yaml.safe_load((adapter / "tokenizer_config.json").read_text())  # JSON is YAML
    (adapter / "tokenizer_config.json").write_text(__import__("json").dumps({**config, "chat_template": expected}))
    assert served_template(adapter, tmp_path) == expected == chat_template_text(adapter)
    # CHAT_TEMPLATE overrides
    own = tmp_path / "own.jinja"
    own.write_text("{{ messages[0]['content'] }}")
    rc, args, _ = vllm_serve_args(adapter, tmp_path, CHAT_TEMPLATE=str(own))
    assert rc == 0 and option(args, "--chat-template") == str(own)
    # nothing to serve: stop, never fall back to the base model's template
    (adapter / "tokenizer_config.json").write_text("{}")
    (tmp_path / "vllm_args.txt").unlink()
    rc, args, err = vllm_serve_args(adapter, tmp_path)
    assert rc == 2 and args == [] and "no chat_template.jinja" in err
    with pytest.raises(FileNotFoundError, match="no chat_template.jinja"):
        chat_template_text(adapter)


def test_the_cli_folds_the_system_turn_for_a_served_template_without_one(tmp_path, trained_run, monkeypatch):
    """eval.generate --served-template: the adapter folder the server renders with decides the fold
    (as the hf backend decides it from the same folder's tokenizer), and the fold is part of the
    CF file's fingerprint (the model sees other text)."""
    from typer.testing import CliRunner

    from eval.generate import app
    from sensecf.records import FingerprintMismatch, read_records

    no_system = axolotl_output(tmp_path / "mistral", "mistral_v1", "tokenizer_default", MISTRAL_NO_SYSTEM)
    chatml = axolotl_output(tmp_path / "smollm2", "smollm2", recipe_template("smollm2-cpu"))
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    endpoint = FakeEndpoint()
    try:
        def cli(method: str, *extra: str):
            args = ["--run", str(trained_run.root), "--method", method, "--backend", "openai", "--base-url",
                    endpoint.base_url, "--api-model", "sensecf", "--constraint", "regex", "--n", "2", "--quiet"]
            before = len(endpoint.bodies)
            result = CliRunner().invoke(app, [*args, *extra])
            return result, endpoint.bodies[before:]

        result, bodies = cli("folded", "--served-template", str(no_system))
        assert result.exit_code == 0, result.output
        assert len(bodies) == 2
        for body in bodies:
            assert [m["role"] for m in body["messages"]] == ["user"]
            assert body["messages"][0]["content"].startswith(system_prompt() + "\n\n")
        for extra in ((), ("--served-template", str(chatml))):  # the default, and a template with a system role
            result, bodies = cli(f"as_is{len(extra)}", *extra)
            assert result.exit_code == 0, result.output
            assert [[m["role"] for m in b["messages"]] for b in bodies] == [["system", "user"]] * 2
        assert len(read_records(trained_run.cf_file("folded+grammar"))) == 2
        # the same file resumed without the fold: other prompts, refused
        result, bodies = cli("folded")
        assert isinstance(result.exception, FingerprintMismatch) and bodies == []
        result, _ = cli("missing", "--served-template", str(tmp_path / "nowhere"))
        assert result.exit_code == 2 and "--served-template" in result.output
    finally:
        endpoint.close()
