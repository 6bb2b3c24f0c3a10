"""Why a plain sum of op times misses a whole net's time: each op alone vs inside the net.

onnxruntime's profiler times every node of a session. Each net is profiled whole, and each
of its ops is profiled alone (exported the way the table exports it); node times inside the
net are attributed to ops through the builder's module names (`features.<row>`, the head's
`avgpool`/`classifier`), and nodes that belong to no op (layout reorders onnxruntime inserts
between ops) are counted as glue. Both sides use the profiler and the table's statistic
(minimum over runs), pinned to one core at raised priority like the table's protocol.

    python experiments/latency_in_net.py [--nets mnv3-large mnv3-small mnv1-100 mnv2-100] [--runs 200]

Writes experiments/results/latency_in_net.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.export import export_net, export_op  # noqa: E402
from latency.ops import net_ops, zoo_specs  # noqa: E402
from latency.runner import random_feeds, session_options  # noqa: E402
from latency.timing import Protocol, measuring  # noqa: E402
from search_space.counting import count_params  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
ROW = re.compile(r"features[./](?:features\.)?(\d+)\b")
HEAD = re.compile(r"classifier|avgpool|Flatten|Gemm|GlobalAveragePool")


def profile(model: bytes, runs: int, warmup: int) -> dict[str, float]:
    """Per-node time (ms, minimum over `runs`) of one session run at batch 1, one thread."""
    import onnxruntime as ort

    opts = session_options(1)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feeds = random_feeds(sess)
        for _ in range(warmup):
            sess.run(None, feeds)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1000.0)
    return {name: float(np.min(d[-runs:])) for name, d in per_node.items()}


def attribute(nodes: dict[str, float], ops) -> tuple[dict[int, float], float]:
    """In-net node times summed per op index; the rest is glue."""
    by_row = {op.row_index: i for i, op in enumerate(ops) if op.kind == "row"}
    head = next((i for i, op in enumerate(ops) if op.kind == "head"), None)
    per_op: dict[int, float] = collections.defaultdict(float)
    glue = 0.0
    for name, ms in nodes.items():
        m = ROW.search(name)
        if m and int(m.group(1)) in by_row:
            per_op[by_row[int(m.group(1))]] += ms
        elif head is not None and HEAD.search(name):
            per_op[head] += ms
        else:
            glue += ms
    return per_op, glue


def run(nets: list[str], runs: int, warmup: int) -> tuple[pd.DataFrame, list[dict]]:
    rows, summaries = [], []
    with measuring(Protocol()):
        for spec in zoo_specs(224, nets, classification_only=True):
            ops = net_ops(spec)
            in_net, glue = attribute(profile(export_net(spec), runs, warmup), ops)
            alone_cache: dict[str, float] = {}
            for i, op in enumerate(ops):
                if op.key not in alone_cache:
                    alone_cache[op.key] = sum(profile(export_op(op), runs, warmup).values())
                rows.append({"net": spec.name, "op": i, "key": op.key, "kind": op.kind,
                             "weights_m": count_params(op.spec) / 1e6, "alone_ms": alone_cache[op.key],
                             "in_net_ms": in_net.get(i, float("nan"))})
            d = pd.DataFrame([r for r in rows if r["net"] == spec.name])
            d["ratio"] = d["in_net_ms"] / d["alone_ms"]
            head = d[d["kind"] == "head"]
            summaries.append({
                "net": spec.name, "ops": len(ops), "weights_m": count_params(spec) / 1e6,
                "alone_sum_ms": float(d["alone_ms"].sum()), "in_net_sum_ms": float(d["in_net_ms"].sum()),
                "glue_ms": glue,
                "head_alone_ms": float(head["alone_ms"].sum()), "head_in_net_ms": float(head["in_net_ms"].sum()),
                "rows_ratio_median": float(d.loc[d["kind"] == "row", "ratio"].median()),
                "worst_row": d[d["kind"] == "row"].sort_values("ratio").iloc[-1][["key", "ratio"]].to_dict(),
            })
            print(f"{spec.name}: ops alone {summaries[-1]['alone_sum_ms']:.3f} ms, in the net "
                  f"{summaries[-1]['in_net_sum_ms']:.3f} ms + glue {glue:.3f} ms; head {summaries[-1]['head_alone_ms']:.3f}"
                  f" -> {summaries[-1]['head_in_net_ms']:.3f} ms", flush=True)
    df = pd.DataFrame(rows)
    df["ratio"] = df["in_net_ms"] / df["alone_ms"]
    return df, summaries


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(df["net"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for net in nets:
        d = df[df["net"] == net]
        axes[0].plot(d["op"], d["ratio"], "o-", ms=3, label=net)
        axes[1].scatter(d["weights_m"], d["in_net_ms"] - d["alone_ms"], s=14, label=net)
    axes[0].axhline(1, color="k", lw=0.8)
    axes[0].set_xlabel("op (row) index in the net; last = pooled head")
    axes[0].set_ylabel("time inside the net / time alone")
    axes[1].set_xlabel("op weights (millions)")
    axes[1].set_ylabel("time inside the net - time alone (ms)")
    axes[0].legend(fontsize=8)
    fig.suptitle("onnxruntime profiler, 1 thread, minimum of runs per node", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["mnv3-large", "mnv3-small", "mnv1-100", "mnv2-100"])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    df, summaries = run(args.nets, args.runs, args.warmup)
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "latency_in_net.csv", index=False)
    (RESULTS / "latency_in_net.json").write_text(json.dumps(summaries, indent=1, default=str) + "\n")
    plot(df, RESULTS / "latency_in_net.png")
    print()
    print(pd.DataFrame(summaries).drop(columns=["worst_row"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
