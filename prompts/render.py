"""Fig. 4 prompts rendered from a DatasetSpec: the one place prompt text is made.

The text is the paper's Fig. 4 verbatim with its placeholders filled (templates/fig4.j2), for
both protocols: the `sensecf` rows differ from the paper's in decoding, not in what the model is
asked. The generation engine, the OpenAI backend and the SFT pair builder all call
`build_messages`, so a model is trained on exactly the prompts it is later asked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2

from sensecf.cfblock import ANSWER_BULLET, CLOSE_TAG, INSTANCE_BULLET, OPEN_TAG, feature_text, render_block
from sensecf.spec import DatasetSpec
from sensecf.templates import template_env

TEMPLATES = Path(__file__).parent / "templates"
_SYSTEM_PROBE = "SENSECF-SYSTEM-PROBE"


def _env() -> jinja2.Environment:
    return template_env(TEMPLATES)


def _check_row(spec: DatasetSpec, row: Mapping, what: str) -> None:
    missing = [n for n in spec.names if n not in row]
    if missing:
        raise KeyError(f"{what} lacks spec features {missing}")


def _feature_lines(spec: DatasetSpec, row: Mapping) -> list[str]:
    return [feature_text(spec, f.name, row[f.name]) for f in spec.features]


def system_prompt() -> str:
    return _env().get_template("system.j2").render().strip()


def user_prompt(spec: DatasetSpec, factual: Mapping, desired_class: int, *, examples: Sequence[Mapping] = ()) -> str:
    """The user turn of Fig. 4: zero-shot without examples, few-shot with them (feature rows of
    windows the model predicted `desired_class`, as Fig. 4's "examples with desired outcome")."""
    classes = spec.label.classes
    if desired_class not in classes:
        raise ValueError(f"desired_class {desired_class!r} is not a class of label '{spec.label.name}' {classes}")
    _check_row(spec, factual, "factual")
    for i, example in enumerate(examples, start=1):
        _check_row(spec, example, f"few-shot example {i}")
    context = {
        "predicted": 1 - desired_class,  # binary label (LabelSpec enforces classes 0 and 1)
        "desired": desired_class,
        "fixed": [f.prompt_name for f in spec.immutable] or ["(none)"],
        "examples": [_feature_lines(spec, example) for example in examples],
        "instance": _feature_lines(spec, factual),
        "names": [f.prompt_name for f in spec.features],
        "instance_bullet": INSTANCE_BULLET,
        "answer_bullet": ANSWER_BULLET,
        "open_tag": OPEN_TAG,
        "close_tag": CLOSE_TAG,
    }
    return _env().get_template("fig4.j2").render(**context).strip()


def build_messages(
    spec: DatasetSpec, factual: Mapping, desired_class: int, *, examples: Sequence[Mapping] = ()
) -> list[dict]:
    """Chat messages [system, user] for one factual; `examples` are windows predicted
    `desired_class` (empty = zero-shot)."""
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": user_prompt(spec, factual, desired_class, examples=examples)},
    ]


def training_messages(spec: DatasetSpec, factual: Mapping, desired_class: int, cf: Mapping) -> list[dict]:
    """`build_messages` plus the CF block as the assistant answer (an SFT example)."""
    _check_row(spec, cf, "counterfactual")
    return [*build_messages(spec, factual, desired_class), {"role": "assistant", "content": render_block(spec, cf)}]


def has_system_role(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system turn (Mistral v1's raises or drops it)."""
    template = tokenizer.chat_template
    if not template:
        raise ValueError(f"{type(tokenizer).__name__} has no chat template")
    return _template_has_system_role(template, tokenizer)


_SYSTEM_SUPPORT: dict[str, bool] = {}


def _template_has_system_role(template: str, tokenizer) -> bool:
    if template not in _SYSTEM_SUPPORT:
        probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "u"}]
        try:
            text = tokenizer.apply_chat_template(probe, tokenize=False)
            _SYSTEM_SUPPORT[template] = _SYSTEM_PROBE in text
        except jinja2.TemplateError:
            _SYSTEM_SUPPORT[template] = False
    return _SYSTEM_SUPPORT[template]


def fold_system(messages: Sequence[Mapping]) -> list[dict]:
    """Merge a leading system turn into the first user turn ("system\\n\\nuser")."""
    messages = [dict(m) for m in messages]
    if len(messages) >= 2 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        system = messages.pop(0)
        messages[0]["content"] = f"{system['content']}\n\n{messages[0]['content']}"
    return messages


def template_messages(messages: Sequence[Mapping], *, system_role: bool) -> list[dict]:
    """The messages as a chat template receives them: a leading system turn folded into the first
    user turn (`fold_system`) when the template has no system role, else unchanged.

    The one rule both backends follow: the hf backend renders the result itself
    (`apply_chat_template`), the openai backend sends it to the server, which renders it with the
    same template (launch/vllm_serve.sh passes the adapter's training template), so the model
    sees the same text either way (tests/test_serving_parity.py)."""
    if not system_role and messages and messages[0]["role"] == "system":
        return fold_system(messages)
    return [dict(m) for m in messages]


def apply_chat_template(tokenizer, messages: Sequence[Mapping], add_generation_prompt: bool = True) -> str:
    """The chat text for a tokenizer, folding the system text into the first user turn when
    its template has no system role (BioMistral / Mistral v1)."""
    system_role = not (messages and messages[0]["role"] == "system") or has_system_role(tokenizer)
    messages = template_messages(messages, system_role=system_role)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


# --- the template a server renders with -----------------------------------------------------
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # what transformers' save_pretrained (Axolotl's output) writes


def chat_template_text(path: str | Path) -> str:
    """The chat template of an adapter / tokenizer folder (its `chat_template.jinja`, else the
    `chat_template` string of its tokenizer_config.json, as older transformers saved it) or of a
    template file: the lookup launch/vllm_serve.sh makes for `--chat-template`."""
    path = Path(path)
    if path.is_file():
        return path.read_text()
    if (path / CHAT_TEMPLATE_FILE).is_file():
        return (path / CHAT_TEMPLATE_FILE).read_text()
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str) and template:
            return template
    raise FileNotFoundError(f"{path}: no {CHAT_TEMPLATE_FILE} and no chat_template in tokenizer_config.json")


def template_has_system_role(template: str, **special_tokens: str) -> bool:
    """Whether a chat template (text) renders a system turn: the probe of `has_system_role`
    without a tokenizer, for the template a server renders with (the openai backend's
    `OpenAIConfig.system_role`). Special tokens default to empty strings."""
    from transformers.utils.chat_template_utils import render_jinja_template

    tokens = {"bos_token": "", "eos_token": "", "unk_token": "", "pad_token": "", **special_tokens}
    probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "u"}]
    try:
        rendered, _ = render_jinja_template(conversations=[probe], chat_template=template, **tokens)
    except jinja2.TemplateError:
        return False
    return _SYSTEM_PROBE in rendered[0]


def served_template_has_system_role(path: str | Path) -> bool:
    """`template_has_system_role` of the template `chat_template_text(path)` finds (an adapter
    folder or the file given to vLLM's --chat-template)."""
    return template_has_system_role(chat_template_text(path))
