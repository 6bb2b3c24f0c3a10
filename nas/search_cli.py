"""`nas search`: a latency-aware architecture search (MnasNet reward, Optuna controllers).

    nas search [--space small|large|...] [--controller rl|tpe|nsga2|random]
               [--target-ms MS | --target-like ZOO_NET] [--w W | --alpha A --beta B | --hard]
               [--trials N] [--timeout S] [--storage URL] [--study NAME] [--out DIR]
               [--data PATH] [--seed N] ...

The same command started again continues the search (up to N completed trials in all);
``--storage postgresql://...`` with ``--study NAME`` lets workers on many machines share
one study. `register(subparsers)` adds the command to the `nas` CLI.
"""

from __future__ import annotations

import argparse
import math
import sys

from .evaluators import DEFAULT_RECALIB_IMAGES, EVALUATORS
from .search import (CONTROLLERS, DEFAULT_CALIBRATION_NETS, DEFAULT_OUT, DEFAULT_STEPS, DEFAULT_SUPERNET_TRIALS,
                     DEFAULT_TRIALS)


def _number(flag: str):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected a finite number")
        return v
    return conv


def _int(flag: str, minimum: int):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{flag} {v}: must be at least {minimum}")
        return v
    return conv


def _size(flag: str):
    """A count (512) or a fraction of the training images (0.2)."""
    def conv(text: str):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected a count or a fraction") from None
        if v <= 0 or not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: must be > 0")
        return int(v) if v >= 1 and v == int(v) else v
    return conv


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search", help="latency-aware architecture search (MnasNet or TuNAS reward; rl, evolution, tpe, nsga2 or "
                         "random controller; proxy or supernet evaluator)",
        description="Search a space for the net with the best ACC x (LAT/TARGET)^w. Accuracy: short proxy "
                    "training; latency: this machine's lookup table (built first if missing). Run the same "
                    "command again to continue; share --storage/--study between workers.")
    g = p.add_argument_group("what to search")
    g.add_argument("--space", default="small", help="search space: small, large, small-nl, large-nl or a JSON file "
                                                     "(default small)")
    g.add_argument("--controller", default="rl", choices=CONTROLLERS,
                   help="rl (MnasNet-style policy gradient), evolution (regularized aging evolution), tpe, "
                        "nsga2 (accuracy and latency, Pareto front), random (default rl)")
    g.add_argument("--trials", type=_int("--trials", 1), default=None,
                   help=f"completed trials in the study in all, resumes included (default {DEFAULT_TRIALS}; "
                        f"{DEFAULT_SUPERNET_TRIALS} with --evaluator supernet)")
    g.add_argument("--timeout", type=_number("--timeout"), default=None, help="stop starting trials after S seconds")
    g.add_argument("--seed", type=int, default=0, help="controller, proxy and initial-weight seed (default 0)")
    g.add_argument("--enqueue-known", action=argparse.BooleanOptionalAction, default=None,
                   help="first evaluate the zoo nets that fit the space (e.g. MnasNet-A1 in large; default on)")

    r = p.add_argument_group("reward: ACC x (LAT/TARGET)^w, or ACC + beta x |LAT/TARGET - 1| with --reward abs")
    r.add_argument("--target-ms", type=_number("--target-ms"), default=None, help="target latency in ms on this table")
    r.add_argument("--target-like", metavar="ZOO_NET", default=None,
                   help="target = this zoo net's latency on this table (default: the space's seed net)")
    r.add_argument("--w", type=_number("--w"), default=None,
                   help="constant exponent, <= 0 (default -0.15 small, -0.07 large, as MobileNetV3)")
    r.add_argument("--alpha", type=_number("--alpha"), default=None, help="exponent under the target (with --beta)")
    r.add_argument("--beta", type=_number("--beta"), default=None, help="exponent over the target (with --alpha)")
    r.add_argument("--hard", action="store_true", help="hard constraint: alpha 0, beta -1")
    r.add_argument("--reward", choices=("mnas", "abs"), default="mnas",
                   help="mnas: ACC x (LAT/TAR)^w (default); abs: TuNAS's ACC + beta x |LAT/TAR - 1| "
                        "(--beta, default -0.1), which lands on the target without a sweep over w")

    s = p.add_argument_group("where")
    s.add_argument("--out", default=DEFAULT_OUT, help=f"output folder; holds the study unless --storage (default {DEFAULT_OUT})")
    s.add_argument("--storage", default=None, help="shared study storage: postgresql://USER@HOST/DB, sqlite:///FILE, "
                                                   "or a journal FILE.log (default: OUT/study.log)")
    s.add_argument("--study", default=None, help="study name (default nas-search)")
    s.add_argument("--report-only", action="store_true", help="run no trials; write the results of the study as it is")

    lat = p.add_argument_group("latency")
    lat.add_argument("--table", default=None, help="latency table (default $MNV3_NAS_TABLE or "
                                                   "~/.cache/mnv3-nas/latency-table.parquet; built if missing)")
    lat.add_argument("--resolution", type=_int("--resolution", 8), default=None,
                     help="input resolution the latency is for (default: the space's, 224)")
    lat.add_argument("--calibrate", type=_int("--calibrate", 0), default=DEFAULT_CALIBRATION_NETS, metavar="K",
                     help=f"a new table's calibration: K nets measured end to end (default {DEFAULT_CALIBRATION_NETS})")

    ev = p.add_argument_group("accuracy: how a net is scored")
    ev.add_argument("--evaluator", default="proxy", choices=EVALUATORS,
                    help="proxy: train each net from scratch (~35 s); supernet: inherit its weights from a trained "
                         "supernet (`nas supernet train`), recalibrate BN, score (2-4 s here) (default proxy)")
    ev.add_argument("--supernet", default=None, metavar="DIR", help="the supernet folder (--evaluator supernet)")
    ev.add_argument("--recalib-images", type=_int("--recalib-images", 1), default=None,
                    help=f"supernet: training images for BN recalibration (default {DEFAULT_RECALIB_IMAGES})")
    ev.add_argument("--val-images", type=_int("--val-images", 1), default=None,
                    help="supernet: held-out images scored (default: all)")
    ev.add_argument("--finetune-steps", type=_int("--finetune-steps", 0), default=0,
                    help="supernet: SGD steps (lr 0.02) on a net's inherited weights before it is scored (default 0)")

    pr = p.add_argument_group("accuracy: proxy training")
    pr.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    pr.add_argument("--steps", type=_int("--steps", 0), default=None, help=f"SGD steps per net (default {DEFAULT_STEPS})")
    pr.add_argument("--batch-size", type=_int("--batch-size", 1), default=None, help="default 128")
    pr.add_argument("--lr", type=_number("--lr"), default=None, help="peak learning rate (default 0.2)")
    pr.add_argument("--proxy-resolution", type=_int("--proxy-resolution", 8), default=None,
                    help="training resolution (default 32)")
    pr.add_argument("--val-size", type=_size("--val-size"), default=None,
                    help="held-out training images scored: count or fraction (default 10000)")
    pr.add_argument("--max-train-images", type=_int("--max-train-images", 1), default=None,
                    help="train on at most this many images")
    pr.add_argument("--threads", type=_int("--threads", 1), default=None, help="torch threads per proxy run (default 1)")
    pr.add_argument("--device", default="cpu", help="where nets are trained and scored: auto (a GPU when torch sees "
                                                     "one), cpu or cuda (default cpu)")
    pr.add_argument("--zoo-reference", default=None, metavar="NET,NET|none",
                    help="zoo nets trained the same way and shown in the plot (default mnv3-small,mnv3-small-075 "
                         "or mnv3-large,mnasnet-a1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (e.g. on the workers of a shared study)")
    p.set_defaults(func=cmd_search)
    return p


