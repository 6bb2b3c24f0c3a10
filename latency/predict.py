"""Predict a net's latency from the table: calibrated sum of its ops.

A plain sum of per-op times misses the end-to-end time, and the gap has causes that can be
named. Profiling whole nets node by node (experiments/latency_in_net.py) showed most of it
in ops with many weights: MobileNetV3-Large's pooled head (3.4M weights) takes 0.16 ms
measured alone, where its weights stay in cache from one run to the next, and 0.42 ms inside
the net, where the rest of the net has evicted them; its last 7x7 SE blocks run 13% slower
inside. In the other direction, early activation-bound blocks run faster inside the net,
and every op timed alone pays one session call's overhead that a net pays once.
So the table carries a calibration fitted against end-to-end measurements of a few
calibration nets (measured with the same protocol as the table):

  none     y = S                       (no calibration)
  scale    y = a*S
  affine   y = a*S + c
  ops      y = a*S + b*n               (n = number of ops: a per-op overhead)
  params   y = a*S + c + d*P           (P = the net's weights in millions: streamed from memory)
  ops+params  y = a*S + b*n + d*P

S is the sum of the net's op times. Each is fitted by least squares on relative error;
`auto` picks the one with the smallest mean leave-one-out error, and among models within 5%
of that, the one with fewest coefficients (a few calibration nets measured on a noisy
machine make an extra coefficient an extrapolation risk). A model needs at least three
calibration nets per coefficient to be a candidate. Which model and how many nets: see
experiments/latency_validation.py's calibration curves (held-out error vs K per model).
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
from .timing import DEFAULT_ROUNDS, Protocol, now_iso

MODELS = {"none": (), "scale": ("sum",), "affine": ("sum", "one"), "ops": ("sum", "n_ops"),
          "params": ("sum", "one", "params_m"), "ops+params": ("sum", "n_ops", "params_m")}
PARSIMONY = 1.05  # a model with more coefficients must beat a simpler one's LOO error by 5%


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


def net_params_m(spec) -> float:
    """The net's weights in millions (analytic count, no model built)."""
    from search_space.counting import count_params

    return count_params(spec) / 1e6


def _features(feats: dict, model: str) -> np.ndarray:
    s = np.atleast_1d(np.asarray(feats["sum_ms"], float))
    cols = {"sum": lambda: s, "one": lambda: np.ones_like(s),
            "n_ops": lambda: np.atleast_1d(np.asarray(feats["n_ops"], float)),
            "params_m": lambda: np.atleast_1d(np.asarray(feats["params_m"], float))}
    terms = MODELS[model]
    return np.stack([cols[c]() for c in terms], axis=1) if terms else np.zeros((len(s), 0))


def _take(feats: dict, idx) -> dict:
    return {k: np.asarray(v)[idx] for k, v in feats.items()}


def _fit(feats: dict, y: np.ndarray, model: str) -> np.ndarray:
    if model == "none":
        return np.zeros(0)
    X = _features(feats, model) / y[:, None]
    coef, *_ = np.linalg.lstsq(X, np.ones_like(y), rcond=None)
    return coef


def _apply(coef, feats: dict, model: str) -> np.ndarray:
    if model == "none":
        return np.atleast_1d(np.asarray(feats["sum_ms"], dtype=float))
    return _features(feats, model) @ np.asarray(coef)


def _loo_fits(feats: dict, y: np.ndarray, model: str) -> list[np.ndarray]:
    """The model's coefficients refitted once without each net in turn."""
    return [_fit(_take(feats, np.arange(len(y)) != i), y[np.arange(len(y)) != i], model) for i in range(len(y))]


def loo_errors(feats: dict, y, model: str) -> np.ndarray:
    """Leave-one-out relative errors of a calibration model."""
    y = np.asarray(y, float)
    return np.array([_apply(coef, _take(feats, [i]), model)[0] / y[i] - 1.0
                     for i, coef in enumerate(_loo_fits(feats, y, model))])


def record_features(records: Sequence[dict]) -> dict:
    """Feature arrays of calibration records; the weight count is filled in from the spec
    where a record lacks it (records written before it was a feature)."""
    from search_space import ArchSpec

    for r in records:
        if r.get("params_m") is None and r.get("spec"):
            r["params_m"] = net_params_m(ArchSpec.from_dict(r["spec"]))
    out = {"sum_ms": np.array([r["sum_ms"] for r in records], float),
           "n_ops": np.array([r["n_ops"] for r in records], float)}
    if all(r.get("params_m") is not None for r in records):
        out["params_m"] = np.array([r["params_m"] for r in records], float)
    return out


