"""Batched CF generation with a transformers model (optionally a PEFT adapter), CPU or GPU.

Our own decode loop over a KV cache (kv_cache.ReservedCache: new keys and values are written
into reserved room, not concatenated), because `generate()` can neither append forced text
without sampling nor switch grammars line by line:

- constrained (default): the block is decoded line by line (grammar.BlockCursor). Forced text -
  tags, feature names, immutable values, a group's computed member, and whatever the line
  grammar itself forces (xgrammar's find_jump_forward_string) - is tokenised and fed in the
  same forward call as the next sampled token (jump-forward), never sampled. Free tokens are
  masked by the enforcer. With jump_forward=False every token, forced or not, is sampled under
  the grammar's mask: plain constrained decoding, for comparison.
- free: unconstrained sampling until </new> or EOS, then the lenient parser (the paper's prompting).

Batching: each forward call runs every active row's pending tokens (a sampled token, plus
forced text after it), left-padded to the longest chunk; pads are masked in the attention mask
and positions are counted per row, so pads left in the cache never influence anything. To keep
that padding small, rows cross line boundaries in lockstep: a row that has finished a line
waits (feeds nothing) until every row has, then all feed the next line's forced text, which is
about the same length for every row. Rows leave the cache as soon as they finish.
The prompt prefix shared by all rows (the Fig. 4 instruction text) is run once and its KV reused
for every row and batch (cropped when a batch shares less of it). Rows that ask for different
classes part at the class's wording, early in the instruction: each class's rows share their own
longer prefix, and the groups' caches are merged left-padded. Rows with identical prompts (the
candidates of one factual) run their prefill once and copy the cache.

Measured (benchmarks/bench_generate.py, SmolLM2, 64 test factuals, 2 cores with AMX): 0.28 s/CF
at batch 16 and 0.24 at batch 64 in bf16, 0.62 / 0.63 in fp32; transformers' generate() with
xgrammar's logits processor 1.18 (bf16) and 1.95 (fp32) s/CF on the same prompts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sensecf.generate.enforcers import Enforcer, allocate_bitmask, apply_bitmask, make_enforcer
from sensecf.generate.grammar import BlockCursor, lit
from sensecf.generate.kv_cache import ReservedCache, merge_left_padded
from sensecf.generate.parser import parse_block
from sensecf.generate.result import GenRequest, GenResult
from sensecf.spec import DatasetSpec


@dataclass(frozen=True)
class DecodeConfig:
    constrained: bool = True
    enforcer: str = "xgrammar"
    jump_forward: bool = True
    temperature: float = 0.0  # 0 = greedy
    max_new_tokens: int = 256  # free mode only; constrained blocks are bounded by the grammar
    bound_groups: bool = True  # bound earlier group members so the computed one stays in range
    share_prefix: bool = True
    grouped_attention: bool = True  # CPU: keep K/V grouped in sdpa (see _sdpa_gqa)
    lockstep: bool = True  # with jump-forward: rows cross line boundaries together (less padding)


GQA_ATTENTION = "sensecf_sdpa_gqa"


def _sdpa_gqa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' sdpa attention, but grouped-query attention stays grouped when a padding
    mask is given: its sdpa path repeats K/V to every query head first (repeat_kv), which on
    CPU costs more than the attention itself (measured: 3x slower attention, 20% of a decode step)."""
    is_causal = bool(query.shape[2] > 1 and attention_mask is None and (True if is_causal is None else is_causal))
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model) -> bool:
    """Switch a CPU model with grouped-query attention from sdpa to _sdpa_gqa (same maths)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = model.config
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None)
    if config._attn_implementation != "sdpa" or not kv_heads or kv_heads == heads:
        return False
    if next(model.parameters()).device.type != "cpu":
        return False
    AttentionInterface.register(GQA_ATTENTION, _sdpa_gqa)
    AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)
    model.set_attn_implementation(GQA_ATTENTION)
    return True


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def use_contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input. transformers slices the last position
    (hidden_states[:, -1:], a strided view); torch's matmul then folds it into one mm only when the
    head's weight requires grad. A frozen head (PEFT's merge_and_unload leaves every weight frozen)
    gets its 49k x 576 weight broadcast to every row and copied instead: 1.2-1.4 s per forward call
    at 16 rows in bf16, against 6 ms (measured here); the fine-tuned demo row ran at 1.8 s/CF."""
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_sensecf_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._sensecf_contiguous_input = True


