"""Learning-rate schedules as a multiplier per iteration, stepped by torch's LambdaLR.

Per iteration, so that the paper's schedule is stated in its own unit and a shortened run
keeps its shape; a dataclass, so that LambdaLR's state_dict stays ``weights_only``-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

# The paper divides the lr by 10 at 32k and 48k of 64k iterations.
PAPER_MILESTONES = (0.5, 0.75)
# One-cycle (Smith & Topin 2018, torch's OneCycleLR defaults): start at lr / 25, peak
# at 30% of the run, end at lr / 25 / 1e4, cosine in between. Not OneCycleLR itself: it ends
# its phases one step earlier (so the recorded fast-recipe runs would not replay) and cannot
# be one factor of a LambdaLR like the other schedules.
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


@dataclass
class LrSchedule:
    """``factor(it)``: the multiplier of the base lr at iteration ``it`` (0-based)."""

    name: str
    total: int  # iterations in the whole run
    steps_per_epoch: int
    warmup: int = 0  # iterations
    warmup_method: str = "linear"
    warmup_factor: float = 0.01
    step_size: int = 30  # epochs, for "step"
    gamma: float = 0.1

    def milestones(self) -> list[int]:
        """Iterations at which the lr is multiplied by ``gamma`` (paper and step schedules)."""
        if self.name == "paper":
            return [round(f * self.total) for f in PAPER_MILESTONES]
        if self.name == "step":
            every = self.step_size * self.steps_per_epoch
            return list(range(every, self.total, every))
        return []

    def __call__(self, it: int) -> float:
        if self.name == "onecycle":
            start, final = 1 / ONECYCLE_DIV, 1 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
            up = max(1, round(ONECYCLE_PCT_START * self.total))
            if it < up:
                return start + (1 - start) * (1 - math.cos(math.pi * it / up)) / 2
            progress = min(1.0, (it - up) / max(1, self.total - up))
            return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2
        if self.name == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, max(0.0, (it - self.warmup) / span))
            main = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            main = self.gamma ** sum(it >= m for m in self.milestones())
        if it < self.warmup:
            if self.warmup_method == "constant":
                return main * self.warmup_factor
            return main * (self.warmup_factor + (1 - self.warmup_factor) * it / self.warmup)
        return main


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule) -> LambdaLR:
    """A LambdaLR to be stepped once per iteration, after ``optimizer.step()``."""
    return LambdaLR(optimizer, lr_lambda=schedule)


def train_image_size(
    epoch: int, epochs: int, full: int, min_res: int, ramp: tuple[float, float]
) -> int:
    """The image side of epoch ``epoch`` (0-based) under FFCV's progressive resizing:
    ``min_res`` until the fraction ``ramp[0]`` of the run, growing linearly to ``full`` at
    ``ramp[1]`` in steps of ``full / 8`` pixels, so that a run sees a few sizes (0: off)."""
    if not min_res or min_res >= full:
        return full
    start, end = ramp
    progress = (epoch + 1) / epochs  # through the end of this epoch
    if progress >= end:
        return full
    grow = (progress - start) / max(end - start, 1e-9)
    if grow <= 0:
        return min_res
    step = max(1, full // 8)
    side = min_res + (full - min_res) * grow
    return min(full, max(min_res, step * math.floor(side / step + 0.5)))