def uses_params(cal: dict | None) -> bool:
    return bool(cal) and "params_m" in MODELS.get(cal.get("model", "none"), ())


def fit_calibration(records: Sequence[dict], model: str = "auto") -> dict:
    """Fit a calibration from records with sum_ms, n_ops, measured_ms (and spec or params_m)."""
    if model != "auto" and model not in MODELS:
        raise UserError(f"--calibration-model {model!r}: expected auto or one of {', '.join(MODELS)}")
    feats = record_features(records)
    y = np.array([r["measured_ms"] for r in records], float)
    s = feats["sum_ms"]
    if len(y) == 0:
        return {"model": "none", "coef": [], "nets": 0}
    known = [m for m in MODELS if all(t in ("sum", "one") or t in feats for t in MODELS[m])]
    if model != "auto" and model not in known:
        raise UserError(f"--calibration-model {model!r}: the calibration records lack the nets' specs")
    candidates = [model] if model != "auto" else \
        [m for m in known if m in ("none", "scale") or 3 * len(MODELS[m]) <= len(y)]
    loo = {}
    for m in candidates:
        if len(y) > max(1, len(MODELS[m])):
            e = loo_errors(feats, y, m)
            loo[m] = {"median_abs": float(np.median(np.abs(e))), "mean_abs": float(np.mean(np.abs(e))),
                      "p90_abs": float(np.percentile(np.abs(e), 90))}
    if model == "auto":
        if loo:
            best = min(loo[m]["mean_abs"] for m in loo)
            chosen = min((m for m in loo if loo[m]["mean_abs"] <= best * PARSIMONY), key=lambda m: len(MODELS[m]))
        else:
            chosen = "scale"
    else:
        chosen = model
    coef = _fit(feats, y, chosen)
    resid = _apply(coef, feats, chosen) / y - 1.0
    return {
        "model": chosen,
        "coef": [float(c) for c in coef],
        "terms": list(MODELS[chosen]),
        "nets": int(len(y)),
        "fit_median_abs": float(np.median(np.abs(resid))),
        "loo": loo,
        "raw_sum_ratio_median": float(np.median(s / y)),
    }


def loo_coefficients(cal: dict | None) -> dict[str, list[float]]:
    """For each calibration net (by name): the calibration's coefficients refitted without it,
    so a calibration net can still be scored on data its own fit never saw."""
    recs = (cal or {}).get("records") or []
    model = (cal or {}).get("model", "none")
    if model == "none" or len(recs) <= len(MODELS.get(model, ())) + 1:
        return {}
    y = np.array([r["measured_ms"] for r in recs], float)
    fits = _loo_fits(record_features(recs), y, model)
    return {r["name"]: [float(c) for c in coef] for r, coef in zip(recs, fits)}


def apply_calibration(cal: dict | None, sum_ms: float, n_ops: int, params_m: float | None = None) -> float:
    if not cal or cal.get("model", "none") == "none":
        return float(sum_ms)
    if uses_params(cal) and params_m is None:
        raise ValueError(f"calibration model {cal['model']!r} needs the net's weight count")
    feats = {"sum_ms": [sum_ms], "n_ops": [n_ops], "params_m": [params_m if params_m is not None else 0.0]}
    return float(_apply(cal["coef"], feats, cal["model"])[0])


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
        params = net_params_m(spec) if uses_params(self.cal) else None
        return Prediction(apply_calibration(self.cal, total, n, params), total, n, model)

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


def calibrate(table: LatencyTable, specs: Sequence, protocol: Protocol | None = None, rounds: int = DEFAULT_ROUNDS,
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
                        "params_m": net_params_m(spec),
                        "measured_ms": float(r["measured_ms"]), "half_a_ms": _f(r["half_a_ms"]),
                        "half_b_ms": _f(r["half_b_ms"])})
    cal = fit_calibration(records, model)
    drift = times.drift()
    cal.update({"rounds": rounds, "net_runs": protocol.net_runs, "net_warmup": protocol.net_warmup,
                "fitted_at": now_iso(), "records": records, "drift": drift})
    if reference is not None and drift:
        # The machine's speed when the table was calibrated: validation compares against it.
        cal["reference"] = {"name": reference.name, "spec": reference.to_dict(),
                            "median_ms": drift["reference_median_ms"], "best_ms": drift["reference_min_ms"],
                            "samples": drift["reference_samples"]}
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
        spec = ArchSpec.from_dict(r["spec"])
        r["sum_ms"], r["n_ops"], _ = pred.raw(spec)
        r["params_m"] = net_params_m(spec)
    new = fit_calibration(cal["records"], model)
    cal.update(new)
    table.meta["calibration"] = cal
    return cal


def _f(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
