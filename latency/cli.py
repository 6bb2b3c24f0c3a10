"""`nas latency ...`: build, predict, validate, export-ops, import, info.

`register(subparsers)` adds the `latency` command group to the main parser; every handler
is `args.func(args) -> int` and raises UserError for bad input (the CLI's main turns it
into one line on stderr and exit 2). `python -m latency ...` runs the group on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from search_space.errors import UserError

from .predict import MODELS
from .timing import DEFAULT_ROUNDS, RUNTIMES

DEFAULT_TABLE_RUNS = 100
DEFAULT_CALIBRATION_NETS = 12


def _int_at_least(name, low):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: expected an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{name} {v}: must be >= {low}")
        return v
    return conv


def _positive(name):
    return _int_at_least(name, 1)


def _nonneg(name):
    return _int_at_least(name, 0)


def _protocol_args(p: argparse.ArgumentParser, table_defaults: bool = True) -> None:
    g = p.add_argument_group("measurement protocol (defaults: the table's, else shown)")
    g.add_argument("--threads", type=_positive("--threads"), default=None, help="intra-op threads (default 1: one core, as the paper)")
    g.add_argument("--runs", type=_positive("--runs"), default=None, help=f"timed runs per measurement (default {DEFAULT_TABLE_RUNS})")
    g.add_argument("--warmup", type=_nonneg("--warmup"), default=None, help="untimed runs first (default 10)")
    g.add_argument("--net-runs", type=_positive("--net-runs"), default=None,
                   help="whole nets end to end: timed runs per round (default 5: many short rounds)")
    g.add_argument("--net-warmup", type=_nonneg("--net-warmup"), default=None,
                   help="whole nets: untimed runs before each round's (default 1)")
    g.add_argument("--passes", type=_positive("--passes"), default=None, help="passes over all ops; a row keeps its best (default 3)")
    g.add_argument("--statistic", choices=["min", "p10", "median", "mean"], default=None, help="statistic of the runs (default min)")
    g.add_argument("--no-pin", action="store_true", help="do not pin to one core when --threads 1")
    g.add_argument("--priority", choices=["realtime", "nice", "none"], default=None,
                   help="measuring thread's scheduling: realtime = SCHED_FIFO where permitted, else nice -20 (default)")
    g.add_argument("--quiet-wait", type=float, default=None, help="max seconds to wait for a quiet machine before each pass (default 10; 0 = never)")
    g.add_argument("--runtime", choices=list(RUNTIMES), default=None,
                   help="what times the ops: onnxruntime (default) or litert (LiteRT + XNNPACK; pip install -e '.[litert]')")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> argparse.ArgumentParser:
    lat = subparsers.add_parser("latency", help="on-device latency tables: build, predict, validate, remote devices",
                                description="Per-op latency lookup tables measured with onnxruntime or LiteRT (batch 1).")
    sub = lat.add_subparsers(dest="latency_command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser("build", help="measure every distinct op of a space (and the zoo) into a table",
                       description="Measure every distinct op of a search space (and of the zoo nets) into a table; "
                                   "extends TABLE in place and measures only what is missing.")
    b.add_argument("--space", action="append", required=True, metavar="large|small|FILE",
                   help="search space, or a spec JSON file (one spec or a list); repeatable")
    b.add_argument("--out", required=True, metavar="TABLE", help="table file (.parquet, or .csv)")
    b.add_argument("--format", choices=["parquet", "csv"], default=None, help="file format (default: from the suffix)")
    b.add_argument("--resolution", type=_positive("--resolution"), default=None,
                   help="input resolution of the space's nets and the zoo nets (default: the space's, 224)")
    b.add_argument("--int8", action="store_true",
                   help="time INT8 ops (onnxruntime: static QDQ; litert: PT2E static): a separate int8 table")
    b.add_argument("--no-zoo", action="store_true", help="do not add the zoo nets' ops")
    b.add_argument("--calibrate", type=_nonneg("--calibrate"), default=DEFAULT_CALIBRATION_NETS, metavar="K",
                   help=f"fit the calibration on K sampled nets measured end to end (default {DEFAULT_CALIBRATION_NETS}; 0: none)")
    b.add_argument("--calibration-rounds", type=_positive("--calibration-rounds"), default=DEFAULT_ROUNDS,
                   help=f"end-to-end rounds before settling rounds (default {DEFAULT_ROUNDS}, as validate)")
    b.add_argument("--calibration-model", choices=["auto", *MODELS], default="auto")
    b.add_argument("--recalibrate", action="store_true", help="measure the calibration nets again even if the table has a calibration")
    b.add_argument("--seed", type=int, default=0)
    _protocol_args(b)
    b.set_defaults(func=cmd_build)

    p = sub.add_parser("predict", help="a net's latency from a table", description="Predicted latency of nets from a table.")
    p.add_argument("spec", nargs="+", metavar="SPEC", help="zoo name or spec JSON file")
    p.add_argument("--table", required=True)
    p.add_argument("--measure-missing", action="store_true", help="measure ops missing from the table and add them")
    p.add_argument("--json", action="store_true", help="print JSON")
    _protocol_args(p)
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("validate", help="measure sampled + zoo nets end to end against the table's predictions",
                       description="Sample nets from the space plus the zoo nets, measure each end to end "
                                   "(interleaved rounds, reference net), compare with the table.")
    v.add_argument("--table", required=True)
    v.add_argument("--space", default=None, help="space to sample from (default: the table's first space)")
    v.add_argument("--samples", type=_nonneg("--samples"), default=100)
    v.add_argument("--rounds", type=_positive("--rounds"), default=DEFAULT_ROUNDS,
                   help=f"interleaved end-to-end rounds of --net-runs runs (default {DEFAULT_ROUNDS}; even vs odd gives the noise)")
    v.add_argument("--no-zoo", action="store_true")
    v.add_argument("--out", default="results/latency", help="folder for CSV/JSON/PNG (default results/latency)")
    v.add_argument("--seed", type=int, default=2000, help="sampling seed (calibration uses others)")
    v.add_argument("--calib-data", default=None, help="INT8: .npy (N,C,H,W) real images to calibrate whole-net quantization")
    _protocol_args(v)
    v.set_defaults(func=cmd_validate)

    e = sub.add_parser("export-ops", help="write op ONNX files + manifest + runner.py for a remote device",
                       description="Export every distinct op of a space to a self-contained folder; "
                                   "time it on the device with `python DIR/runner.py DIR --out table.csv`.")
    e.add_argument("--space", action="append", required=True, metavar="large|small|FILE")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--resolution", type=_positive("--resolution"), default=None)
    e.add_argument("--int8", action="store_true")
    e.add_argument("--runtime", choices=list(RUNTIMES), default="onnxruntime",
                   help="onnxruntime (.onnx files; default) or litert (.tflite files; the runner then needs only "
                        "ai-edge-litert + numpy)")
    e.add_argument("--no-zoo", action="store_true")
    e.add_argument("--calibrate", type=_nonneg("--calibrate"), default=DEFAULT_CALIBRATION_NETS, metavar="K",
                   help="add K whole sampled nets for calibration (timed by the runner like ops)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_export_ops)

    i = sub.add_parser("import", help="turn a runner CSV into a table", description="Turn the CSV written by runner.py into a table.")
    i.add_argument("csv", metavar="CSV")
    i.add_argument("--manifest", required=True, help="the exported folder (or its manifest.json)")
    i.add_argument("--out", required=True, metavar="TABLE")
    i.add_argument("--statistic", choices=["min", "p10", "median", "mean"], default="min")
    i.add_argument("--calibration-model", choices=["auto", *MODELS], default="auto")
    i.set_defaults(func=cmd_import)

    n = sub.add_parser("info", help="show a table's metadata and calibration")
    n.add_argument("table")
    n.set_defaults(func=cmd_info)
    return lat


# ---- handlers ------------------------------------------------------------------------------
def _protocol(args, table=None, threads_default=1):
    from .predict import protocol_of
    from .timing import Protocol

    check_table_runtime(args, table)
    runtime = args.runtime or (table.meta.get("runtime") if table is not None else None)
    over = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "passes": args.passes,
            "statistic": args.statistic, "quiet_wait": args.quiet_wait,
            "net_runs": args.net_runs, "net_warmup": args.net_warmup, "runtime": runtime}
    if args.no_pin:
        over["pin"] = False
    if args.priority:
        over["priority"] = args.priority
    if table is not None and len(table):
        proto = protocol_of(table, **over)
    else:
        base = Protocol()
        kw = {k: v for k, v in over.items() if v is not None}
        proto = Protocol(**{**base.__dict__, **kw})
    require_runtime(proto.runtime)
    return proto


def check_table_runtime(args, table) -> None:
    """A table measured with one runtime is refused where another is asked for: its numbers
    would silently answer for the wrong runtime."""
    want = getattr(args, "runtime", None)
    if table is None or want is None:
        return
    have = table.meta.get("runtime") or "onnxruntime"
    if have != want:
        where = table.path or "table"
        raise UserError(f"{where}: table was measured with {have}, not --runtime {want}; "
                        f"use a {want} table (nas latency build --runtime {want}) or --runtime {have}")


def require_runtime(runtime: str) -> None:
    """Measuring with LiteRT needs the optional extra: say so in one line."""
    if runtime == "litert":
        from .litert import INSTALL_HINT, available

        if not available():
            raise UserError(f"--runtime litert: LiteRT is not installed here; {INSTALL_HINT}")


def _space_ops(names, resolution, zoo: bool):
    from .ops import enumerate_ops, get_space, zoo_specs

    ops, spaces = {}, []
    for name in names:
        sp = get_space(name, resolution)
        spaces.append(sp)
        for op in sp.all_ops():
            ops.setdefault(op.key, op)
    if zoo:
        for op in enumerate_ops(zoo_specs(resolution or 224)):
            ops.setdefault(op.key, op)
    return list(ops.values()), spaces


def cmd_build(args) -> int:
    from .build import build_table, check_runtime, describe, sigterm_as_interrupt, table_meta
    from .predict import calibrate
    from .table import LatencyTable

    out = Path(args.out)
    if args.format:
        from .table import table_format

        table_format(out, args.format)
    precision = "int8" if args.int8 else "float32"
    existing = LatencyTable.load(out) if out.exists() else None
    proto = _protocol(args, existing)
    check_runtime(proto.runtime, precision)
    meta = table_meta(proto, precision, resolution=args.resolution or 224)
    table = LatencyTable.load_or_new(out, meta)
    if existing is None and args.format == "csv" and out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: a CSV table must end in .csv")
    ops, spaces = _space_ops(args.space, args.resolution, not args.no_zoo)
    table.meta["spaces"] = sorted(set(table.meta.get("spaces") or []) | set(args.space))
    progress = not args.no_progress
    before = len(table)
    with sigterm_as_interrupt():
        try:
            rep = build_table(ops, table, proto, progress=progress, seed=args.seed)
        except KeyboardInterrupt:
            print(f"interrupted: {len(table)} ops kept in {out}; run the same command again to finish", file=sys.stderr)
            return 130
        print(f"{out}: {rep.line()}")
        if args.calibrate and (args.recalibrate or not table.calibration):
            from .ops import reference_for, zoo_specs

            # Calibration nets drawn evenly from every space the table covers.
            specs = []
            for i, sp in enumerate(spaces):
                k = args.calibrate // len(spaces) + (i < args.calibrate % len(spaces))
                specs += sp.sample_specs(k, seed=args.seed + 1000)
            if not args.no_zoo:
                # The zoo's nets anchor the fit outside the space (small and large nets, other op
                # families, LR-ASPP at 520 px): fitted on sampled nets alone, it missed them by up to 17%.
                specs += zoo_specs(args.resolution)
            ref = reference_for(spaces[0], args.resolution)
            cal = calibrate(table, specs, proto, rounds=args.calibration_rounds, model=args.calibration_model,
                            progress=progress, seed=args.seed, reference=ref)
            print(f"calibration: {_cal_line(cal)}")
    print(f"{out}: {describe(table)} ({len(table) - before} new)")
    return 0


def _cal_line(cal) -> str:
    if not cal:
        return "none"
    terms = " + ".join(f"{c:.4g}*{t}" if t != "one" else f"{c:.4g}" for c, t in zip(cal.get("coef", []), cal.get("terms", [])))
    loo = cal.get("loo", {}).get(cal["model"], {})
    s = f"{cal['model']} ({terms or 'sum'}) from {cal.get('nets', 0)} nets"
    if loo:
        s += f"; leave-one-out median |err| {loo['median_abs']:.1%}, p90 {loo['p90_abs']:.1%}"
    if "raw_sum_ratio_median" in cal:
        s += f"; plain sum / measured {cal['raw_sum_ratio_median']:.3f}"
    return s


def cmd_predict(args) -> int:
    from .ops import resolve_spec
    from .predict import predict
    from .table import LatencyTable

    table = LatencyTable.load(args.table)
    check_table_runtime(args, table)
    proto = _protocol(args, table) if args.measure_missing else None
    out = []
    for text in args.spec:
        spec = resolve_spec(text)
        p = predict(spec, table, measure_missing=args.measure_missing, protocol=proto,
                    progress=not args.no_progress, spec_arg=text)
        out.append({"spec": text, "name": spec.name, "predicted_ms": p.ms, "sum_ms": p.sum_ms, "n_ops": p.n_ops,
                    "calibration": p.model, "precision": table.precision, "threads": table.meta.get("threads"),
                    "runtime": table.meta.get("runtime") or "onnxruntime"})
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=1))
    else:
        for r in out:
            print(f"{r['name']}: {r['predicted_ms']:.3f} ms ({r['runtime']}, {r['precision']}, {r['threads']} thread(s); "
                  f"sum of {r['n_ops']} ops {r['sum_ms']:.3f} ms, calibration {r['calibration']})")
    return 0


def cmd_validate(args) -> int:
    from .ops import get_space, zoo_specs
    from .table import LatencyTable
    from .validate import validate

    table = LatencyTable.load(args.table)
    proto = _protocol(args, table)
    space_name = args.space or (table.meta.get("spaces") or [None])[0]
    specs, sources, sp = [], [], None
    res = table.meta.get("resolution") or 224
    if args.samples:
        if not space_name:
            raise UserError(f"{args.table}: table names no space; pass --space large|small|FILE")
        sp = get_space(space_name, res)
        specs += sp.sample_specs(args.samples, seed=args.seed)
        sources += ["sample"] * args.samples
    if not args.no_zoo:
        z = zoo_specs(res)
        specs += z
        sources += ["zoo"] * len(z)
    if not specs:
        raise UserError("--samples 0 with --no-zoo: nothing to validate")
    calib = None
    if args.calib_data:
        from .quantize import load_calibration_data

        calib = load_calibration_data(args.calib_data)
    stored = (table.calibration or {}).get("reference") or {}
    if stored.get("spec"):
        from search_space import ArchSpec

        ref = ArchSpec.from_dict(stored["spec"])  # the same reference the calibration measured
    else:
        from .ops import reference_for

        ref = reference_for(sp if args.samples else None, res)
    rep = validate(table, specs, sources, proto, rounds=args.rounds, reference=ref, progress=not args.no_progress,
                   seed=args.seed, out_dir=args.out, calib_data=calib)
    for line in rep.lines():
        print(line)
    print(f"wrote {args.out}/latency_validation.csv, .json, .png")
    return 0


def cmd_export_ops(args) -> int:
    from .build import check_runtime
    from .remote import export_ops

    ops, spaces = _space_ops(args.space, args.resolution, not args.no_zoo)
    nets = spaces[0].sample_specs(args.calibrate, seed=args.seed + 1000) if args.calibrate else []
    if nets and not args.no_zoo:
        from .ops import zoo_specs

        nets += zoo_specs(args.resolution)  # anchors outside the space, as `build --calibrate` does
    precision = "int8" if args.int8 else "float32"
    check_runtime(args.runtime, precision)
    if args.runtime == "litert":
        from .litert import converter_version

        converter_version()  # one line naming the extra, before any work
    out = export_ops(ops, args.out, precision, nets=nets, progress=not args.no_progress,
                     space=",".join(args.space), runtime=args.runtime)
    print(f"{out}: {len(ops)} ops + {len(nets)} calibration nets; on the device: "
          f"python {out}/runner.py {out} --out table.csv")
    return 0


def cmd_import(args) -> int:
    from .build import describe
    from .remote import import_csv

    table = import_csv(args.csv, args.manifest, args.out, args.statistic, args.calibration_model)
    print(f"{args.out}: {describe(table)}")
    if table.calibration:
        print(f"calibration: {_cal_line(table.calibration)}")
    return 0


def cmd_info(args) -> int:
    from .build import describe
    from .table import LatencyTable

    table = LatencyTable.load(args.table)
    print(f"{args.table}: {describe(table)}")
    meta = {k: v for k, v in table.meta.items() if k != "calibration"}
    print(json.dumps(meta, indent=1, sort_keys=True))
    print(f"calibration: {_cal_line(table.calibration)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latency")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["latency", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
