"""NetAdapt's one contact with the latency package: predicted ms of a spec from a table.

Everything NetAdapt needs from `latency` goes through `TableLatency`; if that package's
API changes, only this file changes. Ops missing from the table are measured on the spot
(with the table's own measurement protocol) and added to it; `prefetch` measures the
missing ops of many specs in one go, so a scan over widths pays the per-pass overhead once.
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

    `path`: the table file. If it does not exist and `create` is set, a new table is
    started there with `protocol` (default: the latency package's default protocol).
    `measure_missing`: measure ops the table lacks (else: raise UserError naming them).
    `protocol_overrides`: settings that do not change what is measured (e.g.
    `quiet_wait=1.0`), applied when measuring here.
    """

    def __init__(self, path: str | Path, *, measure_missing: bool = True, create: bool = True,
                 protocol=None, progress: bool = False, log: Callable[[str], None] | None = None,
                 **protocol_overrides) -> None:
        from latency.table import LatencyTable

        self.path = Path(path)
        self.measure_missing = measure_missing
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.measured = 0  # ops measured by this object
        if self.path.exists():
            self.table = LatencyTable.load(self.path)
        elif create and measure_missing:
            from latency.build import table_meta
            from latency.timing import Protocol

            self.table = LatencyTable(table_meta(protocol or Protocol()), (), self.path)
            self.log(f"latency table {self.path} does not exist: starting a new one")
        else:
            raise UserError(f"--table {self.path}: no such latency table")
        self._overrides = {k: v for k, v in protocol_overrides.items() if v is not None}
        self._cache: dict[ArchSpec, float] = {}
        self._refresh()

    # ---- internals ---------------------------------------------------------------------
    def _refresh(self) -> None:
        from latency.predict import Predictor

        self._pred = Predictor(self.table)

    def protocol(self):
        from latency.predict import protocol_of

        return protocol_of(self.table, **self._overrides)

    @staticmethod
    def _ops(spec: ArchSpec) -> list:
        from latency.ops import net_ops

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
        from latency.build import build_table

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
                from latency.predict import missing_error

                raise missing_error(self.table, spec, missing)
            self.prefetch([spec])
        ms = float(self._pred.predict(spec).ms)
        self._cache[spec] = ms
        return ms

    __call__ = predict_ms

    def describe(self) -> str:
        from latency.build import describe

        return f"{self.path}: {describe(self.table)}"


def predict_ms_from_table(path: str | Path, **kwargs) -> TableLatency:
    """A `predict_ms(spec) -> float` for NetAdapt, backed by the table at `path`."""
    return TableLatency(path, **kwargs)
