"""How well does a table predict end-to-end latency? Sample nets, measure them, compare.

Protocol (see latency.e2e): every net is exported and timed end to end in `rounds` short
interleaved rounds (a few runs each, fresh random order per round), then settling rounds for
the nets whose two best rounds still disagree; a reference net is timed every `ref_every`
nets; a net's measured latency is its best round. The measuring thread is pinned to one core at
real-time priority where permitted. The machine's speed now relative to calibration time
(see `machine_speed`: the calibration nets measured again, else the reference net) scales
the predictions before comparing (the uncorrected error is reported too). Calibration nets
measured here are scored by leave-one-out and kept out of the held-out figures. The measurement's own
run-to-run variation is reported from the same run: best of even rounds vs best of odd
rounds per net. If the error is not far above that noise, the table is as good as the
measurement can tell.

Outputs: a per-net CSV, a JSON summary, a predicted-vs-measured PNG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .e2e import measure_nets
from .ops import net_ops
from .predict import Predictor, apply_calibration, loo_coefficients, net_params_m
from .table import LatencyTable
from .timing import DEFAULT_ROUNDS, Protocol


# What a validation run records about itself (beside the per-net rows), for `score`.
RUN_KEYS = ("table", "precision", "threads", "statistic", "runs", "rounds", "cpu", "runtime", "runtime_version",
            "drift", "priority")


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties), without scipy."""
    a, b = pd.Series(np.asarray(a, float)), pd.Series(np.asarray(b, float))
    if len(a) < 2:
        return float("nan")
    ra, rb = a.rank().to_numpy(), b.rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def machine_speed(cal: dict, reference, drift_now: dict, measured_now: dict[str, float] | None = None,
                  net_runs: int | None = None) -> dict:
    """How fast the machine runs now relative to when the table was calibrated. Predictions
    are scaled by this factor before they are compared, so the error reported is the
    table's, not the drift's.

    Preferred: the calibration nets measured again now (the median of now / then over them;
    with the zoo's nets as calibration anchors, 11 nets). Fallback: the reference net (median
    of its measurements then and now). One net is a noisy speed gauge here: in a validation
    run on the `large` space the reference net said 0.2% slower while the calibration nets
    said 2.2% slower, and scaling by the latter removed a -3% offset from every error.

    Only nets timed the same way compare: a calibration measured with other end-to-end rounds
    (`net_runs`; none recorded = the earlier few long rounds) gives no correction."""
    if net_runs is not None and (cal or {}).get("records") and (cal or {}).get("net_runs") != net_runs:
        return {"factor": 1.0, "corrected": False,
                "why": f"calibrated with other end-to-end rounds ({(cal or {}).get('net_runs') or 'long'} runs per round, "
                       f"validated with {net_runs})"}
    ref = (cal or {}).get("reference")
    now = (drift_now or {}).get("reference_median_ms")
    ref_factor = None
    if ref and now is not None and reference is not None and ref.get("spec") == reference.to_dict():
        ref_factor = float(now / ref["median_ms"])
    then = {r["name"]: r["measured_ms"] for r in (cal or {}).get("records", []) if r.get("measured_ms")}
    common = [n for n in then if n in (measured_now or {}) and math.isfinite(measured_now[n])]
    if len(common) >= 3:
        ratios = [measured_now[n] / then[n] for n in common]
        return {"factor": float(np.median(ratios)), "corrected": True, "method": "calibration nets",
                "nets": len(common), "ratio_spread_p10_p90": [float(np.percentile(ratios, 10)),
                                                               float(np.percentile(ratios, 90))],
                "reference_factor": ref_factor}
    if ref_factor is None:
        return {"factor": 1.0, "corrected": False,
                "why": "no reference measurement stored with the calibration" if not ref else "other reference net"}
    return {"factor": ref_factor, "corrected": True, "method": "reference net", "reference": ref["name"],
            "reference_then_ms": ref["median_ms"], "reference_now_ms": float(now), "reference_factor": ref_factor}


