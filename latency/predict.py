"""Predict a net's latency from the table: calibrated sum of its ops.

A plain sum of per-op times runs below the end-to-end time (ops inside a whole net find
their weights out of cache, and the net pays the cost of moving between ops), so the table
carries a calibration fitted against end-to-end measurements of a few calibration nets
(measured with the same protocol as the table):

  none    y = S                      (no calibration)
  scale   y = a*S
  affine  y = a*S + c
  ops     y = a*S + b*n              (n = number of ops: a per-op overhead)

S is the sum of the net's op times, n its op count. Each is fitted by least squares on
relative error; `auto` picks the one with the smallest leave-one-out error, and among
models within 15% of that, the one with fewest coefficients (a few calibration nets measured
on a noisy machine make a second coefficient an extrapolation risk: on the small space a
2-coefficient fit on 12 nets did worse on 100 held-out nets than the plain sum).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from search_space.errors import UserError

from .ops import net_ops
from .table import LatencyTable
from .timing import Protocol, now_iso

MODELS = {"none": (), "scale": ("sum",), "affine": ("sum", "one"), "ops": ("sum", "n_ops")}


class MissingOpsError(UserError):
    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass
class Prediction:
    ms: float
    sum_ms: float
    n_ops: int
    model: str
    missing: list[str] = dataclasses.field(default_factory=list)


def _features(sum_ms: np.ndarray, n_ops: np.ndarray, model: str) -> np.ndarray:
    cols = {"sum": sum_ms, "one": np.ones_like(sum_ms), "n_ops": n_ops.astype(float)}
    return np.stack([cols[c] for c in MODELS[model]], axis=1) if MODELS[model] else np.zeros((len(sum_ms), 0))


def _fit(sum_ms: np.ndarray, n_ops: np.ndarray, y: np.ndarray, model: str) -> np.ndarray:
    if model == "none":
        return np.zeros(0)
    X = _features(sum_ms, n_ops, model) / y[:, None]
    coef, *_ = np.linalg.lstsq(X, np.ones_like(y), rcond=None)
    return coef


def _apply(coef, sum_ms, n_ops, model: str):
    if model == "none":
        return np.asarray(sum_ms, dtype=float)
    return _features(np.atleast_1d(np.asarray(sum_ms, float)), np.atleast_1d(np.asarray(n_ops)), model) @ np.asarray(coef)


def loo_errors(sum_ms, n_ops, y, model: str) -> np.ndarray:
    """Leave-one-out relative errors of a calibration model."""
    sum_ms, n_ops, y = map(np.asarray, (sum_ms, n_ops, y))
    errs = np.empty(len(y))
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        coef = _fit(sum_ms[m], n_ops[m], y[m], model)
        errs[i] = _apply(coef, sum_ms[i: i + 1], n_ops[i: i + 1], model)[0] / y[i] - 1.0
    return errs


def fit_calibration(records: Sequence[dict], model: str = "auto") -> dict:
    """Fit a calibration from records with sum_ms, n_ops, measured_ms."""
    if model != "auto" and model not in MODELS:
        raise UserError(f"--calibration-model {model!r}: expected auto or one of {', '.join(MODELS)}")
    s = np.array([r["sum_ms"] for r in records], float)
    n = np.array([r["n_ops"] for r in records], float)
    y = np.array([r["measured_ms"] for r in records], float)
    if len(y) == 0:
        return {"model": "none", "coef": [], "nets": 0}
    candidates = [model] if model != "auto" else [m for m in MODELS if len(MODELS[m]) < max(2, len(y) // 3) or m in ("none", "scale")]
    loo = {}
    for m in candidates:
        if len(y) > max(1, len(MODELS[m])):
            e = loo_errors(s, n, y, m)
            loo[m] = {"median_abs": float(np.median(np.abs(e))), "mean_abs": float(np.mean(np.abs(e))),
                      "p90_abs": float(np.percentile(np.abs(e), 90))}
    if model == "auto":
        if loo:
            best = min(loo[m]["mean_abs"] for m in loo)
            chosen = min((m for m in loo if loo[m]["mean_abs"] <= best * 1.15), key=lambda m: len(MODELS[m]))
        else:
            chosen = "scale"
    else:
        chosen = model
    coef = _fit(s, n, y, chosen)
    resid = _apply(coef, s, n, chosen) / y - 1.0
    return {
        "model": chosen,
        "coef": [float(c) for c in coef],
        "terms": list(MODELS[chosen]),
        "nets": int(len(y)),
        "fit_median_abs": float(np.median(np.abs(resid))),
        "loo": loo,
        "raw_sum_ratio_median": float(np.median(s / y)),
    }


def apply_calibration(cal: dict | None, sum_ms: float, n_ops: int) -> float:
    if not cal or cal.get("model", "none") == "none":
        return float(sum_ms)
    return float(_apply(cal["coef"], [sum_ms], [n_ops], cal["model"])[0])


def fill_command(table: LatencyTable, spec_arg: str = "SPEC") -> str:
    path = table.path or "TABLE"
    return f"nas latency predict {spec_arg} --table {path} --measure-missing"


class Predictor:
    """Fast repeated predictions from one table (a dict lookup per op)."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.lut = table.lookup()
        self.cal = table.calibration

    def raw(self, spec) -> tuple[float, int, list[str]]:
        total, n, missing = 0.0, 0, []
        for op in net_ops(spec):
            v = self.lut.get(op.key)
            n += 1
            if v is None:
                if op.key not in missing:
                    missing.append(op.key)
            else:
                total += v
        return total, n, missing

    def predict(self, spec, spec_arg: str | None = None) -> Prediction:
        total, n, missing = self.raw(spec)
        if missing:
            raise missing_error(self.table, spec, missing, spec_arg)
        model = (self.cal or {}).get("model", "none")
        return Prediction(apply_calibration(self.cal, total, n), total, n, model)

    def __call__(self, spec) -> float:
        return self.predict(spec).ms


