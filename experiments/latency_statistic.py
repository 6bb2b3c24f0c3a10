"""Which per-measurement statistic should a latency table keep? Measure it.

Times a set of ops and whole nets in P interleaved passes (100 runs each, the table's
protocol) and reports, per statistic (min, p10, median, mean of the runs):
  - pass-to-pass variation: per item, std/mean over passes (median over items);
  - split-half disagreement: per item, best of even passes vs best of odd passes (|a-b|/mean),
    median and p90 over items (what the table and the validation actually use).
Writes experiments/results/latency_statistic.json.

    python experiments/latency_statistic.py [--passes 8] [--ops 24]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_space  # noqa: E402
from latency import export  # noqa: E402
from latency.ops import enumerate_ops, get_space  # noqa: E402
from latency.runner import machine_info  # noqa: E402
from latency.timing import Protocol, Timer, pinned  # noqa: E402

STATS = ["min_ms", "p10_ms", "median_ms", "mean_ms"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--ops", type=int, default=24)
    ap.add_argument("--nets", type=int, default=6)
    ap.add_argument("--out", default="experiments/results/latency_statistic.json")
    args = ap.parse_args()

    space = get_space("large")
    nets = [search_space.zoo("mnv3-large"), search_space.zoo("mnv3-small")] + space.sample_specs(args.nets - 2, seed=7)
    ops = enumerate_ops(nets)
    random.Random(0).shuffle(ops)
    ops = ops[: args.ops]
    proto = Protocol(quiet_wait=0)
    timer = Timer(proto)
    items = {}
    for op in ops:
        timer.add(op.key, export.export_op(op))
        items[op.key] = "op"
    for s in nets:
        timer.add("net:" + s.name, export.export_net(s))
        items["net:" + s.name] = "net"
    rec = {k: {s: [] for s in STATS} for k in items}
    t0 = time.time()
    with pinned(True) as core:
        rng = random.Random(1)
        for p in range(args.passes):
            order = list(items)
            rng.shuffle(order)
            for k in order:
                st = timer.measure(k)
                for s in STATS:
                    rec[k][s].append(st[s])
            print(f"pass {p + 1}/{args.passes} done at {time.time() - t0:.0f}s", flush=True)
    result = {"machine": machine_info(), "pinned_core": core, "passes": args.passes, "runs": proto.runs,
              "items": {"op": sum(v == "op" for v in items.values()), "net": sum(v == "net" for v in items.values())},
              "by_statistic": {}}
    for kind in ("op", "net", "all"):
        keys = [k for k in items if kind == "all" or items[k] == kind]
        for s in STATS:
            cv = [np.std(rec[k][s]) / np.mean(rec[k][s]) for k in keys]
            half = []
            for k in keys:
                a, b = min(rec[k][s][0::2]), min(rec[k][s][1::2])
                half.append(abs(a - b) / ((a + b) / 2))
            result["by_statistic"].setdefault(kind, {})[s] = {
                "pass_cv_median": float(np.median(cv)), "pass_cv_p90": float(np.percentile(cv, 90)),
                "split_half_median": float(np.median(half)), "split_half_p90": float(np.percentile(half, 90)),
            }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{'items':5s} {'statistic':10s} {'pass CV med':>11s} {'p90':>7s} {'split-half med':>14s} {'p90':>7s}")
    for kind, d in result["by_statistic"].items():
        for s, v in d.items():
            print(f"{kind:5s} {s:10s} {v['pass_cv_median']:11.2%} {v['pass_cv_p90']:7.2%} "
                  f"{v['split_half_median']:14.2%} {v['split_half_p90']:7.2%}")


if __name__ == "__main__":
    main()
