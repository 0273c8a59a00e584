"""benchmarks/bench_generate.py end to end on 2 factuals: each configuration runs in its dtype, the
fp32/bf16 answers are compared, and the speed-up is taken against the library path of the same dtype."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_generate
from sensecf.precision import cpu_has_native_bf16


@pytest.mark.slow
def test_configurations_run_in_their_dtype_and_compare_like_with_like(trained_run, tmp_path):
    out = tmp_path / "generate.json"
    bench_generate.main(
        run=trained_run.root, n=2, adapter=None, n_batch1=1, batch_size=16,
        configs="xgrammar_jf_b16,xgrammar_jf_b16_bf16,hf_generate_xgrammar_b16_bf16", mask_factuals=1, threads=0,
        llamacpp_threads=1, llamacpp_concurrency=1, scratch_dir=tmp_path / "scratch", out=out,
    )  # fmt: skip
    report = json.loads(out.read_text())
    configs = report["configs"]
    assert {name: c["dtype"] for name, c in configs.items()} == {
        "xgrammar_jf_b16": "float32", "xgrammar_jf_b16_bf16": "bfloat16", "hf_generate_xgrammar_b16_bf16": "bfloat16",
    }  # fmt: skip
    assert all(c["n"] == 2 and c["parse_rate"] == 1.0 for c in configs.values())
    assert report["greedy_identical"]["xgrammar_jf_b16_bf16 vs xgrammar_jf_b16"]["of"] == 2
    # the bf16 engine against the bf16 library path only: no fp32 library ran, so no fp32 ratio
    speedup = report["speedup_over_library_generate_b16"]
    assert set(speedup) == {"xgrammar_jf_b16_bf16"}
    library, engine = (configs[k]["seconds_per_cf"] for k in ("hf_generate_xgrammar_b16_bf16", "xgrammar_jf_b16_bf16"))
    assert speedup["xgrammar_jf_b16_bf16"] == pytest.approx(library / engine)
    assert report["cpu_native_bf16"] is cpu_has_native_bf16()
    assert not (trained_run.root / "cfs" / "xgrammar_jf_b16.jsonl").exists()  # records went to the scratch run
