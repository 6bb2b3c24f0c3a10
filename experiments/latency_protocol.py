"""How to split a fixed end-to-end timing budget: few long rounds or many short ones, and how
to reduce a net's rounds to one figure (best round, 25th percentile, median, mean).

On these machines the speed of the host changes every few seconds (other tenants); a single
net's best round of 100 runs moved 16-30% over a validation run. The figure of merit is how
tightly a protocol repeats: (a) within one run, the even rounds against the odd rounds, and
(b) between two repetitions of the whole run minutes apart (what a user sees). All protocols
get the same number of runs per net (warm-up included) and are run in the order
A B C D D C B A, so that slow drift hits them alike.

    python experiments/latency_protocol.py [--space small] [--nets 16] [--budget 660]

Writes experiments/results/latency_protocol_budget<N>.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.e2e import ACROSS, measure_nets  # noqa: E402
from latency.ops import get_space, zoo_specs  # noqa: E402
from latency.timing import Protocol  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
ZOO = {"small": ["mnv3-small", "mnv3-small-075", "mnv3-small-minimal", "mnv3-large-075"],
       "large": ["mnv3-large", "mnv3-large-075", "mnv3-large-minimal", "mnv2-100"]}


def plans(budget: int, shapes=((100, 10), (30, 3), (10, 2), (5, 1))) -> list[dict]:
    """(runs, warm-up) per round and as many rounds as the budget allows."""
    out = []
    for runs, warmup in shapes:
        out.append({"runs": runs, "warmup": warmup, "rounds": max(2, budget // (runs + warmup))})
    return out


def run(args) -> tuple[pd.DataFrame, dict]:
    space = get_space(args.space)
    names = ZOO.get(args.space, [])
    specs = zoo_specs(224, names) + space.sample_specs(args.nets - len(names), seed=args.seed)
    base = Protocol(threads=1, settle=0.0)
    ps = plans(args.budget, [tuple(int(v) for v in p.split(':')) for p in args.plans])
    order = list(range(len(ps))) + list(reversed(range(len(ps))))
    per = {}  # (plan, repetition) -> summary per across statistic
    walls = {}
    for rep_i, p_i in enumerate(order):
        rep = 0 if rep_i < len(ps) else 1
        p = ps[p_i]
        proto = dataclasses.replace(base, runs=p["runs"], warmup=p["warmup"])
        t0 = time.monotonic()
        times = measure_nets(specs, proto, rounds=p["rounds"], progress=not args.no_progress, seed=args.seed + rep)
        walls.setdefault(p_i, []).append(time.monotonic() - t0)
        per[(p_i, rep)] = {a: times.summary(a) for a in ACROSS}
        print(f"plan {p_i} ({p['runs']} runs x {p['rounds']} rounds), repetition {rep}: {walls[p_i][-1]:.0f} s",
              flush=True)
    rows = []
    for p_i, p in enumerate(ps):
        for a in ACROSS:
            s0, s1 = per[(p_i, 0)][a], per[(p_i, 1)][a]
            within = np.abs(np.concatenate([s0["noise"].to_numpy(), s1["noise"].to_numpy()]))
            between = np.abs(s0["measured_ms"] / s1["measured_ms"] - 1).to_numpy()
            level = float(np.median(((s0["measured_ms"] + s1["measured_ms"]) / 2 / s0["round_min_ms"]).to_numpy()))
            rows.append({"runs": p["runs"], "warmup": p["warmup"], "rounds": p["rounds"], "across": a,
                         "within_median": float(np.median(within)), "within_p90": float(np.percentile(within, 90)),
                         "between_median": float(np.median(between)), "between_p90": float(np.percentile(between, 90)),
                         "level_vs_best_round": level, "wall_s": float(np.median(walls[p_i]))})
    df = pd.DataFrame(rows)
    meta = {"space": args.space, "nets": len(specs), "budget_runs_per_net": args.budget, "order": order,
            "zoo": names, "seed": args.seed}
    return df, meta


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    labels = [f"{r}x{n}" for r, n in df[["runs", "rounds"]].drop_duplicates().itertuples(index=False)]
    x = np.arange(len(labels))
    w = 0.8 / len(ACROSS)
    for ax, col, title in ((axes[0], "within_median", "within a run (even vs odd rounds)"),
                           (axes[1], "between_median", "between two runs minutes apart")):
        for i, a in enumerate(ACROSS):
            ax.bar(x + i * w, df[df["across"] == a][col] * 100, w, label=a)
        ax.set_xticks(x + w * (len(ACROSS) - 1) / 2, labels)
        ax.set_xlabel("runs per round x rounds (same budget)")
        ax.set_title(title)
    axes[0].set_ylabel("median |difference| (%)")
    axes[0].legend(title="across rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="small")
    ap.add_argument("--nets", type=int, default=16)
    ap.add_argument("--budget", type=int, default=660, help="runs per net per protocol, warm-up included")
    ap.add_argument("--plans", nargs="+", default=["100:10", "30:3", "10:2", "5:1"], metavar="RUNS:WARMUP",
                    help="round shapes to compare (default 100:10 30:3 10:2 5:1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=None, help="output path without suffix (default results/latency_protocol_budget<N>)")
    args = ap.parse_args()
    df, meta = run(args)
    out = Path(args.out or RESULTS / f"latency_protocol_budget{args.budget}")
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": df.to_dict("records")}, indent=2))
    plot(df, out.with_suffix(".png"))
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False))


if __name__ == "__main__":
    main()