class _Row:
    """One answer being decoded: its grammar position, the tokens to feed next, its counters."""

    def __init__(self, gen: HFGenerator, req: GenRequest):
        self.gen = gen
        self.req = req
        self.cfg = gen.config
        self.done = False
        self.feed: list[int] = []  # tokens to run through the model in the next call
        self.answer_ids: list[int] = []
        self.sampled = 0
        self.steps = 0
        self.pos = 0  # tokens of this row in the cache (its next position id)
        self.prefill = 0  # prompt tokens run for this row (0 when another candidate's were copied)
        self.rng = torch.Generator().manual_seed(int(req.seed)) if self.cfg.temperature > 0 else None
        self.cursor = (
            BlockCursor.start(gen.spec, req.factual, bound_groups=self.cfg.bound_groups) if gen.enforcer else None
        )
        self.matcher = None
        self.segment = ""  # "value" (a free line) or "literal" (forced text sampled under a mask)
        self.segment_ids: list[int] = []

    # --- constrained --------------------------------------------------------------------
    def _start_segment(self, regex: str, kind: str) -> None:
        self.matcher = self.gen.enforcer.matcher(regex)
        self.segment, self.segment_ids = kind, []

    def _take(self, ids: list[int], feed: bool = True) -> None:
        self.answer_ids += ids
        if feed:
            self.feed += ids

    def advance(self) -> None:
        """Move past everything forced until the model has to choose a token (or the block ends)."""
        jf = self.cfg.jump_forward
        while True:
            m = self.matcher
            if m is not None and not m.is_complete():
                forced = m.jump_forward() if jf else ""
                if not forced:
                    return
                ids = self.gen.encode_forced(forced)
                for t in ids:
                    m.accept_token(t)
                self.segment_ids += ids
                self._take(ids)
                continue
            if m is not None:
                if self.segment == "value":
                    self.cursor.accept(self.gen.decode(self.segment_ids))
                self.matcher = None
            if self.cursor.done:
                self.done = True
                return
            forced = self.cursor.take_forced()
            if forced and not jf:
                self._start_segment(lit(forced), "literal")
                continue
            if forced:
                ids = self.gen.encode_forced(forced)
                self._take(ids, feed=not self.cursor.done)  # the closing tail needs no forward call
                if self.cursor.done:
                    self.done = True
                    return
            self._start_segment(self.cursor.free_regex(), "value")

    # --- both modes ---------------------------------------------------------------------
    def on_token(self, token: int) -> None:
        self.sampled += 1
        if self.cursor is not None:
            self.matcher.accept_token(token)
            self.segment_ids.append(token)
            self._take([token])
            self.advance()
            return
        if token in self.gen.stop_ids:
            self.done = True
            return
        self._take([token])
        if "</new>" in self.gen.decode(self.answer_ids[-8:]) or self.sampled >= self.cfg.max_new_tokens:
            self.done = True

    def result(self, prompt_tokens: int, prefill_tokens: int, seconds: float) -> GenResult:
        if self.cursor is not None:
            text, cf = self.cursor.text, self.cursor.cf()
            status = "incoherent" if self.cursor.incoherent else "ok"
            extra = {"incoherent_groups": list(self.cursor.incoherent)} if self.cursor.incoherent else {}
        else:
            text = self.gen.decode(self.answer_ids)
            parsed = parse_block(self.gen.spec, text, self.req.factual)
            cf, status = parsed.cf, parsed.status
            extra = {"filled_from_factual": parsed.filled} if parsed.filled else {}
            if parsed.note:
                extra["parse_note"] = parsed.note
        return GenResult(
            text=text,
            cf=cf,
            status=status,
            prompt_tokens=prompt_tokens,
            prefill_tokens=prefill_tokens,
            completion_tokens=len(self.answer_ids),
            sampled_tokens=self.sampled,
            decode_steps=self.steps,
            seconds=seconds,
            extra=extra,
        )


