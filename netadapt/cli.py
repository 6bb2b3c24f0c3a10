"""`nas netadapt`: adapt a net to a latency target with NetAdapt (MobileNetV3 Sec. 4.2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search_space.errors import UserError

EPILOG = """\
examples:
  nas netadapt mnv3-small --table lat.parquet --target-frac 0.8 --out runs/na-small
  nas netadapt best.json --weights best_weights.pt --target-ms 12 --table lat.parquet --out runs/na
  nas netadapt mnv3-large --weights mobilenet_v3_large.pth --target-ms 15 --table lat.parquet --out runs/na-l

Latency is predicted for SPEC as given (e.g. `nas search`'s best.json: 224x224x3, 1000 classes;
for a training-geometry spec such as best_train.json pass --latency-resolution 224
--latency-channels 3 --latency-classes 1000);
the net is trained on --data at --resolution with the data set's channels and classes. Ops
missing from --table are measured on the spot and added to it. Rerunning with the same --out
continues after the last finished iteration."""


def _spec(ref: str):
    from nas.cli import resolve_spec

    return resolve_spec(ref)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return v


def register(sub) -> None:
    p = sub.add_parser("netadapt", help="shrink a net to a latency target with NetAdapt (MobileNetV3's way)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="zoo name or spec JSON (e.g. found by `nas search`)")
    p.add_argument("--weights", metavar="W", help="state dict (.pt/.pth) for SPEC: from `nas search`, or "
                   "torchvision MobileNetV3 weights (stem and classifier are adapted, then proxy-trained); "
                   "default: proxy-train the seed first")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target-ms", type=_positive_float, metavar="T", help="latency target (ms, predicted)")
    tgt.add_argument("--target-frac", type=_positive_float, metavar="F",
                     help="latency target as a fraction of the seed's predicted latency (e.g. 0.8)")
    p.add_argument("--table", required=True, metavar="TABLE", help="latency table (extended with missing ops)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (history, final spec and weights)")
    p.add_argument("--data", default=None, metavar="PATH", help="data set folder (default: Fashion-MNIST)")
    p.add_argument("--short-steps", type=int, default=100, help="short-term fine-tune steps per proposal (default 100)")
    p.add_argument("--long-steps", type=int, default=500, help="long-term fine-tune steps at the end (default 500)")
    p.add_argument("--init-steps", type=int, default=500,
                   help="proxy-training steps for a seed without trained weights (default 500)")
    p.add_argument("--delta-schedule", choices=("mnv3", "decay"), default="mnv3",
                   help="mnv3: step 1%% of the seed's latency (default); decay: 2.5%%, x0.96 per iteration")
    p.add_argument("--step-frac", type=float, default=None,
                   help="step as a fraction of the seed's latency (default 0.01 mnv3 / 0.025 decay)")
    p.add_argument("--decay", type=float, default=0.96, help="per-iteration step decay for --delta-schedule decay")
    p.add_argument("--select", choices=("mnv3", "netadapt"), default="mnv3",
                   help="mnv3: best accuracy change per latency change (default); netadapt: best accuracy")
    p.add_argument("--max-iters", type=int, default=1000)
    p.add_argument("--include-last", action="store_true", help="also prune the last 1x1 conv's width")
    p.add_argument("--resolution", type=int, default=32, help="proxy training resolution (default 32)")
    p.add_argument("--latency-resolution", type=int, default=None,
                   help="resolution latency is predicted at (default: the spec's)")
    p.add_argument("--latency-channels", type=int, default=None,
                   help="input channels latency is predicted with (default: the spec's)")
    p.add_argument("--latency-classes", type=int, default=None,
                   help="classes latency is predicted with (default: the spec's)")
    p.add_argument("--lr", type=float, default=None, help="proxy learning rate (seed training; default 0.2)")
    p.add_argument("--short-lr", type=float, default=None, help="short-term fine-tune lr (default lr/10)")
    p.add_argument("--long-lr", type=float, default=None, help="long-term fine-tune lr (default lr/10)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-batches", type=int, default=None,
                   help="score proposals on this many validation batches (default: all)")
    p.add_argument("--val-size", type=int, default=None, help="held-out validation images (default 10000)")
    p.add_argument("--max-train-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads for training")
    p.add_argument("--device", default="cpu", help="where fine-tuning runs: auto, cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="require an unfinished run in --out and continue it "
                   "(rerunning with the same --out resumes anyway)")
    p.add_argument("--no-measure", action="store_true", help="fail on ops missing from the table instead of measuring")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="cap (s) on waiting for a quiet machine before each measuring pass (default: the table's)")
    p.add_argument("--no-test", action="store_true", help="skip scoring the seed and final net on the test set")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_netadapt)


def cmd_netadapt(args: argparse.Namespace) -> int:
    import dataclasses

    from nas.data import load_dataset
    from nas.devices import resolve_device
    from nas.proxy import ProxyConfig

    from .latency_model import TableLatency
    from .loop import NetAdaptConfig, run_netadapt, training_spec
    from .start import adapt_state_dict, read_state_dict

    spec = _spec(args.spec)
    device = resolve_device(args.device)  # before anything slow: a GPU that is not there fails at once
    geometry = {}
    for flag, field in (("latency_resolution", "resolution"), ("latency_channels", "in_channels"),
                        ("latency_classes", "num_classes")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise UserError(f"--{flag.replace('_', '-')} {value}: must be a positive integer")
            geometry[field] = value
    if geometry:
        spec = dataclasses.replace(spec, **geometry)
    if spec.seg_head is not None:
        raise UserError(f"{args.spec}: NetAdapt adapts classification specs; this one has a segmentation head")
    if args.target_ms is not None and not args.target_ms > 0:
        raise UserError(f"--target-ms {args.target_ms}: must be a positive number of milliseconds")
    if args.target_frac is not None and not 0 < args.target_frac:
        raise UserError(f"--target-frac {args.target_frac}: must be a positive fraction")
    for name in ("short_steps", "long_steps", "init_steps"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    out = Path(args.out)
    if args.resume and not (out / "state.json").exists():
        raise UserError(f"--resume: no NetAdapt run to resume in {out} (no state.json)")

    proxy_kw = {k: v for k, v in dict(lr=args.lr, batch_size=args.batch_size, eval_batches=args.eval_batches,
                                     val_size=args.val_size, max_train_images=args.max_train_images,
                                     threads=args.threads, resolution=args.resolution,
                                     device=device).items() if v is not None}
    proxy = ProxyConfig(**proxy_kw)
    predict = TableLatency(args.table, measure_missing=not args.no_measure, quiet_wait=args.quiet_wait,
                           progress=not args.quiet)
    if args.target_frac is not None:
        target = args.target_frac * predict(spec)
    else:
        target = args.target_ms
    cfg = NetAdaptConfig(
        target_ms=target, delta_schedule=args.delta_schedule, step_frac=args.step_frac, decay=args.decay,
        select=args.select, short_steps=args.short_steps, long_steps=args.long_steps, init_steps=args.init_steps,
        short_lr=args.short_lr, long_lr=args.long_lr, max_iters=args.max_iters, include_last=args.include_last,
        seed=args.seed, test_eval=not args.no_test, proxy=proxy)
    data = load_dataset(args.data)
    if not args.quiet:
        print(f"latency predicted at {spec.resolution}x{spec.resolution}x{spec.in_channels}, {spec.num_classes} "
              f"classes; training at {args.resolution}x{args.resolution}x{data.in_channels}, {data.num_classes} "
              f"classes ({data.name})", file=sys.stderr)
    weights, train_first = None, None
    if args.weights:
        tspec = training_spec(spec, data, proxy.resolution)
        weights, train_first, note = adapt_state_dict(read_state_dict(args.weights), tspec, seed=args.seed,
                                                      source=f"--weights {args.weights}")
        if note and not args.quiet:
            print(f"weights {args.weights}: {note}; proxy-training {args.init_steps} steps first", file=sys.stderr)
    result = run_netadapt(spec, data, predict, out, cfg, weights, train_first=train_first, quiet=args.quiet)
    if args.quiet:
        print(result.message or f"{result.status}: {result.final_ms:.3f} ms")
    elif result.status == "target_met":
        pass  # the loop said so
    return 0
