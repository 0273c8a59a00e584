"""Token enforcers for one line grammar at a time, behind one interface.

    enforcer = make_enforcer("xgrammar" | "lmfe", tokenizer, vocab_size=model_vocab)  # once per process
    m = enforcer.matcher(regex)      # one line of one row
    m.fill_bitmask(bitmask, row)     # int32 bitmask, shape (batch, ceil(vocab/32)); apply with apply_bitmask
    m.accept_token(token_id)
    m.jump_forward()                 # text the grammar forces from here ("" if none)
    m.is_complete()                  # the line is finished (every line grammar is prefix-free)

- xgrammar: `TokenizerInfo` once, compiled regexes cached by pattern, a `GrammarMatcher` per
  line; jump-forward is its `find_jump_forward_string()`.
- lm-format-enforcer: only its core API (TokenEnforcer, RegexParser) - its transformers
  integration does not import under transformers 5 (constrained-decoding notes B1). The
  tokenizer data (prefix tree) is built once per tokenizer and process; one TokenEnforcer per
  distinct line regex is kept and shared by all rows, since its states are keyed by the line's
  token tuple and its allowed-token cache by FSM state. Jump-forward walks the regex FSM while
  exactly one character is allowed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from functools import lru_cache
from typing import Literal

import torch

EnforcerName = Literal["xgrammar", "lmfe"]
ENFORCERS: tuple[str, ...] = ("xgrammar", "lmfe")


def allocate_bitmask(batch: int, vocab_size: int) -> torch.Tensor:
    import xgrammar as xgr

    return xgr.allocate_token_bitmask(batch, vocab_size)


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set the logits of disallowed tokens to -inf, in place (rows of logits and bitmask align)."""
    import xgrammar as xgr

    xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device))


class LineMatcher(ABC):
    """Constrains the tokens of one line to its regex."""

    @abstractmethod
    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None: ...

    @abstractmethod
    def accept_token(self, token_id: int) -> None:
        """Advance by one token; raises ValueError if the grammar rejects it."""

    @abstractmethod
    def jump_forward(self) -> str: ...

    @abstractmethod
    def is_complete(self) -> bool: ...


class Enforcer(ABC):
    name: str

    def __init__(self, tokenizer, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size or len(tokenizer)

    @abstractmethod
    def matcher(self, regex: str) -> LineMatcher: ...


# --- xgrammar ------------------------------------------------------------------------------


class _XGrammarMatcher(LineMatcher):
    def __init__(self, compiled):
        import xgrammar as xgr

        self._m = xgr.GrammarMatcher(compiled)

    def fill_bitmask(self, bitmask, row):
        self._m.fill_next_token_bitmask(bitmask, row)

    def accept_token(self, token_id):
        if not self._m.accept_token(int(token_id)):
            raise ValueError(f"xgrammar rejected token {token_id}")

    def jump_forward(self):
        return self._m.find_jump_forward_string()

    def is_complete(self):
        return self._m.is_completed()


class XGrammarEnforcer(Enforcer):
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int | None = None, cache_size: int = 4096):
        import xgrammar as xgr

        super().__init__(tokenizer, vocab_size)
        self._info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        self._compiler = xgr.GrammarCompiler(self._info, cache_enabled=True, cache_limit_bytes=256 << 20)
        self._compiled: OrderedDict[str, object] = OrderedDict()
        self._cache_size = cache_size

    def _compile(self, regex: str):
        if regex in self._compiled:
            self._compiled.move_to_end(regex)
        else:
            self._compiled[regex] = self._compiler.compile_regex(regex)
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return self._compiled[regex]

    def matcher(self, regex: str) -> LineMatcher:
        return _XGrammarMatcher(self._compile(regex))


# --- lm-format-enforcer --------------------------------------------------------------------


@lru_cache(maxsize=4)
def _lmfe_tokenizer_data(tokenizer, vocab_size: int):
    """lm-format-enforcer's per-tokenizer prefix tree (its `build_token_enforcer_tokenizer_data`,
    re-done with batch_decode: the original lives in the integration module that transformers 5
    breaks). Expensive (seconds for 128k tokens): built once per tokenizer."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    token_0 = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(min(vocab_size, len(tokenizer))) if i not in special]
    # Decoding after token_0 keeps a word-start token's leading space (sentencepiece drops it alone).
    after_0 = tokenizer.batch_decode([[token_0, i] for i in ids])
    alone = tokenizer.batch_decode([[i] for i in ids])
    regular = [(i, a[1:], len(a) - 1 > len(b)) for i, a, b in zip(ids, after_0, alone, strict=True)]

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return TokenEnforcerTokenizerData(regular, decode, eos, use_bitmask=True, vocab_size=vocab_size)


class _LMFEMatcher(LineMatcher):
    def __init__(self, token_enforcer, parser):
        self._enforcer = token_enforcer
        self._parser = parser  # our own walk of the same regex, for completion and jump-forward
        self._tokens: list[int] = []
        self._decoded = ""

    def fill_bitmask(self, bitmask, row):
        words = self._enforcer.get_allowed_tokens(self._tokens).allowed_tokens
        bitmask[row].zero_()
        bitmask[row, : words.shape[0]] = words

    def accept_token(self, token_id):
        allowed = self._enforcer.get_allowed_tokens(self._tokens)
        if not allowed.is_token_allowed(int(token_id)):
            raise ValueError(f"lm-format-enforcer rejected token {token_id}")
        self._tokens.append(int(token_id))
        decoded = self._enforcer.decoder(self._tokens)
        for ch in decoded[len(self._decoded) :]:
            self._parser = self._parser.add_character(ch)
        self._decoded = decoded

    def jump_forward(self):
        out, parser = [], self._parser
        while not parser.can_end():
            allowed = parser.get_allowed_characters()
            if len(allowed) != 1:
                break
            out.append(allowed)
            parser = parser.add_character(allowed)
        return "".join(out)

    def is_complete(self):
        return self._parser.can_end()


class LMFormatEnforcer(Enforcer):
    name = "lmfe"

    def __init__(self, tokenizer, vocab_size: int | None = None, cache_size: int = 4096):
        super().__init__(tokenizer, vocab_size)
        self._data = _lmfe_tokenizer_data(tokenizer, self.vocab_size)
        self._enforcers: OrderedDict[str, tuple] = OrderedDict()
        self._cache_size = cache_size

    def matcher(self, regex: str) -> LineMatcher:
        from lmformatenforcer import RegexParser, TokenEnforcer

        if regex in self._enforcers:
            self._enforcers.move_to_end(regex)
        else:
            parser = RegexParser(regex)
            self._enforcers[regex] = (TokenEnforcer(self._data, parser), parser)
            if len(self._enforcers) > self._cache_size:
                self._enforcers.popitem(last=False)
        token_enforcer, root = self._enforcers[regex]
        return _LMFEMatcher(token_enforcer, root)


def make_enforcer(name: str, tokenizer, vocab_size: int | None = None) -> Enforcer:
    if name == "xgrammar":
        return XGrammarEnforcer(tokenizer, vocab_size)
    if name == "lmfe":
        return LMFormatEnforcer(tokenizer, vocab_size)
    raise ValueError(f"unknown enforcer '{name}'; choose one of {list(ENFORCERS)}")
