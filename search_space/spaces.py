"""Search spaces: MnasNet's factorized hierarchical space around a seed net.

MnasNet (Sec. 4.1) partitions a net into pre-defined stages; each stage repeats one searched
layer N times, and only the stage's first layer is strided (and takes the previous stage's
width as input). Per stage the choices here are, as in MnasNet discretized around a seed:

- ``layers``: N in {n-1, n, n+1} around the seed's n (at least 1);
- ``kernel``: 3 or 5 (depthwise kernel of the inverted bottleneck);
- ``expand``: 3, 4 or 6; the exp size of a layer is ``make_divisible(expand * its input)``;
- ``se``: 0 or 0.25 (sized the MobileNetV3 way by default: 1/4 of the exp size, multiple of
  8, hard-sigmoid gate; ``se_mode`` of the space);
- ``width``: x0.75, x1.0 or x1.25 of the seed's #out, rounded by ``scale_channels``;
- ``nl``: ReLU or h-swish, only in the ``-nl`` spaces; otherwise the NL of each stage is the
  seed's (ReLU in the first stages, h-swish from the 80-channel stage on).

Stage strides, the stem, the last 1x1 conv and the pooled head are fixed. Two spaces:

- ``large``: the MnasNet-A1 / MobileNetV3-Large layout: stem conv 3x3 s2 16 HS; a fixed
  16-channel bneck (V3-Large row 1); searched stages 24 (s2, n=2), 40 (s2, 3), 80 (s2, 4),
  112 (s1, 2), 160 (s2, 3); last conv 1x1 960 HS; pool; fc 1280 HS.
- ``small``: around MobileNetV3-Small: stem 16 HS s2; stages 16 (s2, 1), 24 (s2, 2),
  40 (s2, 3), 48 (s1, 2), 96 (s2, 3); last conv 576 HS; pool; fc 1024 HS.
- ``large-nl`` / ``small-nl``: the same with the NL searched per stage.

A point of a space is a flat dict of named choices (``s1_layers``, ``s1_kernel``, ...,
``s5_width``), always all of them, in a fixed order: the space is static, which is what
Optuna's relative/multivariate samplers (and `nas.rl_sampler.RLSampler`) need. Every choice
is used by every net (a stage has at least one layer).

Known points. A published net that fits a space exactly can be enqueued as is; none of the
zoo nets fits exactly, so `known_points` gives the *nearest* point (`SearchSpace.nearest`):

- MnasNet-A1 in ``large``: its 32-channel ReLU stem, SepConv first block, 320-channel last
  stage, 1x1 1280 head conv and MnasNet-style SE (a ratio of the block input, sigmoid) are
  outside the space; the point takes A1's five searched stages exactly (layers, kernel,
  expansion, SE, width x1.0), so it is "A1's block choices in the V3 frame".
- MobileNetV3-Large in ``large``: everything fits except the exp sizes, which are not one
  expansion ratio per stage (24 stage: 64, 72 = 4x16, 3x24; 80 stage: 240, 200, 184, 184 =
  6x, 2.5x, 2.3x, 2.3x); the nearest ratio (smallest summed exp-size error) is taken: 3 and 3.
- MobileNetV3-Small in ``small``: the exp sizes again (16 stage: exp 16 = 1x, not a choice;
  24 stage: 72, 88 = 4.5x, 3.7x; 40 stage: 96, 240, 240 = 4x, 6x, 6x); nearest: 3, 4, 6.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import SpecError, UserError
from .spec import (
    NL_ALIASES,
    NONLINEARITIES,
    SE_MODES,
    ArchSpec,
    Row,
    _row_from_dict,
    describe_nl,
    make_divisible,
    scale_channels,
)

KERNELS = (3, 5)
EXPANDS = (3, 4, 6)
SE_RATIOS = (0.0, 0.25)
WIDTHS = (0.75, 1.0, 1.25)
NLS = ("relu", "hswish")
FIELDS = ("layers", "kernel", "expand", "se", "width", "nl")

# Nonlinearities outside a space's NL choices, mapped to the nearest one (for `nearest`).
_NL_NEAREST = {"relu6": "relu", "none": "relu", "swish": "hswish"}


@dataclass(frozen=True)
class Stage:
    """A searched stage: the seed's #out, stride, layer count and NL."""

    out: int
    stride: int
    layers: int
    nl: str = "relu"

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "stride": self.stride, "layers": self.layers, "nl": self.nl}


