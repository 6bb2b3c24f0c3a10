"""Latency tables for a remote device: export op files + manifest, import the runner's CSV.

    nas latency export-ops --space large --out ops_dir      # here
    python ops_dir/runner.py ops_dir --out table.csv        # on the device (numpy + onnxruntime, or + ai-edge-litert)
    nas latency import table.csv --manifest ops_dir --out device.parquet   # here

The folder is self-contained: ops/*.onnx, manifest.json (key, kind, file, input names,
shapes, dtypes of each op), and a copy of runner.py. Calibration nets (whole nets, kind
"net") can ride along; the runner times them like ops and `import` fits the table's
calibration from them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from search_space.errors import UserError

from . import export as _export
from .runner import CSV_COLUMNS, MANIFEST_SCHEMA, RunnerError, read_done, read_manifest
from .table import LatencyTable, _shapes_json
from .timing import STATISTICS, now_iso

RUNNER_SOURCE = Path(__file__).with_name("runner.py")


SUFFIX = {"onnxruntime": ".onnx", "litert": ".tflite"}


def file_name(key: str, prefix: str = "op", runtime: str = "onnxruntime") -> str:
    return f"{prefix}-{hashlib.sha1(key.encode()).hexdigest()[:16]}{SUFFIX[runtime]}"


def export_ops(ops: Sequence, out_dir: str | Path, precision: str = "float32", nets: Sequence = (),
               progress: bool = True, space: str | None = None, runtime: str = "onnxruntime") -> Path:
    """Write every op (and optional calibration nets) as ONNX (or .tflite for LiteRT) +
    manifest.json + runner.py. Files already there are kept: a second export resumes."""
    from .build import exporter_name
    from .build import _Progress, op_model
    from .e2e import net_model
    from .ops import net_keys

    out = Path(out_dir)
    (out / "ops").mkdir(parents=True, exist_ok=True)
    old = {}
    if (out / "manifest.json").exists():
        try:
            previous = read_manifest(out)
        except RunnerError:
            previous = {"ops": []}
        have = (previous.get("runtime") or "onnxruntime", previous.get("precision") or "float32")
        if previous["ops"] and have != (runtime, precision):
            raise UserError(f"{out}: holds {have[1]} ops for {have[0]}, not {precision} for {runtime}; "
                            f"export to another --out")
        old = {e["key"]: e for e in previous["ops"]}
    entries = []
    with _Progress(progress) as bar:
        task = bar.task(f"export {precision} ops", len(ops) + len(nets))
        for op in ops:
            rel = f"ops/{file_name(op.key, runtime=runtime)}"
            if not (op.key in old and (out / rel).exists()):
                (out / rel).write_bytes(op_model(op, precision, runtime=runtime))
            entries.append({"key": op.key, "kind": op.kind, "file": rel,
                            "inputs": [{"name": f"in{i}", "shape": list(s), "dtype": "float32"}
                                       for i, s in enumerate(op.input_shapes)]})
            bar.advance(task)
        for spec in nets:
            key = f"net:{spec.name}"
            rel = f"ops/{file_name(key + spec.to_json(None), 'net', runtime)}"
            if not (out / rel).exists():
                (out / rel).write_bytes(net_model(spec, precision, runtime=runtime))
            entries.append({"key": key, "kind": "net", "file": rel, "spec": spec.to_dict(),
                            "op_keys": net_keys(spec),
                            "inputs": [{"name": "in0", "shape": list(_export.net_input_shape(spec)), "dtype": "float32"}]})
            bar.advance(task)
    manifest = {"schema": MANIFEST_SCHEMA, "version": 1, "precision": precision, "created": now_iso(),
                "runtime": runtime, "exporter": exporter_name(runtime), "space": space, "ops": entries}
    if runtime == "onnxruntime":
        manifest["opset"] = _export.OPSET
    else:
        manifest["layout"] = "NHWC"  # 4-D inputs/outputs of the .tflite files; "inputs" keep the ops' NCHW shapes
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "manifest.json")
    shutil.copyfile(RUNNER_SOURCE, out / "runner.py")
    return out


def import_csv(csv_path: str | Path, manifest: str | Path, out: str | Path | None = None,
               statistic: str = "min", calibration_model: str = "auto") -> LatencyTable:
    """Turn a runner CSV (+ its .meta.json) into a table; extend `out` if it exists."""
    from .predict import fit_calibration

    csv_path = Path(csv_path)
    mdir = Path(manifest)
    mdir = mdir.parent if mdir.name == "manifest.json" else mdir
    try:
        man = read_manifest(mdir)
        done = read_done(csv_path)
    except RunnerError as exc:
        raise UserError(str(exc)) from None
    if not csv_path.exists():
        raise UserError(f"{csv_path}: no such runner CSV")
    if not done:
        raise UserError(f"{csv_path}: holds no measured rows")
    if statistic not in STATISTICS:
        raise UserError(f"--statistic {statistic!r}: expected one of {', '.join(STATISTICS)}")
    side = Path(str(csv_path) + ".meta.json")
    rmeta = json.loads(side.read_text()) if side.exists() else {}
    measured_with, exported_for = rmeta.get("runtime") or "onnxruntime", man.get("runtime") or "onnxruntime"
    if rmeta and measured_with != exported_for:
        raise UserError(f"{csv_path}: measured with {measured_with}, but {mdir / 'manifest.json'} holds {exported_for} "
                        f"files (wrong manifest?)")
    df = pd.DataFrame(list(done.values()), columns=CSV_COLUMNS)
    for c in ("min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms", "other_load"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["runs"] = pd.to_numeric(df["runs"], errors="coerce")
    entries = {e["key"]: e for e in man["ops"]}
    unknown = sorted(set(df["key"]) - set(entries))
    if unknown:
        raise UserError(f"{csv_path}: key {unknown[0]!r} is not in {mdir / 'manifest.json'} (wrong manifest?)")
    col = STATISTICS[statistic]
    meta = {
        "precision": man.get("precision", "float32"), "statistic": statistic,
        "threads": _int(rmeta.get("threads", df["threads"].iloc[0])),
        "runs": _int(rmeta.get("runs", df["runs"].iloc[0])),
        "warmup": _int(rmeta.get("warmup", df["warmup"].iloc[0])),
        "passes": _int(rmeta.get("passes", _op_passes(df, entries))),
        "pin": rmeta.get("pinned_core") is not None, "priority": rmeta.get("priority"),
        "runtime": exported_for,
        "runtime_version": rmeta.get("runtime_version"), "cpu": rmeta.get("cpu"),
        "cpu_count": rmeta.get("cpu_count"), "hostname": rmeta.get("hostname"), "platform": rmeta.get("platform"),
        "exporter": man.get("exporter") or f"opset {man.get('opset')}", "created": now_iso(),
        "imported_from": str(csv_path),
        "spaces": [man["space"]] if man.get("space") else [], "calibration": None,
    }
    table = LatencyTable.load_or_new(out, meta) if out else LatencyTable(meta)
    nets = []
    for key, g in df.groupby("key", sort=False):
        e = entries[key]
        g = g.sort_values("pass")
        if e.get("kind") == "net":
            nets.append((e, float(g[col].min()), g[col].to_numpy()))
            continue
        if key in table:
            continue  # already measured: a table keeps its first measurement protocol-wide
        best = g.loc[g[col].idxmin()]
        table.set_row({
            "key": key, "kind": e.get("kind", "row"),
            "input_shapes": _shapes_json([i["shape"] for i in e.get("inputs", [])]),
            "lat_ms": float(best[col]), "passes": int(len(g)), "pass_ms": json.dumps([round(float(v), 6) for v in g[col]]),
            "min_ms": float(best["min_ms"]), "p10_ms": float(best["p10_ms"]), "median_ms": float(best["median_ms"]),
            "mean_ms": float(best["mean_ms"]), "std_ms": float(best["std_ms"]), "runs": int(best["runs"]),
            "other_load": float(best["other_load"]), "measured_at": str(g["measured_at"].iloc[-1]),
        })
    if nets:
        lut = table.lookup()
        records = []
        for e, measured, per_pass in nets:
            keys = e.get("op_keys") or []
            if not keys or any(k not in lut for k in keys):
                continue
            records.append({"name": e["key"][4:], "spec": e.get("spec"), "sum_ms": float(sum(lut[k] for k in keys)),
                            "n_ops": len(keys), "measured_ms": measured,
                            "half_a_ms": float(np.min(per_pass[0::2])) if len(per_pass) > 0 else None,
                            "half_b_ms": float(np.min(per_pass[1::2])) if len(per_pass) > 1 else None})
        if records:
            cal = fit_calibration(records, calibration_model)
            cal.update({"rounds": int(max(len(p) for _, _, p in nets)), "net_runs": _int(rmeta.get("net_runs")),
                        "net_warmup": _int(rmeta.get("net_warmup")), "fitted_at": now_iso(), "records": records,
                        "drift": {}})
            table.meta["calibration"] = cal
    if out:
        table.save(out)
    return table


def _op_passes(df, entries) -> int:
    """Passes over the ops (whole nets have rounds of their own) when the runner's sidecar is lost."""
    ops = df[[entries[k].get("kind") != "net" for k in df["key"]]]
    return int(ops["pass"].astype(int).max() + 1) if len(ops) else 0


def _int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return None
