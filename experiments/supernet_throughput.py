"""How many nets an hour does the supernet evaluator score on this machine?

Scores ``--nets`` random points of the supernet's space with `nas.evaluators.SupernetEvaluator`
(the search's defaults: BN recalibrated on 2,048 training images, all 10,000 held-out images),
first with one worker process, then with one per core, one torch thread each, as a search runs
with one worker per core. Each worker opens the supernet and scores one net before a barrier;
the clock runs from the barrier to the last worker's last net, so start-up is not counted.
Run it on a quiet machine: every other job shares the cores.

    python experiments/supernet_throughput.py --supernet runs/supernet-small --nets 40 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def _worker(rank: int, folder: str, data_path, points: list[dict], barrier, queue) -> None:
    import torch

    torch.set_num_threads(1)
    from nas.data import load_dataset
    from nas.evaluators import SupernetEvaluator

    data = load_dataset(data_path)
    ev = SupernetEvaluator.open(folder, data, threads=1)
    ev(ev.space.decode(points[0]))  # warm-up: first-call allocations and caches, not timed
    barrier.wait()
    seconds = []
    for p in points[1:]:
        t0 = time.perf_counter()
        ev(ev.space.decode(p))
        seconds.append(time.perf_counter() - t0)
    queue.put((rank, time.time(), seconds))


def measure(folder: str, space, data_path, nets: int, workers: int, seed: int) -> dict:
    rng = random.Random(f"throughput:{seed}")
    points = [space.sample_params(rng) for _ in range(nets)]
    shares = [points[i::workers] for i in range(workers)]
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, folder, data_path, [shares[r][0]] + shares[r], barrier, queue))
             for r in range(workers)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.time()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    wall = max(end for _, end, _ in results) - start
    per_net = sorted(s for _, _, secs in results for s in secs)
    q = statistics.quantiles(per_net, n=10)
    return {"workers": workers, "nets": len(per_net), "wall_s": wall, "nets_per_hour": len(per_net) / wall * 3600,
            "median_s": statistics.median(per_net), "p10_s": q[0], "p90_s": q[-1], "per_net_s": per_net}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", default="runs/supernet-small")
    p.add_argument("--nets", type=int, default=40)
    p.add_argument("--workers", default=f"1,{os.cpu_count() or 1}")
    p.add_argument("--data", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "supernet_throughput"), help="output prefix")
    args = p.parse_args(argv)
    from nas.supernet import _space_from_meta, load_checkpoint
    from search_space import UserError

    try:
        space = _space_from_meta(load_checkpoint(args.supernet)["meta"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        print(f"error: --workers {args.workers!r}: expected comma-separated integers", file=sys.stderr)
        return 2
    if not counts or counts[0] < 1 or args.nets < 2 * counts[-1]:
        print(f"error: --workers {args.workers!r} / --nets {args.nets}: need >= 1 worker and 2 nets per worker",
              file=sys.stderr)
        return 2
    rows = []
    for w in counts:
        r = measure(args.supernet, space, args.data, args.nets, w, args.seed)
        rows.append(r)
        print(f"{w} worker(s): {r['nets']} nets in {r['wall_s']:.1f} s = {r['nets_per_hour']:.0f} nets/h; "
              f"{r['median_s']:.2f} s a net (p10-p90 {r['p10_s']:.2f}-{r['p90_s']:.2f})", flush=True)
    load = os.getloadavg()[0]
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    table = pd.DataFrame([{k: v for k, v in r.items() if k != "per_net_s"} for r in rows])
    table.to_csv(str(prefix) + ".csv", index=False)
    (Path(str(prefix) + ".json")).write_text(json.dumps(
        {"supernet": args.supernet, "machine": f"{os.cpu_count()} cores", "load_avg_1min_end": load,
         "rows": rows}, indent=1) + "\n")
    with pd.option_context("display.float_format", "{:.2f}".format):
        print(table.to_string(index=False))
    _plot(rows, Path(str(prefix) + ".png"))
    return 0


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.boxplot([r["per_net_s"] for r in rows], tick_labels=[f"{r['workers']} worker(s)\n{r['nets_per_hour']:.0f} nets/h"
                                                        for r in rows])
    ax.set_ylabel("seconds per net")
    ax.set_title("supernet scoring throughput")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
