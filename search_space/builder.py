"""Build torch models from specs: one decoder for every row, every net and every latency op."""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserError
from .modules import (
    Block,
    ClassifierNet,
    ConvBNAct,
    Head,
    LRASPPHead,
    SegmentationNet,
    SqueezeExcite,
    activation,
    init_weights,
)
from .spec import ArchSpec, Layer, has_expand, mid_channels, se_channels


def build_row(spec: ArchSpec, layer: Layer) -> nn.Module:
    """The module for one spatial row (conv, bneck, dwsep) at its place in `spec`."""
    row = layer.row
    cin = layer.in_shape[0]
    norm = dict(bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum)
    se_gate = "hsigmoid" if spec.se_mode == "mnv3" else "sigmoid"
    se_inner = "relu" if spec.se_mode == "mnv3" else row.nl
    squeeze = se_channels(spec, layer)
    if row.op == "conv":
        conv = ConvBNAct(cin, row.out, row.kernel, row.stride, dilation=row.dilation, nl=row.nl, bn=row.bn, **norm)
        if squeeze:
            conv.append(SqueezeExcite(row.out, squeeze, se_gate, se_inner))
        return conv
    mid = mid_channels(layer)
    layers: list[nn.Module] = []
    if row.op == "bneck" and has_expand(layer):
        layers.append(ConvBNAct(cin, mid, 1, nl=row.nl, **norm))
    layers.append(
        ConvBNAct(mid, mid, row.kernel, row.stride, groups=mid, dilation=row.dilation, nl=row.nl, **norm)
    )
    if squeeze:
        layers.append(SqueezeExcite(mid, squeeze, se_gate, se_inner))
    # bneck projections are linear (MobileNetV2's linear bottleneck); V1's pointwise is not.
    project_nl = row.nl if row.op == "dwsep" else "none"
    layers.append(ConvBNAct(mid, row.out, 1, nl=project_nl, **norm))
    return Block(layers, layer.residual, row.out)


def build_classifier(spec: ArchSpec, in_features: int) -> nn.Sequential:
    """fc rows after the pool, then dropout and the k-way classifier."""
    layers: list[nn.Module] = []
    width = in_features
    for layer in spec.layers():
        if layer.row.op != "fc":
            continue
        layers.append(nn.Linear(width, layer.row.out))
        act = activation(layer.row.nl)
        if act is not None:
            layers.append(act)
        width = layer.row.out
    if spec.dropout > 0:
        layers.append(nn.Dropout(p=spec.dropout))
    layers.append(nn.Linear(width, spec.num_classes))
    return nn.Sequential(*layers)


def build_features(spec: ArchSpec) -> nn.Sequential:
    return nn.Sequential(*[build_row(spec, layer) for layer in spec.layers() if layer.row.op not in ("pool", "fc")])


def build(spec: ArchSpec, seed: int | None = None, init: bool = True) -> nn.Module:
    """A torch model for `spec` (eval/train mode is the caller's). `seed` fixes the init;
    ``init=False`` skips torchvision's initialisation (for weights that are loaded next)."""
    if not isinstance(spec, ArchSpec):
        raise UserError(f"build() needs an ArchSpec, got {type(spec).__name__}")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(spec, init=init)
    features = build_features(spec)
    spatial = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
    if spec.seg_head is not None:
        low = spatial[spec.seg_head.low_row]
        head = LRASPPHead(low.out_shape[0], spatial[-1].out_shape[0], spec.num_classes, spec.seg_head.inter_channels)
        model: nn.Module = SegmentationNet(features, head, spec.seg_head.low_row)
    else:
        model = ClassifierNet(features, build_classifier(spec, spatial[-1].out_shape[0]))
    if init:
        init_weights(model)
    return model


def build_head(spec: ArchSpec) -> nn.Module:
    """The pooled head alone: pool, fc rows, classifier."""
    spatial = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
    head = Head(build_classifier(spec, spatial[-1].out_shape[0]))
    init_weights(head)
    return head