def error_summary(err: np.ndarray) -> dict:
    a = np.abs(np.asarray(err, float))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {}
    return {
        "median_abs": float(np.median(a)),
        "p90_abs": float(np.percentile(a, 90)),
        "max_abs": float(a.max()),
        "mean_signed": float(np.mean(np.asarray(err, float)[np.isfinite(err)])),
        "n": int(a.size),
        "within_5": float(np.mean(a <= 0.05)),
        "within_10": float(np.mean(a <= 0.10)),
    }


@dataclass
class ValidationReport:
    nets: pd.DataFrame
    summary: dict

    def lines(self) -> list[str]:
        s = self.summary
        e, raw, noise, u = s["error"], s["raw_sum_error"], s["noise"], s["error_uncorrected"]
        sp = s["machine_speed"]
        return [
            f"nets {s['n_nets']} ({s['n_sampled']} sampled, {s['n_zoo']} zoo); precision {s['precision']}; "
            f"{s['rounds']} rounds (median {s['rounds_per_net']['median']:.0f} per net with settling); "
            f"calibration {s['calibration_model']}; priority {s['priority']}",
            f"error (calibrated): median {e['median_abs']:.1%}, p90 {e['p90_abs']:.1%}, max {e['max_abs']:.1%}, "
            f"within 5% {e['within_5']:.0%}, within 10% {e['within_10']:.0%}, Spearman {s['spearman']:.3f}"
            + (f" (machine speed vs calibration {sp['factor']:.3f} from the {sp.get('method', 'reference net')}; uncorrected: median "
               f"{u['median_abs']:.1%}, within 5% {u['within_5']:.0%}, within 10% {u['within_10']:.0%})"
               if sp["corrected"] else f" (no speed correction: {sp.get('why', '')})"),
            f"error (plain sum):  median {raw['median_abs']:.1%}, p90 {raw['p90_abs']:.1%}, "
            f"within 10% {raw['within_10']:.0%}, sum/measured median {s['raw_sum_ratio_median']:.3f}",
            f"measurement noise (even vs odd rounds): median {noise['median_abs']:.1%}, p90 {noise['p90_abs']:.1%}; "
            f"reference net drift over the run: {s['drift'].get('reference_spread', float('nan')):.1%} "
            f"(best per round: {s['drift'].get('reference_round_spread', float('nan')):.1%})",
        ] + self._loo_lines()

    def _loo_lines(self) -> list[str]:
        e = self.summary.get("error_calibration_nets_loo") or {}
        by_net = self.summary.get("error_calibration_nets_loo_by_net") or {}
        if not e:
            return []
        worst = max(by_net, key=lambda k: abs(by_net[k]))
        z = self.summary.get("error_zoo_loo") or {}
        zoo = (f" (zoo nets: within 5% {z['within_5']:.0%}, within 10% {z['within_10']:.0%})"
               if z and len(by_net) > z.get("n", 0) else "")
        return [f"calibration nets ({len(by_net)}), each predicted by a fit without it: median {e['median_abs']:.1%}, "
                f"within 5% {e['within_5']:.0%}, within 10% {e['within_10']:.0%}; worst {worst} {by_net[worst]:+.1%}"
                + zoo]


