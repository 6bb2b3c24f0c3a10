"""How many images does a supernet score need? Noise and cost against recalibration and validation size.

A supernet's score of a net depends on which training images recalibrate its BatchNorm
statistics and which held-out images it is scored on. For ``--nets`` nets of the space
(spread over its MAdds range, as in supernet_fidelity.py) and each setting, the score is
taken with ``--repeats`` different image subsets; reported per setting:

- ``noise``: the per-net std of the score over the subsets (pooled over nets);
- ``spread``: the std of the nets' mean scores (the differences a search must see);
- ``rank_tau``: mean Kendall tau between the rankings of two subsets;
- ``seconds``: median time to extract, recalibrate and score one net (1 thread).

Two sweeps: recalibration images at the full held-out set, then held-out images at the
chosen recalibration size.

    python experiments/supernet_eval_noise.py --supernet runs/supernet-small
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def measure(ev_net, space, nets, data, meta, recalib: int, val: int | None, repeats: int):
    import torch

    from nas.evaluators import score_model

    cfg = meta["config"]
    scores = {label: [] for label, _ in nets}
    seconds = []
    torch.set_num_threads(1)
    for r in range(repeats):
        for label, params in nets:
            t0 = time.perf_counter()
            _, model = ev_net.extract(params)
            acc = score_model(model, data, resolution=meta["resolution"], val_size=cfg["val_size"],
                              split_seed=cfg["split_seed"], recalib_images=recalib, val_images=val,
                              recalib_seed=r, val_seed=r if val is not None else 0)
            seconds.append(time.perf_counter() - t0)
            scores[label].append(acc)
    return scores, seconds


def summarize(scores: dict, seconds: list[float]) -> dict:
    from scipy.stats import kendalltau

    per_net_std = [statistics.stdev(v) for v in scores.values() if len(v) > 1]
    means = [statistics.mean(v) for v in scores.values()]
    repeats = len(next(iter(scores.values())))
    taus = []
    for a, b in itertools.combinations(range(repeats), 2):
        taus.append(kendalltau([v[a] for v in scores.values()], [v[b] for v in scores.values()]).statistic)
    noise = (sum(s * s for s in per_net_std) / len(per_net_std)) ** 0.5 if per_net_std else float("nan")
    spread = statistics.stdev(means) if len(means) > 1 else float("nan")
    return {"noise": noise, "spread": spread, "noise_over_spread": noise / spread if spread else float("nan"),
            "rank_tau": statistics.mean(taus) if taus else float("nan"),
            "seconds": statistics.median(seconds), "nets_per_hour": 3600 / statistics.median(seconds)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", required=True)
    p.add_argument("--nets", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--recalib", default="128,256,512,1024,2048")
    p.add_argument("--val", default="500,1000,2500,5000,all")
    p.add_argument("--fixed-recalib", type=int, default=1024)
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(RESULTS / "supernet_eval_noise"))
    args = p.parse_args(argv)

    from experiments.supernet_fidelity import choose_nets
    from nas.data import load_dataset
    from nas.supernet import open_supernet

    data = load_dataset(args.data)
    net, meta = open_supernet(args.supernet, data=data)
    space = net.space
    nets = choose_nets(space, args.nets)[: args.nets]
    rows = []
    for recalib in [int(x) for x in args.recalib.split(",")]:
        s, t = measure(net, space, nets, data, meta, recalib, None, args.repeats)
        rows.append({"sweep": "recalib", "recalib_images": recalib, "val_images": "all", **summarize(s, t)})
        print(rows[-1], file=sys.stderr)
    for val in args.val.split(","):
        v = None if val == "all" else int(val)
        s, t = measure(net, space, nets, data, meta, args.fixed_recalib, v, args.repeats)
        rows.append({"sweep": "val", "recalib_images": args.fixed_recalib, "val_images": val, **summarize(s, t)})
        print(rows[-1], file=sys.stderr)
    import pandas as pd

    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(str(out) + ".csv", index=False)
    Path(str(out) + ".json").write_text(json.dumps({"supernet": args.supernet, "nets": len(nets),
                                                    "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False))
    _plot(df, Path(str(out) + ".png"))
    return 0


def _plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, sweep, col in ((axes[0], "recalib", "recalib_images"), (axes[1], "val", "val_images")):
        sub = df[df.sweep == sweep]
        x = [str(v) for v in sub[col]]
        ax.plot(x, 100 * sub.noise, marker="o", label="noise (std over image subsets)")
        ax.plot(x, 100 * sub.spread, marker="s", label="spread between nets (std)")
        ax2 = ax.twinx()
        ax2.plot(x, sub.seconds, color="gray", linestyle="--", marker=".", label="seconds per net")
        ax2.set_ylabel("seconds per net")
        ax.set_xlabel(col.replace("_", " "))
        ax.set_ylabel("accuracy points")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