def missing_error(table: LatencyTable, spec, missing: list[str], spec_arg: str | None = None) -> MissingOpsError:
    shown = "; ".join(missing[:3]) + (f"; ... ({len(missing) - 3} more)" if len(missing) > 3 else "")
    return MissingOpsError(
        f"{len(missing)} op(s) of {spec.name} missing from {table.path or 'the table'}: {shown}; "
        f"measure them with `{fill_command(table, spec_arg or spec.name)}`", missing)


def predict(spec, table: LatencyTable, measure_missing: bool = False, protocol: Protocol | None = None,
            progress: bool = False, spec_arg: str | None = None) -> Prediction:
    """Predicted latency (ms) of `spec`; missing ops raise, or are measured and added."""
    pred = Predictor(table)
    total, n, missing = pred.raw(spec)
    if missing and measure_missing:
        from .build import build_table

        protocol = protocol or protocol_of(table)
        build_table([op for op in net_ops(spec) if op.key in set(missing)], table, protocol, progress=progress)
        pred = Predictor(table)
    return pred.predict(spec, spec_arg)


def protocol_of(table: LatencyTable, **overrides) -> Protocol:
    """The protocol a table was measured with (to extend it the same way)."""
    m = table.meta
    kw = {f.name: m[f.name] for f in dataclasses.fields(Protocol) if m.get(f.name) is not None}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return Protocol(**kw)


def calibrate(table: LatencyTable, specs: Sequence, protocol: Protocol | None = None, rounds: int = 4,
              model: str = "auto", progress: bool = True, seed: int = 0, reference=None,
              calib_data=None) -> dict:
    """Measure `specs` end to end, fit the table's calibration, store it in the table."""
    from .build import build_table
    from .e2e import measure_nets

    protocol = protocol or protocol_of(table)
    ops = {op.key: op for s in specs for op in net_ops(s)}
    if table.missing(ops):
        build_table(list(ops.values()), table, protocol, progress=progress, seed=seed)
    times = measure_nets(specs, protocol, rounds, reference=reference, precision=table.precision,
                         progress=progress, seed=seed, calib_data=calib_data)
    summ = times.summary()
    pred = Predictor(table)
    records = []
    for name, spec in zip(times.names, specs):
        total, n, missing = pred.raw(spec)
        r = summ.loc[name]
        records.append({"name": name, "spec": spec.to_dict(), "sum_ms": total, "n_ops": n,
                        "measured_ms": float(r["measured_ms"]), "half_a_ms": _f(r["half_a_ms"]),
                        "half_b_ms": _f(r["half_b_ms"])})
    cal = fit_calibration(records, model)
    drift = times.drift()
    cal.update({"rounds": rounds, "fitted_at": now_iso(), "records": records, "drift": drift})
    if reference is not None and drift:
        # The machine's speed when the table was calibrated: validation compares against it.
        cal["reference"] = {"name": reference.name, "spec": reference.to_dict(),
                            "median_ms": drift["reference_median_ms"], "samples": drift["reference_samples"]}
    table.meta["calibration"] = cal
    if table.path is not None:
        table.save()
    return cal


def refit(table: LatencyTable, model: str = "auto") -> dict:
    """Refit the stored calibration records against the table's current op times."""
    cal = table.calibration
    if not cal or not cal.get("records"):
        raise UserError(f"{table.path}: table has no calibration records; run `nas latency build ... --calibrate K`")
    from search_space import ArchSpec

    pred = Predictor(table)
    for r in cal["records"]:
        r["sum_ms"], r["n_ops"], _ = pred.raw(ArchSpec.from_dict(r["spec"]))
    new = fit_calibration(cal["records"], model)
    cal.update(new)
    table.meta["calibration"] = cal
    return cal


def _f(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
