"""The architecture spec: one immutable description of a whole network.

A spec is the paper's table made data. Every other part of the project (builder, counters,
latency ops, search, NetAdapt) is a function of an `ArchSpec`.

Rows carry concrete channel counts. Width multipliers are applied when a spec is made
(`scale_channels`, the one place that rounds channels), so everything downstream sees the
network exactly as it will be built.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import SpecError

SCHEMA = "mnv3-nas/arch-spec"
SCHEMA_VERSION = 1

# Operators a row may name. `bneck` is the inverted residual (MobileNetV2/V3, MnasNet MBConv;
# exp == in gives MnasNet's SepConv and V3-Large's first block); `dwsep` is MobileNetV1's
# depthwise-separable pair with a nonlinearity after both convs; `pool` is the global average
# pool; `fc` is a 1x1 conv without BN applied after the pool (the paper's "conv2d 1x1, NBN").
OPS = ("conv", "bneck", "dwsep", "pool", "fc")
NONLINEARITIES = ("relu", "relu6", "hswish", "swish", "none")
NL_ALIASES = {"re": "relu", "hs": "hswish", "r6": "relu6", "sw": "swish", "-": "none", "": "none"}
NL_SHORT = {"relu": "RE", "relu6": "R6", "hswish": "HS", "swish": "SW", "none": "-"}
SE_MODES = ("mnv3", "mnasnet")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `value`.

    This is the rounding every reference implementation (TF-slim, torchvision, timm) uses.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_channels(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Apply a width multiplier to a channel count: the one place that rounds channels."""
    if width_mult == 1.0:
        return channels
    return make_divisible(channels * width_mult, divisor)


@dataclass(frozen=True)
class Row:
    """One row of a paper-style spec table."""

    op: str
    out: int = 0  # #out; 0 for pool
    kernel: int = 1
    exp: int | None = None  # expansion width ("exp size") of a bneck
    se: float = 0.0  # squeeze-excite ratio; 0 = no SE (how it is sized depends on ArchSpec.se_mode)
    nl: str = "relu"
    stride: int = 1
    dilation: int = 1
    bn: bool = True
    skip: bool = True  # residual connection where shapes allow it

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op}
        defaults = _ROW_DEFAULTS
        for f in dataclasses.fields(self):
            if f.name == "op":
                continue
            value = getattr(self, f.name)
            if value != defaults[f.name]:
                data[f.name] = value
        return data


_ROW_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Row)}


@dataclass(frozen=True)
class SegHead:
    """LR-ASPP segmentation head (MobileNetV3 Sec. 6.4, torchvision's `LRASPPHead`)."""

    low_row: int  # index of the row whose output feeds the low-level branch
    inter_channels: int = 128

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lraspp", "low_row": self.low_row, "inter_channels": self.inter_channels}


@dataclass(frozen=True)
class Layer:
    """A row placed in a network: the row with its input and output shapes (C, H, W)."""

    index: int
    row: Row
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    residual: bool


