"""The fast inference path: BatchNorm folded into convolutions, channels_last, bf16 where native.

In eval mode ``bn(conv(x))`` is one affine map per channel, so the BN folds into the conv's
weights and bias (`fuse_conv_bn_eval`): one pass over memory less per layer. channels_last is
oneDNN's native layout, so no reorder happens around each conv. bf16 halves the memory traffic
but is emulated, slower than fp32, without AVX-512 BF16 or AMX (CPU) or Ampere and later (CUDA),
so ``precision="auto"`` uses it only where it is native.

Which BNs fold is found from the data flow (a `torch.fx` trace), not from names: a BN folds
only when it reads a conv's output that nothing else reads. So the pre-activation networks'
BNs that read a residual sum (a block's first BN, ``bn_final``) stay BatchNorms.

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


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN reads only a conv's output and nothing else does.

    Each module must be called exactly once in the forward pass: a shared module could
    not be folded for one call site without changing the others.
    """
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
            and calls[source.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BN into its conv, in place; the BNs become `nn.Identity`.

    The model must be in eval mode: folding bakes in the running statistics, which a
    training-mode BN would not use. Returns the folded (conv, bn) names.
    """
    if model.training:
        raise UserError("fold BatchNorm only in eval mode: call model.eval() first")
    pairs = foldable_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(bn_name, nn.Identity())
    return pairs


class InferenceModel(nn.Module):
    """Runs the optimised copy under `torch.inference_mode`, converting inputs and outputs.

    Inputs of any float dtype and layout are accepted (converted to the model's dtype and
    memory format); outputs are float32, so callers need not know which path ran.
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
    device = param.device if param is not None else torch.device("cpu")
    precision = resolve_precision(precision, device)
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    folded = fold_batchnorm(fast) if fold_bn else []
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    fast = fast.to(dtype=dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    wrapper = InferenceModel(fast, dtype, channels_last, compile=compile)
    wrapper.folded = folded
    return wrapper
