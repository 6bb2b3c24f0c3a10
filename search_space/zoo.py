"""The published nets as specs.

Rows are written as in the papers' tables (MobileNetV3 Tables 1-2, MobileNetV2 Table 2,
MobileNetV1 Table 1, MnasNet Fig. 7(a)); width multipliers are applied the way the
reference implementations apply them (see `_scaled`).
"""

from __future__ import annotations

from typing import Callable

from .errors import UserError
from .spec import ArchSpec, Row, SegHead, make_divisible, scale_channels

# (kernel, exp, out, se, nl, stride) per bneck row, exactly MobileNetV3 Table 1 rows 1-15.
MNV3_LARGE_BNECKS = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
]

# MobileNetV3 Table 2 rows 1-11.
MNV3_SMALL_BNECKS = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
]


def _mnv3_rows(bnecks, head_width: int, width_mult: float = 1.0, minimal: bool = False,
               dilated: bool = False) -> list[Row]:
    """MobileNetV3 rows as TF-slim (the paper's code) builds them.

    Width multiplier: stem and #out are scaled and rounded to multiples of 8; each exp size
    keeps its expansion factor over the block's scaled input (TF-slim's
    `expand_input_by_factor`, timm's `exp_ratio`); the last 1x1 conv is 6x the last block's
    #out; the post-pool 1x1 conv (1280 / 1024) is not scaled. This is what gives Table 3's
    155M / 4.0M for Large 0.75. torchvision's `width_mult` scales exp sizes directly and the
    post-pool conv too (3.38M params for Large 0.75).
    Minimalistic (TF-slim `V3_*_MINIMALISTIC`): ReLU everywhere, 3x3 kernels, no SE.
    """
    act = "relu" if minimal else "hswish"
    rows = [Row("conv", scale_channels(16, width_mult), kernel=3, nl=act, stride=2)]
    table_in = 16
    for i, (k, exp, out, se, nl, s) in enumerate(bnecks):
        dilation = 1
        if dilated and i >= len(bnecks) - 3:  # the last stage, as in torchvision's `dilated`
            dilation, s = 2, 1
        cin = rows[-1].out
        exp_size = exp if width_mult == 1.0 else make_divisible(cin * exp / table_in)
        table_in = out
        rows.append(Row(
            "bneck",
            scale_channels(out, width_mult),
            kernel=3 if minimal else k,
            exp=exp_size,
            se=0.0 if (minimal or not se) else 0.25,
            nl="relu" if minimal else nl,
            stride=s,
            dilation=dilation,
        ))
    last_conv = 6 * rows[-1].out
    rows.append(Row("conv", last_conv, kernel=1, nl=act))
    if head_width:
        rows += [Row("pool"), Row("fc", head_width, nl=act, bn=False)]
    return rows


def _mnv3(name: str, bnecks, head_width: int, width_mult: float, minimal: bool, notes: str = "") -> ArchSpec:
    rows = _mnv3_rows(bnecks, head_width, width_mult, minimal)
    return ArchSpec(name=name, rows=tuple(rows), width_mult=width_mult, se_mode="mnv3", dropout=0.2, notes=notes)


def mnv3_large(width_mult: float = 1.0, minimal: bool = False) -> ArchSpec:
    suffix = "-minimal" if minimal else ("" if width_mult == 1.0 else f"-{int(width_mult * 100):03d}")
    return _mnv3(f"mnv3-large{suffix}", MNV3_LARGE_BNECKS, 1280, width_mult, minimal)


def mnv3_small(width_mult: float = 1.0, minimal: bool = False) -> ArchSpec:
    suffix = "-minimal" if minimal else ("" if width_mult == 1.0 else f"-{int(width_mult * 100):03d}")
    # Table 2 marks SE on the last 1x1 conv (576); no reference implementation (TF-slim,
    # torchvision, timm) applies one there, and the published 2,542,856 params need it absent.
    return _mnv3(
        f"mnv3-small{suffix}", MNV3_SMALL_BNECKS, 1024, width_mult, minimal,
        notes="Table 2's SE mark on the last 1x1 conv is not applied (no reference implementation does)."
        if not minimal else "",
    )


