"""The hf decode loop with a random tiny Llama on the real SmolLM2 tokenizer: the grammar alone
makes every answer valid; batching, prefix sharing and jump-forward change nothing but cost."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eval.baselines import native_values
from prompts.render import apply_chat_template, build_messages
from sensecf.generate.grammar import block_regex, scaled
from sensecf.generate.hf_backend import GQA_ATTENTION, DecodeConfig, HFGenerator, use_grouped_attention
from sensecf.generate.result import GenRequest
from sensecf.models import load_tokenizer
from sensecf.rundir import SPLIT_COL


def tiny_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama over the full SmolLM2 vocabulary: it knows nothing, so valid
    answers come from the grammar alone."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def cohort_requests(run, tokenizer, n: int, split: str = "test") -> tuple[list[GenRequest], object]:
    df, spec = run.load_cohort()
    rows = df[df[SPLIT_COL] == split].head(n)
    requests = []
    for i, (_, row) in enumerate(rows.iterrows()):
        factual = native_values(spec, row)
        prompt = apply_chat_template(tokenizer, build_messages(spec, factual, i % 2))
        requests.append(GenRequest(factual, seed=1000 + i, prompt=prompt))
    return requests, spec


def check_valid(spec, requests, results) -> None:
    """Every answer parsed, kept the immutables, stayed in range and completed its groups."""
    for req, res in zip(requests, results, strict=True):
        assert res.status == "ok", res.text
        assert re.fullmatch(block_regex(spec, req.factual), res.text), res.text
        for f in spec.immutable:
            assert f.format_value(res.cf[f.name]) == f.format_value(req.factual[f.name])
        for f in spec.numeric:
            assert f.min <= res.cf[f.name] <= f.max
        for g in spec.groups:
            d = max(spec.feature(m).decimals for m in g.members)
            assert sum(scaled(res.cf[m], d) for m in g.members) == scaled(g.total, d)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2")


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.mark.parametrize("enforcer", ["xgrammar", "lmfe"])
def test_fifty_sampled_answers_of_a_random_model_are_all_valid(enforcer, tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 50)
    gen = HFGenerator(model, tokenizer, spec, DecodeConfig(enforcer=enforcer, temperature=1.0))
    results = [r for i in range(0, 50, 25) for r in gen.generate_batch(requests[i : i + 25])]
    check_valid(spec, requests, results)
    assert len({r.text for r in results}) > 40  # sampling explores, yet never leaves the grammar
    for r in results:
        assert r.decode_steps == r.sampled_tokens  # jump-forward: one forward call per chosen token
        assert r.completion_tokens > r.sampled_tokens


def test_batching_and_prefix_sharing_do_not_change_greedy_answers(tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 6)
    batched = HFGenerator(model, tokenizer, spec).generate_batch(requests)
    alone = HFGenerator(model, tokenizer, spec, DecodeConfig(share_prefix=False))
    singles = [alone.generate_batch([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in singles]
    assert all(b.prefill_tokens < s.prefill_tokens for b, s in zip(batched, singles, strict=True))
    assert all(s.prefill_tokens > s.prompt_tokens for s in singles)  # the whole prompt + the opening text


def test_rows_asking_for_different_classes_each_share_their_class_prefix(tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 8)  # desired class alternates 0, 1, 0, ...
    gen = HFGenerator(model, tokenizer, spec)
    prompts = [tokenizer.encode(r.prompt, add_special_tokens=False) for r in requests]
    assert sorted(indices for indices, _ in gen._prefix_groups(prompts)) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    mixed = gen.generate_batch(requests)
    alone = {}
    for cls in (0, 1):  # each class in a batch of its own: the prefix its rows share is the longest possible
        answers = HFGenerator(model, tokenizer, spec).generate_batch(requests[cls::2])
        alone.update(zip(range(cls, 8, 2), answers, strict=True))
    assert [r.text for r in mixed] == [alone[i].text for i in range(8)]
    assert [r.prefill_tokens for r in mixed] == [alone[i].prefill_tokens for i in range(8)]
    check_valid(spec, requests, mixed)


def test_a_bf16_model_decodes_valid_answers_with_the_same_prefix_reuse(tiny_run, tokenizer):
    bf16 = tiny_llama(tokenizer).to(torch.bfloat16)
    requests, spec = cohort_requests(tiny_run, tokenizer, 6)
    gen = HFGenerator(bf16, tokenizer, spec)
    first = gen.generate_batch(requests)
    check_valid(spec, requests, first)
    again = gen.generate_batch(requests)  # the cached class prefixes are reused, not recomputed
    assert [r.text for r in again] == [r.text for r in first]
    assert len(gen._prefixes) == 2


def test_a_frozen_head_gets_a_contiguous_input_once_per_model(tiny_run, tokenizer):
    frozen = tiny_llama(tokenizer).requires_grad_(False)  # as PEFT's merge_and_unload leaves a model
    seen = []
    requests, spec = cohort_requests(tiny_run, tokenizer, 2)
    HFGenerator(frozen, tokenizer, spec)
    HFGenerator(frozen, tokenizer, spec)  # a second generator on the same model adds no second hook
    head = frozen.get_output_embeddings()
    assert len(head._forward_pre_hooks) == 1
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    results = HFGenerator(frozen, tokenizer, spec).generate_batch(requests)
    check_valid(spec, requests, results)
    assert seen and all(seen)


def test_seeded_sampling_does_not_depend_on_batch_composition(tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 4)
    gen = HFGenerator(model, tokenizer, spec, DecodeConfig(temperature=1.0))
    forward = gen.generate_batch(requests)
    backward = gen.generate_batch(requests[::-1])[::-1]
    assert [r.text for r in forward] == [r.text for r in backward]


@pytest.mark.parametrize("enforcer", ["xgrammar", "lmfe"])
def test_jump_forward_takes_fewer_steps_and_stays_valid(enforcer, tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 4)
    fast = HFGenerator(model, tokenizer, spec, DecodeConfig(enforcer=enforcer)).generate_batch(requests)
    slow = HFGenerator(model, tokenizer, spec, DecodeConfig(enforcer=enforcer, jump_forward=False))
    plain = slow.generate_batch(requests)
    check_valid(spec, requests, fast)
    check_valid(spec, requests, plain)
    for f, p in zip(fast, plain, strict=True):
        assert f.decode_steps < p.decode_steps
        assert p.decode_steps == p.sampled_tokens == p.completion_tokens  # every token sampled


def test_mutable_categorical_is_constrained_to_its_categories(generic_run, tokenizer, model):
    requests, spec = cohort_requests(generic_run, tokenizer, 12)
    results = HFGenerator(model, tokenizer, spec, DecodeConfig(temperature=1.0)).generate_batch(requests)
    check_valid(spec, requests, results)
    assert {r.cf["smoker"] for r in results} <= {"no", "yes"}


def test_free_mode_never_raises_and_stops_at_the_token_budget(tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 3)
    gen = HFGenerator(model, tokenizer, spec, DecodeConfig(constrained=False, temperature=1.0, max_new_tokens=12))
    for r in gen.generate_batch(requests):
        assert r.completion_tokens <= 12 and r.decode_steps <= 12
        assert (r.cf is None) == (r.status == "parse_error")


def test_candidates_of_one_factual_share_one_prefill(tiny_run, tokenizer, model):
    (request,), spec = cohort_requests(tiny_run, tokenizer, 1)
    candidates = [GenRequest(request.factual, seed=s, prompt=request.prompt) for s in (1, 2, 3)]
    gen = HFGenerator(model, tokenizer, spec, DecodeConfig(temperature=1.0))
    together = gen.generate_batch(candidates)
    assert together[0].prefill_tokens > 0 and [r.prefill_tokens for r in together[1:]] == [0, 0]
    alone = [gen.generate_batch([c])[0] for c in candidates]
    assert [r.text for r in together] == [r.text for r in alone]
    assert len({r.text for r in together}) > 1  # different seeds, different answers


def test_grouped_attention_computes_the_same_as_transformers_sdpa(tiny_run, tokenizer):
    reference, grouped = tiny_llama(tokenizer), tiny_llama(tokenizer)
    assert use_grouped_attention(grouped) and grouped.config._attn_implementation == GQA_ATTENTION
    ids = torch.randint(100, 40000, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    mask[1, 5] = 0  # a pad in the middle, as ragged chunks leave in the cache
    with torch.inference_mode():
        a = reference(input_ids=ids, attention_mask=mask).logits
        b = grouped(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)
    requests, spec = cohort_requests(tiny_run, tokenizer, 4)
    plain = HFGenerator(reference, tokenizer, spec, DecodeConfig(grouped_attention=False)).generate_batch(requests)
    fast = HFGenerator(grouped, tokenizer, spec).generate_batch(requests)
    assert [r.text for r in plain] == [r.text for r in fast]


def test_without_group_bounds_out_of_range_completions_are_marked_incoherent(tiny_run, tokenizer, model):
    requests, spec = cohort_requests(tiny_run, tokenizer, 20)
    config = DecodeConfig(temperature=1.0, bound_groups=False)
    results = HFGenerator(model, tokenizer, spec, config).generate_batch(requests)
    group = spec.groups[0]
    statuses = [r.status for r in results]
    assert set(statuses) == {"ok", "incoherent"}  # a random model often overshoots 100 %
    for r in results:
        total = sum(scaled(r.cf[m], 1) for m in group.members)
        assert (total == scaled(group.total, 1)) == (r.status == "ok")
        assert (r.extra.get("incoherent_groups") == [group.name]) == (r.status == "incoherent")
        last = spec.feature(group.members[-1])
        assert last.min <= r.cf[last.name] <= last.max  # clamped into range
