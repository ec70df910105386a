"""What ``--precision auto`` and an unset ``--channels-last`` become on this hardware.

Decided when the run starts, from what the device reports, never assumed, and written
to config.json as the resolved value (so a resumed run keeps it):

* precision: bf16 autocast where the hardware computes bf16 natively (x86 CPUs with
  AVX512-BF16 or AMX, CUDA devices with bf16 in hardware: resnetlab.device), else fp32.
  Without native support oneDNN emulates bf16: on an AVX2-only EPYC a bf16 matmul runs
  at about 1.3 GFLOP/s against 50-160 for fp32, and a ResNet-20 step over 10x slower.
* channels_last: on for CPU and CUDA. oneDNN and cuDNN run NHWC convolutions without
  the layout reorders NCHW needs (ResNet-20/56 training on that EPYC, 1 thread: 1.1x and
  1.2x; docs/performance.md, "Training").

Neither changes results beyond rounding: tests/test_fast_path.py compares both
with the plain fp32 NCHW path.
"""

from __future__ import annotations

from typing import Any

import torch

from resnetlab.device import native_bf16, resolve_channels_last, resolve_precision

__all__ = ["native_bf16", "resolve_channels_last", "resolve_fast_path", "resolve_precision"]


def resolve_fast_path(cfg: Any, device: torch.device) -> None:
    """Set ``cfg.precision`` and ``cfg.channels_last`` to what this run will use."""
    cfg.precision = resolve_precision(cfg.precision, device)
    cfg.channels_last = resolve_channels_last(cfg.channels_last, device)