def config_from_args(args: argparse.Namespace):
    from .search import SearchConfig

    zoo_ref = None
    if args.zoo_reference is not None:
        text = args.zoo_reference.strip()
        zoo_ref = () if text.lower() in ("", "none") else tuple(n.strip() for n in text.split(",") if n.strip())
    from .devices import resolve_device

    proxy = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "resolution": args.proxy_resolution,
             "val_size": args.val_size, "max_train_images": args.max_train_images, "threads": args.threads,
             "device": resolve_device(args.device)}
    return SearchConfig(
        space=args.space, controller=args.controller, target_ms=args.target_ms, target_like=args.target_like,
        w=args.w, alpha=args.alpha, beta=args.beta, hard=args.hard, reward=args.reward,
        trials=args.trials or (DEFAULT_SUPERNET_TRIALS if args.evaluator == "supernet" else DEFAULT_TRIALS),
        timeout=args.timeout,
        storage=args.storage, study=args.study, out=args.out, data=args.data, seed=args.seed, table=args.table,
        resolution=args.resolution, proxy={k: v for k, v in proxy.items() if v is not None},
        enqueue_known=args.enqueue_known, zoo_reference=zoo_ref, calibrate_nets=args.calibrate,
        progress=not args.no_progress, report_only=args.report_only, plots=not args.no_plots,
        evaluator=args.evaluator, supernet=args.supernet, recalib_images=args.recalib_images,
        val_images=args.val_images, finetune_steps=args.finetune_steps)


