"""A spec's predicted latency as a plain function: `TableLatency(table)(spec) -> ms`.

The one adapter the search and NetAdapt use. Ops missing from the table are measured on the
spot with the table's own protocol and added to it (the table is saved); `prefetch`
measures the missing ops of many specs in one go, so a scan over widths pays the per-pass
overhead once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

from search_space.errors import UserError
from search_space.spec import ArchSpec

PredictFn = Callable[[ArchSpec], float]


class TableLatency:
    """`predict_ms(spec)` from a latency table; callable as `self(spec)`.

    `source`: a loaded `LatencyTable`, or the table file. If the file does not exist and
    `create` is set, a new table is started there with `protocol` (default: the latency
    package's default protocol).
    `measure_missing`: measure ops the table lacks (else: raise UserError naming them).
    `protocol_overrides`: settings that do not change what is measured (e.g.
    `quiet_wait=1.0`), applied when measuring here.
    """

    def __init__(self, source, *, measure_missing: bool = True, create: bool = True,
                 protocol=None, progress: bool = False, log: Callable[[str], None] | None = None,
                 **protocol_overrides) -> None:
        from .table import LatencyTable

        self.measure_missing = measure_missing
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.measured = 0  # ops measured by this object
        if isinstance(source, LatencyTable):
            self.table = source
            self.path = Path(source.path) if source.path is not None else None
        elif Path(source).exists():
            self.path = Path(source)
            self.table = LatencyTable.load(self.path)
        elif create and measure_missing:
            from .build import table_meta
            from .timing import Protocol

            self.path = Path(source)
            self.table = LatencyTable(table_meta(protocol or Protocol()), (), self.path)
            self.log(f"latency table {self.path} does not exist: starting a new one")
        else:
            raise UserError(f"--table {source}: no such latency table")
        self._overrides = {k: v for k, v in protocol_overrides.items() if v is not None}
        self._cache: dict[ArchSpec, float] = {}
        self._refresh()

    # ---- internals ---------------------------------------------------------------------
    def _refresh(self) -> None:
        from .predict import Predictor

        self._pred = Predictor(self.table)

    def protocol(self):
        from .predict import protocol_of

        return protocol_of(self.table, **self._overrides)

    @staticmethod
    def _ops(spec: ArchSpec) -> list:
        from .ops import net_ops

        return net_ops(spec)

    def missing(self, specs: Iterable[ArchSpec]) -> list:
        """Ops (one per key) of `specs` that the table lacks."""
        out: dict[str, object] = {}
        for spec in specs:
            for op in self._ops(spec):
                if op.key not in self.table and op.key not in out:
                    out[op.key] = op
        return list(out.values())

    # ---- API ---------------------------------------------------------------------------
    def prefetch(self, specs: Iterable[ArchSpec]) -> int:
        """Measure the ops of `specs` missing from the table; returns how many were measured."""
        ops = self.missing(specs)
        if not ops:
            return 0
        if not self.measure_missing:
            return 0  # predict_ms will name them
        from .build import build_table

        build_table(ops, self.table, self.protocol(), progress=self.progress)
        self.measured += len(ops)
        self._refresh()
        return len(ops)

    def predict_ms(self, spec: ArchSpec) -> float:
        if spec in self._cache:
            return self._cache[spec]
        total, _, missing = self._pred.raw(spec)
        if missing:
            if not self.measure_missing:
                from .predict import missing_error

                raise missing_error(self.table, spec, missing)
            self.prefetch([spec])
        ms = float(self._pred.predict(spec).ms)
        self._cache[spec] = ms
        return ms

    __call__ = predict_ms

    def fingerprint(self) -> dict:
        """What a trial's latency depends on, to check a resumed search uses the same table."""
        m = self.table.meta
        out = {k: m.get(k) for k in ("precision", "threads", "statistic", "cpu", "runtime_version")}
        if (m.get("runtime") or "onnxruntime") != "onnxruntime":  # studies from before runtimes keep matching
            out["runtime"] = m["runtime"]
        return out

    def describe(self) -> str:
        from .build import describe

        return f"{self.path}: {describe(self.table)}"
