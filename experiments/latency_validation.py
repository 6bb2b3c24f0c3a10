"""Latency table benchmark: build, calibrate, validate; the README's latency figures.

For each space: build (or reuse) the table of every distinct op of the space and the zoo,
fit its calibration on K sampled nets plus the zoo's nets (anchors outside the space)
measured end to end, then validate on N other sampled nets, held out, and on the zoo nets
measured again, each predicted by the calibration refitted without it (leave-one-out);
interleaved rounds, a reference net, even-vs-odd-round noise. From the validation
measurements it also draws the calibration learning curve
(error on held-out nets vs number of calibration nets, per calibration model), which is
how the default model and K were chosen.

    python experiments/latency_validation.py [--spaces large small] [--samples 100] [--int8] [--runtime litert]

Writes experiments/results/latency_validation[_<space>][_int8|_litert].{csv,json,png} and
latency_calibration_curve[...].{json,png}; tables go to runs/latency/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import search_space  # noqa: E402
from search_space import ArchSpec  # noqa: E402
from latency.build import build_table, describe, table_meta  # noqa: E402
from latency.ops import enumerate_ops, get_space, reference_for, zoo_specs  # noqa: E402
from latency.predict import MODELS, _apply, _fit, _take, calibrate  # noqa: E402
from latency.table import LatencyTable  # noqa: E402
from latency.timing import DEFAULT_ROUNDS, Protocol  # noqa: E402
from latency.validate import RUN_KEYS, _clean, plot, score, validate  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def calibration_curve(df, ks=(0, 1, 2, 3, 5, 8, 12, 16, 20, 32), splits=300, seed=0) -> dict:
    """Held-out error vs number of calibration nets, from one validation's measurements."""
    rng = np.random.default_rng(seed)

    def feats(d):
        return {"sum_ms": d["raw_sum_ms"].to_numpy(), "n_ops": d["n_ops"].to_numpy(float),
                "params_m": d["params_m"].to_numpy(float)}

    pool = df[df["source"] == "sample"].reset_index(drop=True)
    f, y = feats(pool), pool["measured_ms"].to_numpy()
    zoo = df[df["source"] == "zoo"]
    zf, zy = feats(zoo), zoo["measured_ms"].to_numpy()
    out = {}
    for model in MODELS:
        rows = []
        for k in ks:
            if k > len(y) - 5 or (model != "none" and k < len(MODELS[model])) or (model == "none" and k):
                continue
            med, w5, w10, zmed, zmax = [], [], [], [], []
            for _ in range(splits if k else 1):
                idx = rng.permutation(len(y))
                tr, te = idx[:k], idx[k:]
                coef = _fit(_take(f, tr), y[tr], model)
                e = np.abs(_apply(coef, _take(f, te), model) / y[te] - 1)
                ez = np.abs(_apply(coef, zf, model) / zy - 1) if len(zy) else np.array([np.nan])
                med.append(np.median(e))
                w5.append(np.mean(e <= 0.05))
                w10.append(np.mean(e <= 0.10))
                zmed.append(np.median(ez))
                zmax.append(np.max(ez))
            rows.append({"k": k, "median_abs": float(np.median(med)), "median_abs_p90_over_splits": float(np.percentile(med, 90)),
                         "within_5": float(np.mean(w5)), "within_10": float(np.mean(w10)),
                         "zoo_median_abs": float(np.nanmedian(zmed)), "zoo_max_abs": float(np.nanmedian(zmax))})
        out[model] = rows
    return out


