"""This machine's latency table for a search space: found, built, extended and calibrated.

A search, NetAdapt or a check asks `ensure_table(path, space, ...)` for a table covering a
space (and any extra nets) and gets one: ops the table lacks are timed first (one process at
a time per table file, so workers started together wait for the first to build it), and a
new table is calibrated on sampled nets measured end to end.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import random
import sys
from pathlib import Path
from typing import Callable

from search_space import ArchSpec

DEFAULT_CALIBRATION_NETS = 8


def seed_spec(space, resolution: int | None = None) -> ArchSpec:
    """The net the space is built around (for the paper-style diff of the best net)."""
    from search_space import zoo

    spec = zoo(space.seed_name)
    if resolution and spec.resolution != resolution:
        spec = dataclasses.replace(spec, resolution=resolution)
    return spec


def default_table_path() -> Path:
    """This machine's latency table: $MNV3_NAS_TABLE, else ~/.cache/mnv3-nas/latency-table.parquet."""
    env = os.environ.get("MNV3_NAS_TABLE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mnv3-nas" / "latency-table.parquet"


def ensure_table(path: str | Path, space, resolution: int | None = None, extra_specs=(), *,
                 progress: bool = True, calibrate_nets: int = DEFAULT_CALIBRATION_NETS, protocol=None,
                 seed: int = 0, log: Callable[[str], None] | None = None):
    """Open the latency table at `path`, measuring first whatever the space (and `extra_specs`)
    need that it lacks: on a machine without a table, this builds it (progress bar on stderr),
    then fits its calibration on `calibrate_nets` sampled nets measured end to end."""
    from latency.build import build_table, table_meta
    from latency.ops import net_ops
    from latency.predict import calibrate, protocol_of
    from latency.table import LatencyTable
    from latency.timing import Protocol

    log = log or (lambda s: print(s, file=sys.stderr))
    path = Path(path)
    res = resolution or space.resolution
    ops = {op.key: op for op in space.all_ops(resolution=res)}
    for spec in extra_specs:
        for op in net_ops(spec):
            ops.setdefault(op.key, op)

    def open_table():
        existing = LatencyTable.load(path) if path.exists() else None
        proto = protocol or (protocol_of(existing) if existing is not None and len(existing) else Protocol())
        if existing is not None and protocol is not None:
            existing.check_compatible(table_meta(proto, "float32"), path)
        table = existing if existing is not None else LatencyTable.load_or_new(
            path, table_meta(proto, "float32", resolution=res))
        return table, proto

    table, proto = open_table()
    if not table.missing(list(ops), passes=proto.passes) and (table.calibration or not calibrate_nets):
        return _note_space(table, space)
    # measure, one process at a time: workers started together on one machine wait for the
    # first to build the table instead of all timing ops against each other
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".build.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            table, proto = open_table()  # another process may have built it meanwhile
            need = table.missing(list(ops), passes=proto.passes)
            if need:
                what = "building" if not len(table) else "extending"
                log(f"latency table {path}: {what} it with {len(need)} ops of space {space.name} at {res}x{res} "
                    "(once per machine)")
                build_table(list(ops.values()), table, proto, progress=progress, seed=seed)
            if calibrate_nets and not table.calibration:
                rng = random.Random(f"calibration:{seed}")
                specs = [space.decode(space.sample_params(rng), resolution=res, name=f"calib{i}")
                         for i in range(calibrate_nets)]
                log(f"latency table {path}: calibrating on {len(specs)} nets measured end to end")
                calibrate(table, specs, proto, progress=progress, seed=seed, reference=seed_spec(space, res))
            return _note_space(table, space)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _note_space(table, space):
    spaces = sorted(set(table.meta.get("spaces") or []) | {space.name})
    if spaces != table.meta.get("spaces") and table.path is not None:
        table.meta["spaces"] = spaces
        table.save()
    return table


__all__ = ["DEFAULT_CALIBRATION_NETS", "default_table_path", "ensure_table", "seed_spec"]
