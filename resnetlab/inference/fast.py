"""The fast inference path: BatchNorm folded into convolutions, channels_last, bf16 where native.

In eval mode ``bn(conv(x))`` is one affine map per channel, so the BN folds into the conv
(one pass over memory less per layer); channels_last is oneDNN's native layout.

    fast = optimize_for_inference(model)          # an eval-mode copy; model is untouched
    logits = fast(images)                         # float32 logits, under inference_mode
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from resnetlab.device import resolve_precision
from resnetlab.errors import UserError, first_line

_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold in place every BN that reads only a conv's output, which nothing else reads.

    Found from the data flow (a `torch.fx` trace), not from names, so the pre-activation
    BNs that read a residual sum stay; each module must be called once, as a shared one
    cannot fold for one call only. The BNs become `nn.Identity`; returns the (conv, bn) names.
    """
    if model.training:  # folding bakes in the running statistics
        raise UserError("fold BatchNorm only in eval mode: call model.eval() first")
    try:
        graph = fx.Tracer().trace(model)
    except Exception as e:  # fx raises many types for data-dependent control flow
        raise UserError(
            f"cannot trace {type(model).__name__} to find conv-BN pairs ({first_line(e)}); "
            "use fold_bn=False"
        ) from None
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn, source = modules[node.target], node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = modules[source.target]
        if (
            _CONV_BN.get(type(conv)) is type(bn)
            and bn.running_mean is not None  # track_running_stats=False: batch statistics
            and conv.out_channels == bn.num_features
            and len(source.users) == 1
            and calls[source.target] == calls[node.target] == 1
        ):
            pairs.append((source.target, node.target))
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(bn_name, nn.Identity())
    return pairs


class InferenceModel(nn.Module):
    """Runs the optimised copy under `torch.inference_mode`; any float input, float32 output.

    Training it is refused: its BNs are folded and its weights may be bf16.
    """

    def __init__(
        self, model: nn.Module, dtype: torch.dtype, channels_last: bool, compile: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.folded: list[tuple[str, str]] = []
        # Freezing lets inductor pre-pack the weights and fuse ReLUs and sums into the convs.
        # Kept out of the submodules, so modules() and state_dict() list each layer once.
        compiled = torch.compile(model, options={"freezing": True}) if compile else None
        object.__setattr__(self, "_compiled", compiled)
        super().train(False)

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise UserError("an optimised inference model cannot be trained; train the original")
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            channels_last = self.channels_last and x.dim() == 4
            fmt = torch.channels_last if channels_last else torch.preserve_format
            x = x.to(dtype=self.dtype, memory_format=fmt)
            if self._compiled is not None:
                try:
                    return self._compiled(x).float()
                except Exception as e:  # no C++ compiler, an unsupported op, ...
                    warning = f"torch.compile failed, running eagerly: {first_line(e)}"
                    warnings.warn(warning, stacklevel=2)
                    object.__setattr__(self, "_compiled", None)
            return self.model(x).float()

    def extra_repr(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        compiled = ", compiled" if self._compiled is not None else ""
        return f"dtype={self.dtype}, memory_format={fmt}, folded_bn={len(self.folded)}{compiled}"


def optimize_for_inference(
    model: nn.Module,
    *,
    precision: str = "auto",
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
) -> InferenceModel:
    """An eval-mode copy on the model's device, BNs folded; ``model`` itself is left as it was.

    bf16 casts the weights once (autocast would re-cast every weight on every call).
    ``compile`` is opt-in because every new input shape compiles again, for tens of seconds.
    """
    param = next(iter(model.parameters()), None)
    precision = resolve_precision(precision, param.device if param is not None else "cpu")
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    folded = fold_batchnorm(fast) if fold_bn else []
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    fast = fast.to(dtype=dtype, memory_format=fmt)
    wrapper = InferenceModel(fast, dtype, channels_last, compile=compile)
    wrapper.folded = folded
    return wrapper
