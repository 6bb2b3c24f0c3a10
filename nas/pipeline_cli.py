"""`nas pipeline` and `nas check`."""

from __future__ import annotations

import argparse
from pathlib import Path

from latency.timing import DEFAULT_ROUNDS
from search_space.errors import UserError

from .search_cli import _int


def register(sub) -> None:
    from .pipeline import PRESETS, PipelineConfig

    d = PipelineConfig(preset="large", out="x")
    p = sub.add_parser("pipeline", help="the MobileNetV3 recipe: search, NetAdapt, check against the paper",
                       description="Search (Large: w=-0.07, Small: w=-0.15), NetAdapt the best net, emit "
                       "final.json and check it against the paper's table. Rerun the same command to resume.")
    p.add_argument("--preset", required=True, choices=tuple(PRESETS))
    p.add_argument("--out", default=None, help="output folder (default results/pipeline-PRESET)")
    p.add_argument("--space", default=None, help="search space other than the preset's (name or JSON file)")
    p.add_argument("--latency-resolution", type=_int("--latency-resolution", 8), default=d.latency_resolution,
                   help="input resolution latency is predicted and measured at (default 224)")
    p.add_argument("--controller", default=d.controller, choices=("rl", "evolution", "tpe", "nsga2", "random"))
    p.add_argument("--trials", type=_int("--trials", 1), default=d.trials)
    p.add_argument("--search-steps", type=_int("--search-steps", 1), default=d.search_steps,
                   help=f"proxy steps per searched net (default {d.search_steps})")
    p.add_argument("--proxy-resolution", type=_int("--proxy-resolution", 8), default=d.proxy_resolution)
    p.add_argument("--netadapt-frac", type=float, default=d.netadapt_frac,
                   help="NetAdapt target: min(search target, FRAC x found net's latency) (default 0.9)")
    p.add_argument("--short-steps", type=_int("--short-steps", 0), default=d.short_steps)
    p.add_argument("--long-steps", type=_int("--long-steps", 0), default=d.long_steps)
    p.add_argument("--init-steps", type=_int("--init-steps", 0), default=d.init_steps)
    p.add_argument("--check-steps", type=_int("--check-steps", 1), default=d.check_steps)
    p.add_argument("--measure-rounds", type=_int("--measure-rounds", 0), default=d.measure_rounds)
    p.add_argument("--calibrate", type=_int("--calibrate", 0), default=d.calibrate_nets,
                   help="nets measured end to end to calibrate a new latency table")
    p.add_argument("--max-train-images", type=_int("--max-train-images", 1), default=None)
    p.add_argument("--eval-batches", type=_int("--eval-batches", 1), default=None)
    p.add_argument("--val-size", type=_int("--val-size", 1), default=d.val_size,
                   help="held-out validation images carved from the training set (default 10000)")
    p.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    p.add_argument("--table", default=None, help="latency table (default: this machine's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluator", choices=("proxy", "supernet"), default="proxy",
                   help="how the search scores nets: proxy training (default) or a supernet's inherited weights")
    p.add_argument("--supernet", default=None, metavar="DIR",
                   help="a trained supernet (default with --evaluator supernet: trained in OUT/supernet first)")
    p.add_argument("--device", default="cpu", help="where every stage trains and scores: auto, cpu or cuda "
                   "(default cpu; may change on a resume)")
    p.add_argument("--train-epochs", type=_int("--train-epochs", 0), default=0,
                   help="a last stage trains final.json for real (`nas train`) for this many epochs (default 0: off)")
    p.add_argument("--supernet-steps", type=_int("--supernet-steps", 1), default=None,
                   help="steps when the pipeline trains the supernet itself")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pipeline)

    c = sub.add_parser("check", help="a spec side by side with the paper's table, measured the same way")
    c.add_argument("spec", help="spec JSON (e.g. a pipeline's final.json) or zoo name")
    c.add_argument("--against", required=True, choices=("mnv3-large", "mnv3-small"))
    c.add_argument("--table", default=None, help="latency table (default: this machine's; built if missing)")
    c.add_argument("--data", default=None, help="data set folder (default: Debian's Fashion-MNIST)")
    c.add_argument("--steps", type=_int("--steps", 1), default=500, help="proxy steps for both nets (default 500)")
    c.add_argument("--proxy-resolution", type=_int("--proxy-resolution", 8), default=32)
    c.add_argument("--max-train-images", type=_int("--max-train-images", 1), default=None)
    c.add_argument("--target-ms", type=float, default=None, help="reward target (default: the paper net's latency)")
    c.add_argument("--rounds", type=_int("--rounds", 0), default=DEFAULT_ROUNDS,
                   help=f"end-to-end timing rounds of a few runs each (default {DEFAULT_ROUNDS}; 0: skip)")
    c.add_argument("--no-latency", action="store_true", help="skip latency (no table needed)")
    c.add_argument("--no-accuracy", action="store_true", help="skip proxy training")
    c.add_argument("--out", default=None, help="also write check.md and check.json here")
    c.add_argument("--device", default="cpu", help="where the proxy trains: auto, cpu or cuda (default cpu)")
    c.set_defaults(func=cmd_check)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .pipeline import Pipeline, PipelineConfig

    if not 0 < args.netadapt_frac <= 1:
        raise UserError(f"--netadapt-frac {args.netadapt_frac!r}: must be in (0, 1]")
    cfg = PipelineConfig(
        preset=args.preset, out=args.out or f"results/pipeline-{args.preset}", space=args.space,
        latency_resolution=args.latency_resolution, controller=args.controller,
        trials=args.trials, search_steps=args.search_steps, proxy_resolution=args.proxy_resolution,
        netadapt_frac=args.netadapt_frac, short_steps=args.short_steps, long_steps=args.long_steps,
        init_steps=args.init_steps, check_steps=args.check_steps, measure_rounds=args.measure_rounds,
        data=args.data, table=args.table, seed=args.seed, max_train_images=args.max_train_images,
        eval_batches=args.eval_batches, val_size=args.val_size, calibrate_nets=args.calibrate,
        evaluator=args.evaluator, supernet=args.supernet, supernet_steps=args.supernet_steps,
        train_epochs=args.train_epochs, device=resolve_device(args.device),
        progress=not args.no_progress)
    Pipeline(cfg).run()
    out = Path(cfg.out)
    print(f"pipeline {cfg.preset}: done; report {out / 'report.md'}, final spec {out / 'final.json'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check, write_report
    from .cli import resolve_spec
    from .proxy import ProxyConfig

    spec = resolve_spec(args.spec)
    table = data = None
    if not args.no_latency:
        from latency.machine_table import default_table_path, ensure_table, seed_spec

        from .search import load_space
        from search_space import zoo

        space = load_space("large" if args.against == "mnv3-large" else "small")
        path = Path(args.table) if args.table else default_table_path()
        table = ensure_table(path, space, extra_specs=[zoo(args.against), spec, seed_spec(space)])
    if not args.no_accuracy:
        from .data import load_dataset

        data = load_dataset(args.data)
    from .devices import resolve_device

    proxy = ProxyConfig(steps=args.steps, resolution=args.proxy_resolution, max_train_images=args.max_train_images,
                        device=resolve_device(args.device))
    report = run_check(spec, args.against, table=table, data=data, proxy_cfg=proxy, target_ms=args.target_ms,
                       measure_rounds=args.rounds, progress=True)
    print(report.to_text())
    if args.out:
        write_report(report, Path(args.out))
    return 0