@dataclass(frozen=True)
class ArchSpec:
    """A whole network, as the paper's tables describe it."""

    name: str
    rows: tuple[Row, ...]
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    width_mult: float = 1.0  # recorded for display; rows already carry scaled channels
    se_mode: str = "mnv3"
    dropout: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    seg_head: SegHead | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        validate(self)

    # ---- derived views -------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """Every row with its input and output shape; the single source of shapes."""
        out: list[Layer] = []
        c, h, w = self.in_channels, self.resolution, self.resolution
        for i, row in enumerate(self.rows):
            if row.op == "pool":
                oc, oh, ow = c, 1, 1
            elif row.op == "fc":
                oc, oh, ow = row.out, 1, 1
            else:
                oc = row.out
                oh, ow = _conv_out(h, row.stride), _conv_out(w, row.stride)
            residual = (
                row.op == "bneck" and row.skip and row.stride == 1 and c == oc
            )
            out.append(Layer(i, row, (c, h, w), (oc, oh, ow), residual))
            c, h, w = oc, oh, ow
        return out

    @property
    def out_channels(self) -> int:
        return self.layers()[-1].out_shape[0]

    def output_stride(self) -> int:
        layers = self.layers()
        last_spatial = [lay for lay in layers if lay.row.op not in ("pool", "fc")][-1]
        return self.resolution // last_spatial.out_shape[1]

    def with_rows(self, rows: list[Row] | tuple[Row, ...], **changes: Any) -> "ArchSpec":
        return dataclasses.replace(self, rows=tuple(rows), **changes)

    # ---- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "name": self.name,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "width_mult": self.width_mult,
            "se_mode": self.se_mode,
            "dropout": self.dropout,
            "bn_eps": self.bn_eps,
            "bn_momentum": self.bn_momentum,
            "rows": [r.to_dict() for r in self.rows],
        }
        if self.seg_head is not None:
            data["seg_head"] = self.seg_head.to_dict()
        if self.notes:
            data["notes"] = self.notes
        return data

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> "ArchSpec":
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise SpecError(f"{source}: field 'schema' = {data.get('schema')!r}: expected {SCHEMA!r}")
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise SpecError(
                f"{source}: field 'version' = {version!r}: this build reads version {SCHEMA_VERSION}"
            )
        known = {f.name for f in dataclasses.fields(cls)} | {"schema", "version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{source}: unknown field {unknown[0]!r}")
        raw_rows = data.get("rows")
        if not isinstance(raw_rows, list) or not raw_rows:
            raise SpecError(f"{source}: field 'rows' must be a non-empty list")
        rows = tuple(_row_from_dict(r, i, source) for i, r in enumerate(raw_rows))
        kwargs = {k: v for k, v in data.items() if k not in ("schema", "version", "rows", "seg_head")}
        seg = data.get("seg_head")
        if seg is not None:
            if not isinstance(seg, dict) or seg.get("kind") != "lraspp":
                raise SpecError(f"{source}: field 'seg_head' must be an object with kind 'lraspp'")
            try:
                kwargs["seg_head"] = SegHead(int(seg["low_row"]), int(seg.get("inter_channels", 128)))
            except (KeyError, TypeError, ValueError):
                raise SpecError(f"{source}: field 'seg_head' needs an integer 'low_row'") from None
        for key, typ in (("resolution", int), ("in_channels", int), ("num_classes", int)):
            if key in kwargs and (not isinstance(kwargs[key], int) or isinstance(kwargs[key], bool)):
                raise SpecError(f"{source}: field {key!r} = {kwargs[key]!r}: expected an integer")
        try:
            return cls(rows=rows, **kwargs)
        except TypeError as exc:  # a missing name, mostly
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "spec") -> "ArchSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "ArchSpec":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SpecError(f"{path}: no such spec file") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise SpecError(f"{path}: cannot read spec file ({exc.__class__.__name__})") from None
        return cls.from_json(text, source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


def _conv_out(size: int, stride: int) -> int:
    # "same" padding: output is ceil(size / stride), as in TF and in torch with padding (k-1)//2.
    return -(-size // stride)


def _row_from_dict(raw: Any, index: int, source: str) -> Row:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: row {index}: expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_ROW_DEFAULTS))
    if unknown:
        raise SpecError(f"{source}: row {index}: unknown field {unknown[0]!r}")
    if "op" not in raw:
        raise SpecError(f"{source}: row {index}: missing field 'op'")
    values = dict(raw)
    if isinstance(values.get("nl"), str):
        values["nl"] = NL_ALIASES.get(values["nl"].lower(), values["nl"].lower())
    if values.get("se") is True:
        values["se"] = 0.25
    elif values.get("se") is False or values.get("se") is None:
        values["se"] = 0.0
    return Row(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(spec: ArchSpec) -> None:
    """Raise SpecError naming the first bad row and field."""
    if not _is_int(spec.resolution) or spec.resolution < 1:
        raise SpecError(f"{spec.name}: field 'resolution' = {spec.resolution!r}: must be a positive integer")
    if not _is_int(spec.in_channels) or spec.in_channels <= 0:
        raise SpecError(f"{spec.name}: field 'in_channels' = {spec.in_channels!r}: must be a positive integer")
    if not _is_int(spec.num_classes) or spec.num_classes <= 0:
        raise SpecError(f"{spec.name}: field 'num_classes' = {spec.num_classes!r}: must be a positive integer")
    if spec.se_mode not in SE_MODES:
        raise SpecError(f"{spec.name}: field 'se_mode' = {spec.se_mode!r}: expected one of {', '.join(SE_MODES)}")
    if not (0.0 <= float(spec.dropout) < 1.0):
        raise SpecError(f"{spec.name}: field 'dropout' = {spec.dropout!r}: must be in [0, 1)")
    if not spec.rows:
        raise SpecError(f"{spec.name}: a spec needs at least one row")
    seen_pool = False
    for i, row in enumerate(spec.rows):
        where = f"{spec.name}: row {i} ({row.op})"
        if row.op not in OPS:
            raise SpecError(f"{spec.name}: row {i}: field 'op' = {row.op!r}: expected one of {', '.join(OPS)}")
        if row.nl not in NONLINEARITIES:
            raise SpecError(
                f"{where}: field 'nl' = {row.nl!r}: unknown nonlinearity "
                f"(expected one of {', '.join(NONLINEARITIES)}, or RE/HS/R6/SW)"
            )
        if row.op == "pool":
            if seen_pool:
                raise SpecError(f"{where}: a spec has at most one pool row")
            seen_pool = True
            continue
        if not _is_int(row.out) or row.out <= 0:
            raise SpecError(f"{where}: field 'out' = {row.out!r}: channel count must be a positive integer")
        if row.op == "fc":
            if not seen_pool:
                raise SpecError(f"{where}: an fc row must come after the pool row")
            continue
        if seen_pool:
            raise SpecError(f"{where}: spatial rows cannot follow the pool row")
        if not _is_int(row.kernel) or row.kernel < 1 or row.kernel % 2 == 0:
            raise SpecError(f"{where}: field 'kernel' = {row.kernel!r}: kernel size must be odd and positive")
        if row.stride not in (1, 2) or isinstance(row.stride, bool):
            raise SpecError(f"{where}: field 'stride' = {row.stride!r}: must be 1 or 2")
        if not _is_int(row.dilation) or row.dilation < 1:
            raise SpecError(f"{where}: field 'dilation' = {row.dilation!r}: must be a positive integer")
        if not isinstance(row.se, (int, float)) or isinstance(row.se, bool) or not (0.0 <= row.se <= 1.0):
            raise SpecError(f"{where}: field 'se' = {row.se!r}: squeeze-excite ratio must be in [0, 1]")
        if row.op == "bneck":
            if not _is_int(row.exp) or row.exp <= 0:
                raise SpecError(f"{where}: field 'exp' = {row.exp!r}: exp size must be a positive integer")
        elif row.exp is not None:
            raise SpecError(f"{where}: field 'exp' = {row.exp!r}: only bneck rows have an exp size")
    if spec.seg_head is not None:
        if seen_pool:
            raise SpecError(f"{spec.name}: a segmentation spec has no pool or fc rows")
        if not (0 <= spec.seg_head.low_row < len(spec.rows)):
            raise SpecError(f"{spec.name}: seg_head 'low_row' = {spec.seg_head.low_row}: no such row")
        if spec.seg_head.inter_channels <= 0:
            raise SpecError(f"{spec.name}: seg_head 'inter_channels' = {spec.seg_head.inter_channels}: must be positive")
    elif not seen_pool:
        raise SpecError(f"{spec.name}: a classification spec needs a pool row")
    # Shapes: a net whose feature map shrinks below 1 pixel cannot be built.
    h = spec.resolution
    for i, row in enumerate(spec.rows):
        if row.op in ("pool", "fc"):
            break
        h = _conv_out(h, row.stride)
    if h < 1:
        raise SpecError(f"{spec.name}: resolution {spec.resolution} is too small for its strides")


def iter_blocks(spec: ArchSpec) -> Iterator[Layer]:
    """The spatial layers (everything before the pool)."""
    for layer in spec.layers():
        if layer.row.op in ("pool", "fc"):
            return
        yield layer


def se_channels(spec: ArchSpec, layer: Layer) -> int:
    """Width of a block's squeeze-excite bottleneck; 0 if the row has no SE."""
    row = layer.row
    if row.se <= 0:
        return 0
    if spec.se_mode == "mnv3":
        # MobileNetV3: 1/4 of the expansion layer, rounded to a multiple of 8.
        width = row.exp if row.op == "bneck" else layer.in_shape[0]
        return make_divisible(width * row.se, 8)
    # MnasNet / EfficientNet: a ratio of the block's input channels, plainly rounded.
    return max(1, int(round(layer.in_shape[0] * row.se)))


def mid_channels(layer: Layer) -> int:
    """Channels of the depthwise conv in a block."""
    row = layer.row
    if row.op == "bneck":
        return int(row.exp)  # type: ignore[arg-type]
    return layer.in_shape[0]


def has_expand(layer: Layer) -> bool:
    return layer.row.op == "bneck" and layer.row.exp != layer.in_shape[0]


def describe_nl(nl: str) -> str:
    return NL_SHORT.get(nl, nl)


__all__ = [
    "ArchSpec",
    "Layer",
    "Row",
    "SegHead",
    "make_divisible",
    "scale_channels",
    "validate",
    "se_channels",
    "mid_channels",
    "has_expand",
]