def plot_curve(curve: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model, rows in curve.items():
        if not rows:
            continue
        ks = [r["k"] for r in rows]
        axes[0].plot(ks, [r["median_abs"] for r in rows], "o-", label=model)
        axes[1].plot(ks, [r["within_5"] for r in rows], "o-", label=model)
    axes[0].set_xlabel("calibration nets K")
    axes[0].set_ylabel("held-out median |error|")
    axes[1].set_xlabel("calibration nets K")
    axes[1].set_ylabel("held-out share within ±5%")
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_space(name: str, args, proto: Protocol) -> dict:
    precision = "int8" if args.int8 else "float32"
    suffix = f"_{name}" + ("_int8" if args.int8 else "") + ("_litert" if args.runtime == "litert" else "")
    table_path = ROOT / "runs" / "latency" / f"table{suffix}.parquet"
    space = get_space(name, args.resolution)
    ops = {o.key: o for o in space.all_ops()}
    for o in enumerate_ops(zoo_specs(args.resolution)):
        ops.setdefault(o.key, o)
    if args.fresh and table_path.exists():
        table_path.unlink()
    table = LatencyTable.load_or_new(table_path, table_meta(proto, precision, resolution=args.resolution))
    table.meta["spaces"] = sorted(set(table.meta.get("spaces") or []) | {name})
    build_info = table.meta.get("build_timing") or {}
    t0 = time.monotonic()
    rep = build_table(list(ops.values()), table, proto, progress=not args.no_progress, seed=args.seed)
    wall = time.monotonic() - t0
    if rep.measured:
        build_info = {"ops": len(ops), "op_passes": rep.measured, "export_s": round(rep.export_s, 1),
                      "timing_s": round(rep.timing_s, 1), "wall_s": round(wall, 1), "passes": proto.passes,
                      "complete_build": rep.new_ops == len(ops)}
        table.meta["build_timing"] = build_info
        table.save()
    print(f"[{name}] table {table_path}: {describe(table)}; build {build_info}", flush=True)

    ref = reference_for(space, args.resolution)  # the space's seed net
    if args.recalibrate or not table.calibration:
        t0 = time.monotonic()
        specs = space.sample_specs(args.calibrate, seed=args.seed + 1000)
        if not args.no_zoo_anchors:
            specs += zoo_specs(args.resolution)  # validated below by leave-one-out, not as held-out nets
        cal = calibrate(table, specs, proto, rounds=args.calibration_rounds, progress=not args.no_progress,
                        seed=args.seed, reference=ref)
        cal["wall_s"] = round(time.monotonic() - t0, 1)
        table.save()
    cal = table.calibration
    print(f"[{name}] calibration {cal['model']} {cal['coef']} from {cal['nets']} nets", flush=True)

    specs = space.sample_specs(args.samples, seed=args.seed + 2000)
    sources = ["sample"] * len(specs)
    # The calibration's sampled nets are measured again too (scored leave-one-out, not held
    # out): with the zoo's they gauge the machine's speed now against calibration time.
    names = {s.name for s in specs}
    again = [ArchSpec.from_dict(r["spec"]) for r in cal.get("records", [])
             if r.get("spec") and r["name"] not in names and r["name"] not in search_space.ZOO_NAMES]
    specs += again
    sources += ["sample"] * len(again)
    if not args.no_zoo:
        z = zoo_specs(args.resolution)
        specs += z
        sources += ["zoo"] * len(z)
    t0 = time.monotonic()
    vrep = validate(table, specs, sources, proto, rounds=args.rounds, reference=ref, progress=not args.no_progress,
                    seed=args.seed + 3, out_dir=RESULTS, prefix=f"latency_validation{suffix}")
    vwall = time.monotonic() - t0
    for line in vrep.lines():
        print(f"[{name}] {line}", flush=True)
    curve = calibration_curve(vrep.nets)
    title = f"{name} {precision} {args.runtime}: held-out error vs calibration nets ({table.meta.get('cpu')})"
    plot_curve(curve, RESULTS / f"latency_calibration_curve{suffix}.png", title)
    (RESULTS / f"latency_calibration_curve{suffix}.json").write_text(json.dumps(_clean(curve), indent=1) + "\n")
    summary = dict(vrep.summary)
    summary.update({"space": name, "build": build_info, "validate_wall_s": round(vwall, 1),
                    "calibration": {k: v for k, v in cal.items() if k != "records"},
                    "calibration_curve": curve})
    (RESULTS / f"latency_validation{suffix}.json").write_text(json.dumps(_clean(summary), indent=1) + "\n")
    return summary


def rescore_space(name: str, args) -> dict:
    """Score a saved validation again (same measurements, the table's current calibration and
    the current speed correction): rewrites the CSV, JSON and PNG."""
    import pandas as pd

    suffix = f"_{name}" + ("_int8" if args.int8 else "") + ("_litert" if args.runtime == "litert" else "")
    table = LatencyTable.load(ROOT / "runs" / "latency" / f"table{suffix}.parquet")
    old = json.loads((RESULTS / f"latency_validation{suffix}.json").read_text())
    df = pd.read_csv(RESULTS / f"latency_validation{suffix}.csv")
    run = {k: old.get(k) for k in RUN_KEYS}
    rep = score(df, table.calibration or {}, reference_for(get_space(name, args.resolution), args.resolution), run)
    for line in rep.lines():
        print(f"[{name}] {line}", flush=True)
    rep.nets.to_csv(RESULTS / f"latency_validation{suffix}.csv", index=False)
    plot(rep, RESULTS / f"latency_validation{suffix}.png")
    summary = {**old, **rep.summary, "rescored": True}
    (RESULTS / f"latency_validation{suffix}.json").write_text(json.dumps(_clean(summary), indent=1) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["large", "small"])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--calibrate", type=int, default=20)
    ap.add_argument("--calibration-rounds", type=int, default=DEFAULT_ROUNDS)
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    ap.add_argument("--net-runs", type=int, default=Protocol.net_runs, help="timed runs per end-to-end round")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--runtime", choices=["onnxruntime", "litert"], default="onnxruntime",
                    help="what times ops and nets (litert: pip install -e '.[litert]')")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--no-zoo-anchors", action="store_true", help="calibrate on sampled nets only")
    ap.add_argument("--fresh", action="store_true", help="delete the tables first (to time a full build)")
    ap.add_argument("--recalibrate", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rescore", action="store_true",
                    help="do not measure: score the saved validation CSVs again with the current code")
    args = ap.parse_args()
    proto = Protocol(threads=args.threads, runs=args.runs, passes=args.passes, net_runs=args.net_runs,
                     runtime=args.runtime)
    RESULTS.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    summaries = [rescore_space(s, args) if args.rescore else run_space(s, args, proto) for s in args.spaces]
    print()
    hdr = f"{'space':7s} {'prec':7s} {'ops':>5s} {'build':>7s} {'nets':>5s} {'med':>6s} {'p90':>6s} {'<=5%':>5s} " \
          f"{'<=10%':>6s} {'rho':>6s} {'uncorr<=5%':>10s} {'<=10%':>6s} {'speed':>6s} {'raw med':>8s} " \
          f"{'noise med':>9s} {'noise p90':>9s}"
    print(hdr)
    for s in summaries:
        e, r, nz, u = s["error"], s["raw_sum_error"], s["noise"], s["error_uncorrected"]
        b = s["build"]
        print(f"{s['space']:7s} {s['precision']:7s} {b.get('ops', 0):5d} {b.get('wall_s', float('nan')):6.0f}s "
              f"{s['n_nets']:5d} {e['median_abs']:6.1%} {e['p90_abs']:6.1%} {e['within_5']:5.0%} {e['within_10']:6.0%} "
              f"{s['spearman']:6.3f} {u['within_5']:10.0%} {u['within_10']:6.0%} {s['machine_speed']['factor']:6.3f} "
              f"{r['median_abs']:8.1%} {nz['median_abs']:9.1%} {nz['p90_abs']:9.1%}")


if __name__ == "__main__":
    main()
