"""`nas supernet train|eval`: a weight-sharing supernet that scores a net in seconds.

    nas supernet train --space small --out DIR [--data PATH] [--steps N] [--resolution 32] [--seed S]
    nas supernet eval DIR ARCH|SPEC [--out SUBNET_DIR]

`train` continues an interrupted run when started again with the same command. `eval`
extracts one net (an arch code like ``1k3e3sew100_2k3e4w100_...``, a spec JSON of the
space, or a zoo net that is a point of it), recalibrates BatchNorm, scores it on the
held-out split, and with ``--out`` writes ``spec.json`` + ``weights.pt`` that `nas export`,
`nas netadapt --weights` and `nas check` take.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from search_space.errors import UserError

from .evaluators import DEFAULT_RECALIB_IMAGES, DEFAULT_VAL_IMAGES
from .search_cli import _int, _number, _size
from search_space.supernet import KERNEL_SHARING

from .supernet import RULES, SupernetConfig


def register(sub) -> None:
    p = sub.add_parser("supernet", help="weight-sharing supernet: train one, score nets with it")
    ss = p.add_subparsers(dest="supernet_command", required=True, parser_class=type(p))
    d = SupernetConfig()

    t = ss.add_parser("train", help="train the supernet of a space on the proxy task (resumes)")
    t.add_argument("--space", default=d.space, help=f"search space name or JSON file (default {d.space})")
    t.add_argument("--out", required=True, help="output folder: checkpoint, curves (continued if it holds one)")
    t.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    t.add_argument("--steps", type=_int("--steps", 1), default=d.steps, help=f"optimizer steps (default {d.steps})")
    t.add_argument("--resolution", type=_int("--resolution", 8), default=d.resolution,
                   help=f"training resolution (default {d.resolution})")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--rule", choices=RULES, default=d.rule,
                   help="sandwich: largest + random + smallest nets a step, in-place distillation; "
                        "uniform: random nets only; progressive: sandwich over a space opened a quarter of the "
                        "steps at a time (largest only, + kernels, + depths, + the rest; once-for-all) "
                        f"(default {d.rule})")
    t.add_argument("--num-random", type=_int("--num-random", 0), default=d.num_random,
                   help=f"random nets per step (default {d.num_random})")
    t.add_argument("--distill", action=argparse.BooleanOptionalAction, default=d.distill,
                   help="sandwich: train the smaller nets on the largest net's predictions (default on)")
    t.add_argument("--warmup-largest", type=_number("--warmup-largest"), default=d.warmup_largest,
                   help="fraction of steps in which random nets are replaced by the largest net with a "
                        "probability falling from 1 to 0 (TuNAS warm-up; default 0)")
    t.add_argument("--kernel-sharing", choices=KERNEL_SHARING, default=d.kernel_sharing,
                   help="nested: smaller kernels are the centre of the largest; transform: that centre through "
                        "a learned matrix per layer (once-for-all's kernel transform); separate: one depthwise "
                        f"weight per kernel size (TuNAS) (default {d.kernel_sharing})")
    t.add_argument("--lr", type=_number("--lr"), default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--batch-size", type=_int("--batch-size", 1), default=d.batch_size)
    t.add_argument("--val-size", type=_size("--val-size"), default=d.val_size,
                   help="held-out training images never trained on (must match the search's; default 10000)")
    t.add_argument("--threads", type=_int("--threads", 1), default=d.threads)
    t.add_argument("--device", default="cpu", help="auto (a GPU when torch sees one), cpu or cuda (default cpu: "
                                                    "the bit-identical resume is promised on the CPU)")
    t.add_argument("--checkpoint-minutes", type=_number("--checkpoint-minutes"), default=d.checkpoint_minutes)
    t.add_argument("--accumulate", type=_int("--accumulate", 1), default=d.accumulate,
                   help="micro-batches per step (and process), the BN statistics of each: 1 process with "
                        "--accumulate N computes what N torchrun processes do")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    e = ss.add_parser("eval", help="score one net with a trained supernet; --out writes its spec and weights")
    e.add_argument("supernet", metavar="DIR", help="supernet folder")
    e.add_argument("net", metavar="ARCH|SPEC", help="arch code (as in trials.csv), spec JSON or zoo net of the space")
    e.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    e.add_argument("--recalib-images", type=_int("--recalib-images", 1), default=DEFAULT_RECALIB_IMAGES)
    e.add_argument("--val-images", type=_int("--val-images", 1), default=DEFAULT_VAL_IMAGES,
                   help="held-out images scored (default: all)")
    e.add_argument("--test", action="store_true", help="also score the test set (final reports only)")
    e.add_argument("--out", default=None, help="write spec.json and weights.pt of the subnet here")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    e.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .supernet import train_supernet

    from .devices import resolve_device
    from .distributed import device_for, session

    device = device_for(resolve_device(args.device))
    cfg = SupernetConfig(device=device, space=args.space, steps=args.steps, resolution=args.resolution, seed=args.seed,
                         rule=args.rule, num_random=args.num_random, distill=args.distill,
                         warmup_largest=args.warmup_largest, kernel_sharing=args.kernel_sharing, lr=args.lr, batch_size=args.batch_size,
                         val_size=args.val_size, threads=args.threads, checkpoint_minutes=args.checkpoint_minutes,
                         accumulate=args.accumulate)
    from search_space import get_space

    get_space(cfg.space)  # a bad space name fails before the data set loads
    data = load_dataset(args.data)
    from .search_cli import _sigterm_as_interrupt

    try:
        with _sigterm_as_interrupt(), session(cfg.device) as world:
            outcome = train_supernet(cfg, args.out, data, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"nas: interrupted; the last checkpoint in {args.out} is kept: run the same command to continue",
              file=sys.stderr)
        return 130
    if not world.main:
        return 0
    last = outcome.curves[-1] if outcome.curves else {}
    print(f"supernet {cfg.space} in {outcome.out}: {outcome.steps} of {cfg.steps} steps "
          f"({outcome.seconds / 60:.1f} min of training in all); "
          + (f"held-out accuracy largest {last.get('largest_val_acc', 0):.4f}, smallest {last.get('smallest_val_acc', 0):.4f}"
             if last else "no curve point yet"))
    return 0


def resolve_net(space, ref: str) -> dict:
    """The point named by an arch code, a spec file or a zoo net; UserError if it is not in the space."""
    from search_space import ZOO_NAMES, ArchSpec, zoo
    from search_space.supernet import parse_arch

    if ref in ZOO_NAMES or ref.endswith(".json") or Path(ref).is_file():
        spec = zoo(ref) if ref in ZOO_NAMES else ArchSpec.load(ref)
        params = space.encode(spec)
        if params is None:
            near = space.code(space.nearest(spec))
            raise UserError(f"{ref}: not a net of space {space.name}; its nearest point is {near}")
        return params
    return parse_arch(space, ref)


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .evaluators import SupernetEvaluator
    from .supernet import load_checkpoint

    from .devices import resolve_device
    from .distributed import device_for

    device = device_for(resolve_device(args.device))
    load_checkpoint(args.supernet)  # a missing or corrupt checkpoint fails before the data set loads
    data = load_dataset(args.data)
    ev = SupernetEvaluator.open(args.supernet, data, recalib_images=args.recalib_images, val_images=args.val_images,
                                device=device)
    params = resolve_net(ev.space, args.net)
    spec = ev.space.decode(params)
    t0 = time.perf_counter()
    result = ev(spec)
    seconds = time.perf_counter() - t0
    from search_space import count

    cost = count(spec)
    out = {"arch": ev.space.code(params), "val_accuracy": result.accuracy, "val_images": args.val_images,
           "recalib_images": args.recalib_images, "seconds": round(seconds, 3), "params": int(cost.params),
           "madds": int(cost.madds), "resolution": spec.resolution}
    if args.test:
        from .proxy import ProxyConfig, evaluate

        out["test_accuracy"] = evaluate(result.model, data, "test", ProxyConfig(resolution=spec.resolution))
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        spec.with_rows(spec.rows, name=f"subnet-{out['arch']}").save(folder / "spec.json")
        torch.save(result.model.state_dict(), folder / "weights.pt")
        (folder / "subnet.json").write_text(json.dumps({**out, "supernet": str(Path(args.supernet).resolve())},
                                                       indent=1) + "\n")
        out["out"] = str(folder)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        line = (f"{out['arch']}: held-out accuracy {out['val_accuracy']:.4f} on {args.val_images or 'all'} images "
                f"({seconds:.2f} s; {cost.params / 1e6:.2f} M params, {cost.madds / 1e6:.1f} M MAdds at "
                f"{spec.resolution}x{spec.resolution})")
        if "test_accuracy" in out:
            line += f"; test accuracy {out['test_accuracy']:.4f}"
        print(line)
        if args.out:
            print(f"wrote {args.out}/spec.json and weights.pt")
    return 0


__all__ = ["register", "cmd_train", "cmd_eval", "resolve_net"]
