"""Training throughput here: images/s of proxy training, supernet training and `nas train`,
on 1 torch thread, 2 torch threads, and 2 processes (torchrun + gloo; for the proxy, two
independent search workers), measured in one run, one configuration at a time.

    python experiments/training_throughput.py --steps 40 --repeats 3

Each measurement runs in a fresh process (the 2-process rows under ``torch.distributed.run``),
trains ``--steps`` steps after ``--warmup`` steps and reports training images per second
(forward + backward + update; a supernet step trains 4 nets on one batch and counts its batch
once). Writes ``results/training_throughput.{csv,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("proxy", "supernet", "train")
MODES = ("1 thread", "2 threads", "2 processes")


def _worker(kind: str, steps: int, warmup: int, threads: int, out: str, data_path: str | None) -> None:
    """One measurement (in its own process; under torchrun when several processes share it)."""
    import time

    import torch

    from nas.data import load_dataset
    from nas.distributed import session

    torch.set_num_threads(threads)
    data = load_dataset(data_path)
    with session("cpu") as world, tempfile.TemporaryDirectory() as tmp:
        if kind == "proxy":
            from nas.proxy import ProxyConfig, build_seeded, train_proxy
            from netadapt.loop import training_spec
            from search_space import build, zoo

            spec = training_spec(zoo("mnv3-small"), data, 32)
            cfg = ProxyConfig(steps=warmup, threads=threads, eval_batches=1, bn_recalib_batches=0)
            train_proxy(build_seeded(lambda: build(spec), 0), data, cfg)  # warm-up: allocators, kernels
            res = train_proxy(build_seeded(lambda: build(spec), 0), data,
                              ProxyConfig(steps=steps, threads=threads, eval_batches=1, bn_recalib_batches=0))
            ips = res.images_per_second
        elif kind == "supernet":
            from nas.supernet import SupernetConfig, train_supernet

            cfg = SupernetConfig(space="small", steps=10_000, threads=threads, eval_every=10**9,
                                 checkpoint_minutes=10**6)
            train_supernet(cfg, Path(tmp) / "sn", data, progress=False, stop_after=warmup)
            t0 = time.perf_counter()
            train_supernet(cfg, Path(tmp) / "sn", data, progress=False, stop_after=steps)
            ips = steps * cfg.batch_size / (time.perf_counter() - t0)  # includes a resume and a checkpoint
        else:
            from nas.train import TrainConfig, train_net
            from search_space import zoo

            cfg = TrainConfig(threads=threads, checkpoint_minutes=10**6)
            train_net(zoo("mnv3-small"), data, Path(tmp) / "t", cfg, progress=False, stop_after=warmup)
            ips = train_net(zoo("mnv3-small"), data, Path(tmp) / "t", cfg, progress=False,
                            stop_after=steps)["images_per_second"]
        if world.main:
            Path(out).write_text(json.dumps({"images_per_second": ips, "processes": world.size}))


def _run(kind: str, mode: str, args) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1" if mode != "2 threads" else "2")
    with tempfile.TemporaryDirectory() as tmp:
        base = [str(Path(__file__).resolve()), "--worker", kind, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--threads", "2" if mode == "2 threads" else "1"]
        if args.data:
            base += ["--data", args.data]
        if mode == "2 processes" and kind != "proxy":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   *base, "--result", f"{tmp}/r.json"]
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            return json.loads(Path(f"{tmp}/r.json").read_text())["images_per_second"]
        n = 2 if mode == "2 processes" else 1  # two search workers side by side: their sum
        procs = [subprocess.Popen([sys.executable, *base, "--result", f"{tmp}/r{i}.json"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"worker failed: {err[-2000:]}")
        return sum(json.loads(Path(f"{tmp}/r{i}.json").read_text())["images_per_second"] for i in range(n))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement (default 40)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="measurements per cell; the median is reported")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(RESULTS / "training_throughput"))
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.steps, args.warmup, args.threads, args.result, args.data)
        return 0

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from nas.progress import Bar

    kinds = [k for k in args.workloads.split(",") if k]
    rows = []
    cells = [(k, m, r) for r in range(args.repeats) for k in kinds for m in MODES]  # repeats interleaved
    with Bar(True, len(cells), 0, "throughput", ("cell",)) as bar:
        for i, (kind, mode, rep) in enumerate(cells):
            bar.update(i, cell=f"{kind}/{mode}")
            rows.append({"workload": kind, "mode": mode, "repeat": rep, "images_per_second": _run(kind, mode, args)})
            bar.update(i + 1)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    summary = []
    for kind in kinds:
        one = statistics.median(df[(df.workload == kind) & (df["mode"] == "1 thread")].images_per_second)
        for mode in MODES:
            v = df[(df.workload == kind) & (df["mode"] == mode)].images_per_second
            summary.append({"workload": kind, "mode": mode, "median": statistics.median(v), "min": v.min(),
                            "max": v.max(), "speedup": statistics.median(v) / one})
    import platform

    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "steps": args.steps,
            "repeats": args.repeats, "note": "mnv3-small at 32x32, batch 128 (global), Fashion-MNIST"}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1) + "\n")
    t = Table(title="training throughput (images/s, median of repeats)")
    for c in ("workload", "mode", "images/s", "range", "x 1 thread"):
        t.add_column(c)
    for s in summary:
        t.add_row(s["workload"], s["mode"], f"{s['median']:.0f}", f"{s['min']:.0f}-{s['max']:.0f}",
                  f"{s['speedup']:.2f}")
    Console().print(t)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.25
    for j, mode in enumerate(MODES):
        vals = [next(s["median"] for s in summary if s["workload"] == k and s["mode"] == mode) for k in kinds]
        ax.bar([i + (j - 1) * width for i in range(len(kinds))], vals, width, label=mode)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("training images / s")
    ax.set_title("training throughput on this machine (2 cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
