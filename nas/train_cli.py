"""`nas train SPEC|NAME --out DIR`: full training of one net with the paper's recipe (resumes)."""

from __future__ import annotations

import argparse
import sys

from .search_cli import _int, _number, _size
from .train import SCHEDULES, TrainConfig


def register(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train one net for real: RMSProp, warm-up + decay, EMA, label smoothing (resumes)")
    p.add_argument("spec", help="zoo name or spec JSON (e.g. a search's best.json or a pipeline's final.json)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, curves, result.json (continued if it holds a run)")
    p.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    p.add_argument("--epochs", type=_int("--epochs", 1), default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--resolution", type=_int("--resolution", 8), default=d.resolution, help=f"default {d.resolution}")
    p.add_argument("--batch-size", type=_int("--batch-size", 1), default=d.batch_size)
    p.add_argument("--lr", type=_number("--lr"), default=None, help="peak learning rate (default 0.1 x batch / 4096)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="after one warm-up epoch (default cosine)")
    p.add_argument("--ema-decay", type=_number("--ema-decay"), default=d.ema_decay)
    p.add_argument("--val-size", type=_size("--val-size"), default=d.val_size)
    p.add_argument("--flip", action="store_true", help="random horizontal flips (off: Fashion-MNIST is not symmetric)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=_int("--threads", 1), default=d.threads)
    p.add_argument("--accumulate", type=_int("--accumulate", 1), default=d.accumulate,
                   help="micro-batches per step (and process): gradient accumulation, the BN statistics of each; "
                        "a 1-process run with --accumulate N computes what N processes of torchrun do")
    p.add_argument("--checkpoint-minutes", type=_number("--checkpoint-minutes"), default=d.checkpoint_minutes,
                   help=f"write last.pt this often besides each epoch's end (default {d.checkpoint_minutes}; 0: every step)")
    p.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu or cuda (default auto)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="start from this state dict: a supernet subnet, a search's best_weights.pt, torchvision's")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .cli import resolve_spec
    from .data import load_dataset
    from .devices import resolve_device
    from .distributed import device_for, session
    from .search_cli import _sigterm_as_interrupt
    from .train import train_net

    spec = resolve_spec(args.spec)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      ema_decay=args.ema_decay, resolution=args.resolution, val_size=args.val_size, flip=args.flip,
                      seed=args.seed, threads=args.threads, checkpoint_minutes=args.checkpoint_minutes,
                      accumulate=args.accumulate,
                      device=device_for(resolve_device(args.device)))
    weights = None
    if args.weights:
        from search_space.torchvision_compat import read_state_dict

        weights = read_state_dict(args.weights)
    data = load_dataset(args.data)
    try:
        with _sigterm_as_interrupt(), session(cfg.device) as world:
            result = train_net(spec, data, args.out, cfg, weights=weights, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"nas: interrupted; run the same command to continue from {args.out}/last.pt", file=sys.stderr)
        return 130
    if not world.main:
        return 0
    print(f"{result['spec']}: best held-out accuracy {result['best_val_acc_ema']:.4f} (EMA, epoch "
          f"{result['best_epoch']}), test accuracy {result['test_acc_ema']:.4f}; {args.out}/result.json, "
          "curves.png, best.pt, last.pt, weights.pt")
    return 0


__all__ = ["register", "cmd_train"]
