"""ReservedLayer holds exactly what transformers' DynamicLayer holds, without re-copying the cache
at every call; merge_left_padded right-aligns row groups of different lengths."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from sensecf.generate.kv_cache import ReservedCache, ReservedLayer, merge_left_padded


def chunks(batch: int, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 2, n, 4, generator=g), torch.randn(batch, 2, n, 4, generator=g)) for n in lengths]


def test_updates_give_the_same_keys_and_values_as_dynamic_layer_and_grow_past_the_reserve():
    reserved, dynamic = ReservedLayer(reserve=5), DynamicLayer()
    for k, v in chunks(3, [4, 1, 3, 2, 7]):  # 4 + 5 reserved = 9 < 17: the buffer grows twice
        rk, rv = reserved.update(k, v)
        dk, dv = dynamic.update(k, v)
        assert torch.equal(rk, dk) and torch.equal(rv, dv)
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 17
    assert reserved._k.shape[2] >= 17


def test_writes_in_place_while_the_reserve_lasts():
    layer = ReservedLayer(reserve=10)
    (k1, v1), (k2, v2) = chunks(2, [3, 4])
    layer.update(k1, v1)
    buffer = layer._k.data_ptr()
    keys, _ = layer.update(k2, v2)
    assert layer._k.data_ptr() == buffer  # no new buffer, no copy of the first 3 positions
    assert keys.data_ptr() == buffer and keys.shape == (2, 2, 7, 4)


def test_select_crop_and_repeat_match_dynamic_layer():
    reserved, dynamic = ReservedLayer(reserve=4), DynamicLayer()
    for k, v in chunks(4, [3, 2]):
        reserved.update(k, v)
        dynamic.update(k, v)
    keep = torch.tensor([3, 1])
    reserved.batch_select_indices(keep)
    dynamic.batch_select_indices(keep)
    assert torch.equal(reserved.keys, dynamic.keys) and torch.equal(reserved.values, dynamic.values)
    reserved.crop(-2)
    dynamic.crop(-2)
    assert torch.equal(reserved.keys, dynamic.keys) and reserved.get_seq_length() == 3
    reserved.batch_repeat_interleave(2)
    dynamic.batch_repeat_interleave(2)
    assert torch.equal(reserved.values, dynamic.values)
    (k, v), = chunks(4, [1], seed=1)  # fmt: skip
    assert torch.equal(reserved.update(k, v)[0], dynamic.update(k, v)[0])


def test_a_cache_starts_from_a_prefix_expanded_to_every_row():
    (pk, pv), = chunks(1, [5])  # fmt: skip
    cache = ReservedCache(layers=2, reserve=8, prefix=[(pk, pv), (pk * 2, pv * 2)], rows=3)
    assert cache.get_seq_length() == 5
    assert torch.equal(cache.layers[1].keys, (pk * 2).expand(3, -1, -1, -1))


def test_merge_right_aligns_groups_and_zeroes_what_the_mask_hides():
    short, long_ = ReservedCache(1, 2), ReservedCache(1, 6)
    (sk, sv), = chunks(2, [3])  # fmt: skip
    (lk, lv), = chunks(1, [5], seed=1)  # fmt: skip
    short.layers[0].update(sk, sv)
    long_.layers[0].update(lk, lv)
    merged = merge_left_padded([([0, 2], short), ([1], long_)], rows=3, length=5)
    layer = merged.layers[0]
    assert layer.get_seq_length() == 5 and layer.keys.shape == (3, 2, 5, 4)
    assert torch.equal(layer.keys[[0, 2], :, 2:], sk) and torch.equal(layer.values[[0, 2], :, 2:], sv)
    assert not layer.keys[[0, 2], :, :2].any() and not layer.values[[0, 2], :, :2].any()
    assert torch.equal(layer.keys[1], lk[0])
    assert layer._k.shape[2] - 5 == 6  # the largest room any part had left
