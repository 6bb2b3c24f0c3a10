"""Build (or extend) a latency table: export every op alone, time it, add its row.

Passes: every op is timed `protocol.passes` times, pass after pass over all ops in a fresh
random order each pass, so that the machine's drift over minutes hits all ops alike; the
row keeps its best pass. The table is saved atomically every `flush_s` seconds and when the
build stops for any reason (Ctrl-C, an error, SIGTERM via the CLI), so an interrupted build
keeps every measured pass; building again measures only the passes that are missing.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from . import export as _export
from search_space.errors import UserError

from .table import LatencyTable
from .timing import Protocol, Timer, machine_info, measuring, now_iso


def table_meta(protocol: Protocol, precision: str = "float32", **extra) -> dict:
    """Metadata for a new table measured here with `protocol`."""
    info = machine_info(protocol.runtime)
    meta = {
        "precision": precision,
        "statistic": protocol.statistic,
        "threads": protocol.threads,
        "runs": protocol.runs,
        "warmup": protocol.warmup,
        "passes": protocol.passes,
        "settle": protocol.settle,
        "max_passes": protocol.max_passes,
        "pin": protocol.pin,
        "priority": protocol.priority,
        "quiet_load": protocol.quiet_load,
        "quiet_wait": protocol.quiet_wait,
        "runtime": info["runtime"],
        "runtime_version": info["runtime_version"],
        "cpu": info["cpu"],
        "cpu_count": info["cpu_count"],
        "hostname": info["hostname"],
        "platform": info["platform"],
        "exporter": exporter_name(protocol.runtime),
        "created": now_iso(),
        "spaces": [],
        "calibration": None,
    }
    if precision == "int8" and protocol.runtime == "litert":
        from .litert import QUANTIZATION

        meta["quantization"] = QUANTIZATION
    elif precision == "int8":
        meta["quantization"] = "onnxruntime quantize_static QDQ per-channel, act QUInt8, weight QInt8, MinMax"
    meta.update(extra)
    return meta


def exporter_name(runtime: str = "onnxruntime") -> str:
    """How models reach the runtime (a table records it; its ops were all made this way)."""
    if runtime == "litert":
        from .litert import converter_version

        return f"torch {_torch_version()} {converter_version()} NHWC I/O"
    return f"torch {_torch_version()} torchscript opset {_export.OPSET}"


def _torch_version() -> str:
    import torch

    return torch.__version__


@dataclass
class BuildReport:
    ops: int = 0  # ops asked for
    new_ops: int = 0  # ops that had no row before
    measured: int = 0  # op-passes measured now
    export_s: float = 0.0
    timing_s: float = 0.0
    interrupted: bool = False
    keys: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.ops} ops ({self.new_ops} new), {self.measured} op-passes measured; "
                f"export {self.export_s:.1f} s, timing {self.timing_s:.1f} s")


def check_runtime(runtime: str, precision: str) -> None:
    if precision not in ("float32", "int8"):
        raise UserError(f"precision {precision!r}: expected float32 or int8")


def op_model(op, precision: str = "float32", workdir=None, calib_data=None, runtime: str = "onnxruntime") -> bytes:
    """The model an op is timed as: exported alone (ONNX, or .tflite for LiteRT), quantized
    for an int8 table."""
    check_runtime(runtime, precision)
    if runtime == "litert":
        from .litert import convert_op

        return convert_op(op, precision=precision)
    data = _export.export_op(op)
    if precision == "int8":
        from .quantize import quantize_model

        data = quantize_model(data, op.input_shapes, workdir=workdir)
    return data


class _Progress:
    """A rich progress bar with ETA on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                               console=Console(stderr=True), transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int):
        return self._p.add_task(description, total=total) if self._p else None

    def set_total(self, task, total: int):
        if self._p is not None and task is not None:
            self._p.update(task, total=total)

    def advance(self, task, n: int = 1, description: str | None = None):
        if self._p is not None and task is not None:
            if description:
                self._p.update(task, description=description)
            self._p.advance(task, n)