def cmd_search(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from .search import run_search

    cfg = config_from_args(args)
    optuna.logging.set_verbosity(logging.WARNING)
    with _sigterm_as_interrupt():
        outcome = run_search(cfg)
    best = outcome.best
    summary = outcome.summary
    settings = summary.get("settings", {})
    print(f"study {outcome.study_name!r} in {outcome.storage}: {outcome.completed} trials complete, "
          f"{outcome.failed} failed; this run: {outcome.ran} trial(s), stopped by {outcome.stopped}")
    if settings.get("target_ms"):
        like = f" ({settings['target_like']})" if settings.get("target_like") else ""
        if settings.get("reward") == "abs":
            print(f"target {settings['target_ms']:.3f} ms{like}, reward ACC + {settings.get('beta')} x |LAT/TAR - 1|")
        else:
            print(f"target {settings['target_ms']:.3f} ms{like}, alpha {settings.get('alpha')}, beta {settings.get('beta')}")
    if best:
        print(f"best: trial {best['number']} reward {best['reward']:.4f}, accuracy {best['accuracy']:.4f}, "
              f"latency {best['latency_ms']:.3f} ms, {best['arch']}")
    for name, cmp in (summary.get("vs_zoo") or {}).items():
        if cmp.get("trial") is None:
            print(f"vs {name} ({cmp['zoo_accuracy']:.4f} at {cmp['zoo_latency_ms']:.3f} ms): no trial at or below its latency")
        else:
            verdict = "beats it" if cmp["beats"] else "does not beat it"
            print(f"vs {name} ({cmp['zoo_accuracy']:.4f} at {cmp['zoo_latency_ms']:.3f} ms): trial {cmp['trial']} "
                  f"{cmp['accuracy']:.4f} at {cmp['latency_ms']:.3f} ms {verdict}")
    files = [f for f in ("trials.csv", "best.json", "best_table.txt", "pareto.csv", "summary.json",
                         "accuracy_latency.png", "history.png", "best_weights.pt") if (outcome.out / f).exists()]
    print(f"results in {outcome.out}: {', '.join(files)}")
    if outcome.stopped == "failures":
        print("nas search: stopped after too many failed trials (see failed_because in trials.csv)", file=sys.stderr)
        return 1
    return 0


class _sigterm_as_interrupt:
    """SIGTERM ends the search like Ctrl-C: the running trial is recorded as failed, not left
    running."""

    def __enter__(self):
        import signal
        import threading

        self._old = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


__all__ = ["cmd_search", "config_from_args", "register"]
