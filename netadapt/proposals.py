"""NetAdapt proposals as MobileNetV3 used them (Sec. 4.2).

Two kinds of prunable unit:
  exp    one block's expansion layer (a bneck with an expansion conv): its exp size;
  width  a bottleneck width shared by every block tied through residual adds: the row that
         opens the group (stem, or a block that changes width or stride) and every
         residual block after it shrink together, and so does the input of the next row
         (a block without an expansion conv runs its depthwise conv at that width too).

A proposal for a unit is the largest width below the current one, in multiples of 8 (at
least 8), whose predicted latency is at least `delta` below the current net's. A width
that would change the structure (a block losing its expansion conv because exp == in, or
a block gaining a residual add because in == out) is skipped. A unit that cannot reach
the step even at its smallest width proposes nothing.

Widths are scanned from the top down, as NetAdapt does; the candidates are handed to the
latency function's `prefetch` (if it has one) in growing batches, so the ops missing from
a latency table are measured together rather than one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from search_space.spec import ArchSpec

from .channels import ChannelPlan, channel_plan

PredictFn = Callable[[ArchSpec], float]
MIN_WIDTH = 8
STEP = 8


@dataclass(frozen=True)
class Unit:
    """A prunable channel space of a spec."""

    space: str  # merged channel space (netadapt.channels), e.g. 'a4' or 'm7'
    kind: str  # 'exp' or 'width'
    rows: tuple[int, ...]  # rows whose exp ('exp') or #out ('width') it sets
    exp_rows: tuple[int, ...]  # rows whose exp follows it (blocks without an expansion conv)
    width: int

    @property
    def label(self) -> str:
        if self.kind == "exp":
            return f"exp row {self.rows[0]}"
        lo, hi = self.rows[0], self.rows[-1]
        return f"#out row {lo}" if lo == hi else f"#out rows {lo}-{hi}"


@dataclass(frozen=True)
class Proposal:
    unit: Unit
    width: int  # the new width
    spec: ArchSpec  # the spec with the unit at `width`
    latency_ms: float


def units(spec: ArchSpec, plan: ChannelPlan | None = None, include_last: bool = False) -> list[Unit]:
    """The prunable units of `spec`, in row order.

    The output of the last spatial row (the final 1x1 conv) and fc rows are not pruned
    unless `include_last` (MobileNetV3's proposals touch expansion layers and bottlenecks).
    """
    plan = plan or channel_plan(spec)
    layers = spec.layers()
    spatial = [lay for lay in layers if lay.row.op not in ("pool", "fc")]
    last = spatial[-1].index
    out: list[Unit] = []
    seen: set[str] = set()
    for lay in spatial:
        i = lay.index
        for raw in (f"a{i}", f"m{i}"):
            if raw not in plan.root:
                continue
            sp = plan.space(raw)
            if sp in seen or plan.fixed(sp):
                continue
            seen.add(sp)
            members = plan.members[sp]
            out_rows = tuple(int(m[1:]) for m in members if m.startswith("a"))
            exp_rows = tuple(int(m[1:]) for m in members if m.startswith("m") and layers[int(m[1:])].row.op == "bneck")
            if out_rows:
                if last in out_rows and not include_last:
                    continue
                out.append(Unit(sp, "width", out_rows, exp_rows, plan.sizes[sp]))
            elif exp_rows:
                out.append(Unit(sp, "exp", exp_rows, (), plan.sizes[sp]))
    return out


def apply(spec: ArchSpec, unit: Unit, width: int) -> ArchSpec:
    """`spec` with `unit` set to `width` (rows only; resolution and the rest untouched)."""
    rows = list(spec.rows)
    if unit.kind == "exp":
        for i in unit.rows:
            rows[i] = _replace(rows[i], exp=width)
    else:
        for i in unit.rows:
            rows[i] = _replace(rows[i], out=width)
        for i in unit.exp_rows:
            rows[i] = _replace(rows[i], exp=width)
    return spec.with_rows(rows)


def _replace(row, **kw):
    import dataclasses

    return dataclasses.replace(row, **kw)


def same_structure(a: ArchSpec, b: ArchSpec) -> bool:
    """True if `b` differs from `a` only in widths (same layers, same residual adds and
    expansion convs)."""
    pa, pb = channel_plan(a), channel_plan(b)
    return pa.dims.keys() == pb.dims.keys() and pa.partition() == pb.partition()


def candidate_widths(width: int) -> list[int]:
    """Multiples of 8 below `width`, largest first, down to 8."""
    top = (width - 1) // STEP * STEP
    return list(range(top, MIN_WIDTH - 1, -STEP))


def propose(spec: ArchSpec, predict_ms: PredictFn, current_ms: float, delta_ms: float,
            also: Sequence[ArchSpec] = (), include_last: bool = False, first_batch: int = 2
            ) -> tuple[list[Proposal], list[Unit]]:
    """One proposal per unit that can cut `delta_ms`: (proposals, units that cannot).

    `spec` is the spec latency is predicted for; every spec in `also` (e.g. the training
    spec at proxy resolution) must accept the same change, or the width is skipped.
    """
    limit = current_ms - delta_ms
    todo = units(spec, include_last=include_last)
    cursors = {u.space: candidate_widths(u.width) for u in todo}
    found: dict[str, Proposal] = {}
    failed: list[Unit] = []
    prefetch = getattr(predict_ms, "prefetch", None)
    batch = first_batch
    active = list(todo)
    valid_cache: dict[tuple[str, int], ArchSpec | None] = {}

    def candidate(u: Unit, w: int) -> ArchSpec | None:
        key = (u.space, w)
        if key not in valid_cache:
            new = apply(spec, u, w)
            ok = same_structure(spec, new) and all(same_structure(s, apply(s, u, w)) for s in also)
            valid_cache[key] = new if ok else None
        return valid_cache[key]

    while active:
        chunk: dict[str, list[tuple[int, ArchSpec]]] = {}
        for u in active:
            widths = cursors[u.space]
            taken: list[tuple[int, ArchSpec]] = []
            while widths and len(taken) < batch:
                w = widths.pop(0)
                new = candidate(u, w)
                if new is not None:
                    taken.append((w, new))
            chunk[u.space] = taken
        if prefetch is not None:
            prefetch([s for taken in chunk.values() for _, s in taken])
        still = []
        for u in active:
            hit = None
            for w, new in chunk[u.space]:
                lat = float(predict_ms(new))
                if lat <= limit:
                    hit = Proposal(u, w, new, lat)
                    break
            if hit is not None:
                found[u.space] = hit
            elif cursors[u.space]:
                still.append(u)
            else:
                failed.append(u)
        active = still
        batch *= 2
    proposals = [found[u.space] for u in todo if u.space in found]
    failed.sort(key=lambda u: [x.space for x in todo].index(u.space))
    return proposals, failed