def validate(table: LatencyTable, specs: Sequence, sources: Sequence[str], protocol: Protocol, rounds: int = DEFAULT_ROUNDS,
             reference=None, ref_every: int = 10, progress: bool = True, seed: int = 0, out_dir=None,
             prefix: str = "latency_validation", calib_data=None, measure_missing: bool = True) -> ValidationReport:
    """Measure `specs` end to end and compare with the table's predictions."""
    from .build import build_table

    if measure_missing:
        ops = {op.key: op for s in specs for op in net_ops(s)}
        miss = table.missing(ops)
        if miss:
            build_table([ops[k] for k in miss], table, protocol, progress=progress, seed=seed)
    pred = Predictor(table)
    preds = [pred.predict(s) for s in specs]
    times = measure_nets(specs, protocol, rounds, reference=reference, ref_every=ref_every,
                         precision=table.precision, progress=progress, seed=seed, calib_data=calib_data)
    summ = times.summary()
    cal = table.calibration or {}
    cal_names = {r["name"] for r in cal.get("records", [])}
    loo = loo_coefficients(cal)
    rows = []
    for name, spec, src, p in zip(times.names, specs, sources, preds):
        m = summ.loc[name]
        params = net_params_m(spec)
        # A calibration net is scored with the calibration refitted without it (leave-one-out).
        loo_ms = apply_calibration({**cal, "coef": loo[name]}, p.sum_ms, p.n_ops, params) if name in loo else math.nan
        rows.append({
            "net": name, "source": src, "in_calibration": name in cal_names, "n_ops": p.n_ops,
            "params_m": params, "loo_predicted_ms": loo_ms,
            "predicted_ms": p.ms, "raw_sum_ms": p.sum_ms, "measured_ms": float(m["measured_ms"]),
            "rounds": int(m["rounds"]),
            "half_a_ms": float(m["half_a_ms"]), "half_b_ms": float(m["half_b_ms"]), "noise": float(m["noise"]),
            "round_median_ms": float(m["round_median_ms"]), "other_load": float(m["other_load"]),
        })
    run = {"table": str(table.path) if table.path else None,
           "precision": table.precision, "threads": protocol.threads, "statistic": protocol.statistic,
           "runs": protocol.net_runs, "rounds": rounds, "cpu": table.meta.get("cpu"),
           "runtime": table.meta.get("runtime") or "onnxruntime", "runtime_version": table.meta.get("runtime_version"),
           "drift": times.drift(), "priority": times.priority}
    report = score(pd.DataFrame(rows), cal, reference, run)
    if out_dir is not None:
        write_outputs(report, times, Path(out_dir), prefix)
    return report


def score(df: pd.DataFrame, cal: dict, reference, run: dict) -> ValidationReport:
    """Errors and their summary from a validation's measurements (also to rescore a saved CSV
    after a change to the calibration or the speed correction, without measuring again)."""
    df = df.copy()
    run = {k: run.get(k) for k in RUN_KEYS}
    measured = dict(zip(df["net"], df["measured_ms"]))
    speed = machine_speed(cal, reference, run.get("drift") or {}, measured, run.get("runs"))
    f = speed["factor"]
    df["error"] = df["predicted_ms"] * f / df["measured_ms"] - 1.0
    df["error_uncorrected"] = df["predicted_ms"] / df["measured_ms"] - 1.0
    df["raw_error"] = df["raw_sum_ms"] / df["measured_ms"] - 1.0
    df["loo_error"] = df["loo_predicted_ms"] * f / df["measured_ms"] - 1.0
    held = df[~df["in_calibration"].astype(bool)] if df["in_calibration"].astype(bool).any() else df
    calib = df[df["in_calibration"].astype(bool)]
    summary = {
        **{k: v for k, v in run.items() if k != "drift"},
        "calibration_model": (cal or {}).get("model", "none"),
        "calibration_nets": (cal or {}).get("nets", 0),
        "n_nets": int(len(held)), "n_sampled": int((held["source"] == "sample").sum()),
        "n_zoo": int((held["source"] == "zoo").sum()),
        "excluded_in_calibration": int(len(calib)),
        "machine_speed": speed,
        "error": error_summary(held["error"]), "error_uncorrected": error_summary(held["error_uncorrected"]),
        "raw_sum_error": error_summary(held["raw_error"]),
        "error_sampled": error_summary(held.loc[held["source"] == "sample", "error"]),
        "error_zoo": error_summary(held.loc[held["source"] == "zoo", "error"]),
        # Calibration nets measured again here, each predicted by a fit that left it out.
        "error_calibration_nets_loo": error_summary(calib["loo_error"].dropna()),
        "error_calibration_nets_loo_by_net": {r.net: float(r.loo_error) for r in calib.itertuples()
                                              if math.isfinite(r.loo_error)},
        "error_zoo_loo": error_summary(calib.loc[calib["source"] == "zoo", "loo_error"].dropna()),
        "spearman": spearman(held["predicted_ms"], held["measured_ms"]),
        "spearman_raw_sum": spearman(held["raw_sum_ms"], held["measured_ms"]),
        "raw_sum_ratio_median": float(np.median(held["raw_sum_ms"] / held["measured_ms"])),
        "noise": error_summary(held["noise"].dropna()),
        "drift": run.get("drift") or {},
        "measured_ms_range": [float(held["measured_ms"].min()), float(held["measured_ms"].max())],
        "rounds_per_net": {"median": float(held["rounds"].median()), "max": int(held["rounds"].max())},
        "other_load_mean": float(held["other_load"].mean()),
    }
    return ValidationReport(df, summary)


