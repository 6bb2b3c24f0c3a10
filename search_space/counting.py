"""Params and multiply-adds computed from a spec alone (no model, no forward pass).

MAdds follow the papers' convention: multiply-adds of convolutions and fully connected
layers (squeeze-excite included); BN, nonlinearities, pooling, residual adds, biases and
upsampling are free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import ArchSpec, Layer, has_expand, mid_channels, se_channels


@dataclass(frozen=True)
class Cost:
    params: int
    madds: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.madds + other.madds)


ZERO = Cost(0, 0)


def _conv(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bn: bool = True) -> Cost:
    weights = cout * (cin // groups) * k * k
    extra = 2 * cout if bn else cout  # BN scale+shift, or a bias
    return Cost(weights + extra, weights * out_hw)


def _se(channels: int, squeeze: int) -> Cost:
    return Cost(2 * channels * squeeze + squeeze + channels, 2 * channels * squeeze)


def layer_cost(spec: ArchSpec, layer: Layer) -> Cost:
    """Cost of one row at its place in the net."""
    row = layer.row
    cin, h, w = layer.in_shape
    cout, oh, ow = layer.out_shape
    if row.op == "pool":
        return ZERO
    if row.op == "fc":
        return Cost(cin * cout + cout, cin * cout)
    squeeze = se_channels(spec, layer)
    if row.op == "conv":
        cost = _conv(cin, cout, row.kernel, oh * ow, bn=row.bn)
        return cost + (_se(cout, squeeze) if squeeze else ZERO)
    mid = mid_channels(layer)
    cost = ZERO
    if has_expand(layer):
        cost += _conv(cin, mid, 1, h * w)
    cost += _conv(mid, mid, row.kernel, oh * ow, groups=mid)
    if squeeze:
        cost += _se(mid, squeeze)
    return cost + _conv(mid, cout, 1, oh * ow)


def classifier_cost(spec: ArchSpec) -> Cost:
    """The final k-way classifier (implicit in every classification spec)."""
    if spec.seg_head is not None:
        return ZERO
    width = spec.layers()[-1].out_shape[0]
    return Cost(width * spec.num_classes + spec.num_classes, width * spec.num_classes)


def seg_head_cost(spec: ArchSpec) -> Cost:
    if spec.seg_head is None:
        return ZERO
    spatial = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
    low = spatial[spec.seg_head.low_row].out_shape
    high = spatial[-1].out_shape
    inter, k = spec.seg_head.inter_channels, spec.num_classes
    low_hw, high_hw = low[1] * low[2], high[1] * high[2]
    cbr = Cost(high[0] * inter + 2 * inter, high[0] * inter * high_hw)
    scale = Cost(high[0] * inter, high[0] * inter)
    low_cls = Cost(low[0] * k + k, low[0] * k * low_hw)
    high_cls = Cost(inter * k + k, inter * k * low_hw)
    return cbr + scale + low_cls + high_cls


def per_layer_costs(spec: ArchSpec) -> list[Cost]:
    return [layer_cost(spec, layer) for layer in spec.layers()]


def count(spec: ArchSpec) -> Cost:
    total = ZERO
    for cost in per_layer_costs(spec):
        total += cost
    return total + classifier_cost(spec) + seg_head_cost(spec)


def count_params(spec: ArchSpec) -> int:
    return count(spec).params


def count_madds(spec: ArchSpec) -> int:
    return count(spec).madds