class HFGenerator:
    """Generates CF blocks for batches of prompts with one model, grammar and enforcer."""

    def __init__(self, model, tokenizer, spec: DatasetSpec, config: DecodeConfig = DecodeConfig()):
        if config.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {config.temperature}")
        if not spec.mutable:
            raise ValueError(f"spec '{spec.name}' has no mutable feature: there is nothing to generate")
        if config.grouped_attention:
            use_grouped_attention(model)
        use_contiguous_head_input(model)
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.config = config
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.enforcer: Enforcer | None = (
            make_enforcer(config.enforcer, tokenizer, vocab_size=self.vocab_size) if config.constrained else None
        )
        eos = model.generation_config.eos_token_id
        self.stop_ids = {tokenizer.eos_token_id} | set(
            eos if isinstance(eos, list) else [eos] if eos is not None else []
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._context_id = tokenizer.encode("0", add_special_tokens=False)[-1]
        self._context_text = tokenizer.decode([self._context_id])
        self._forced_ids: dict[str, list[int]] = {}
        self._prefixes: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}  # ids -> per-layer KV
        self.stats: Counter = Counter()  # cumulative seconds (forward, mask, advance) and counts

    # --- text <-> tokens ----------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """Text of tokens in the middle of a sequence (sentencepiece drops a leading space alone)."""
        return self.tokenizer.decode([self._context_id, *ids])[len(self._context_text) :]

    def encode_forced(self, text: str) -> list[int]:
        """Tokens that decode to exactly `text` in the middle of a sequence (memoised)."""
        ids = self._forced_ids.get(text)
        if ids is None:
            # Encode after a newline so a sentencepiece tokenizer adds no word-start space.
            lead = self.tokenizer.encode("\n", add_special_tokens=False)
            full = self.tokenizer.encode("\n" + text, add_special_tokens=False)
            ids = full[len(lead) :] if full[: len(lead)] == lead else []
            if self.decode(ids) != text:
                ids = self.tokenizer.encode(text, add_special_tokens=False)
            if self.decode(ids) != text:
                raise ValueError(f"the tokenizer cannot encode the forced text {text!r} verbatim")
            self._forced_ids[text] = ids
        return ids

    # --- shared prompt prefixes --------------------------------------------------------
    def _prefix_groups(self, prompts: list[list[int]]) -> list[tuple[list[int], int]]:
        """Rows grouped by the prompt prefix they share: [(row indices, prefix length)]. Rows that
        ask for different classes part at the class's wording, early in the instruction; split
        there, each group shares the rest of the instruction (~100 tokens more per row here)."""
        everyone = list(range(len(prompts)))
        if not self.config.share_prefix:
            return [(everyone, 0)]
        n0 = _common_prefix(prompts)
        by_token: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_token.setdefault(p[n0], []).append(i)
        if len(by_token) == 1:
            return [(everyone, n0)]
        groups, rest = [], []
        for indices in by_token.values():
            n = _common_prefix([prompts[i] for i in indices])
            if len(indices) > 1 and n - n0 >= MIN_GROUP_PREFIX:
                groups.append((indices, n))
            else:
                rest += indices
        if rest:
            groups.append((sorted(rest), _common_prefix([prompts[i] for i in rest])))
        return groups

    def _prefix(self, ids: list[int]) -> tuple[int, list]:
        """(length, per-layer KV) of a prefix of `ids` whose KV is cached: the longest cached one
        that covers at least half of `ids` (cropped if it runs past them), else `ids` computed now."""
        best, best_kv = 0, None
        for key, kv in self._prefixes.items():
            m = _common_prefix([list(key), ids], keep_last=False)
            if m > best and (m == len(key) or m >= len(ids) // 2):
                best, best_kv = m, kv
        if best >= max(1, len(ids) // 2):
            kv = [(k[:, :, :best], v[:, :, :best]) for k, v in best_kv]
            self._prefixes[tuple(ids[:best])] = kv
            return best, kv
        if not ids:
            return 0, []
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)  # fmt: skip
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefixes[tuple(ids)] = kv
        while len(self._prefixes) > MAX_CACHED_PREFIXES:
            self._prefixes.pop(next(iter(self._prefixes)))  # the oldest
        return len(ids), kv

    # --- decoding ------------------------------------------------------------------------
    def _forward(self, chunks: list[list[int]], rows: list[_Row], attn: torch.Tensor, cache) -> tuple:
        """One forward call over the rows' token chunks (left-padded; an empty chunk = a row
        that waits this step); returns the logits of each row's last position and the grown
        attention mask."""
        width = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(chunks), width), dtype=attn.dtype)
        pos = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, (chunk, row) in enumerate(zip(chunks, rows, strict=True)):
            n = len(chunk)
            if n == 0:
                continue
            ids[i, width - n :] = torch.tensor(chunk)
            new_mask[i, width - n :] = 1
            pos[i, width - n :] = torch.arange(row.pos, row.pos + n)
            row.pos += n
            row.steps += 1
        attn = torch.cat([attn, new_mask.to(self.device)], dim=1)
        start = time.perf_counter()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=attn,
            position_ids=pos.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :].float()
        self.stats["forward_s"] += time.perf_counter() - start
        self.stats["forward_calls"] += 1
        self.stats["token_slots"] += ids.numel()
        self.stats["real_tokens"] += int(new_mask.sum())
        return logits, attn

    def _movers(self, active: list[_Row]) -> list[bool]:
        """Which rows feed their tokens this step. With jump-forward, a row that has finished a
        line waits until every row has: then all rows feed the next line's forced text (about
        the same length) together, instead of every step being padded to one row's long chunk."""
        if not (self.config.lockstep and self.config.jump_forward and self.enforcer is not None):
            return [True] * len(active)
        front = min(row.cursor.line_index for row in active)
        return [row.cursor.line_index == front for row in active]

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        if self.enforcer is not None:
            start = time.perf_counter()
            bitmask = allocate_bitmask(len(rows), self.vocab_size)
            for i, row in enumerate(rows):
                row.matcher.fill_bitmask(bitmask, i)
            apply_bitmask(logits, bitmask)
            self.stats["mask_s"] += time.perf_counter() - start
            self.stats["masks"] += len(rows)
        if self.config.temperature == 0:
            return logits.argmax(dim=-1).tolist()
        # Inverse-CDF sampling with each row's own generator: torch.multinomial costs ~15 ms
        # per row on a 49k vocabulary here, a cumsum + searchsorted ~0.1 ms.
        cdf = torch.softmax(logits / self.config.temperature, dim=-1).cpu().cumsum(dim=-1)
        picks = []
        for i, row in enumerate(rows):
            u = torch.rand((1,), generator=row.rng) * cdf[i, -1]
            picks.append(min(int(torch.searchsorted(cdf[i], u, right=True)), cdf.shape[1] - 1))
        return picks

    @torch.inference_mode()
    def generate_batch(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """One batch: all rows decoded together; results in request order."""
        start = time.perf_counter()
        rows = [_Row(self, r) for r in requests]
        if not rows:
            return []
        prompts = [self.tokenizer.encode(r.prompt, add_special_tokens=False) for r in requests]
        for row in rows:
            if row.cursor is not None:
                row.advance()  # the opening forced text joins the prefill
        parts = []
        for indices, shared in self._prefix_groups(prompts):
            prefix_len, prefix_kv = self._prefix(prompts[indices[0]][:shared])
            group = [rows[i] for i in indices]
            for row, i in zip(group, indices, strict=True):
                row.feed = prompts[i][prefix_len:] + row.feed
                row.pos = prefix_len
            parts.append((indices, *self._prefill(group, prefix_len, prefix_kv)))
        cache, attn, logits = parts[0][1:] if len(parts) == 1 else self._merge(parts, len(rows))
        active, ran = rows, list(range(len(rows)))
        while True:
            tokens = self._choose(logits[ran], [active[i] for i in ran])
            start_advance = time.perf_counter()
            for i, token in zip(ran, tokens, strict=True):
                active[i].on_token(token)  # grammar state, jump-forward text, its tokenisation
            self.stats["advance_s"] += time.perf_counter() - start_advance
            keep = [i for i, row in enumerate(active) if not row.done]
            if len(keep) < len(active):
                if keep:
                    cache.batch_select_indices(torch.tensor(keep, device=self.device))
                attn = attn[keep]
                active = [active[i] for i in keep]
            if not active:
                break
            chunks = [row.feed if move else [] for row, move in zip(active, self._movers(active), strict=True)]
            for row, chunk in zip(active, chunks, strict=True):
                if chunk:
                    row.feed = []
            if not any(chunks):
                raise RuntimeError("no row has tokens to feed; decoding state is inconsistent")
            logits, attn = self._forward(chunks, active, attn, cache)
            ran = [i for i, chunk in enumerate(chunks) if chunk]
        seconds = (time.perf_counter() - start) / len(rows)
        return [row.result(len(p), row.prefill, seconds) for row, p in zip(rows, prompts, strict=True)]

    def _prefill(self, rows: list[_Row], prefix_len: int, prefix_kv: list):
        """Run the rows' prompt suffixes (plus the opening forced text). Rows with the same
        suffix - the candidates of one factual - are run once and their cache copied."""
        groups: dict[tuple, int] = {}
        inverse = [groups.setdefault(tuple(row.feed), len(groups)) for row in rows]
        leaders = [rows[inverse.index(g)] for g in range(len(groups))]
        # room for the longest prompt suffix and an answer (constrained blocks took <= 150 tokens here)
        answer = self.config.max_new_tokens if self.enforcer is None else 160
        reserve = max(len(row.feed) for row in leaders) + answer + 8
        layers = self.model.config.get_text_config(decoder=True).num_hidden_layers
        cache = ReservedCache(layers, reserve, prefix_kv, len(leaders))
        attn = torch.ones((len(leaders), prefix_len), dtype=torch.long, device=self.device)
        before = self.stats["forward_s"]
        logits, attn = self._forward([row.feed for row in leaders], leaders, attn, cache)
        self.stats["prefill_s"] += self.stats["forward_s"] - before
        for row, g in zip(rows, inverse, strict=True):
            row.prefill = len(row.feed) if row is leaders[g] else 0
            row.pos, row.steps, row.feed = leaders[g].pos, leaders[g].steps, []
        if len(leaders) < len(rows):
            index = torch.tensor(inverse, device=self.device)
            cache.batch_select_indices(index)
            attn, logits = attn[index], logits[index.to(logits.device)]
        return cache, attn, logits

    def _merge(self, parts: list, rows: int):
        """One (cache, attention mask, logits) from prefix groups' prefills, in row order: shorter
        groups are left-padded (mask 0), so every row keeps its own positions."""
        length = max(attn.shape[1] for _, _, attn, _ in parts)
        cache = merge_left_padded([(indices, c) for indices, c, _, _ in parts], rows, length)
        attn = torch.zeros((rows, length), dtype=parts[0][2].dtype, device=self.device)
        logits = parts[0][3].new_empty((rows, parts[0][3].shape[1]))
        for indices, _, a, lg in parts:
            index = torch.tensor(indices, device=self.device)
            attn[index, length - a.shape[1] :] = a
            logits[index.to(logits.device)] = lg
        return cache, attn, logits


MIN_GROUP_PREFIX = 16  # a prefix group must share this many more tokens than the whole batch
MAX_CACHED_PREFIXES = 8  # prompt prefixes whose KV is kept across batches (one per class and prompt form)


def _common_prefix(prompts: list[list[int]], keep_last: bool = True) -> int:
    """Length of the token prefix all prompts share (keep_last: each keeps >= 1 token to run)."""
    n = min(len(p) for p in prompts) - (1 if keep_last else 0)
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def load_model(
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    device: str | None = None,
    merge_adapter: bool = True,
    dtype: str = "auto",
):
    """(model, tokenizer): the embedded SmolLM2 (model None) or a local HF folder, with an
    optional PEFT adapter; the adapter folder's tokenizer wins when it has one. The adapter is
    merged into the weights by default (PEFT's merge_and_unload: one matmul per projection
    instead of three). SmolLM2 + the demo adapter, batch 16, 64 factuals, fp32: 0.60 against 0.71
    s/CF, the same greedy answers for 64 of 64 (bench_generate --adapter, measured before the
    contiguous-head fix; rounding differs, so identity is measured there, not assumed).

    dtype (sensecf.precision.resolve_dtype): auto computes in bf16 on CUDA and on a CPU with native
    bf16 (AMX / AVX512-BF16), else fp32. On a CPU the weights load and merge in fp32 and are cast
    afterwards, so the merged LoRA delta is not rounded twice. bf16 changes greedy answers a little
    (how many is measured in bench_generate, never assumed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sensecf.models import load_embedded_model, with_adapter
    from sensecf.precision import default_device, resolve_dtype

    device = device or default_device()
    compute = getattr(torch, resolve_dtype(dtype, device))
    if model is None:
        m, tok = load_embedded_model(Path(adapter) if adapter else None)
        m = m.merge_and_unload() if adapter and merge_adapter else m
        return m.to(device=device, dtype=compute).eval(), tok
    model = Path(model)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{model}: not a transformers model folder (no config.json)")
    load_dtype = compute if device.startswith("cuda") else torch.float32
    m = AutoModelForCausalLM.from_pretrained(model, dtype=load_dtype, use_safetensors=True, trust_remote_code=False)
    m, tok_dir = with_adapter(m, model, adapter)
    if adapter and merge_adapter:
        m = m.merge_and_unload()
    return m.to(device=device, dtype=compute).eval(), AutoTokenizer.from_pretrained(tok_dir)
