"""Evaluation in one pass: top-1, top-5, loss, per-class accuracy and the confusion matrix,
and on request every sample's top-k classes and probabilities (what ``resnetlab eval`` analyses)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.errors import UserError
from resnetlab.training.distributed import sum_across_ranks


@dataclass
class SampleOutputs:
    """Every evaluated sample of this rank, in the loader's order (``loader.indices()``)."""

    targets: torch.Tensor  # int64 [N], the true class
    topk: torch.Tensor  # int64 [N, k], classes by falling probability: [:, 0] is the prediction
    probs: torch.Tensor  # float32 [N, k], their probabilities (the TTA ones with tta="flip")


@dataclass
class EvalResult:
    num_samples: int
    loss: float  # mean cross-entropy (no label smoothing)
    top1: float  # percent
    top5: float  # percent; top-k with k = min(5, classes)
    per_class: list[float]  # percent correct per true class (nan for a class with no samples)
    confusion: list[list[int]]  # [true][predicted] counts
    samples: SampleOutputs | None = None  # with evaluate(per_sample=True)

    def as_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        names = classes or [str(i) for i in range(len(self.per_class))]
        per_class = {
            n: None if math.isnan(a) else a for n, a in zip(names, self.per_class, strict=True)
        }
        return {
            "num_samples": self.num_samples,
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "per_class": per_class,
            "confusion_matrix": self.confusion,
        }


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    num_classes: int,
    precision: str = "fp32",
    tta: str | None = None,
    per_sample: bool = False,
) -> EvalResult:
    """Run ``model`` in eval mode over ``loader`` ((x, y) batches already on the device).

    Counts stay in device tensors and are read once at the end: no host sync per batch.
    With ``tta="flip"`` the softmax of the image and of its mirror image are averaged.
    A loader sharded over processes (``world_size`` > 1, each sample on one rank, none
    padded) gives every rank the sums over all shards: the numbers of one process.
    ``per_sample`` also keeps each sample's top-k of the same pass in `EvalResult.samples`
    (on the CPU, this rank's shard only); off, as in training, nothing changes.
    """
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    loss_sum = counts = None
    kept: list[tuple[torch.Tensor, ...]] = []

    def zeros(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # correct top-1, correct top-k, samples, then the confusion matrix: one all_reduce
        counts = torch.zeros(3 + num_classes * num_classes, dtype=torch.int64, device=device)
        return torch.zeros((), dtype=torch.float64, device=device), counts

    try:
        with torch.inference_mode():
            for x, y in loader:
                if counts is None:
                    loss_sum, counts = zeros(y.device)
                    correct1, correct5, seen = counts[:3]  # views into counts
                    confusion = counts[3:]
                with autocast(x.device.type, precision):
                    logits = model(x)
                    if tta == "flip":
                        flipped = model(torch.flip(x, dims=[-1]))
                log_p = F.log_softmax(logits.float(), dim=1)
                if tta == "flip":
                    p = (log_p.exp() + F.softmax(flipped.float(), dim=1)) / 2
                    log_p = p.clamp_min(torch.finfo(p.dtype).tiny).log()
                loss_sum += F.nll_loss(log_p, y, reduction="sum").double()
                topk = log_p.topk(k, dim=1).indices
                hit = topk == y[:, None]
                correct1 += hit[:, 0].sum()
                correct5 += hit.any(dim=1).sum()
                confusion += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes**2)
                seen += y.shape[0]
                if per_sample:
                    chosen = p.gather(1, topk) if tta == "flip" else log_p.gather(1, topk).exp()
                    kept.append((y.cpu(), topk.cpu(), chosen.cpu()))
    finally:
        model.train(was_training)
    if counts is None:  # an empty split, or a rank whose shard is empty: it still sums
        param = next(model.parameters(), None)
        loss_sum, counts = zeros(param.device if param is not None else torch.device("cpu"))
    if getattr(loader, "world_size", 1) > 1:
        with torch.inference_mode():  # the sums are inference tensors: update them in it
            sum_across_ranks(loss_sum)
            sum_across_ranks(counts)
    n = int(counts[2].item())
    if n == 0:
        raise UserError("nothing to evaluate: the split is empty")
    matrix = counts[3:].view(num_classes, num_classes).cpu()
    per_class = 100.0 * matrix.diagonal().double() / matrix.sum(dim=1)  # a class of none: 0/0, nan
    return EvalResult(
        num_samples=n,
        loss=loss_sum.item() / n,
        top1=100.0 * counts[0].item() / n,
        top5=100.0 * counts[1].item() / n,
        per_class=per_class.tolist(),
        confusion=matrix.tolist(),
        samples=_samples(kept, k) if per_sample else None,
    )


def _samples(kept: list[tuple[torch.Tensor, ...]], k: int) -> SampleOutputs:
    if not kept:  # this rank's shard is empty
        empty = torch.zeros((0, k), dtype=torch.int64)
        return SampleOutputs(empty[:, 0], empty, empty.float())
    return SampleOutputs(*(torch.cat(parts) for parts in zip(*kept, strict=True)))
