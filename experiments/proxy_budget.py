"""How many proxy-training steps does a search need? Seed-to-seed spread vs step budget.

For each net and step budget, trains with several seeds (init and data order both follow
the seed; the held-out split stays fixed) and reports mean and std of validation accuracy,
throughput, and, per budget, the gap between nets next to the pooled seed std. A budget is
good enough when one seed's noise is small next to the differences the search must see.

    python experiments/proxy_budget.py                          # mnv3-small, mnv3-large; 150/300/600 steps; 3 seeds
    python experiments/proxy_budget.py --nets tiny-cnn --steps 60,120 --seeds 2   # a quick look

Every run is appended to the CSV as it finishes; --resume skips runs already there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data import load_dataset  # noqa: E402
from nas.proxy import ProxyConfig, build_seeded, train_proxy  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "proxy_budget.csv"


class TinyCNN(nn.Module):
    """The unit tests' conv-BN-ReLU net: a yardstick that needs no search_space builder."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        layers, c = [], in_channels
        for out, stride in ((16, 1), (32, 2), (64, 2)):
            layers += [nn.Conv2d(c, out, 3, stride, 1, bias=False),
                       nn.BatchNorm2d(out, eps=1e-3, momentum=0.01), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make_net(name: str, in_channels: int, num_classes: int, resolution: int, seed: int) -> nn.Module:
    if name == "tiny-cnn":
        return build_seeded(lambda: TinyCNN(in_channels, num_classes), seed)
    import search_space  # imported late: "tiny-cnn" runs without it

    spec = dataclasses.replace(search_space.zoo(name), in_channels=in_channels,
                               num_classes=num_classes, resolution=resolution)
    return build_seeded(lambda: search_space.build(spec), seed)


def summarize(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ok = runs[~runs.diverged]
    per_net = ok.groupby(["steps", "net"], sort=True).agg(
        runs=("val_accuracy", "size"),
        acc_mean=("val_accuracy", "mean"),
        acc_std=("val_accuracy", lambda a: a.std(ddof=1) if len(a) > 1 else float("nan")),
        img_per_s=("images_per_second", "mean"),
        seconds=("seconds", "mean"),
    ).reset_index()
    rows = []
    for steps, g in per_net.groupby("steps"):
        stds = [s for s in g.acc_std if s == s]
        pooled = (sum(s * s for s in stds) / len(stds)) ** 0.5 if stds else float("nan")
        gap = g.acc_mean.max() - g.acc_mean.min() if len(g) > 1 else float("nan")
        rows.append(dict(steps=steps, nets=len(g), pooled_seed_std=pooled, gap_between_nets=gap,
                         gap_over_std=gap / pooled if pooled > 0 else float("nan"),
                         seconds_per_run=g.seconds.mean()))
    return per_net, pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="mnv3-small,mnv3-large",
                   help="comma-separated zoo names (search_space.zoo) or tiny-cnn")
    p.add_argument("--steps", default="150,300,600", help="comma-separated step budgets")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per net and budget")
    p.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--val-size", type=int, default=10000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--resume", action="store_true", help="keep the CSV and skip runs already in it")
    args = p.parse_args(argv)

    nets = [n for n in args.nets.split(",") if n]
    budgets = [int(s) for s in args.steps.split(",") if s]
    data = load_dataset(args.data)
    print(data.summary(), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: set[tuple[str, int, int]] = set()
    if args.resume and args.out.exists():
        old = pd.read_csv(args.out)
        done = set(zip(old.net, old.steps, old.seed))
    elif args.out.exists():
        args.out.unlink()

    for steps in budgets:
        for seed in range(args.seeds):  # seeds outermost within a budget: drift hits nets alike
            for net in nets:
                if (net, steps, seed) in done:
                    continue
                cfg = ProxyConfig(steps=steps, seed=seed, resolution=args.resolution,
                                  threads=args.threads, val_size=args.val_size)
                model = make_net(net, data.in_channels, data.num_classes, args.resolution, seed)
                r = train_proxy(model, data, cfg)
                row = dict(net=net, steps=steps, seed=seed, val_accuracy=r.val_accuracy,
                           train_loss=r.train_loss, images_per_second=r.images_per_second,
                           seconds=r.seconds, diverged=r.diverged, threads=args.threads,
                           resolution=args.resolution, lr=cfg.lr, schedule=cfg.schedule,
                           load_avg_1min=os.getloadavg()[0], torch=torch.__version__,
                           time=time.strftime("%Y-%m-%dT%H:%M:%S"))
                pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
                print(f"{net:>16} steps={steps:<5} seed={seed} acc={r.val_accuracy:.4f} "
                      f"loss={r.train_loss:.3f} {r.images_per_second:6.0f} img/s {r.seconds:6.1f} s"
                      f"{'  DIVERGED' if r.diverged else ''}", flush=True)

    runs = pd.read_csv(args.out)
    per_net, per_budget = summarize(runs)
    pd.set_option("display.width", 120)
    print("\nper net and budget (accuracy on held-out training images):")
    print(per_net.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nper budget: gap between net means vs pooled seed std:")
    print(per_budget.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    per_net.to_csv(args.out.with_name(args.out.stem + "_summary.csv"), index=False)
    print(f"\nwrote {args.out} and {args.out.with_name(args.out.stem + '_summary.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
