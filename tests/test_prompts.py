"""Fig. 4 prompts: content, display precision, few-shot, shared prefix, chat templates."""

from __future__ import annotations

import copy

import pytest
from conftest import AIREADI_SPEC, GENERIC_SPEC

from prompts.render import (
    apply_chat_template,
    build_messages,
    fold_system,
    has_system_role,
    system_prompt,
    training_messages,
)
from sensecf.cfblock import render_block
from sensecf.models import load_tokenizer
from sensecf.spec import DatasetSpec

SPEC = DatasetSpec.from_yaml(AIREADI_SPEC)

FACTUAL = {
    "awake_pct": 14.83,
    "light_pct": 45.37,
    "deep_pct": 30.4,
    "rem_pct": 9.4,
    "steps_mean": 6.876,
    "glucose_mean": 169.44,
    "hyper_events": 2.0,
    "tir_pct": 54.2,
    "age": 65,
    "sex": "male",
    "medication": "insulin",
    "study_group": "insulin_dependent",
}
CF = {**FACTUAL, "deep_pct": 35.4, "awake_pct": 9.83, "steps_mean": 11.5}

# Mistral-7B-Instruct-v0.1's own template: no system role, raises on one.
MISTRAL_NO_SYSTEM = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def user_text(factual=FACTUAL, desired=0, **kw) -> str:
    return build_messages(SPEC, factual, desired, **kw)[1]["content"]


def test_messages_are_system_then_user():
    msgs = build_messages(SPEC, FACTUAL, 0)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == system_prompt()
    assert msgs[0]["content"] == (
        "You are an expert in generating counterfactual explanations to understand model predictions."
    )


def test_fig4_sections_and_fixed_features():
    text = user_text()
    assert text.startswith("Task: Generate a counterfactual explanation for the label a black-box model predicts")
    assert "(label 0 = moderate stress, label 1 = high stress)" in text
    assert "Definition: A counterfactual explanation reveals what should have been different" in text
    assert "Fixed Features: Do not modify Age, Sex, Medication, Patient subgroup." in text
    assert "Constraints: Awake (%) + Light sleep (%) + Deep sleep (%) + REM sleep (%) = 100." in text
    assert "Example" not in text  # zero-shot
    assert text.endswith("Enclose your output within <new> tags, one line per feature as above.")


def test_desired_label_in_words_both_directions():
    to_moderate = user_text(desired=0)
    assert "the model predicted label 1 (high stress):" in to_moderate
    assert "flip the label from high stress to moderate stress." in to_moderate
    to_high = user_text(desired=1)
    assert "the model predicted label 0 (moderate stress):" in to_high
    assert "flip the label from moderate stress to high stress." in to_high


def test_instance_lines_at_display_precision_in_spec_order():
    text = user_text()
    instance = text.split("(high stress):\n", 1)[1].split("\n\nInstruction:", 1)[0]
    assert instance.splitlines() == [
        "Awake (%): 14.8",
        "Light sleep (%): 45.4",
        "Deep sleep (%): 30.4",
        "REM sleep (%): 9.4",
        "Avg steps: 6.88",
        "Avg CGM (mg/dL): 169.4",
        "Hyperglycemia events: 2",
        "TIR (%): 54.2",
        "Age: 65",
        "Sex: male",
        "Medication: insulin",
        "Patient subgroup: insulin_dependent",
    ]
    # The instance lines are the answer block's lines: the answer is the instance, edited.
    assert render_block(SPEC, FACTUAL).splitlines()[1:-1] == instance.splitlines()


def test_prefix_is_shared_across_factuals_and_classes():
    other = {**FACTUAL, "awake_pct": 3.0, "age": 41, "sex": "female"}
    a, b = user_text(FACTUAL, 0), user_text(other, 1)
    prefix_a, prefix_b = a.split("Instance, where")[0], b.split("Instance, where")[0]
    assert prefix_a == prefix_b and len(prefix_a) > 300
    assert a != b


