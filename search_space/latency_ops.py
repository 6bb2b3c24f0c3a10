"""The ops a net is made of, for the latency table.

An op is one spatial row at its input shape, the pooled head (pool + fc rows + classifier),
or the LR-ASPP head. Its key is a readable canonical string of exactly what determines its
latency, so two nets that share a block at the same input shape share a table row.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .builder import build_head, build_row
from .modules import LRASPPHead, init_weights
from .spec import ArchSpec, Layer, Row, describe_nl, mid_channels, se_channels


@dataclass(frozen=True)
class Op:
    key: str
    kind: str  # "row", "head" or "lraspp"
    input_shapes: tuple[tuple[int, ...], ...]  # batch 1 included
    # A small spec holding just this op (one row at its input shape, or the head), so the op
    # is rebuilt alone by the same builder as whole nets.
    spec: ArchSpec
    row_index: int = -1  # the row's index in the net it came from (for display)


def _shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w}x{c}"


def row_key(spec: ArchSpec, layer: Layer) -> str:
    row = layer.row
    parts = [row.op, f"in={_shape(layer.in_shape)}", f"k{row.kernel}"]
    if row.op == "bneck":
        parts.append(f"e{mid_channels(layer)}")
    parts += [f"o{row.out}", f"s{row.stride}"]
    if row.dilation != 1:
        parts.append(f"d{row.dilation}")
    squeeze = se_channels(spec, layer)
    if squeeze:
        parts.append(f"se{squeeze}{'h' if spec.se_mode == 'mnv3' else 's'}")
    parts.append(describe_nl(row.nl))
    if not row.bn:
        parts.append("nbn")
    if layer.residual:
        parts.append("res")
    return "|".join(parts)


def head_key(spec: ArchSpec) -> str:
    spatial = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
    parts = ["head", f"in={_shape(spatial[-1].out_shape)}"]
    parts += [f"fc{lay.row.out}{describe_nl(lay.row.nl)}" for lay in spec.layers() if lay.row.op == "fc"]
    parts.append(f"k{spec.num_classes}")
    return "|".join(parts)


def lraspp_key(spec: ArchSpec) -> str:
    assert spec.seg_head is not None
    spatial = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
    low = spatial[spec.seg_head.low_row].out_shape
    high = spatial[-1].out_shape
    return "|".join(["lraspp", f"low={_shape(low)}", f"high={_shape(high)}",
                     f"f{spec.seg_head.inter_channels}", f"k{spec.num_classes}", f"up={spec.resolution}"])


def ops(spec: ArchSpec) -> list[Op]:
    """The ops of `spec` in execution order (a repeated op appears once per use)."""
    out: list[Op] = []
    spatial: list[Layer] = []
    for layer in spec.layers():
        if layer.row.op in ("pool", "fc"):
            continue
        spatial.append(layer)
        out.append(Op(row_key(spec, layer), "row", ((1, *layer.in_shape),), _context(spec, layer), layer.index))
    last = spatial[-1].out_shape
    if spec.seg_head is not None:
        low = spatial[spec.seg_head.low_row].out_shape
        out.append(Op(lraspp_key(spec), "lraspp", ((1, *low), (1, *last)), spec))
    else:
        head_rows = tuple(lay.row for lay in spec.layers() if lay.row.op in ("pool", "fc"))
        head_spec = spec.with_rows((Row("conv", last[0], kernel=1, nl="none"),) + head_rows,
                                   in_channels=last[0], resolution=last[1], seg_head=None)
        out.append(Op(head_key(spec), "head", ((1, *last),), head_spec))
    return out


def _context(spec: ArchSpec, layer: Layer) -> ArchSpec:
    """A one-row spec that places `layer` at the same input shape, for building it alone."""
    c, h, _ = layer.in_shape
    return ArchSpec(
        name=f"op:{layer.index}", rows=(layer.row, Row("pool")), resolution=h, in_channels=c,
        num_classes=1, se_mode=spec.se_mode, dropout=0.0, bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum,
    )


def build_op(op: Op) -> nn.Module:
    """The op alone as a torch module taking `*inputs` of `op.input_shapes` (eval mode)."""
    if op.kind == "row":
        module = build_row(op.spec, op.spec.layers()[0])
        init_weights(module)
    elif op.kind == "head":
        module = build_head(op.spec)
    elif op.kind == "lraspp":
        spec = op.spec
        assert spec.seg_head is not None
        module = _LRASPPOp(op.input_shapes[0][1], op.input_shapes[1][1], spec.num_classes,
                           spec.seg_head.inter_channels, spec.resolution)
        init_weights(module)
    else:
        raise ValueError(f"unknown op kind {op.kind!r}")
    return module.eval()


class _LRASPPOp(nn.Module):
    def __init__(self, low: int, high: int, k: int, inter: int, resolution: int) -> None:
        super().__init__()
        self.head = LRASPPHead(low, high, k, inter)
        self.size = (resolution, resolution)

    def forward(self, low, high):  # type: ignore[override]
        return self.head(low, high, out_size=self.size)


def distinct_ops(specs) -> list[Op]:
    """Every distinct op (by key) of an iterable of specs, first occurrence kept."""
    seen: dict[str, Op] = {}
    for spec in specs:
        for op in ops(spec):
            seen.setdefault(op.key, op)
    return list(seen.values())
