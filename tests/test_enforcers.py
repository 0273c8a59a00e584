"""Both token enforcers on the real SmolLM2 tokenizer: same masks, same forced text, valid walks."""

from __future__ import annotations

import random
import re

import pytest
import torch

from sensecf.generate.enforcers import ENFORCERS, LMFormatEnforcer, allocate_bitmask, apply_bitmask, make_enforcer
from sensecf.generate.grammar import choice_regex, lit, number_text, range_regex
from sensecf.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2")


@pytest.fixture(scope="module")
def enforcers(tokenizer):
    return {name: make_enforcer(name, tokenizer) for name in ENFORCERS}


def allowed_ids(matcher, vocab_size: int) -> set[int]:
    bitmask = allocate_bitmask(1, vocab_size)
    matcher.fill_bitmask(bitmask, 0)
    logits = torch.zeros(1, vocab_size)
    apply_bitmask(logits, bitmask)
    return set(torch.nonzero(logits[0] > float("-inf")).flatten().tolist())


def piece(tokenizer, text: str) -> int:
    (token,) = tokenizer.encode(text, add_special_tokens=False)
    return token


@pytest.mark.parametrize("name", ENFORCERS)
def test_canonical_tokens_of_every_value_in_range_are_accepted(name, enforcers, tokenizer):
    enforcer = enforcers[name]
    regex = range_regex(95, 123, 1) + "\\n"  # 9.5 .. 12.3
    for n in range(95, 124):
        m = enforcer.matcher(regex)
        for token in tokenizer.encode(number_text(n, 1) + "\n", add_special_tokens=False):
            assert not m.is_complete()
            assert token in allowed_ids(m, enforcer.vocab_size)
            m.accept_token(token)
        assert m.is_complete()


@pytest.mark.parametrize("name", ENFORCERS)
def test_random_masked_walks_only_produce_strings_of_the_grammar(name, enforcers, tokenizer):
    enforcer = enforcers[name]
    rng = random.Random(0)
    for regex in (range_regex(-50, 4000, 2) + "\\n", choice_regex(["none", "insulin", "insulin_dependent"]) + "\\n"):
        for _ in range(20):
            m, text = enforcer.matcher(regex), ""
            while not m.is_complete():
                token = rng.choice(sorted(allowed_ids(m, enforcer.vocab_size)))
                m.accept_token(token)
                text += tokenizer.decode([token])
            assert re.fullmatch(regex, text), text


def test_both_enforcers_allow_the_same_tokens_along_a_walk(enforcers, tokenizer):
    regex = range_regex(0, 1000, 1) + "\\n"
    xg, lf = enforcers["xgrammar"].matcher(regex), enforcers["lmfe"].matcher(regex)
    sizes = []
    for token in tokenizer.encode("100.0\n", add_special_tokens=False):
        a, b = allowed_ids(xg, enforcers["xgrammar"].vocab_size), allowed_ids(lf, enforcers["lmfe"].vocab_size)
        assert a == b
        sizes.append(len(a))
        xg.accept_token(token)
        lf.accept_token(token)
    assert xg.is_complete() and lf.is_complete()
    assert sizes[0] >= 10  # any first digit; later only what keeps the value <= 100.0
    assert sizes[-1] == 1  # after "100.0" only the newline


@pytest.mark.parametrize("name", ENFORCERS)
def test_jump_forward_strings(name, enforcers, tokenizer):
    enforcer = enforcers[name]
    assert enforcer.matcher(range_regex(400, 409, 1) + "\\n").jump_forward() == "40."
    m = enforcer.matcher(range_regex(0, 400, 1) + "\\n")
    assert m.jump_forward() == ""
    for text in ("1", "2", ".", "5"):
        m.accept_token(piece(tokenizer, text))
    assert m.jump_forward() == "\n"  # exactly one decimal: the line must end
    m = enforcer.matcher(range_regex(0, 400, 1) + "\\n")
    for text in ("3", "9"):
        m.accept_token(piece(tokenizer, text))
    assert m.jump_forward() == "."  # 390+ would exceed 40.0
    assert enforcer.matcher(choice_regex(["insulin", "insulin_dependent"]) + "\\n").jump_forward() == "insulin"
    literal = "Age: 61\nSex: female\n</new>"
    assert enforcer.matcher(lit(literal)).jump_forward() == literal


@pytest.mark.parametrize("name", ENFORCERS)
def test_a_token_outside_the_grammar_is_rejected(name, enforcers, tokenizer):
    m = enforcers[name].matcher(range_regex(100, 199, 1) + "\\n")  # 10.0 .. 19.9
    five = piece(tokenizer, "5")
    assert five not in allowed_ids(m, enforcers[name].vocab_size)
    with pytest.raises(ValueError, match="rejected"):
        m.accept_token(five)


def test_lmfe_tokenizer_data_is_built_once_per_tokenizer(tokenizer, enforcers):
    again = LMFormatEnforcer(tokenizer)
    assert again._data is enforcers["lmfe"]._data


def test_unknown_enforcer_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="unknown enforcer 'outlines'"):
        make_enforcer("outlines", tokenizer)