def build_table(ops: Sequence, table: LatencyTable, protocol: Protocol, *, progress: bool = True,
                on_row: Callable[[str, int, dict], None] | None = None, flush_s: float = 2.0,
                seed: int = 0, workdir=None) -> BuildReport:
    """Measure what `table` lacks of `ops` (up to protocol.passes passes each) and save it.

    `on_row(key, pass_index, row)` is called after each measured op-pass (after the row is
    in the table); raising from it stops the build the way Ctrl-C would.
    """
    precision = table.precision
    if len(table) and not table.meta.get("runtime"):
        table.meta["runtime"] = "onnxruntime"  # tables from before LiteRT
    table.check_compatible({"threads": protocol.threads, "runs": protocol.runs, "warmup": protocol.warmup,
                            "statistic": protocol.statistic, "runtime": protocol.runtime})
    report = BuildReport(ops=len(ops))
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, op)

    def values(k):
        r = table._rows.get(k)
        return json.loads(r["pass_ms"]) if r else []

    need = [k for k in by_key if protocol.wants_more(values(k))]
    report.new_ops = sum(1 for k in by_key if k not in table)
    report.keys = list(need)
    table.meta["passes"] = max(int(table.meta.get("passes") or 0), protocol.passes)
    for k in ("settle", "max_passes"):
        table.meta[k] = getattr(protocol, k)
    if not need:
        if table.path is not None and not table.path.exists():
            table.save()
        return report
    timer = Timer(protocol, seed=seed)
    last_flush = time.monotonic()
    rng = random.Random(seed)
    try:
        with _Progress(progress) as bar, tempfile.TemporaryDirectory(prefix="lat-build-", dir=workdir) as tmp:
            t0 = time.monotonic()
            task = bar.task(f"export {precision}", len(need))
            for key in need:
                timer.add(key, op_model(by_key[key], precision, workdir=tmp, runtime=protocol.runtime),
                          {f"in{i}": list(s) for i, s in enumerate(by_key[key].input_shapes)})
                bar.advance(task)
            report.export_s = time.monotonic() - t0
            t1 = time.monotonic()
            total = sum(max(0, protocol.passes - table.passes(k)) for k in need)
            task = bar.task("time ops", total)
            with measuring(protocol) as state:
                table.meta["priority_in_effect"] = state["priority"]
                for p in range(protocol.pass_cap):
                    todo = [k for k in need if table.passes(k) <= p and protocol.wants_more(values(k))]
                    if not todo:
                        continue
                    if p >= protocol.passes:
                        total += len(todo)
                        bar.set_total(task, total)
                    rng.shuffle(todo)
                    timer.wait_quiet()
                    label = f"pass {p + 1}/{protocol.passes}" if p < protocol.passes else f"settling pass {p + 1}"
                    for key in todo:
                        stats = timer.measure(key)
                        op = by_key[key]
                        row = table.add_pass(key, op.kind, op.input_shapes, stats, protocol.column, now_iso())
                        report.measured += 1
                        bar.advance(task, description=f"time ops ({label})")
                        if on_row is not None:
                            on_row(key, p, row)
                        if table.path is not None and time.monotonic() - last_flush >= flush_s:
                            table.save()
                            last_flush = time.monotonic()
            report.timing_s = time.monotonic() - t1
    except BaseException:
        report.interrupted = True
        raise
    finally:
        if table.path is not None:
            table.save()
    return report


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises KeyboardInterrupt, so the build's cleanup saves the table."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def describe(table: LatencyTable) -> str:
    m = table.meta
    return (f"{len(table)} ops, {m.get('precision')}, {m.get('threads')} thread(s), statistic {m.get('statistic')}, "
            f"{m.get('runs')} runs x {m.get('passes')} passes, {m.get('runtime')} {m.get('runtime_version')}, "
            f"{m.get('cpu')}")


def _eprint(*a):
    print(*a, file=sys.stderr)


def ops_for(specs: Iterable) -> list:
    from .ops import enumerate_ops

    return enumerate_ops(specs)
