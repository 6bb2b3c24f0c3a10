"""What does a supernet cost to train here? Seconds per step of each space and rule, side by side.

Times ``--steps`` training steps (after one warm-up step) of each space's supernet in one
process, one torch thread, and projects the default run (`nas supernet train`'s default
steps). A full run's own time is in its folder (``supernet.json``: ``seconds``).

    python experiments/supernet_cost.py --spaces small,large --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", default="small,large")
    p.add_argument("--rules", default="sandwich,uniform")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(RESULTS / "supernet_cost.json"))
    args = p.parse_args(argv)

    import torch

    from nas.data import load_dataset, search_splits
    from nas.supernet import SupernetConfig, _optimizer, _train_step
    from search_space import get_space
    from search_space.supernet import Supernet

    torch.set_num_threads(1)
    data = load_dataset(args.data)
    rows = []
    for space_name in args.spaces.split(","):
        for rule in args.rules.split(","):
            cfg = SupernetConfig(space=space_name, rule=rule)
            space = get_space(space_name)
            train, _ = search_splits(data, resolution=cfg.resolution, val_size=cfg.val_size, split_seed=0)
            net = Supernet(space, data.in_channels, data.num_classes, cfg.resolution)
            net.to(memory_format=torch.channels_last)
            opt = _optimizer(net, cfg)
            times = []
            for step in range(args.steps + 1):
                t0 = time.perf_counter()
                _train_step(net, opt, space, cfg, train, step)
                opt.step()
                if step:  # the first step warms up allocators and kernels
                    times.append(time.perf_counter() - t0)
            per_step = statistics.median(times)
            nets = 4 if rule == "sandwich" else cfg.num_random
            rows.append({"space": space_name, "rule": rule, "nets_per_step": nets, "seconds_per_step": per_step,
                         "spread": [min(times), max(times)],
                         "default_steps": cfg.steps, "projected_minutes": per_step * cfg.steps / 60,
                         "params": sum(q.numel() for q in net.parameters())})
            print(f"{space_name:6s} {rule:9s} {per_step:.2f} s/step ({min(times):.2f}-{max(times):.2f}); "
                  f"{cfg.steps} steps ~ {per_step * cfg.steps / 60:.0f} min", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": 1, "batch_size": SupernetConfig().batch_size,
                                          "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