def write_outputs(report: ValidationReport, times, out_dir: Path, prefix: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{prefix}.csv", "json": out_dir / f"{prefix}.json", "png": out_dir / f"{prefix}.png",
             "rounds": out_dir / f"{prefix}_rounds.parquet", "reference": out_dir / f"{prefix}_reference.csv"}
    report.nets.to_csv(paths["csv"], index=False)
    times.rounds.to_parquet(paths["rounds"], index=False)  # ~100 rounds per net: too many rows for a CSV
    times.reference.to_csv(paths["reference"], index=False)
    paths["json"].write_text(json.dumps(_clean(report.summary), indent=1) + "\n")
    plot(report, paths["png"])
    return paths


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def plot(report: ValidationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df, s = report.nets, report.summary
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    ax = axes[0]
    lo = min(df["measured_ms"].min(), df["predicted_ms"].min(), df["raw_sum_ms"].min()) * 0.9
    hi = max(df["measured_ms"].max(), df["predicted_ms"].max()) * 1.1
    xs = np.linspace(lo, hi, 10)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="±10%")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="0.8", label="±5%")
    ax.plot(xs, xs, "k-", lw=0.8)
    for src, marker in (("sample", "o"), ("zoo", "s")):
        d = df[df["source"] == src]
        ax.scatter(d["measured_ms"], d["raw_sum_ms"], s=12, marker=marker, facecolors="none", edgecolors="tab:red",
                   alpha=0.6, label=f"plain sum ({src})")
        ax.scatter(d["measured_ms"], d["predicted_ms"], s=16, marker=marker, color="tab:blue",
                   label=f"calibrated ({src})")
    for _, r in df[df["source"] == "zoo"].iterrows():
        ax.annotate(r["net"], (r["measured_ms"], r["predicted_ms"]), fontsize=6, alpha=0.7)
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo <= t <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted from table (ms)")
    e = s["error"]
    ax.set_title(f"{s['precision']}, {s['threads']} thread(s): median |err| {e['median_abs']:.1%}, "
                 f"p90 {e['p90_abs']:.1%}, Spearman {s['spearman']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    bins = np.linspace(-0.2, 0.2, 41)
    ax.hist(np.clip(df["error"], -0.2, 0.2), bins=bins, alpha=0.7, label="table error (calibrated)")
    ax.hist(np.clip(df["noise"].dropna(), -0.2, 0.2), bins=bins, alpha=0.5, label="measurement noise (even vs odd rounds)")
    ax.set_xlabel("relative error")
    ax.set_ylabel("nets")
    ax.legend(fontsize=7)
    ax.set_title(f"within ±5%: {e['within_5']:.0%}, ±10%: {e['within_10']:.0%}; "
                 f"noise median {s['noise'].get('median_abs', float('nan')):.1%}", fontsize=9)
    fig.suptitle(f"{s['cpu']}, {s.get('runtime') or 'onnxruntime'} {s['runtime_version']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
