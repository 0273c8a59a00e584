"""A KV cache whose layers write new tokens into reserved space instead of concatenating.

transformers' DynamicLayer grows with torch.cat, which copies the whole cache at every forward
call: at batch 64 that was 27 % of the decode loop's time here (SmolLM2 bf16, 64 rows x ~400
cached tokens x 30 layers, torch profiler). A ReservedLayer keeps a buffer with room for the
answer, writes each call's keys and values into it in place and hands attention a view of the
filled part; the values attention sees are the same, only the copies are gone.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in a buffer [batch, heads, capacity, head_dim]; `keys` and
    `values` are views of its first `length` positions. The buffer grows (doubling) only when a
    call needs more room than was reserved."""

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self.length = 0

    def _view(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def _grow(self, capacity: int) -> None:
        k, v = self._k, self._v
        shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
        self._k, self._v = k.new_empty(shape), v.new_empty(shape)
        self._k[:, :, : self.length] = k[:, :, : self.length]
        self._v[:, :, : self.length] = v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty((b, h, new + self.reserve, d))
            self._v = value_states.new_empty((b, h, new + self.reserve, d))
            self.is_initialized = True
        elif self.length + new > self._k.shape[2]:
            self._grow(max(2 * self._k.shape[2], self.length + new))
        self._k[:, :, self.length : self.length + new] = key_states
        self._v[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0:
            self.length = max(0, self.length + tokens_to_remove)
            if self.is_initialized:
                self._view()
        elif tokens_to_remove > 0:
            raise ValueError("ReservedLayer.crop takes the number of tokens to remove as a negative integer")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self._view()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._view()


class ReservedCache(Cache):
    """A cache of `layers` ReservedLayers, each reserving room for `reserve` tokens beyond what it
    is first given; `prefix` (one (keys, values) per layer, batch 1 or `rows`) is copied in first."""

    def __init__(self, layers: int, reserve: int, prefix=None, rows: int = 1):
        super().__init__(layers=[ReservedLayer(reserve) for _ in range(layers)])
        for layer, (k, v) in zip(self.layers, prefix or [], strict=False):
            layer.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))


def merge_left_padded(parts: list[tuple[list[int], ReservedCache]], rows: int, length: int) -> ReservedCache:
    """One cache of `rows` rows from caches of row groups with different lengths: part (indices,
    cache) goes to rows `indices`, right-aligned at `length` (the longest part's length); the
    positions before it are zeros that the attention mask hides. The room left for the answer is
    the largest any part had left."""
    layers = len(parts[0][1].layers)
    reserve = max(c.layers[0]._k.shape[2] - c.layers[0].length for _, c in parts)
    merged = ReservedCache(layers, reserve)
    device = parts[0][1].layers[0]._k.device
    index = [torch.tensor(indices, device=device) for indices, _ in parts]
    for n, layer in enumerate(merged.layers):
        k0 = parts[0][1].layers[n]._k
        shape = (rows, k0.shape[1], length + reserve, k0.shape[3])
        layer._k, layer._v = k0.new_empty(shape), k0.new_empty(shape)
        layer.dtype, layer.device, layer.is_initialized, layer.length = k0.dtype, k0.device, True, length
        for rows_of, (_, cache) in zip(index, parts, strict=True):
            src = cache.layers[n]
            pad = length - src.length
            layer._k[rows_of, :, :pad] = 0
            layer._v[rows_of, :, :pad] = 0
            layer._k[rows_of, :, pad:length] = src.keys
            layer._v[rows_of, :, pad:length] = src.values
        layer._view()
    return merged
