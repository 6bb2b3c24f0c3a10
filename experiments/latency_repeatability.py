"""Does a table's op time repeat, and how much does a whole net's time wander on this host?

(a) A random sample of a table's ops timed again now, the way the table was built (best of
    `--passes` interleaved passes of 100 runs): ratio now / table per op, after dividing out
    the median ratio (the machine's speed now), and the even-vs-odd-pass disagreement.
(b) One whole net timed again and again for `--seconds` in rounds of 100 runs: the spread of
    its best-of-100 over time, the drift that end-to-end timing has to beat (latency.e2e).

    python experiments/latency_repeatability.py [--table runs/latency/table_small.parquet] [--ops 60]

Writes experiments/results/latency_repeatability.{json,csv} (the CSV: one row per op).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.build import op_model  # noqa: E402
from latency.e2e import net_model  # noqa: E402
from latency.ops import get_space, zoo_specs  # noqa: E402
from latency.table import LatencyTable  # noqa: E402
from latency.timing import Protocol, Timer, measuring, now_iso  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def ops_again(table: LatencyTable, space: str, n: int, passes: int, seed: int) -> pd.DataFrame:
    ops = {o.key: o for o in get_space(space).all_ops()}
    keys = random.Random(seed).sample(sorted(k for k in ops if k in table), min(n, len(ops)))
    proto = Protocol(runs=int(table.meta.get("runs") or 100), warmup=int(table.meta.get("warmup") or 10),
                     runtime=table.meta.get("runtime") or "onnxruntime")
    timer = Timer(proto, max_sessions=len(keys) + 1, seed=seed)
    with tempfile.TemporaryDirectory(prefix="lat-repeat-") as tmp:
        for k in keys:
            timer.add(k, op_model(ops[k], table.precision, workdir=tmp, runtime=proto.runtime),
                      {f"in{i}": list(s) for i, s in enumerate(ops[k].input_shapes)})
        per = {k: [] for k in keys}
        rng = random.Random(seed)
        order = list(keys)
        with measuring(proto):
            for _ in range(passes):
                rng.shuffle(order)
                for k in order:
                    per[k].append(timer.measure(k)["min_ms"])
    df = pd.DataFrame({"key": keys, "table_ms": [table.ms(k) for k in keys],
                       "now_ms": [min(per[k]) for k in keys],
                       "even_ms": [min(per[k][0::2]) for k in keys], "odd_ms": [min(per[k][1::2]) for k in keys]})
    df["ratio"] = df["now_ms"] / df["table_ms"]
    df["deviation"] = df["ratio"] / df["ratio"].median() - 1
    df["split_half"] = df["even_ms"] / df["odd_ms"] - 1
    return df


def net_wander(name: str, seconds: float, seed: int) -> dict:
    spec = zoo_specs(224, [name])[0]
    proto = Protocol(runs=100, warmup=10)
    timer = Timer(proto, seed=seed)
    timer.add(name, net_model(spec))
    vals = []
    with measuring(proto):
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            vals.append(timer.measure(name)["min_ms"])
    v = np.array(vals)
    return {"net": name, "seconds": seconds, "rounds_of_100": int(v.size), "best_ms": float(v.min()),
            "median_ms": float(np.median(v)), "worst_ms": float(v.max()),
            "p90_over_best": float(np.percentile(v, 90) / v.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "runs" / "latency" / "table_small.parquet"))
    ap.add_argument("--space", default="small")
    ap.add_argument("--ops", type=int, default=60)
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--net", default="mnv3-small")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    table = LatencyTable.load(args.table)
    df = ops_again(table, args.space, args.ops, args.passes, args.seed)
    dev, half = df["deviation"].abs(), df["split_half"].abs()
    ops_summary = {"ops": int(len(df)), "passes": args.passes, "table_built": table.meta.get("created"),
                   "speed_now_vs_table": float(df["ratio"].median()),
                   "deviation_median_abs": float(dev.median()), "deviation_p90_abs": float(np.percentile(dev, 90)),
                   "split_half_median_abs": float(half.median()), "split_half_p90_abs": float(np.percentile(half, 90)),
                   "op_ms_range": [float(df["table_ms"].min()), float(df["table_ms"].max())]}
    net = net_wander(args.net, args.seconds, args.seed)
    out = {"measured_at": now_iso(), "table": args.table, "cpu": table.meta.get("cpu"), "ops": ops_summary, "net": net}
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "latency_repeatability.csv", index=False)
    (RESULTS / "latency_repeatability.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'what':44s} {'value':>10s}")
    print(f"{'ops re-timed':44s} {ops_summary['ops']:>10d}")
    print(f"{'machine now / at build (median ratio)':44s} {ops_summary['speed_now_vs_table']:>10.3f}")
    print(f"{'op vs table, |deviation| median / p90':44s} {ops_summary['deviation_median_abs']:>9.2%} "
          f"/ {ops_summary['deviation_p90_abs']:.2%}")
    print(f"{'op even vs odd passes, median / p90':44s} {ops_summary['split_half_median_abs']:>9.2%} "
          f"/ {ops_summary['split_half_p90_abs']:.2%}")
    print(f"{net['net'] + ' best of 100 runs: best / median / worst':44s} {net['best_ms']:>7.3f} ms "
          f"/ {net['median_ms']:.3f} / {net['worst_ms']:.3f} ({net['rounds_of_100']} rounds in {net['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
