"""A weight-sharing supernet: one set of weights holding every net of a search space.

The supernet is the largest net of the space (widest widths, largest expansion and kernel,
deepest stages, SE everywhere) built from the dynamic ops of `search_space.dynamic`, with
the static builder's module names (``features.N.block.M``, ``classifier.K``). `activate`
sets a point of the space: every stage runs its first n layers, every op the slice of the
point's net. `extract` returns exactly the model `search_space.build(spec)` builds, loaded
with the sliced weights, so a subnet is an ordinary spec + state dict.

Rows of a point's net map to supernet rows: the stem and fixed rows one to one, then stage
i's layers j < n_i to the stage's first n_i supernet rows, then the last conv.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

from .builder import build, build_classifier, build_row
from .dynamic import DynamicBlock, DynamicConvBNAct, DynamicLinear, slice_to
from .errors import UserError
from .modules import init_weights
from .spaces import SearchSpace
from .spec import ArchSpec, make_divisible, mid_channels, se_channels


# nested: a kernel is the centre of the largest (once-for-all without its kernel transform);
# transform: the centre through a learned matrix per layer and kernel step (once-for-all);
# separate: one depthwise weight per kernel size (TuNAS)
KERNEL_SHARING = ("nested", "transform", "separate")


def largest_point(space: SearchSpace) -> dict[str, Any]:
    """The point with every choice at its largest (SE on; the NL choice is the first)."""
    point = {}
    for name, values in space.choices().items():
        point[name] = values[0] if name.endswith("_nl") else max(values)
    return point


def smallest_point(space: SearchSpace) -> dict[str, Any]:
    point = {}
    for name, values in space.choices().items():
        point[name] = values[0] if name.endswith("_nl") else min(values)
    return point


class Supernet(nn.Module):
    """Every net of ``space`` at the geometry (``in_channels``, ``num_classes``) of a task."""

    def __init__(self, space: SearchSpace, in_channels: int, num_classes: int, resolution: int,
                 kernel_sharing: str = "nested") -> None:
        super().__init__()
        if kernel_sharing not in KERNEL_SHARING:
            raise UserError(f"kernel sharing {kernel_sharing!r}: expected one of {', '.join(KERNEL_SHARING)}")
        self.kernel_sharing = kernel_sharing
        if space.fixed and any(r.op != "bneck" and r.op != "conv" for r in space.fixed):
            raise UserError(f"space {space.name}: fixed rows must be conv or bneck rows")
        self.space = space.with_task(num_classes=num_classes, in_channels=in_channels, resolution=resolution)
        sp = self.space
        # the static prefix (stem, fixed rows), built from the largest net's spec
        big = sp.decode(largest_point(sp))
        layers = big.layers()
        n_prefix = 1 + len(sp.fixed)
        rows: list[nn.Module] = [build_row(big, layers[i]) for i in range(n_prefix)]
        se_gate = "hsigmoid" if sp.se_mode == "mnv3" else "sigmoid"
        norm = dict(bn_eps=big.bn_eps, bn_momentum=big.bn_momentum)
        cin_max = layers[n_prefix - 1].out_shape[0]
        self.stage_rows: list[list[int]] = []  # supernet row indices of each stage
        for i, stage in enumerate(sp.stages, start=1):
            ch = sp.stage_choices(i)
            out_max = max(sp.stage_widths(i))
            idx = []
            for j in range(max(ch["layers"])):
                inp = cin_max if j == 0 else out_max
                exp = make_divisible(max(ch["expand"]) * inp)
                squeeze = self._max_squeeze(sp, inp, exp, ch)
                idx.append(len(rows))
                rows.append(DynamicBlock(inp, exp, out_max, tuple(ch["kernel"]), stage.stride if j == 0 else 1,
                                         squeeze, se_gate=se_gate, se_inner="relu", kernel_sharing=kernel_sharing,
                                         **norm))
            self.stage_rows.append(idx)
            cin_max = out_max
        last_out = sp.last_conv or 6 * cin_max
        rows.append(DynamicConvBNAct(cin_max, last_out, 1, nl=sp.last_nl, **norm))
        self.features = nn.Sequential(*rows)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        classifier = build_classifier(big, last_out)
        first = next(k for k, m in enumerate(classifier) if isinstance(m, nn.Linear))
        lin = classifier[first]
        classifier[first] = DynamicLinear(lin.in_features, lin.out_features)
        self.classifier = classifier
        init_weights(self)
        # depthwise weights that a subnet takes through kernel transforms, not by slicing
        self._transformed = {f"{name}.0.weight": m for name, m in self.named_modules()
                             if isinstance(m, DynamicConvBNAct) and m.kernel_chain}
        self.n_prefix = n_prefix
        self.active: dict[str, Any] | None = None
        self._active_rows: list[int] = []
        self.activate(largest_point(sp))

    @staticmethod
    def _max_squeeze(sp: SearchSpace, inp: int, exp: int, ch: dict) -> int:
        ratio = max(ch["se"])
        if ratio <= 0:
            return 0
        if sp.se_mode == "mnv3":
            return make_divisible(exp * ratio, 8)
        return max(1, int(round(inp * ratio)))

    # ---- choosing a net ----------------------------------------------------------------------
    def spec(self, params: Mapping[str, Any], name: str | None = None) -> ArchSpec:
        """The point's net at the supernet's task geometry."""
        return self.space.decode(params, name=name)

    def activate(self, params: Mapping[str, Any]) -> ArchSpec:
        """Run as the point's net from now on; returns its spec."""
        spec = self.spec(params)
        layers = [lay for lay in spec.layers() if lay.row.op not in ("pool", "fc")]
        active = list(range(self.n_prefix))
        pos = self.n_prefix
        for i, idx in enumerate(self.stage_rows, start=1):
            n = int(params[f"s{i}_layers"])
            for j in range(n):
                lay = layers[pos]
                blk: DynamicBlock = self.features[idx[j]]
                squeeze = se_channels(spec, lay)
                exp = mid_channels(lay)
                blk.configure(lay.in_shape[0], exp, lay.row.out, lay.row.kernel, squeeze, lay.row.nl,
                              lay.residual, expand=exp != lay.in_shape[0])
                if self.space.se_mode != "mnv3":
                    blk.block[2].inner_nl = lay.row.nl
                active.append(idx[j])
                pos += 1
        last = layers[pos]
        conv: DynamicConvBNAct = self.features[len(self.features) - 1]
        conv.state = dataclasses.replace(conv.state, cin=last.in_shape[0], cout=last.row.out)
        active.append(len(self.features) - 1)
        self._active_rows = active
        self.active = dict(params)
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in self._active_rows:
            x = self.features[i](x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

    # ---- subnets -----------------------------------------------------------------------------
    def extract(self, params: Mapping[str, Any] | None = None, name: str | None = None) -> tuple[ArchSpec, nn.Module]:
        """(spec, model): `build(spec)` loaded with the point's slice of the shared weights."""
        if params is not None:
            self.activate(params)
        assert self.active is not None
        spec = self.spec(self.active, name=name)
        with torch.device("meta"):  # no memory, no initialisation: every tensor comes from the supernet
            model = build(spec, init=False)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(self.subnet_state_dict(shapes), assign=True)
        model.train(self.training)
        return spec, model

    def subnet_state_dict(self, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
        """The active net's state dict, with `build(spec)`'s names and shapes."""
        assert self.active is not None
        target = shapes if shapes is not None else build_shapes(self.spec(self.active))
        mine = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        renames: dict[int, tuple[int, dict[str, str]]] = {}
        for sub_i, sup_i in enumerate(self._active_rows):
            mod = self.features[sup_i]
            renames[sub_i] = (sup_i, mod.static_names() if isinstance(mod, DynamicBlock) else {})
        for key, shape in target.items():
            src = key
            if key.startswith("features."):
                _, idx, rest = key.split(".", 2)
                sup_i, names = renames[int(idx)]
                for a, b in names.items():
                    if rest.startswith(a):
                        rest = b + rest[len(a):]
                        break
                src = f"features.{sup_i}.{rest}"
            t = mine[src]
            if src in self._transformed:
                t = self._transformed[src].kernel_weight(shape[-1], shape[0]).detach()
            spatial = (2, 3) if t.dim() == 4 else ()
            out[key] = slice_to(t, tuple(shape), spatial).clone() if t.dim() else t.clone()
        return out


_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def build_shapes(spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of `build(spec)`, without initialising weights (cached by rows)."""
    key = spec.to_json(indent=None)
    shapes = _SHAPES.get(key)
    if shapes is None:
        with torch.device("meta"):
            model = build(dataclasses.replace(spec, name="shapes"), init=False)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if len(_SHAPES) > 4096:
            _SHAPES.clear()
        _SHAPES[key] = shapes
    return shapes


def parse_arch(space: SearchSpace, code: str) -> dict[str, Any]:
    """The point of ``space`` named by its short code (`SearchSpace.code`); UserError if malformed."""
    import re

    parts = code.strip().split("_")
    if len(parts) != len(space.stages):
        raise UserError(f"arch {code!r}: expected {len(space.stages)} stages separated by '_', got {len(parts)}")
    pattern = re.compile(r"^(\d+)k(\d+)e(\d+)(se)?w(\d+)([a-z0-9]*)$")
    nl_codes = {"re": "relu", "hs": "hswish", "r6": "relu6", "sw": "swish"}
    params: dict[str, Any] = {}
    for i, part in enumerate(parts, start=1):
        m = pattern.match(part)
        if m is None:
            raise UserError(f"arch {code!r}: stage {i} {part!r} is not like '2k5e4sew100'")
        ch = space.stage_choices(i)
        width = next((w for w in ch["width"] if int(round(w * 100)) == int(m.group(5))), None)
        se = max(ch["se"]) if m.group(4) else min(ch["se"])
        params.update({f"s{i}_layers": int(m.group(1)), f"s{i}_kernel": int(m.group(2)),
                       f"s{i}_expand": int(m.group(3)), f"s{i}_se": se, f"s{i}_width": width})
        if "nl" in ch:
            params[f"s{i}_nl"] = nl_codes.get(m.group(6), m.group(6))
        elif m.group(6):
            raise UserError(f"arch {code!r}: stage {i} names a nonlinearity but space {space.name} does not search it")
    space._check(params)
    return params


__all__ = ["KERNEL_SHARING", "Supernet", "largest_point", "smallest_point", "parse_arch", "build_shapes"]