def mnv2(width_mult: float = 1.0) -> ArchSpec:
    """MobileNetV2 (Table 2 of its paper): the last 1x1 conv stays 1280 for multipliers < 1."""
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = scale_channels(32, width_mult)
    rows = [Row("conv", cin, kernel=3, nl="relu6", stride=2)]
    for t, c, n, s in settings:
        out = scale_channels(c, width_mult)
        for i in range(n):
            rows.append(Row("bneck", out, kernel=3, exp=int(round(cin * t)), nl="relu6", stride=s if i == 0 else 1))
            cin = out
    rows += [Row("conv", scale_channels(1280, max(1.0, width_mult)), kernel=1, nl="relu6"), Row("pool")]
    name = "mnv2-100" if width_mult == 1.0 else f"mnv2-{int(round(width_mult * 100)):03d}"
    return ArchSpec(name=name, rows=tuple(rows), width_mult=width_mult, se_mode="mnv3", dropout=0.2)


def mnv1(width_mult: float = 1.0) -> ArchSpec:
    """MobileNetV1 (Table 1 of its paper): 13 depthwise-separable layers."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    rows = [Row("conv", scale_channels(32, width_mult), kernel=3, nl="relu", stride=2)]
    rows += [Row("dwsep", scale_channels(c, width_mult), kernel=3, nl="relu", stride=s) for c, s in plan]
    rows.append(Row("pool"))
    name = "mnv1-100" if width_mult == 1.0 else f"mnv1-{int(round(width_mult * 100)):03d}"
    return ArchSpec(name=name, rows=tuple(rows), width_mult=width_mult, se_mode="mnv3", dropout=0.001)


# MnasNet-A1 stages: (repeats, kernel, stride, expansion, out, se) after the 32-filter stem.
MNASNET_A1_STAGES = [
    (2, 3, 2, 6, 24, 0.0),
    (3, 5, 2, 3, 40, 0.25),
    (4, 3, 2, 6, 80, 0.0),
    (2, 3, 1, 6, 112, 0.25),
    (3, 5, 2, 6, 160, 0.25),
    (1, 3, 1, 6, 320, 0.0),
]


def mnasnet_a1() -> ArchSpec:
    """MnasNet-A1 (MnasNet Fig. 7(a), timm `_gen_mnasnet_a1`): ReLU, SE sized from block input."""
    rows = [
        Row("conv", 32, kernel=3, nl="relu", stride=2),
        # SepConv: depthwise + linear pointwise, no residual (exp == in: no expansion conv).
        Row("bneck", 16, kernel=3, exp=32, nl="relu", skip=False),
    ]
    cin = 16
    for n, k, s, e, c, se in MNASNET_A1_STAGES:
        for i in range(n):
            rows.append(Row("bneck", c, kernel=k, exp=cin * e, se=se, nl="relu", stride=s if i == 0 else 1))
            cin = c
    rows += [Row("conv", 1280, kernel=1, nl="relu"), Row("pool")]
    return ArchSpec(name="mnasnet-a1", rows=tuple(rows), se_mode="mnasnet", dropout=0.2)


def lraspp_mnv3_large(num_classes: int = 21, resolution: int = 520) -> ArchSpec:
    """LR-ASPP on a dilated MobileNetV3-Large (output stride 16), as torchvision builds it.

    Low-level features come from block 4 (C2, output stride 8); the head uses 128 filters
    and torchvision's global pool in its attention branch.
    """
    return ArchSpec(
        name="lraspp-mnv3-large",
        rows=tuple(_mnv3_rows(MNV3_LARGE_BNECKS, 0, dilated=True)),
        resolution=resolution,
        num_classes=num_classes,
        se_mode="mnv3",
        dropout=0.0,
        seg_head=SegHead(low_row=4, inter_channels=128),
    )


ZOO: dict[str, Callable[[], ArchSpec]] = {
    "mnv3-large": lambda: mnv3_large(),
    "mnv3-small": lambda: mnv3_small(),
    "mnv3-large-075": lambda: mnv3_large(0.75),
    "mnv3-small-075": lambda: mnv3_small(0.75),
    "mnv3-large-minimal": lambda: mnv3_large(minimal=True),
    "mnv3-small-minimal": lambda: mnv3_small(minimal=True),
    "mnv2-100": lambda: mnv2(1.0),
    "mnv2-035": lambda: mnv2(0.35),
    "mnv1-100": lambda: mnv1(1.0),
    "mnasnet-a1": mnasnet_a1,
    "lraspp-mnv3-large": lraspp_mnv3_large,
}
ZOO_NAMES = tuple(ZOO)


def zoo(name: str) -> ArchSpec:
    """A published net by its zoo name."""
    try:
        return ZOO[name]()
    except KeyError:
        raise UserError(f"unknown zoo net {name!r}; known: {', '.join(ZOO_NAMES)}") from None
