"""Dynamic ops: the static modules of `search_space.modules` plus the slice they serve.

Each dynamic module holds the weights of the largest op it can be and runs, at any moment,
as the op that its `active` settings describe: the first ``out`` output and ``in`` input
channels, the centre ``kernel x kernel`` of the largest depthwise kernel (once-for-all's
nested kernels, optionally through its kernel transform), SE on or off, any nonlinearity. Slicing
keeps the parameter names of the static modules, so the weights of one active op are the
state dict of the static op cut to its shapes (`slice_to`).

Why first-k channels: with the sandwich rule the smallest widths are trained from the first
step, so the leading channels are the ones every subnet relies on (the role that
once-for-all's importance re-sorting plays when widths are shrunk in later phases).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "hswish": F.hardswish,
    "swish": F.silu,
    "none": None,
}


def act_fn(nl: str):
    try:
        return _ACTS[nl]
    except KeyError:
        raise ValueError(f"unknown nonlinearity {nl!r}") from None


def slice_to(t: torch.Tensor, shape: tuple[int, ...], spatial_dims: tuple[int, ...] = ()) -> torch.Tensor:
    """``t`` cut to ``shape``: the first k along channel dims, the centre along spatial dims."""
    index = []
    for d, (have, want) in enumerate(zip(t.shape, shape)):
        if want > have:
            raise ValueError(f"cannot slice dim {d} of size {have} to {want}")
        if d in spatial_dims:
            start = (have - want) // 2
            index.append(slice(start, start + want))
        else:
            index.append(slice(0, want))
    return t[tuple(index)]


class DynamicBN(nn.BatchNorm2d):
    """BatchNorm over the first ``active`` channels; running statistics of the slice are updated in place."""

    def __init__(self, channels: int, eps: float, momentum: float) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.active = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        training = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:  # cumulative average (BN recalibration)
            momentum = 1.0 / float(self.num_batches_tracked) if self.training else 0.0
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            training, momentum if self.training else 0.0, self.eps)


@dataclass
class ConvState:
    cin: int
    cout: int
    kernel: int
    nl: str


class DynamicConvBNAct(nn.Sequential):
    """conv -> BN -> act (children 0, 1 like `ConvBNAct`) at any smaller width and kernel.

    ``depthwise``: groups = channels, and ``cin`` follows ``cout``.

    ``transform_kernels`` (depthwise only; once-for-all's kernel transform): a smaller kernel is
    the centre of the next larger one passed through a learned (k*k x k*k) matrix shared by the
    channels (``transform_5to3`` ...), identity at first, so a small kernel can differ from the
    centre of a large one. Without it a small kernel is the plain centre crop.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 nl: str = "relu", bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 transform_kernels: tuple[int, ...] = ()) -> None:
        conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=cout if depthwise else 1, bias=False)
        super().__init__(conv, DynamicBN(cout, bn_eps, bn_momentum))
        self.depthwise = depthwise
        self.stride = stride
        self.state = ConvState(cin, cout, kernel, nl)
        self.kernel_chain = sorted({kernel, *transform_kernels}, reverse=True) if transform_kernels else []
        if transform_kernels and not depthwise:
            raise ValueError("a kernel transform needs a depthwise conv")
        for big, small in zip(self.kernel_chain, self.kernel_chain[1:]):
            self.register_parameter(f"transform_{big}to{small}", nn.Parameter(torch.eye(small * small)))

    def kernel_weight(self, k: int, channels: int) -> torch.Tensor:
        """The first ``channels`` of kernel ``k``: a centre crop, through the transforms if any
        (a transform is shared by the channels, so slicing them first saves its work)."""
        w = self[0].weight[:channels]
        if not self.kernel_chain:
            return slice_to(w, (w.shape[0], w.shape[1], k, k), (2, 3))
        for big, small in zip(self.kernel_chain, self.kernel_chain[1:]):
            if big <= k:
                break
            w = slice_to(w, (w.shape[0], w.shape[1], small, small), (2, 3))
            t = getattr(self, f"transform_{big}to{small}")
            w = F.linear(w.reshape(-1, small * small), t).reshape(w.shape)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.state
        conv = self[0]
        k = s.kernel
        if self.depthwise:
            w = self.kernel_weight(k, s.cout)
            y = F.conv2d(x, w, None, self.stride, (k - 1) // 2, 1, s.cout)
        else:
            w = slice_to(conv.weight, (s.cout, x.shape[1], k, k), (2, 3))
            y = F.conv2d(x, w, None, self.stride, (k - 1) // 2)
        y = self[1](y)
        act = act_fn(s.nl)
        return act(y) if act is not None else y


class KernelChoice(nn.Module):
    """TuNAS's depthwise op: one depthwise conv + BN per kernel size (``k3``, ``k5``, ...), of
    which the active kernel's runs; the convs around it stay shared."""

    def __init__(self, channels: int, kernels: tuple[int, ...], stride: int, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({f"k{k}": DynamicConvBNAct(channels, channels, k, stride, depthwise=True,
                                                            bn_eps=bn_eps, bn_momentum=bn_momentum)
                                  for k in kernels})
        self.state = ConvState(channels, channels, max(kernels), "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self.ops[f"k{self.state.kernel}"]
        op.state = self.state
        return op(x)


class DynamicSE(nn.Module):
    """Squeeze-excite (`SqueezeExcite`'s names) over the first ``channels`` with ``squeeze`` inner units."""

    def __init__(self, channels: int, squeeze: int, gate: str = "hsigmoid", inner_nl: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = F.hardsigmoid if gate == "hsigmoid" else torch.sigmoid
        self.inner_nl = inner_nl
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, q = x.shape[1], self.squeeze
        s = x.mean((2, 3), keepdim=True)
        s = F.conv2d(s, self.fc1.weight[:q, :c], self.fc1.bias[:q])
        act = act_fn(self.inner_nl)
        if act is not None:
            s = act(s)
        s = F.conv2d(s, self.fc2.weight[:c, :q], self.fc2.bias[:c])
        return self.gate(s) * x


class DynamicBlock(nn.Module):
    """The inverted bottleneck at its largest (expand, depthwise, SE, project as ``block.0..3``),
    run as any smaller one: set `configure` before the forward."""

    def __init__(self, cin: int, exp: int, cout: int, kernels: tuple[int, ...], stride: int, squeeze: int, *,
                 se_gate: str, se_inner: str, bn_eps: float, bn_momentum: float, kernel_sharing: str = "nested") -> None:
        super().__init__()
        norm = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        if kernel_sharing in ("nested", "transform"):
            depthwise: nn.Module = DynamicConvBNAct(
                exp, exp, max(kernels), stride, depthwise=True, **norm,
                transform_kernels=tuple(kernels) if kernel_sharing == "transform" else ())
        elif kernel_sharing == "separate":
            depthwise = KernelChoice(exp, tuple(kernels), stride, **norm)
        else:
            raise ValueError(f"kernel_sharing {kernel_sharing!r}: expected nested, transform or separate")
        self.kernel_sharing = kernel_sharing
        self.block = nn.Sequential(
            DynamicConvBNAct(cin, exp, 1, **norm),
            depthwise,
            DynamicSE(exp, squeeze, se_gate, se_inner),
            DynamicConvBNAct(exp, cout, 1, nl="none", **norm),
        )
        self.expand = True
        self.use_se = True
        self.use_res_connect = False

    def configure(self, cin: int, exp: int, cout: int, kernel: int, squeeze: int, nl: str, residual: bool,
                  expand: bool) -> None:
        e, dw, se, pw = self.block
        e.state = ConvState(cin, exp, 1, nl)
        dw.state = ConvState(exp, exp, kernel, nl)
        se.squeeze = squeeze
        pw.state = ConvState(exp, cout, 1, "none")
        self.expand = expand
        self.use_se = squeeze > 0
        self.use_res_connect = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, dw, se, pw = self.block
        y = e(x) if self.expand else x
        y = dw(y)
        if self.use_se:
            y = se(y)
        y = pw(y)
        return x + y if self.use_res_connect else y

    def static_names(self) -> dict[str, str]:
        """Static block name prefix -> this block's name prefix, for the active layout."""
        dw = f"1.ops.k{self.block[1].state.kernel}." if self.kernel_sharing == "separate" else "1."
        order = (["0."] if self.expand else []) + [dw] + (["2."] if self.use_se else []) + ["3."]
        return {f"block.{i}.": f"block.{src}" for i, src in enumerate(order)}


class DynamicLinear(nn.Linear):
    """A linear layer reading the first ``x.shape[1]`` of its input features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)
