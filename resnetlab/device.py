"""Which device a run uses and what it computes natively, asked of the hardware at run time."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's marketing name, e.g. "AMD EPYC", or the architecture where it is not told."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_bf16, amx_bf16, ...); empty where not told."""
    return set((_cpuinfo("flags") or "").split())


def device_name(device: torch.device | str) -> str:
    """What a result was measured on, for summaries and reports: speed depends on all of it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = ", native bf16" if native_bf16(device) else ""
    return f"{cpu_model()}, {cores} cores{bf16}"
