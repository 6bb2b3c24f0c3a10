"""Which ops a table needs: ops of nets, distinct ops of a set of nets, of a search space.

The op itself (key, kind, input shapes, the one-op spec) is `search_space.Op`; this module
only collects them. A "space source" gives a table build its ops and a validation its nets:

- `large`, `small`, `large-nl`, `small-nl` or a space JSON file: `search_space.spaces`
  (exhaustive op enumeration, uniform sampling of points);
- a spec FILE: a JSON spec (or a JSON list of specs), i.e. exactly those nets.
The zoo nets are always added to what a build covers.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Iterable, Sequence

import search_space
from search_space import ArchSpec
from search_space.errors import UserError


def net_ops(spec: ArchSpec) -> list:
    """The ops of a net in execution order; a repeated op appears once per use."""
    # Imported from the submodule (the package exposes it lazily).
    from search_space.latency_ops import ops

    return ops(spec)


def net_keys(spec: ArchSpec) -> list[str]:
    return [op.key for op in net_ops(spec)]


def enumerate_ops(specs: Iterable[ArchSpec]) -> list:
    """Every distinct op (by key) of the specs, in first-seen order."""
    seen: dict[str, object] = {}
    for spec in specs:
        for op in net_ops(spec):
            seen.setdefault(op.key, op)
    return list(seen.values())


def zoo_specs(resolution: int | None = None, names: Sequence[str] | None = None,
              classification_only: bool = False) -> list[ArchSpec]:
    out = []
    for name in names or search_space.ZOO_NAMES:
        spec = search_space.zoo(name)
        if classification_only and spec.seg_head is not None:
            continue
        if resolution and spec.seg_head is None and spec.resolution != resolution:
            spec = dataclasses.replace(spec, resolution=resolution)
        out.append(spec)
    return out


# ---- spaces -------------------------------------------------------------------------------
class FixedSpace:
    """A space that is a fixed list of nets (from a spec file)."""

    def __init__(self, name: str, specs: list[ArchSpec]) -> None:
        self.name, self.specs = name, specs

    def sample_specs(self, n: int, seed: int = 0) -> list[ArchSpec]:
        rng = random.Random(seed)
        return [self.specs[rng.randrange(len(self.specs))] for _ in range(n)] if n > len(self.specs) else \
            rng.sample(self.specs, n)

    def all_ops(self, n: int = 0, seed: int = 0) -> list:
        return enumerate_ops(self.specs)


class SpaceSource:
    """A `search_space.spaces.SearchSpace` at the latency geometry (resolution)."""

    def __init__(self, space, resolution: int | None = None) -> None:
        self.space, self.name = space, space.name
        self.resolution = resolution or space.resolution

    def sample_specs(self, n: int, seed: int = 0) -> list[ArchSpec]:
        rng = random.Random(f"{self.name}:{seed}")
        return [self.space.decode(self.space.sample_params(rng), resolution=self.resolution) for _ in range(n)]

    def all_ops(self, n: int = 0, seed: int = 0) -> list:
        """Every distinct op of the space (exhaustive; `n`, `seed` unused)."""
        return list(self.space.all_ops(resolution=self.resolution))


def reference_for(space, resolution: int | None = None) -> ArchSpec:
    """The reference net of a space: its seed zoo net (mnv3-large for spec files)."""
    seed = getattr(getattr(space, "space", None), "seed_name", "") or "mnv3-large"
    if seed not in search_space.ZOO_NAMES:
        seed = "mnv3-large"
    return zoo_specs(resolution or 224, [seed])[0]


def get_space(name: str, resolution: int | None = None):
    """A space source for `--space large|small|FILE`."""
    path = Path(name)
    if path.suffix.lower() == ".json" or path.exists():
        if _is_spec_file(path):
            return FixedSpace(path.stem, load_specs(path, resolution))
    from search_space import spaces

    try:
        return SpaceSource(spaces.get_space(name), resolution)
    except UserError as exc:
        raise UserError(f"--space {name!r}: {exc}") from None


def _is_spec_file(path: Path) -> bool:
    """A JSON spec (or list of specs), as opposed to a search-space file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # let load_specs report what is wrong
    first = data[0] if isinstance(data, list) and data else data
    return isinstance(data, list) or (isinstance(first, dict) and "rows" in first)


def load_specs(path: str | Path, resolution: int | None = None) -> list[ArchSpec]:
    """One spec, or a JSON list of specs, from a file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a JSON spec file ({exc.__class__.__name__})") from None
    items = data if isinstance(data, list) else [data]
    specs = [ArchSpec.from_dict(d, source=f"{path}[{i}]" if isinstance(data, list) else str(path))
             for i, d in enumerate(items)]
    if not specs:
        raise UserError(f"{path}: an empty list of specs")
    if resolution:
        specs = [dataclasses.replace(s, resolution=resolution) if s.seg_head is None else s for s in specs]
    return specs


def resolve_spec(text: str) -> ArchSpec:
    """A zoo name or a spec JSON file."""
    if text in search_space.ZOO_NAMES:
        return search_space.zoo(text)
    path = Path(text)
    if not path.exists():
        raise UserError(f"{text!r}: neither a zoo net ({', '.join(search_space.ZOO_NAMES)}) nor a spec file")
    specs = load_specs(path)
    if len(specs) != 1:
        raise UserError(f"{path}: holds {len(specs)} specs; give a file with one")
    return specs[0]