def _conv_out(size: int, stride: int) -> int:
    return -(-size // stride)


@dataclass(frozen=True)
class SearchSpace:
    """A factorized hierarchical search space around a seed net.

    ``resolution``, ``in_channels`` and ``num_classes`` are the geometry `decode` builds at by
    default; `with_task` returns a copy for the proxy task (Fashion-MNIST: 32x32, 1 channel,
    10 classes) while latency is taken at the space's own geometry (224x224x3 by default).
    """

    name: str
    seed_name: str
    stem: Row
    fixed: tuple[Row, ...]
    stages: tuple[Stage, ...]
    last_conv: int | None  # channels of the last 1x1 conv; None: 6x the last stage's #out
    head: tuple[Row, ...]  # pool, then fc rows
    last_nl: str = "hswish"
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    se_mode: str = "mnv3"
    dropout: float = 0.2
    search_nl: bool = False
    kernels: tuple[int, ...] = KERNELS
    expands: tuple[int, ...] = EXPANDS
    se_ratios: tuple[float, ...] = SE_RATIOS
    widths: tuple[float, ...] = WIDTHS
    nls: tuple[str, ...] = NLS
    known: tuple[str, ...] = ()  # zoo nets offered as known points
    description: str = ""
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    # ---- the choices -----------------------------------------------------------------------
    def layer_choices(self, stage: Stage) -> tuple[int, ...]:
        return tuple(sorted({max(1, stage.layers + d) for d in (-1, 0, 1)}))

    def stage_choices(self, i: int) -> dict[str, tuple]:
        """The choices of stage ``i`` (1-based), by field."""
        stage = self.stages[i - 1]
        out: dict[str, tuple] = {
            "layers": self.layer_choices(stage),
            "kernel": self.kernels,
            "expand": self.expands,
            "se": self.se_ratios,
            "width": self.widths,
        }
        if self.search_nl:
            out["nl"] = self.nls
        return out

    def choices(self) -> dict[str, list]:
        """Every choice of the space by its flat name (``s{i}_{field}``), in sampling order."""
        out: dict[str, list] = {}
        for i in range(1, len(self.stages) + 1):
            for fld, values in self.stage_choices(i).items():
                out[f"s{i}_{fld}"] = list(values)
        return out

    def names(self) -> list[str]:
        return list(self.choices())

    def stage_widths(self, i: int) -> tuple[int, ...]:
        """The distinct #out of stage ``i`` (1-based) over the width choices, in order."""
        base = self.stages[i - 1].out
        return tuple(dict.fromkeys(scale_channels(base, w) for w in self.widths))

    def size(self) -> int:
        """Number of points: the product of the choice counts."""
        return math.prod(len(v) for v in self.choices().values())

    def num_distinct_nets(self) -> int:
        """Number of distinct nets: like `size`, but width multipliers that round to the same
        #out (x0.75 and x1.0 of 24 are both 24) count once."""
        total = 1
        for i in range(1, len(self.stages) + 1):
            ch = self.stage_choices(i)
            n = len(ch["layers"]) * len(ch["kernel"]) * len(ch["expand"]) * len(ch["se"])
            n *= len(self.stage_widths(i)) * (len(ch["nl"]) if "nl" in ch else 1)
            total *= n
        return total

    # ---- sampling --------------------------------------------------------------------------
    def suggest(self, trial: Any) -> ArchSpec:
        """Sample through an Optuna trial: one ``suggest_categorical`` per choice, always all."""
        params = {name: trial.suggest_categorical(name, values) for name, values in self.choices().items()}
        return self.decode(params)

    def sample_params(self, rng: random.Random) -> dict[str, Any]:
        return {name: rng.choice(values) for name, values in self.choices().items()}

    def sample(self, rng: random.Random) -> ArchSpec:
        """A uniformly random net of the space."""
        return self.decode(self.sample_params(rng))

    def with_task(self, num_classes: int | None = None, in_channels: int | None = None,
                  resolution: int | None = None) -> "SearchSpace":
        """A copy that decodes at another geometry (e.g. the proxy task's)."""
        return dataclasses.replace(
            self,
            num_classes=self.num_classes if num_classes is None else num_classes,
            in_channels=self.in_channels if in_channels is None else in_channels,
            resolution=self.resolution if resolution is None else resolution,
            _cache={},
        )

    # ---- decode / encode -------------------------------------------------------------------
    def _check(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params, Mapping):
            raise UserError(f"space {self.name}: a point must be a dict of choices, got {type(params).__name__}")
        for name, values in self.choices().items():
            if name not in params:
                raise UserError(f"space {self.name}: point has no value for {name!r}")
            value = params[name]
            if isinstance(value, bool) or value not in values:
                raise UserError(
                    f"space {self.name}: {name} = {value!r} is not a choice "
                    f"({', '.join(str(v) for v in values)})"
                )

    def code(self, params: Mapping[str, Any]) -> str:
        """A compact readable name of a point: per stage layers, kernel, expansion, SE, width."""
        parts = []
        for i in range(1, len(self.stages) + 1):
            p = f"{params[f's{i}_layers']}k{params[f's{i}_kernel']}e{params[f's{i}_expand']}"
            p += "se" if params[f"s{i}_se"] else ""
            p += f"w{int(round(float(params[f's{i}_width']) * 100))}"
            if self.search_nl:
                p += describe_nl(params[f"s{i}_nl"]).lower()
            parts.append(p)
        return "_".join(parts)

    def decode(self, params: Mapping[str, Any], resolution: int | None = None, num_classes: int | None = None,
               in_channels: int | None = None, name: str | None = None) -> ArchSpec:
        """The net of a point. Keys of ``params`` that are not choices of the space (other
        hyperparameters of a study) are ignored; a missing or invalid choice is a UserError."""
        self._check(params)
        rows = [self.stem, *self.fixed]
        cin = rows[-1].out
        for i, stage in enumerate(self.stages, start=1):
            n = int(params[f"s{i}_layers"])
            kernel = int(params[f"s{i}_kernel"])
            expand = params[f"s{i}_expand"]
            se = float(params[f"s{i}_se"])
            out = scale_channels(stage.out, float(params[f"s{i}_width"]))
            nl = params[f"s{i}_nl"] if self.search_nl else stage.nl
            for j in range(n):
                inp = cin if j == 0 else out
                rows.append(Row("bneck", out, kernel=kernel, exp=make_divisible(expand * inp), se=se, nl=nl,
                                stride=stage.stride if j == 0 else 1))
            cin = out
        rows.append(Row("conv", self.last_conv or 6 * cin, kernel=1, nl=self.last_nl))
        rows += self.head
        return ArchSpec(
            name=name or f"{self.name}_{self.code(params)}",
            rows=tuple(rows),
            resolution=self.resolution if resolution is None else resolution,
            in_channels=self.in_channels if in_channels is None else in_channels,
            num_classes=self.num_classes if num_classes is None else num_classes,
            se_mode=self.se_mode,
            dropout=self.dropout,
        )

    def _width_for(self, base: int, out: int) -> float | None:
        """The width choice that gives ``out`` channels (the one nearest x1.0 if several)."""
        fits = [w for w in self.widths if scale_channels(base, w) == out]
        return min(fits, key=lambda w: abs(w - 1.0)) if fits else None

    def encode(self, spec: ArchSpec) -> dict[str, Any] | None:
        """The point whose net is ``spec`` (rows and SE mode; geometry, name and dropout may
        differ), or None if ``spec`` is not a net of this space."""
        if spec.se_mode != self.se_mode or spec.seg_head is not None:
            return None
        prefix = (self.stem, *self.fixed)
        tail = len(self.head) + 1
        rows = spec.rows
        if len(rows) < len(prefix) + tail + len(self.stages):
            return None
        if rows[: len(prefix)] != prefix or rows[len(rows) - len(self.head):] != self.head:
            return None
        middle = rows[len(prefix): len(rows) - tail]
        if any(r.op != "bneck" for r in middle):
            return None
        all_layers = [self.layer_choices(s) for s in self.stages]
        for counts in itertools.product(*all_layers):
            if sum(counts) != len(middle):
                continue
            params = self._derive(middle, counts, prefix[-1].out)
            if params is None:
                continue
            try:
                net = self.decode(params, resolution=spec.resolution, num_classes=spec.num_classes,
                                  in_channels=spec.in_channels)
            except UserError:
                continue
            if net.rows == spec.rows:
                return params
        return None

    def _derive(self, middle: tuple[Row, ...], counts: tuple[int, ...], cin: int) -> dict[str, Any] | None:
        params: dict[str, Any] = {}
        pos = 0
        for i, (stage, n) in enumerate(zip(self.stages, counts), start=1):
            first = middle[pos]
            pos += n
            width = self._width_for(stage.out, first.out)
            expand = next((e for e in self.expands if make_divisible(e * cin) == first.exp), None)
            if width is None or expand is None or first.kernel not in self.kernels or first.se not in self.se_ratios:
                return None
            params.update({f"s{i}_layers": n, f"s{i}_kernel": first.kernel, f"s{i}_expand": expand,
                           f"s{i}_se": self.se_ratios[self.se_ratios.index(first.se)], f"s{i}_width": width})
            if self.search_nl:
                if first.nl not in self.nls:
                    return None
                params[f"s{i}_nl"] = first.nl
            cin = first.out
        return {name: params[name] for name in self.choices()}

    def nearest(self, spec: ArchSpec) -> dict[str, Any]:
        """The point nearest to ``spec``: `encode` if it fits, else stage by stage.

        The spec's bneck layers are split into runs (a new run at each stride 2 or change of
        #out); each searched stage takes the next run with its stride whose #out is nearest
        (log scale) to the stage's. From a run: the layer choice nearest its length, the most
        common kernel, SE if most of its layers have it, the width whose #out is nearest, the
        expansion with the smallest summed exp-size error, the most common NL. A stage with no
        matching run keeps the seed's layer count and the middle of the other choices.
        """
        exact = self.encode(spec)
        if exact is not None:
            return exact
        runs: list[list] = []
        for layer in spec.layers():
            if layer.row.op != "bneck":
                continue
            if not runs or layer.row.stride != 1 or layer.row.out != runs[-1][-1].row.out:
                runs.append([])
            runs[-1].append(layer)
        params: dict[str, Any] = {}
        start = 0
        for i, stage in enumerate(self.stages, start=1):
            ch = self.stage_choices(i)
            cands = [j for j in range(start, len(runs)) if runs[j][0].row.stride == stage.stride]
            if not cands:
                params.update({f"s{i}_layers": stage.layers if stage.layers in ch["layers"] else ch["layers"][0],
                               f"s{i}_kernel": ch["kernel"][0], f"s{i}_expand": ch["expand"][len(ch["expand"]) // 2],
                               f"s{i}_se": ch["se"][0], f"s{i}_width": 1.0 if 1.0 in ch["width"] else ch["width"][0]})
                if self.search_nl:
                    params[f"s{i}_nl"] = stage.nl if stage.nl in ch["nl"] else ch["nl"][0]
                continue
            j = min(cands, key=lambda j: (abs(math.log(runs[j][0].row.out / stage.out)), j))
            run = runs[j]
            start = j + 1
            params[f"s{i}_layers"] = min(ch["layers"], key=lambda n: (abs(n - len(run)), n))
            kernel = Counter(lay.row.kernel for lay in run).most_common(1)[0][0]
            params[f"s{i}_kernel"] = min(ch["kernel"], key=lambda k: (abs(k - kernel), k))
            with_se = sum(lay.row.se > 0 for lay in run)
            nonzero = [s for s in ch["se"] if s > 0]
            params[f"s{i}_se"] = (min(nonzero, key=lambda s: abs(s - 0.25)) if nonzero and 2 * with_se >= len(run)
                                  and with_se else min(ch["se"]))
            out = run[0].row.out
            params[f"s{i}_width"] = min(ch["width"], key=lambda w: (abs(scale_channels(stage.out, w) - out),
                                                                     abs(w - 1.0)))
            params[f"s{i}_expand"] = min(
                ch["expand"],
                key=lambda e: (sum(abs(lay.row.exp - make_divisible(e * lay.in_shape[0])) for lay in run), e))
            if self.search_nl:
                nl = Counter(_NL_NEAREST.get(lay.row.nl, lay.row.nl) for lay in run).most_common(1)[0][0]
                params[f"s{i}_nl"] = nl if nl in ch["nl"] else ch["nl"][0]
        return {name: params[name] for name in self.choices()}

    def known_points(self) -> dict[str, dict[str, Any]]:
        """Zoo nets of this space as points: exact (`encode`) where they fit, else `nearest`."""
        from .zoo import zoo

        return {name: self.nearest(zoo(name)) for name in self.known}

    def known_point_fits(self) -> dict[str, bool]:
        """Whether each known point is the zoo net exactly (True) or only its nearest point."""
        from .zoo import zoo

        return {name: self.encode(zoo(name)) is not None for name in self.known}

    def enqueue_known_points(self, study: Any, names: Iterable[str] | None = None) -> list[str]:
        """Enqueue known points into an Optuna study (user attr ``known_point``)."""
        points = self.known_points()
        chosen = list(points) if names is None else list(names)
        for name in chosen:
            if name not in points:
                raise UserError(f"space {self.name}: {name!r} is not a known point ({', '.join(points) or 'none'})")
            study.enqueue_trial(points[name], user_attrs={"known_point": name}, skip_if_exists=True)
        return chosen

    # ---- latency ops -----------------------------------------------------------------------
    def all_ops(self, resolution: int | None = None, in_channels: int | None = None,
                num_classes: int | None = None) -> list:
        """Every distinct latency op (`search_space.latency_ops.Op`) a net of the space can have.

        Exactly the union of ``ops(decode(p))`` over all points p at the given geometry (the
        space's own by default): stem and fixed rows; per stage, the first layer for every
        input width (the previous stage's #out choices) and every (kernel, expansion, SE,
        width, NL), and the repeated layer (stride 1, input = its own width); the last 1x1
        conv for every last-stage width; the head.
        """
        from .latency_ops import ops

        res = self.resolution if resolution is None else resolution
        cin0 = self.in_channels if in_channels is None else in_channels
        k = self.num_classes if num_classes is None else num_classes
        cache_key = ("all_ops", res, cin0, k)
        if cache_key in self._cache:
            return list(self._cache[cache_key])
        found: dict[str, Any] = {}

        def add(rows: tuple[Row, ...], h: int, c: int, keep_head: bool = False) -> ArchSpec:
            tiny = ArchSpec(name="op", rows=rows, resolution=h, in_channels=c, num_classes=k, se_mode=self.se_mode,
                            dropout=0.0)
            got = ops(tiny)
            for op in got if keep_head else got[:-1]:
                found.setdefault(op.key, op)
            return tiny

        prefix = add((self.stem, *self.fixed, Row("pool")), res, cin0)
        _, h, _ = prefix.layers()[len(self.fixed)].out_shape
        in_widths: tuple[int, ...] = (self.fixed[-1].out if self.fixed else self.stem.out,)
        for i, stage in enumerate(self.stages, start=1):
            ch = self.stage_choices(i)
            nls = ch.get("nl", (stage.nl,))
            widths = self.stage_widths(i)
            repeated = max(ch["layers"]) >= 2
            for kernel, expand, se, out, nl in itertools.product(ch["kernel"], ch["expand"], ch["se"], widths, nls):
                for c in in_widths:
                    row = Row("bneck", out, kernel=kernel, exp=make_divisible(expand * c), se=float(se), nl=nl,
                              stride=stage.stride)
                    add((row, Row("pool")), h, c)
                if repeated:
                    row = Row("bneck", out, kernel=kernel, exp=make_divisible(expand * out), se=float(se), nl=nl)
                    add((row, Row("pool")), _conv_out(h, stage.stride), out)
            h = _conv_out(h, stage.stride)
            in_widths = widths
        for c in in_widths:
            last = Row("conv", self.last_conv or 6 * c, kernel=1, nl=self.last_nl)
            add((last, *self.head), h, c, keep_head=True)
        result = list(found.values())
        self._cache[cache_key] = tuple(result)
        return result

    # ---- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "seed": self.seed_name, "stem": self.stem.to_dict(),
            "fixed": [r.to_dict() for r in self.fixed], "stages": [s.to_dict() for s in self.stages],
            "last_conv": self.last_conv, "last_nl": self.last_nl, "head": [r.to_dict() for r in self.head],
            "resolution": self.resolution, "in_channels": self.in_channels, "num_classes": self.num_classes,
            "se_mode": self.se_mode, "dropout": self.dropout, "search_nl": self.search_nl,
            "kernels": list(self.kernels), "expands": list(self.expands), "se_ratios": list(self.se_ratios),
            "widths": list(self.widths), "nls": list(self.nls), "known": list(self.known),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> "SearchSpace":
        """A custom space from a JSON object (the shape `to_dict` writes)."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}")
        allowed = {
            "name", "seed", "stem", "fixed", "stages", "last_conv", "last_nl", "head", "resolution", "in_channels",
            "num_classes", "se_mode", "dropout", "search_nl", "kernels", "expands", "se_ratios", "widths", "nls",
            "known", "description"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UserError(f"{source}: unknown field {unknown[0]!r}")
        for key in ("name", "stem", "stages"):
            if key not in data:
                raise UserError(f"{source}: missing field {key!r}")

        def rows(value: Any, key: str) -> tuple[Row, ...]:
            if not isinstance(value, list):
                raise UserError(f"{source}: field {key!r} must be a list of rows")
            return tuple(_row_from_dict(r, i, f"{source}: {key}") for i, r in enumerate(value))

        def nl_of(value: Any, key: str) -> str:
            nl = NL_ALIASES.get(str(value).lower(), str(value).lower())
            if nl not in NONLINEARITIES:
                raise UserError(f"{source}: field {key!r} = {value!r}: unknown nonlinearity")
            return nl

        def values(key: str, default: tuple, typ: type) -> tuple:
            raw = data.get(key, list(default))
            if not isinstance(raw, list) or not raw or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                           for v in raw):
                raise UserError(f"{source}: field {key!r} = {raw!r}: expected a non-empty list of numbers")
            return tuple(typ(v) for v in raw)

        stem = _row_from_dict(data["stem"], 0, f"{source}: stem") if isinstance(data["stem"], dict) else None
        if stem is None:
            raise UserError(f"{source}: field 'stem' must be a row object")
        raw_stages = data["stages"]
        if not isinstance(raw_stages, list) or not raw_stages:
            raise UserError(f"{source}: field 'stages' must be a non-empty list")
        stages = []
        for i, st in enumerate(raw_stages):
            if not isinstance(st, dict) or set(st) - {"out", "stride", "layers", "nl"}:
                raise UserError(f"{source}: stage {i}: expected an object with out, stride, layers, nl")
            try:
                out, stride, layers = int(st["out"]), int(st["stride"]), int(st["layers"])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{source}: stage {i}: out, stride and layers must be integers") from None
            if out <= 0 or stride not in (1, 2) or layers < 1:
                raise UserError(f"{source}: stage {i}: out={out}, stride={stride}, layers={layers} out of range")
            stages.append(Stage(out, stride, layers, nl_of(st.get("nl", "relu"), f"stages[{i}].nl")))
        last_conv = data.get("last_conv")
        if last_conv is not None and (not isinstance(last_conv, int) or isinstance(last_conv, bool) or last_conv <= 0):
            raise UserError(f"{source}: field 'last_conv' = {last_conv!r}: expected a positive integer or null")
        se_mode = data.get("se_mode", "mnv3")
        if se_mode not in SE_MODES:
            raise UserError(f"{source}: field 'se_mode' = {se_mode!r}: expected one of {', '.join(SE_MODES)}")
        nls = data.get("nls", list(NLS))
        if not isinstance(nls, list) or not nls:
            raise UserError(f"{source}: field 'nls' must be a non-empty list")
        space = cls(
            name=str(data["name"]), seed_name=str(data.get("seed", "")), stem=stem,
            fixed=rows(data.get("fixed", []), "fixed"), stages=tuple(stages), last_conv=last_conv,
            head=rows(data.get("head", [{"op": "pool"}]), "head"), last_nl=nl_of(data.get("last_nl", "hswish"), "last_nl"),
            resolution=int(data.get("resolution", 224)), in_channels=int(data.get("in_channels", 3)),
            num_classes=int(data.get("num_classes", 1000)), se_mode=se_mode, dropout=float(data.get("dropout", 0.2)),
            search_nl=bool(data.get("search_nl", False)), kernels=values("kernels", KERNELS, int),
            expands=values("expands", EXPANDS, int), se_ratios=values("se_ratios", SE_RATIOS, float),
            widths=values("widths", WIDTHS, float), nls=tuple(nl_of(v, "nls") for v in nls),
            known=tuple(str(k) for k in data.get("known", [])), description=str(data.get("description", "")),
        )
        from .zoo import ZOO_NAMES

        for k in space.known:
            if k not in ZOO_NAMES:
                raise UserError(f"{source}: known point {k!r} is not a zoo net")
        try:  # every corner of the space must be a valid net
            space.decode({n: v[0] for n, v in space.choices().items()})
            space.decode({n: v[-1] for n, v in space.choices().items()})
        except SpecError as exc:
            raise UserError(f"{source}: {exc}") from None
        return space

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        try:
            text = path.read_text()
        except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError):
            raise UserError(f"{path}: cannot read space file") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source=str(path))


# ---- the built-in spaces ------------------------------------------------------------------------
def _large(search_nl: bool = False) -> SearchSpace:
    return SearchSpace(
        name="large-nl" if search_nl else "large",
        seed_name="mnv3-large",
        stem=Row("conv", 16, kernel=3, nl="hswish", stride=2),
        fixed=(Row("bneck", 16, kernel=3, exp=16, nl="relu"),),
        stages=(Stage(24, 2, 2, "relu"), Stage(40, 2, 3, "relu"), Stage(80, 2, 4, "hswish"),
                Stage(112, 1, 2, "hswish"), Stage(160, 2, 3, "hswish")),
        last_conv=960,
        head=(Row("pool"), Row("fc", 1280, nl="hswish", bn=False)),
        search_nl=search_nl,
        known=("mnasnet-a1", "mnv3-large"),
        description="MnasNet-A1 / MobileNetV3-Large layout",
    )


def _small(search_nl: bool = False) -> SearchSpace:
    return SearchSpace(
        name="small-nl" if search_nl else "small",
        seed_name="mnv3-small",
        stem=Row("conv", 16, kernel=3, nl="hswish", stride=2),
        fixed=(),
        stages=(Stage(16, 2, 1, "relu"), Stage(24, 2, 2, "relu"), Stage(40, 2, 3, "hswish"),
                Stage(48, 1, 2, "hswish"), Stage(96, 2, 3, "hswish")),
        last_conv=576,
        head=(Row("pool"), Row("fc", 1024, nl="hswish", bn=False)),
        search_nl=search_nl,
        known=("mnv3-small",),
        description="MobileNetV3-Small layout",
    )


SPACES: dict[str, SearchSpace] = {
    "large": _large(),
    "small": _small(),
    "large-nl": _large(search_nl=True),
    "small-nl": _small(search_nl=True),
}

# Why each zoo net is (or is not) a point of the spaces that offer it.
KNOWN_NOTES = {
    "mnasnet-a1": "nearest point: A1's 32-ch ReLU stem, SepConv, 320 stage, 1280 head conv and "
                  "MnasNet-style SE are outside the space; its five searched stages are taken exactly",
    "mnv3-large": "nearest point: exp sizes are not one ratio per stage (24: 64,72; 80: 240,200,184,184); "
                  "nearest ratio taken",
    "mnv3-small": "nearest point: exp sizes are not one ratio per stage (16: 16; 24: 72,88; 40: 96,240,240); "
                  "nearest ratio taken",
}


def get_space(name: str | SearchSpace) -> SearchSpace:
    """A space by name (`SPACES`), or a custom space from a JSON file (`SearchSpace.from_dict`)."""
    if isinstance(name, SearchSpace):
        return name
    if name in SPACES:
        return SPACES[name]
    if isinstance(name, str) and (name.endswith(".json") or Path(name).is_file()):
        return SearchSpace.load(name)
    raise UserError(f"unknown search space {name!r}; known: {', '.join(SPACES)} (or a space JSON file)")


def describe(space: SearchSpace | str, resolution: int | None = None) -> str:
    """Text for ``nas space show``: fixed parts, the choices per stage, size, ops, known points."""
    from .render import format_table

    space = get_space(space)
    res = space.resolution if resolution is None else resolution
    lines = [f"space {space.name}: MnasNet factorized hierarchical space around {space.seed_name or '-'}"
             + (f" ({space.description})" if space.description else "")]
    se_text = ("MobileNetV3 (1/4 of exp size, hard-sigmoid)" if space.se_mode == "mnv3"
               else "MnasNet (ratio of block input, sigmoid)")
    lines.append(f"geometry {res}x{res}x{space.in_channels}, {space.num_classes} classes; SE: {se_text}")
    seed = space.decode({n: v[0] for n, v in space.choices().items()}, resolution=res)
    layers = seed.layers()
    fixed = [f"stem conv {space.stem.kernel}x{space.stem.kernel} s{space.stem.stride} {space.stem.out} "
             f"{describe_nl(space.stem.nl)}"]
    fixed += [f"bneck {r.kernel}x{r.kernel} exp {r.exp} {r.out} {describe_nl(r.nl)} s{r.stride}" for r in space.fixed]
    last = f"{space.last_conv}" if space.last_conv else "6x last #out"
    fixed.append(f"last conv 1x1 {last} {describe_nl(space.last_nl)}")
    fixed += ["pool" if r.op == "pool" else f"fc {r.out} {describe_nl(r.nl)}" for r in space.head]
    lines.append("fixed: " + "; ".join(fixed))
    lines.append("")
    h = layers[len(space.fixed)].out_shape[1]
    table = []
    for i, stage in enumerate(space.stages, start=1):
        ch = space.stage_choices(i)
        widths = ", ".join(f"{w:g}" for w in ch["width"])
        table.append((
            f"s{i}", f"{h}²", str(stage.stride), str(stage.out),
            ", ".join(map(str, ch["layers"])), ", ".join(map(str, ch["kernel"])),
            ", ".join(map(str, ch["expand"])), ", ".join(f"{s:g}" for s in ch["se"]),
            f"{widths} (#out {', '.join(map(str, space.stage_widths(i)))})",
            ", ".join(describe_nl(n) for n in ch["nl"]) if "nl" in ch else f"{describe_nl(stage.nl)} (fixed)",
        ))
        h = _conv_out(h, stage.stride)
    headers = ("stage", "input", "s", "base", "layers", "kernel", "expand", "se", "width", "nl")
    lines.append(format_table(headers, table))
    lines.append("")
    names = space.names()
    lines.append(f"choices: {len(names)} ({', '.join(names[:len(space.stage_choices(1))])}, ... per stage)")
    size, distinct = space.size(), space.num_distinct_nets()
    lines.append(f"size: {size:,} points ({size:.2e}); distinct nets: {distinct:,} ({distinct:.2e})")
    lines.append(f"latency ops: {len(space.all_ops(resolution=res))} distinct at {res}x{res}x{space.in_channels}")
    fits = space.known_point_fits()
    for name, params in space.known_points().items():
        how = "exact" if fits[name] else KNOWN_NOTES.get(name, "nearest point")
        lines.append(f"known point {name}: {space.code(params)} ({how})")
    return "\n".join(lines)


def params_digest(params: Mapping[str, Any]) -> str:
    """A short stable hash of a point (for caching results by architecture)."""
    text = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


__all__ = ["SearchSpace", "Stage", "SPACES", "get_space", "describe", "KNOWN_NOTES", "params_digest"]