def test_few_shot_renders_examples_before_the_instance():
    ex2 = {**FACTUAL, "glucose_mean": 201.0}
    cf2 = {**ex2, "glucose_mean": 120.0}
    text = user_text(examples=[(FACTUAL, CF), (ex2, cf2)])
    assert "Here are a few examples with desired outcome moderate stress:" in text
    assert text.index("Example 1:") < text.index("Example 2:") < text.index("Instance, where")
    assert render_block(SPEC, CF) in text and render_block(SPEC, cf2) in text
    assert "Example 1:\nAwake (%): 14.8\n" in text
    assert "Example 3" not in text
    # Same Task/Definition/Fixed text as zero-shot.
    assert text.split("\n\nHere are")[0] == user_text().split("\n\nInstance, where")[0]


def test_generic_spec_lists_mutable_categories_and_no_groups():
    spec = DatasetSpec.model_validate(GENERIC_SPEC)
    row = {"chol": 212.34, "bp": 140, "smoker": "yes", "age": 50, "sex": "f"}
    text = build_messages(spec, row, 0)[1]["content"]
    assert "(label 0 = no disease, label 1 = disease)" in text
    assert "Constraints: Smoker is one of no, yes." in text
    assert "Fixed Features: Do not modify Age, Sex." in text
    assert "Cholesterol: 212.3\nBlood pressure: 140\nSmoker: yes" in text


def test_bad_inputs_name_the_problem():
    with pytest.raises(KeyError, match="factual lacks spec features \\['tir_pct'\\]"):
        build_messages(SPEC, {k: v for k, v in FACTUAL.items() if k != "tir_pct"}, 0)
    with pytest.raises(ValueError, match="desired_class 2"):
        build_messages(SPEC, FACTUAL, 2)
    with pytest.raises(KeyError, match="few-shot example 1 counterfactual lacks"):
        build_messages(SPEC, FACTUAL, 0, examples=[(FACTUAL, {"age": 1})])


def test_training_example_uses_the_generation_prompt():
    train = training_messages(SPEC, FACTUAL, 0, CF)
    assert train[:2] == build_messages(SPEC, FACTUAL, 0)
    assert train[2] == {"role": "assistant", "content": render_block(SPEC, CF)}


@pytest.mark.parametrize("name", ["smollm2", "llama3_1", "mistral_v1"])
def test_rendered_training_chat_starts_with_the_generation_prompt(name):
    tok = load_tokenizer(name)
    prompt = apply_chat_template(tok, build_messages(SPEC, FACTUAL, 0))
    full = apply_chat_template(tok, training_messages(SPEC, FACTUAL, 0, CF), add_generation_prompt=False)
    assert full.startswith(prompt)
    assert full[len(prompt) :].strip().startswith("<new>\nAwake (%): 9.8\n")


def test_llama31_keeps_the_system_turn():
    tok = load_tokenizer("llama3_1")
    assert has_system_role(tok)
    text = apply_chat_template(tok, build_messages(SPEC, FACTUAL, 0))
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are an expert")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_system_is_folded_for_a_template_without_system_role():
    tok = copy.deepcopy(load_tokenizer("mistral_v1"))
    tok.chat_template = MISTRAL_NO_SYSTEM
    assert not has_system_role(tok)
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]
    assert apply_chat_template(tok, msgs) == "<s>[INST] SYS\n\nUSER [/INST]"


def test_system_is_folded_when_a_template_silently_drops_it():
    tok = copy.deepcopy(load_tokenizer("mistral_v1"))
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}"
        "<{{ m['role'] }}>{{ m['content'] }}{% endif %}{% endfor %}"
    )
    assert not has_system_role(tok)
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]
    assert apply_chat_template(tok, msgs) == "<user>SYS\n\nUSER"


def test_axolotl_mistral_v1_template_equals_the_fold():
    """Axolotl's mistral_v1 template (our mistral_v1 tokenizer's) folds the system text the same way."""
    tok = load_tokenizer("mistral_v1")
    msgs = build_messages(SPEC, FACTUAL, 0)
    direct = tok.apply_chat_template(msgs, tokenize=False)
    folded = tok.apply_chat_template(fold_system(msgs), tokenize=False)
    assert direct == folded
    assert direct.startswith("<s> [INST] You are an expert") and direct.endswith(" [/INST]")
