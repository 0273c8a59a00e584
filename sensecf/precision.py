"""Which floating-point type a model computes in: bf16 where the hardware computes it natively.

Shared by fine-tuning (launch.train's `bf16: auto` on a CPU) and generation (eval.generate
--dtype auto). On a CPU with AMX, bf16 matmuls of SmolLM2's shapes ran ~9x faster than fp32 here
(2.6 against 0.29 TFLOP/s, 4544x576 @ 576x1536); without native bf16 they are emulated and slower.
"""

from __future__ import annotations

DTYPES = ("auto", "float32", "bfloat16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as torch's CPU kernels see it."""
    import torch

    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def default_device() -> str:
    """cuda when a GPU is visible, else cpu (where a stage is given no --device)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str, device: str) -> str:
    """'float32' or 'bfloat16' for `requested` (auto: bf16 on CUDA and on CPUs with native bf16)."""
    if requested not in DTYPES:
        raise ValueError(f"unknown dtype '{requested}'; choose one of {list(DTYPES)}")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"
