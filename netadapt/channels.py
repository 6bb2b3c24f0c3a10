"""Which tensors share which channel dimension: the coupling NetAdapt must respect.

A *channel space* is one set of channels that several tensors index the same way. Raw
spaces, named from the spec:

  in      the input image's channels (never pruned)
  a{i}    the output of spatial row i (stem, bneck, dwsep, conv)
  m{i}    the depthwise (mid) width of bneck / dwsep row i
  s{i}    the squeeze width of row i's squeeze-excite
  f{j}    the output of the j-th fc row after the pool
  k       the classes (never pruned)

Spaces that must stay equal are merged: a residual row's output is its input
(`a{i} ~ a{i-1}`), and a block without an expansion conv (bneck with exp == in, dwsep)
runs its depthwise conv on its input (`m{i} ~ a{i-1}`). A merged set is named by its first
member (`a0`, `a3`, `m5`, ...). For V3-Large the stem and the first block form `a0`
(stem out, block 1's depthwise and output); the 24-wide blocks form `a2`; and so on.

`channel_plan(spec)` maps every state-dict key of `search_space.build(spec)` to the space
of each of its dimensions, and names the *producers* of each space (the convs / linears
whose output filters make those channels): the filters ranked by L2 norm for pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from search_space.spec import ArchSpec, has_expand, mid_channels, se_channels

FIXED = ("in", "k")

Dims = tuple  # tuple[str | None, ...]: the space of each dimension of a tensor (None: not a channel dim)


@dataclass
class ChannelPlan:
    spec: ArchSpec
    root: dict[str, str]  # raw space -> its merged space's name
    sizes: dict[str, int]  # merged space -> width
    dims: dict[str, Dims]  # state-dict key -> space (merged) per dimension
    producers: dict[str, list[str]] = field(default_factory=dict)  # merged space -> weight keys (dim 0)
    members: dict[str, list[str]] = field(default_factory=dict)  # merged space -> raw spaces

    def space(self, raw: str) -> str:
        """The merged space a raw space (e.g. 'a5', 'm7') belongs to."""
        return self.root[raw]

    def fixed(self, space: str) -> bool:
        return any(f in self.members[space] for f in FIXED)

    def partition(self) -> tuple[tuple[str, ...], ...]:
        """The merge structure, comparable between two specs (sizes left out)."""
        return tuple(sorted(tuple(sorted(m)) for m in self.members.values()))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.order: dict[str, int] = {}

    def add(self, x: str) -> None:
        if x not in self.parent:
            self.parent[x] = x
            self.order[x] = len(self.order)

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        # the earlier-created space names the set ('in' before 'a0' before 'a1' ...)
        if self.order[ra] > self.order[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra


def _conv(dims: dict, raw: list, prefix: str, out: str, inp: str | None, *, depthwise: bool = False,
          bias: bool = False) -> None:
    """A Conv2d at `prefix` (weight [+ bias])."""
    dims[f"{prefix}.weight"] = (out, None if depthwise else inp, None, None)
    if bias:
        dims[f"{prefix}.bias"] = (out,)
    raw.append((f"{prefix}.weight", out, depthwise))


def _bn(dims: dict, prefix: str, space: str) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        dims[f"{prefix}.{name}"] = (space,)
    dims[f"{prefix}.num_batches_tracked"] = ()


def _se(dims: dict, raw: list, prefix: str, channels: str, squeeze: str) -> None:
    _conv(dims, raw, f"{prefix}.fc1", squeeze, channels, bias=True)
    dims[f"{prefix}.fc2.weight"] = (channels, squeeze, None, None)
    dims[f"{prefix}.fc2.bias"] = (channels,)


def channel_plan(spec: ArchSpec) -> ChannelPlan:
    """The channel spaces of `build(spec)` (classification specs; see module docstring)."""
    if spec.seg_head is not None:
        raise ValueError(f"{spec.name}: channel plans cover classification specs only")
    uf = _UnionFind()
    sizes_raw: dict[str, int] = {}

    def space(name: str, size: int) -> str:
        uf.add(name)
        sizes_raw[name] = size
        return name

    space("in", spec.in_channels)
    dims: dict[str, Dims] = {}
    raw_producers: list[tuple[str, str, bool]] = []  # (key, space, depthwise)
    prev = "in"
    layers = spec.layers()
    spatial = [lay for lay in layers if lay.row.op not in ("pool", "fc")]
    for lay in spatial:
        i, row = lay.index, lay.row
        out = space(f"a{i}", lay.out_shape[0])
        if lay.residual:
            uf.union(prev, out)
        squeeze_w = se_channels(spec, lay)
        p = f"features.{i}"
        if row.op == "conv":
            _conv(dims, raw_producers, f"{p}.0", out, prev, bias=not row.bn)
            idx = 1
            if row.bn:
                _bn(dims, f"{p}.1", out)
                idx += 1
            if row.nl != "none":
                idx += 1
            if squeeze_w:
                _se(dims, raw_producers, f"{p}.{idx}", out, space(f"s{i}", squeeze_w))
        else:  # bneck, dwsep
            mid = space(f"m{i}", mid_channels(lay))
            m = 0
            if row.op == "bneck" and has_expand(lay):
                _conv(dims, raw_producers, f"{p}.block.0.0", mid, prev)
                _bn(dims, f"{p}.block.0.1", mid)
                m = 1
            else:
                uf.union(prev, mid)
            _conv(dims, raw_producers, f"{p}.block.{m}.0", mid, mid, depthwise=True)
            _bn(dims, f"{p}.block.{m}.1", mid)
            m += 1
            if squeeze_w:
                _se(dims, raw_producers, f"{p}.block.{m}", mid, space(f"s{i}", squeeze_w))
                m += 1
            _conv(dims, raw_producers, f"{p}.block.{m}.0", out, mid)
            _bn(dims, f"{p}.block.{m}.1", out)
        prev = out
    # classifier: fc rows (Linear [+ act]), dropout, the k-way Linear
    idx, j = 0, 0
    for lay in layers:
        if lay.row.op != "fc":
            continue
        out = space(f"f{j}", lay.row.out)
        dims[f"classifier.{idx}.weight"] = (out, prev)
        dims[f"classifier.{idx}.bias"] = (out,)
        raw_producers.append((f"classifier.{idx}.weight", out, False))
        idx += 1 + (lay.row.nl != "none")
        prev, j = out, j + 1
    if spec.dropout > 0:
        idx += 1
    space("k", spec.num_classes)
    dims[f"classifier.{idx}.weight"] = ("k", prev)
    dims[f"classifier.{idx}.bias"] = ("k",)

    root = {name: uf.find(name) for name in uf.parent}
    members: dict[str, list[str]] = {}
    for name in uf.parent:  # creation order
        members.setdefault(root[name], []).append(name)
    sizes: dict[str, int] = {}
    for r, names in members.items():
        widths = {sizes_raw[n] for n in names}
        if len(widths) != 1:  # cannot happen for a valid spec
            raise ValueError(f"{spec.name}: coupled channels {names} have different widths {sorted(widths)}")
        sizes[r] = widths.pop()
    merged_dims = {k: tuple(root[s] if s is not None else None for s in d) for k, d in dims.items()}
    producers: dict[str, list[str]] = {}
    for key, s, depthwise in raw_producers:
        if not depthwise:
            producers.setdefault(root[s], []).append(key)
    return ChannelPlan(spec, root, sizes, merged_dims, producers, members)
