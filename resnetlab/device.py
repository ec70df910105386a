"""Which device a run uses and what it computes natively, asked of the hardware at run time."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import warnings
from pathlib import Path

import torch

from resnetlab.errors import UserError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # what --device takes


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when present, else CPU; cpu, cuda and cuda:N are checked here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_PATTERN.fullmatch(name):
        raise UserError(f"--device {name}: choose auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # one list for train, eval, predict, reproduce


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """ "auto" -> bf16 where the hardware computes it natively, else fp32; others are checked:
    emulated bf16 warns, fp16 needs CUDA (training relies on a GradScaler, which is CUDA's)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs CUDA; use bf16 on CPU")
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"bf16 is emulated on this {device.type}: expect it slower than fp32", stacklevel=2
        )
    return precision


def resolve_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """Unset -> on for CPU and CUDA: oneDNN and cuDNN run NHWC convolutions without reorders."""
    return device.type in ("cpu", "cuda") if channels_last is None else channels_last


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bf16 runs in hardware: emulated bf16 (oneDNN on an AVX2-only CPU) is many
    times slower than fp32. x86 CPUs report AVX512-BF16 and AMX through torch's cpuinfo
    (private functions, so guarded); CUDA says whether it supports bf16 without emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux), else None."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
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
