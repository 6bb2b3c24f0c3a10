"""The `nas` command. Each area registers its own sub-commands; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable

from search_space.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def resolve_spec(ref: str):
    """A zoo name or a spec JSON file."""
    from search_space import ArchSpec, ZOO_NAMES, zoo

    if ref in ZOO_NAMES:
        return zoo(ref)
    path = Path(ref)
    if path.exists() or ref.endswith(".json"):
        return ArchSpec.load(path)
    raise UserError(f"{ref!r} is neither a zoo net ({', '.join(ZOO_NAMES)}) nor a spec file")


# ---- spec commands --------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from search_space import render

    spec = resolve_spec(args.spec)
    if args.resolution:
        spec = spec.with_rows(spec.rows, resolution=args.resolution)
    print(render(spec, markdown=args.markdown))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from search_space.published import reproduce
    from search_space.render import format_table

    rows = []
    failed = 0
    for check in reproduce():
        fig = check.figure
        if fig.metric == "params":
            ours, pub = f"{int(check.ours):,}", f"{fig.value / 1e6:.2f}M" if fig.printed_unit else f"{int(fig.value):,}"
        else:
            ours, pub = f"{check.ours:.1f}M", f"{fig.value:g}M"
        tol = "exact" if fig.tolerance() == 0 else f"±{fig.tolerance():.1%}"
        status = ("ok" if check.ok else "FAIL") if fig.checked else "info"
        failed += fig.checked and not check.ok
        rows.append((fig.net, fig.metric, ours, pub, f"{check.rel_diff:+.2%}", tol, status, fig.source))
    headers = ("net", "metric", "ours", "published", "diff", "tolerance", "check", "source")
    print(format_table(headers, rows, markdown=args.markdown))
    notes = [c.figure for c in reproduce() if c.figure.note]
    for fig in notes:
        print(f"note: {fig.net} {fig.metric} {fig.value:g}: {fig.note}")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(headers)
            writer.writerows(rows)
    print(f"{len(rows) - failed} ok or informational, {failed} outside tolerance")
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from search_space import build

    if not args.onnx and not args.tflite:
        raise UserError("nas export: give --onnx PATH, --tflite PATH or both")
    for flag, path in (("--onnx", args.onnx), ("--tflite", args.tflite)):
        if path and not Path(path).parent.exists():
            raise UserError(f"{flag} {path}: folder {Path(path).parent} does not exist")
    if args.tflite:
        from latency.litert import INSTALL_HINT, available

        if not available():  # one line, before any work
            raise UserError(f"--tflite: LiteRT is not installed here; {INSTALL_HINT}")
    spec = resolve_spec(args.spec)
    model = build(spec, seed=0)
    shape = (spec.in_channels, spec.resolution, spec.resolution)
    if args.weights:  # e.g. a supernet subnet (`nas supernet eval ... --out`) or a search's best_weights.pt
        from search_space import load_torchvision_state_dict

        load_torchvision_state_dict(model, args.weights)
    else:  # untrained: BN statistics from a batch, so the check below compares outputs of real scale
        from latency.export import set_bn_statistics

        set_bn_statistics(model, torch.randn(8, *shape, generator=torch.Generator().manual_seed(1)))
    model.eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    if args.onnx:
        from latency.export import export_module, output_scale_diff

        out = Path(args.onnx)
        export_module(model, (x,), out)
        err, rel = output_scale_diff(model, (x,), out)
        worst = max(worst, rel)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); onnxruntime vs torch: max abs diff {err:.2e}, "
              f"{rel:.2e} of the output's scale")
    if args.tflite:
        from latency.export import output_scale_diff
        from latency.litert import convert_module

        out = Path(args.tflite)
        data = convert_module(model, (x,))  # NHWC image input, as an app feeds a frame
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
        err, rel = output_scale_diff(model, (x,), out, runtime="litert")
        worst = max(worst, rel)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, NHWC input); LiteRT vs torch: max abs diff "
              f"{err:.2e}, {rel:.2e} of the output's scale")
    if worst > EXPORT_TOLERANCE:
        print(f"error: an exported model's output differs from torch by {worst:.2e} of its scale "
              f"(> {EXPORT_TOLERANCE:g})", file=sys.stderr)
        return 1
    return 0


EXPORT_TOLERANCE = 1e-4  # relative to max |output|: float32 exports land at ~1e-6


# ---- registration ---------------------------------------------------------------------------
# Areas that register sub-commands of their own: (module, function). Missing areas are skipped
# so the CLI keeps working while a package is being written.
AREAS: list[tuple[str, str]] = [
    ("latency.cli", "register"),
    ("nas.space_cli", "register"),
    ("nas.search_cli", "register"),
    ("nas.supernet_cli", "register"),
    ("nas.train_cli", "register"),
    ("netadapt.cli", "register"),
    ("nas.pipeline_cli", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Hardware-aware NAS in the style of Searching for MobileNetV3.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("show", help="print a spec as the paper's table, with params and MAdds")
    p.add_argument("spec", help="zoo name or spec JSON file")
    p.add_argument("--resolution", type=int, help="input resolution (default: the spec's)")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("reproduce", help="check every zoo net's params and MAdds against the papers")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("export", help="write a net as ONNX and/or .tflite and check the runtime against torch")
    p.add_argument("spec", help="zoo name or spec JSON file")
    p.add_argument("--onnx", default=None, help="output .onnx path")
    p.add_argument("--tflite", default=None,
                   help="output .tflite path (LiteRT, NHWC input; needs pip install -e '.[litert]')")
    p.add_argument("--weights", default=None, metavar="W",
                   help="state dict for SPEC (default: freshly initialised weights)")
    p.set_defaults(func=cmd_export)

    for module_name, func in AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        register: Callable = getattr(module, func)
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted; completed work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
