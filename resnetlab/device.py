"""Which device a run uses and what it computes natively, asked of the hardware at run time."""

from __future__ import annotations

import torch

from resnetlab.errors import UserError


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when present, else CPU; asking for an absent CUDA is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 training needs a GradScaler, which resnetlab uses on CUDA only."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs CUDA (it relies on a GradScaler); use bf16 on CPU")


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bf16 runs in hardware: emulated bf16 is many times slower than fp32.

    x86 CPUs report AVX512-BF16 and AMX through torch's cpuinfo (private functions, so
    guarded); CUDA devices say whether bf16 is supported without emulation.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
