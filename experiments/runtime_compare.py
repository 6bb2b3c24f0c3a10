"""onnxruntime vs LiteRT on the same nets, measured side by side; what it changes for a search.

1. Whole nets (the latency validation's held-out sample of the space, plus the zoo), each
   exported to ONNX and converted to .tflite from the same builder, timed end to end with
   both runtimes in the same interleaved rounds (one core, batch 1, the table protocol's
   short rounds; a net's latency is its best round): per-net ratio LiteRT / onnxruntime,
   their rank agreement, and each runtime's own noise (best of even vs odd rounds).
2. Ops: the two tables' rows for the same op keys (ratio by op kind and input size).
3. The same search on both tables: the supernet-scored nets of the controllers benchmark
   (experiments/results/controllers-supernet/eval_cache.jsonl) rewarded with each table's
   latency (MnasNet soft reward, w = -0.15, target = MobileNetV3-Small on that table, as
   `--target-like mnv3-small` does): the best net of each, and where it ranks on the other.

    python experiments/runtime_compare.py --ort-table runs/latency/table_small.parquet \
        --litert-table runs/latency/table_small_litert.parquet

Needs the `litert` extra and a quiet machine. Writes experiments/results/runtime_compare.{csv,json,png}
and runtime_compare_ops.csv.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.build import _Progress  # noqa: E402
from latency.e2e import net_model  # noqa: E402
from latency.ops import get_space, zoo_specs  # noqa: E402
from latency.predict import Predictor  # noqa: E402
from latency.table import LatencyTable  # noqa: E402
from latency.timing import QUIET_CHECK_S, Protocol, Timer, measuring  # noqa: E402
from latency.validate import spearman  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
RUNTIMES = ("onnxruntime", "litert")
CACHE = RESULTS / "controllers-supernet" / "eval_cache.jsonl"


def measure(specs, names, rounds: int, seed: int, progress: bool) -> pd.DataFrame:
    """Best round (and best of even/odd rounds) of every (net, runtime), interleaved."""
    proto = Protocol().for_nets()
    timer = Timer(proto, max_sessions=2 * len(specs) + 2, seed=seed)
    items = [(n, rt) for n in names for rt in RUNTIMES]
    per: dict[tuple[str, str], list[float]] = {it: [] for it in items}
    rng = random.Random(seed)
    with _Progress(progress) as bar:
        task = bar.task("export + convert nets", len(items))
        for name, spec in zip(names, specs):
            for rt in RUNTIMES:
                timer.add(f"{name}|{rt}", net_model(spec, runtime=rt), runtime=rt)
                bar.advance(task)
        task = bar.task("time nets (both runtimes)", rounds * len(items))
        quiet_at = float("-inf")
        with measuring(proto):
            for _ in range(rounds):
                order = list(items)
                rng.shuffle(order)
                if time.monotonic() - quiet_at >= QUIET_CHECK_S:
                    timer.wait_quiet()
                    quiet_at = time.monotonic()
                for name, rt in order:
                    per[(name, rt)].append(timer.measure(f"{name}|{rt}")["value_ms"])
                    bar.advance(task)
    rows = []
    for name in names:
        row = {"net": name}
        for rt in RUNTIMES:
            v = np.asarray(per[(name, rt)])
            row[f"{rt}_ms"] = float(v.min())
            row[f"{rt}_noise"] = float(v[0::2].min() / v[1::2].min() - 1) if len(v) > 1 else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    df["ratio"] = df["litert_ms"] / df["onnxruntime_ms"]
    return df


def op_ratios(ort: LatencyTable, lite: LatencyTable) -> pd.DataFrame:
    common = [k for k in ort.keys() if k in lite]
    df = pd.DataFrame({"key": common, "onnxruntime_ms": [ort.ms(k) for k in common],
                       "litert_ms": [lite.ms(k) for k in common]})
    df["ratio"] = df["litert_ms"] / df["onnxruntime_ms"]
    df["kind"] = df["key"].str.split("|").str[0]
    df["side"] = df["key"].str.extract(r"in=(\d+)x")[0].astype(float)
    return df


def same_search(space_name: str, tables: dict[str, LatencyTable], w: float = -0.15) -> dict:
    """Reward the benchmark's cached (supernet-scored) nets with each table's latency."""
    import search_space
    from nas.reward import reward
    from search_space.supernet import parse_arch

    if not CACHE.exists():
        return {}
    from experiments.controllers import EvalCache

    cache = EvalCache(CACHE).data
    space = get_space(space_name).space
    arches = sorted({v["arch"] for v in cache.values() if v.get("arch") and not v.get("diverged")})
    acc = {v["arch"]: v["accuracy"] for v in cache.values() if v.get("arch")}
    specs = {a: space.decode(parse_arch(space, a), resolution=224) for a in arches}
    out = {"nets": len(arches), "w": w, "tables": {}}
    scores = {}
    for rt, table in tables.items():
        pred = Predictor(table)
        target = pred(search_space.zoo("mnv3-small"))
        lat = {a: pred(s) for a, s in specs.items()}
        r = {a: reward(acc[a], lat[a], target, w, w) for a in arches}
        scores[rt] = r
        best = max(r, key=r.get)
        out["tables"][rt] = {"target_ms": target, "best": best, "best_reward": r[best], "best_accuracy": acc[best],
                             "best_latency_ms": lat[best]}
    a, b = RUNTIMES
    ra = np.array([scores[a][x] for x in arches])
    rb = np.array([scores[b][x] for x in arches])
    rank_a = {x: i for i, x in enumerate(sorted(arches, key=lambda x: -scores[a][x]))}
    rank_b = {x: i for i, x in enumerate(sorted(arches, key=lambda x: -scores[b][x]))}
    k = max(1, len(arches) // 10)
    out.update({
        "reward_spearman": spearman(ra, rb),
        "best_of_onnxruntime_rank_on_litert": rank_b[out["tables"][a]["best"]] + 1,
        "best_of_litert_rank_on_onnxruntime": rank_a[out["tables"][b]["best"]] + 1,
        "top10pct_overlap": len({x for x in arches if rank_a[x] < k} & {x for x in arches if rank_b[x] < k}) / k,
    })
    return out


def plot(df: pd.DataFrame, ops: pd.DataFrame | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if ops is not None else 2, figsize=(14 if ops is not None else 10, 4.2))
    ax = axes[0]
    ax.scatter(df["onnxruntime_ms"], df["litert_ms"], s=12, c=["C3" if s == "zoo" else "C0" for s in df["source"]])
    lim = [0, 1.05 * max(df["onnxruntime_ms"].max(), df["litert_ms"].max())]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("onnxruntime ms (end to end)")
    ax.set_ylabel("LiteRT ms (end to end)")
    ax.set_title(f"nets: Spearman {spearman(df['onnxruntime_ms'], df['litert_ms']):.3f} (zoo red)", fontsize=9)
    ax = axes[1]
    ax.hist(df["ratio"], bins=25)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("LiteRT / onnxruntime, per net")
    ax.set_title(f"median {df['ratio'].median():.3f}, p10-p90 {df['ratio'].quantile(0.1):.3f}-"
                 f"{df['ratio'].quantile(0.9):.3f}", fontsize=9)
    if ops is not None:
        ax = axes[2]
        for kind, g in ops.groupby("kind"):
            ax.scatter(g["side"], g["ratio"], s=8, label=kind, alpha=0.6)
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("op input side (px)")
        ax.set_ylabel("LiteRT / onnxruntime, per op (tables)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="small")
    ap.add_argument("--samples", type=int, default=100, help="sampled nets (the validation's held-out seed)")
    ap.add_argument("--sample-seed", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--ort-table", default=None)
    ap.add_argument("--litert-table", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    space = get_space(args.space, 224)
    specs = space.sample_specs(args.samples, seed=args.sample_seed)
    sources = ["sample"] * len(specs)
    z = zoo_specs(224, classification_only=True)
    specs += z
    sources += ["zoo"] * len(z)
    names = [s.name for s in specs]
    t0 = time.monotonic()
    df = measure(specs, names, args.rounds, args.seed, not args.no_progress)
    df.insert(1, "source", sources)
    wall = time.monotonic() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "runtime_compare.csv", index=False)
    ops, search = None, {}
    if args.ort_table and args.litert_table:
        tables = {"onnxruntime": LatencyTable.load(args.ort_table), "litert": LatencyTable.load(args.litert_table)}
        for rt, t in tables.items():
            if (t.meta.get("runtime") or "onnxruntime") != rt:
                raise SystemExit(f"{t.path}: a {t.meta.get('runtime')} table, expected {rt}")
        ops = op_ratios(tables["onnxruntime"], tables["litert"])
        ops.to_csv(RESULTS / "runtime_compare_ops.csv", index=False)
        search = same_search(args.space, tables)
    from latency.runner import machine_info, runtime_version

    info = machine_info()
    summary = {
        "cpu": info["cpu"], "onnxruntime": runtime_version("onnxruntime"), "litert": runtime_version("litert"),
        "nets": len(df), "rounds": args.rounds, "wall_s": round(wall, 1),
        "ratio_median": float(df["ratio"].median()), "ratio_p10": float(df["ratio"].quantile(0.1)),
        "ratio_p90": float(df["ratio"].quantile(0.9)),
        "ratio_sampled_median": float(df[df.source == "sample"]["ratio"].median()),
        "spearman_nets": spearman(df["onnxruntime_ms"], df["litert_ms"]),
        "noise_median_abs": {rt: float(df[f"{rt}_noise"].abs().median()) for rt in RUNTIMES},
        "zoo": {r.net: {"onnxruntime_ms": r.onnxruntime_ms, "litert_ms": r.litert_ms, "ratio": r.ratio}
                for r in df[df.source == "zoo"].itertuples()},
    }
    if ops is not None:
        summary["ops"] = {"n": len(ops), "ratio_median": float(ops["ratio"].median()),
                          "ratio_p10": float(ops["ratio"].quantile(0.1)), "ratio_p90": float(ops["ratio"].quantile(0.9)),
                          "log_pearson": float(np.corrcoef(np.log(ops["onnxruntime_ms"]), np.log(ops["litert_ms"]))[0, 1]),
                          "by_kind": {k: float(g["ratio"].median()) for k, g in ops.groupby("kind")}}
    summary["same_search"] = search
    (RESULTS / "runtime_compare.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    plot(df, ops, RESULTS / "runtime_compare.png",
         f"{args.space}: {len(df)} nets, {args.rounds} interleaved rounds; {info['cpu']}, one pinned core")
    print(f"{'net':48s} {'ORT ms':>8s} {'LiteRT ms':>9s} {'ratio':>6s}")
    for r in df[df.source == "zoo"].itertuples():
        print(f"{r.net:48s} {r.onnxruntime_ms:8.3f} {r.litert_ms:9.3f} {r.ratio:6.3f}")
    print(f"sampled nets: ratio median {summary['ratio_sampled_median']:.3f}; all: p10-p90 "
          f"{summary['ratio_p10']:.3f}-{summary['ratio_p90']:.3f}; Spearman {summary['spearman_nets']:.3f}; "
          f"noise median {summary['noise_median_abs']}")
    if ops is not None:
        print(f"ops: {summary['ops']}")
    if search:
        print(f"same search on both tables: {json.dumps(search, default=float)}")


if __name__ == "__main__":
    main()
