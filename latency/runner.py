#!/usr/bin/env python3
"""Time the ops of an exported folder with onnxruntime or LiteRT: a single file for a remote device.

Needs only the Python standard library, numpy and the folder's runtime: onnxruntime for
.onnx files, ai-edge-litert for .tflite files (`nas latency export-ops --runtime litert`;
the manifest names the runtime). Copy the folder written by `nas latency export-ops` to the
device (this file is inside it) and run

    python runner.py DIR --out table.csv [--threads 1] [--runs 100] [--warmup 10] [--passes 3]

It reads DIR/manifest.json, times every op `--passes` times (pass after pass over all ops,
in a fresh random order, so that slow drift of the machine hits every op alike; the table
keeps the best pass), then times again the ops whose two best passes still differ by more
than `--settle` (up to `--max-passes`), and appends one CSV row per op and pass as soon as
it is measured. Whole calibration nets in the folder (kind "net") are timed afterwards the
way `nas latency validate` times nets here: `--net-rounds` short interleaved rounds of
`--net-runs` runs each (best round kept), because a host's speed changes every few seconds
and many short rounds find a net's floor where a few long ones land in one slow spell.
Running it again skips what the CSV already holds, so an interrupted run loses nothing.
Bring the CSV back and turn it into a table with `nas latency import`.
With one thread it pins itself to one core and, where permitted, runs at real-time
priority (see raise_priority).

This file is also the one timing implementation of the package (`latency.timing` imports
it), so a table built on the device and one built locally are measured the same way.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import random
import socket
import sys
import time
from pathlib import Path

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - reported by main()
    ort = None

RUNTIMES = ("onnxruntime", "litert")
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert"}

RUNNER_VERSION = 1
MANIFEST_SCHEMA = "mnv3-nas/latency-ops"
QUIET_CHECK_S = 5.0  # whole nets: seconds between chances for the machine to become quiet
CSV_COLUMNS = [
    "key", "pass", "min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms",
    "runs", "warmup", "threads", "other_load", "measured_at",
]
STAT_NAMES = ("min_ms", "p10_ms", "median_ms", "mean_ms", "std_ms")

_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


# ---- the machine ---------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it, with family/model/stepping when the name is vague."""
    name, fields = "", {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if ":" not in line:
                    if fields:
                        break
                    continue
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    extra = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    if extra:
        name = f"{name} ({', '.join(extra)})"
    return name


def runtime_version(runtime: str = "onnxruntime") -> str:
    """The installed version of a runtime's package, or "missing"."""
    if runtime == "onnxruntime":
        return getattr(ort, "__version__", "missing")
    try:
        from importlib import metadata

        return metadata.version(RUNTIME_PACKAGES[runtime])
    except Exception:  # noqa: BLE001 - PackageNotFoundError, unknown runtime
        return "missing"


def machine_info(runtime: str = "onnxruntime") -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "numpy_version": np.__version__,
    }


def _proc_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    vals = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
    idle = vals[3] + vals[4]
    total = sum(vals)
    return total - idle, total


def _self_ticks() -> int:
    try:
        with open("/proc/self/stat") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])  # utime + stime (all threads)
    except (OSError, IndexError, ValueError):
        return 0


class LoadMeter:
    """CPU used by everything but this process, in cores, between start() and read()."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._m0 = _proc_cpu_ticks()
        self._s0 = _self_ticks()

    def read(self) -> float:
        m1, s1, t1 = _proc_cpu_ticks(), _self_ticks(), time.monotonic()
        if m1 is None or self._m0 is None or t1 <= self._t0:
            return float("nan")
        busy = (m1[0] - self._m0[0]) - (s1 - self._s0)
        return max(0.0, busy / self.hz / (t1 - self._t0))


def other_load(interval: float = 0.25) -> float:
    """Cores busy with other processes, sampled over `interval` seconds."""
    meter = LoadMeter()
    time.sleep(interval)
    return meter.read()


def wait_quiet(max_load: float = 0.15, cap_s: float = 10.0, interval: float = 0.25) -> float:
    """Wait (at most cap_s) until other processes use under `max_load` cores; return the load."""
    deadline = time.monotonic() + max(0.0, cap_s)
    while True:
        load = other_load(interval)
        if not (load >= max_load) or time.monotonic() >= deadline:  # nan counts as quiet
            return load


def pick_quiet_core(interval: float = 0.2) -> int | None:
    """The allowed core that was idlest over `interval` seconds (None off Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))

    def per_cpu() -> dict[int, int]:
        out = {}
        try:
            with open("/proc/stat") as fh:
                for line in fh:
                    if line.startswith("cpu") and line[3].isdigit():
                        p = line.split()
                        out[int(p[0][3:])] = int(p[4]) + int(p[5])
        except OSError:
            pass
        return out

    a = per_cpu()
    time.sleep(interval)
    b = per_cpu()
    idle = {c: b.get(c, 0) - a.get(c, 0) for c in allowed}
    return max(allowed, key=lambda c: (idle[c], -c)) if allowed else None


def pin_to_core(core: int | None = None) -> int | None:
    """Pin this process to one core (the idlest if None); return it, or None if not possible."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    if core is None:
        core = pick_quiet_core()
    if core is None:
        return None
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return None
    return core


PRIORITIES = ("realtime", "nice", "none")


def raise_priority(mode: str = "realtime"):
    """Give the calling thread the CPU ahead of other processes, where permitted.

    On a shared machine the measuring thread otherwise shares its core with whatever else
    runs, and timed runs measure the scheduler, not the model. Measured here (2 vCPUs, other
    processes using ~1.5 cores, MobileNetV3-Large, 100 runs): normal priority and nice -20
    (autogroups make nice count only within one's own session) ran at a median of 14.5 ms,
    the fastest 1-10% of runs at 6.3 ms; SCHED_FIFO priority 1 ran at a median of 6.3-6.7 ms.
    The kernel's real-time throttling (by default 5% of every second) still leaves others a
    share of the core, and the other cores stay theirs.

    mode "realtime": SCHED_FIFO 1, falling back to nice -20; "nice": nice -20; "none".
    Returns (what was done, a token for restore_priority)."""
    if mode == "realtime" and hasattr(os, "sched_setscheduler"):
        try:
            old = (os.sched_getscheduler(0), os.sched_getparam(0))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "realtime", ("sched", old)
        except (AttributeError, OSError):
            pass
    if mode in ("realtime", "nice"):
        try:
            old = os.getpriority(os.PRIO_PROCESS, 0)
            if old > -20:
                os.setpriority(os.PRIO_PROCESS, 0, -20)
                return "nice", ("nice", old)
        except (AttributeError, OSError):
            pass
    return "none", None


def restore_priority(token) -> None:
    if not token:
        return
    kind, old = token
    try:
        if kind == "sched":
            os.sched_setscheduler(0, old[0], old[1])
        else:
            os.setpriority(os.PRIO_PROCESS, 0, old)
    except (AttributeError, OSError):
        pass


# ---- sessions and timing ---------------------------------------------------------------------
def session_options(threads: int = 1, optimize: bool = True) -> "ort.SessionOptions":
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 3
    if threads == 1:
        # One thread: do not let ORT spin up (and spin-wait) a pool.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class LiteRTSession:
    """A LiteRT interpreter (XNNPACK on the CPU, `threads` threads) with the two things the
    timer needs: its inputs, and a zero-argument call with the inputs set once."""

    def __init__(self, model, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise RunnerError("LiteRT is not installed (pip install ai-edge-litert numpy)") from None
        if isinstance(model, (bytes, bytearray)):
            self.interpreter = Interpreter(model_content=bytes(model), num_threads=int(threads))
        else:
            self.interpreter = Interpreter(model_path=str(model), num_threads=int(threads))
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def input_specs(self) -> list[tuple[str, list[int], type]]:
        return [(d["name"], [int(x) for x in d["shape"]], np.dtype(d["dtype"]).type) for d in self.inputs]

    def _delegates(self) -> list[dict]:
        try:
            nodes = self.interpreter._get_ops_details()  # the only view of the execution plan the API has
        except Exception:  # noqa: BLE001
            return []
        return [n for n in nodes if n["op_name"] == "DELEGATE"]

    def delegate_partitions(self) -> int:
        """How many XNNPACK subgraphs the model runs as (what falls between them runs in LiteRT's
        builtin kernels: e.g. an INT8 net's float hardswish between DEQUANTIZE and QUANTIZE)."""
        return len(self._delegates())

    def fully_delegated(self) -> bool:
        """Does one XNNPACK DELEGATE node run the whole model and produce every output?"""
        outs = {int(d["index"]) for d in self.outputs}
        dels = self._delegates()
        return len(dels) == 1 and outs <= {int(i) for i in dels[0]["outputs"]}

    def bound_call(self, feeds: dict):
        for d, arr in zip(self.inputs, feeds.values()):
            self.interpreter.set_tensor(d["index"], np.ascontiguousarray(arr, dtype=d["dtype"]))
        return self.interpreter.invoke

    def run(self, arrays, nchw_outputs: bool = False) -> list[np.ndarray]:
        """Float outputs for float inputs in the model's order (4-D outputs back to NCHW if
        asked); an INT8 model's integer inputs and outputs are (de)quantized with its own
        scale and zero point."""
        arrays = [_quantize(a, d) for a, d in zip(arrays, self.inputs)]
        self.bound_call(dict(zip(range(len(arrays)), arrays)))()
        outs = [_dequantize(np.array(self.interpreter.get_tensor(d["index"])), d) for d in self.outputs]
        return [np.ascontiguousarray(o.transpose(0, 3, 1, 2)) if nchw_outputs and o.ndim == 4 else o for o in outs]


def _quantize(x, detail) -> np.ndarray:
    x = np.asarray(x)
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization") or (0.0, 0)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x


def _dequantize(y: np.ndarray, detail) -> np.ndarray:
    scale, zero = detail.get("quantization") or (0.0, 0)
    if np.issubdtype(y.dtype, np.integer) and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y


def make_session(model, threads: int = 1, runtime: str = "onnxruntime"):
    """A CPU session of `runtime` for a model path or serialized bytes."""
    if runtime == "litert":
        return LiteRTSession(model, threads)
    if runtime != "onnxruntime":
        raise RunnerError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if ort is None:
        raise RunnerError("onnxruntime is not installed (pip install onnxruntime numpy)")
    if isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])


def random_feeds(session, seed: int = 0, shapes: dict | None = None) -> dict:
    """Random inputs for every session input (symbolic dims become 1 unless `shapes` names them).
    A LiteRT model's shapes are fixed at conversion (and its images NHWC): `shapes` is ignored."""
    rng = np.random.default_rng(seed)
    feeds = {}
    if isinstance(session, LiteRTSession):
        # an INT8 model's integer image input gets the same normal values, quantized
        for d, (name, shape, dtype) in zip(session.inputs, session.input_specs()):
            x = rng.standard_normal(shape).astype(np.float32)
            feeds[name] = x if np.issubdtype(dtype, np.floating) else _quantize(x, d)
        return feeds
    for inp in session.get_inputs():
        shape = (shapes or {}).get(inp.name) or [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _DTYPES.get(inp.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def _bound_call(session, feeds: dict):
    """A zero-argument callable running the session once, with inputs and outputs bound in
    advance when output shapes are static (less Python overhead per call than run())."""
    if isinstance(session, LiteRTSession):
        return session.bound_call(feeds)
    outs = session.get_outputs()
    if all(isinstance(d, int) and d > 0 for o in outs for d in o.shape):
        try:
            io = session.io_binding()
            for name, arr in feeds.items():
                io.bind_cpu_input(name, np.ascontiguousarray(arr))
            keep = []
            for o in outs:
                buf = ort.OrtValue.ortvalue_from_numpy(np.empty(o.shape, _DTYPES.get(o.type, np.float32)))
                keep.append(buf)
                io.bind_ortvalue_output(o.name, buf)
            run = session.run_with_iobinding

            def call(io=io, keep=keep):
                run(io)

            call()  # fails here, not in the timed loop, if binding is not supported
            return call
        except Exception:  # noqa: BLE001 - fall back to the plain call
            pass

    def call_plain():
        session.run(None, feeds)

    return call_plain


def summarize(ns: list[int] | np.ndarray) -> dict:
    """Statistics (milliseconds) of per-run times in nanoseconds."""
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "min_ms": float(a.min()),
        "p10_ms": float(np.percentile(a, 10)),
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "runs": int(a.size),
    }


def time_session(session, feeds: dict | None = None, runs: int = 100, warmup: int = 10,
                 return_samples: bool = False) -> dict:
    """THE timing function: `warmup` untimed runs, then `runs` runs timed one by one with
    perf_counter_ns. Returns min/p10/median/mean/std in ms and the run count."""
    if runs < 1:
        raise ValueError(f"runs = {runs}: need at least 1")
    if feeds is None:
        feeds = random_feeds(session)
    call = _bound_call(session, feeds)
    for _ in range(max(0, warmup)):
        call()
    clock = time.perf_counter_ns
    ns = [0] * runs
    for i in range(runs):
        t0 = clock()
        call()
        ns[i] = clock() - t0
    out = summarize(ns)
    out["warmup"] = int(warmup)
    if return_samples:
        out["samples_ns"] = ns
    return out


def time_model(model, threads: int = 1, runs: int = 100, warmup: int = 10, seed: int = 0,
               shapes: dict | None = None, runtime: str = "onnxruntime") -> dict:
    """Build a session for a model (path or bytes), feed random inputs and time it."""
    sess = make_session(model, threads, runtime)
    return time_session(sess, random_feeds(sess, seed, shapes), runs, warmup)


# ---- the manifest and the CSV ----------------------------------------------------------------
class RunnerError(Exception):
    """A problem with the folder, the manifest or the CSV: reported in one line, exit 2."""


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunnerError(f"{path}: no manifest (write one with `nas latency export-ops`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunnerError(f"{path}: not a valid manifest ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise RunnerError(f"{path}: not an op manifest (schema {data.get('schema') if isinstance(data, dict) else None!r})")
    ops = data.get("ops")
    if not isinstance(ops, list) or not all(isinstance(o, dict) and "key" in o and "file" in o for o in ops):
        raise RunnerError(f"{path}: field 'ops' must be a list of objects with 'key' and 'file'")
    return data


def read_done(csv_path: Path) -> dict[tuple[str, int], dict]:
    """Rows already in a runner CSV, by (key, pass)."""
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return {}
    done = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != CSV_COLUMNS:
            raise RunnerError(f"{csv_path}: exists but is not a runner CSV (columns {reader.fieldnames})")
        for row in reader:
            try:
                done[(row["key"], int(row["pass"]))] = row
            except (TypeError, ValueError):
                continue  # a torn last line from an interrupted write
    return done


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_folder(folder, out=None, threads: int = 1, runs: int = 100, warmup: int = 10,
               passes: int = 3, pin: bool | None = None, quiet_load: float = 0.15,
               quiet_wait: float = 10.0, limit: int | None = None, progress: bool = True,
               seed: int = 0, priority: str = "realtime", settle: float = 0.01, max_passes: int = 0,
               net_runs: int = 5, net_warmup: int = 1, net_rounds: int = 100) -> Path:
    """Time every op of an exported folder; append rows to `out` (default DIR/table.csv).

    `passes` passes over all ops (a fresh random order each), then settling passes over the
    ops whose two best passes (by min_ms) differ by more than `settle`, up to `max_passes`
    (0: 2 x passes). Then the whole nets, if any: `net_rounds` rounds of `net_runs` runs
    (one CSV row per net and round, `pass` = the round). Rows already in `out` count: a
    second run measures only what is missing."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    runtime = manifest.get("runtime", "onnxruntime")
    if runtime not in RUNTIMES:
        raise RunnerError(f"{folder / 'manifest.json'}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if runtime_version(runtime) == "missing":
        raise RunnerError(f"the folder's ops are for {runtime}, which is not installed here "
                          f"(pip install {RUNTIME_PACKAGES[runtime]} numpy)")
    out = Path(out) if out else folder / "table.csv"
    meta_path = Path(str(out) + ".meta.json")
    protocol = {"threads": threads, "runs": runs, "warmup": warmup, "net_runs": net_runs, "net_warmup": net_warmup}
    if meta_path.exists() and out.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, OSError):
            old = {}
        # The same op keys exist for every runtime and precision: rows of another must not count as done.
        for k, v in (("runtime", runtime), ("precision", manifest.get("precision", "float32"))):
            was = old.get(k) or ("onnxruntime" if k == "runtime" else "float32")
            if old and was != v:
                raise RunnerError(f"{out}: holds {was} measurements, this folder is {v}; write to another --out")
        for k, v in protocol.items():
            if old.get(k) is not None and old.get(k) != v:
                raise RunnerError(
                    f"{out}: was measured with --{k} {old.get(k)}, not {v}; pass --{k} {old.get(k)} "
                    f"or write to another --out"
                )
    done = read_done(out)
    net_keys = {e["key"] for e in manifest["ops"] if e.get("kind") == "net"}
    for (key, _p), row in done.items():
        # Also without the sidecar (or from a runner that timed nets in long passes): rounds of
        # another length must not be mixed into one net's best round.
        if key in net_keys and str(row.get("runs")) != str(net_runs):
            raise RunnerError(f"{out}: holds {key} timed with {row.get('runs')} runs per round, not --net-runs "
                              f"{net_runs}; pass --net-runs {row.get('runs')} or write to another --out")
    cap = passes if settle <= 0 else max(passes, max_passes or 2 * passes)
    if pin is None:
        pin = threads == 1
    core = pin_to_core() if pin else None
    prio, token = raise_priority(priority)
    meta = {
        "runner_version": RUNNER_VERSION,
        **machine_info(runtime),
        **protocol,
        "passes": passes,
        "settle": settle,
        "max_passes": cap,
        "net_rounds": net_rounds,
        "pinned_core": core,
        "priority": prio,
        "precision": manifest.get("precision", "float32"),
        "manifest_created": manifest.get("created"),
        "started_at": _now(),
    }
    tmp = Path(str(meta_path) + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)

    entries = manifest["ops"][: limit if limit else None]
    ops = [e for e in entries if e.get("kind") != "net"]
    nets = [e for e in entries if e.get("kind") == "net"]
    values: dict[str, list[float]] = {e["key"]: [] for e in entries}
    for (key, _p), row in done.items():
        if key in values:
            try:
                values[key].append(float(row["min_ms"]))
            except (TypeError, ValueError):
                pass

    def wants_more(key: str) -> bool:
        v = values[key]
        if len(v) < passes:
            return True
        if len(v) >= cap or settle <= 0:
            return False
        a, b = sorted(v)[:2]
        return b > a * (1 + settle)

    rng = random.Random(seed)
    new_file = not out.exists() or out.stat().st_size == 0
    t_start, count = time.monotonic(), 0
    try:
        with open(out, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            if new_file:
                writer.writeheader()
                fh.flush()
            for p in range(cap):
                todo = [op for op in ops if len(values[op["key"]]) <= p and wants_more(op["key"])]
                if not todo:
                    continue
                rng.shuffle(todo)
                if quiet_wait > 0:
                    wait_quiet(quiet_load, quiet_wait)
                for i, op in enumerate(todo):
                    stats, load = _time_entry(folder, op, threads, runs, warmup, seed, runtime)
                    writer.writerow({"key": op["key"], "pass": p, **{k: f"{stats[k]:.6f}" for k in STAT_NAMES},
                                     "runs": stats["runs"], "warmup": warmup, "threads": threads,
                                     "other_load": f"{load:.3f}", "measured_at": _now()})
                    fh.flush()
                    values[op["key"]].append(stats["min_ms"])
                    count += 1
                    if progress and (i == len(todo) - 1 or i % 10 == 0):
                        el = time.monotonic() - t_start
                        left = sum(max(0, passes - len(values[o["key"]])) for o in ops)
                        eta = el / count * left if count else 0.0
                        kind = f"pass {p + 1}/{passes}" if p < passes else f"settling pass {p + 1}"
                        print(f"\r{kind}: {i + 1}/{len(todo)} ops, elapsed {_fmt_eta(el)}, eta {_fmt_eta(eta)}   ",
                              end="", file=sys.stderr, flush=True)
                if progress:
                    print(file=sys.stderr)
            count += _time_nets(folder, nets, values, writer, fh, threads, net_runs, net_warmup, net_rounds, seed,
                                rng, quiet_load, quiet_wait, progress, runtime)
    finally:
        restore_priority(token)
    return out


def _time_nets(folder: Path, nets: list, values: dict, writer, fh, threads: int, runs: int, warmup: int,
               rounds: int, seed: int, rng, quiet_load: float, quiet_wait: float, progress: bool,
               runtime: str = "onnxruntime") -> int:
    """Whole nets: `rounds` short interleaved rounds, one session per net kept for all of them."""
    todo_rounds = [r for r in range(rounds) if any(len(values[n["key"]]) <= r for n in nets)]
    if not todo_rounds:
        return 0
    sessions = {n["key"]: _open_entry(folder, n, threads, seed, runtime) for n in nets}
    count, t0, quiet_at = 0, time.monotonic(), float("-inf")
    for r in todo_rounds:
        todo = [n for n in nets if len(values[n["key"]]) <= r]
        rng.shuffle(todo)
        if quiet_wait > 0 and time.monotonic() - quiet_at >= QUIET_CHECK_S:
            wait_quiet(quiet_load, quiet_wait)
            quiet_at = time.monotonic()
        for n in todo:
            sess, feeds = sessions[n["key"]]
            meter = LoadMeter()
            stats = time_session(sess, feeds, runs, warmup)
            load = meter.read()
            writer.writerow({"key": n["key"], "pass": r, **{k: f"{stats[k]:.6f}" for k in STAT_NAMES},
                             "runs": stats["runs"], "warmup": warmup, "threads": threads,
                             "other_load": f"{load:.3f}", "measured_at": _now()})
            values[n["key"]].append(stats["min_ms"])
            count += 1
        fh.flush()
        if progress and (r == todo_rounds[-1] or r % 10 == 0):
            print(f"\rnets: round {r + 1}/{rounds}, elapsed {_fmt_eta(time.monotonic() - t0)}   ",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return count


def _open_entry(folder: Path, entry: dict, threads: int, seed: int, runtime: str = "onnxruntime"):
    """A session for a manifest entry (op or net) and random inputs of its shapes."""
    path = folder / entry["file"]
    if not path.exists():
        raise RunnerError(f"{path}: {entry.get('kind', 'op')} file named in the manifest is missing (key {entry['key']})")
    sess = make_session(path, threads, runtime)
    shapes = {x["name"]: x["shape"] for x in entry.get("inputs", []) if "name" in x and "shape" in x}
    return sess, random_feeds(sess, seed, shapes)


def _time_entry(folder: Path, op: dict, threads: int, runs: int, warmup: int, seed: int,
                runtime: str = "onnxruntime"):
    sess, feeds = _open_entry(folder, op, threads, seed, runtime)
    meter = LoadMeter()
    stats = time_session(sess, feeds, runs, warmup)
    return stats, meter.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="runner.py",
        description="Time the ops of a folder written by `nas latency export-ops` (needs numpy + onnxruntime, "
                    "or numpy + ai-edge-litert for a --runtime litert folder).",
    )
    ap.add_argument("folder", help="folder holding manifest.json and the op files")
    ap.add_argument("--out", default=None, help="CSV to write (appended to; default FOLDER/table.csv)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper: one core)")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per op and pass (default 100)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed runs before timing (default 10)")
    ap.add_argument("--passes", type=int, default=3, help="passes over all ops; the table keeps the best (default 3)")
    ap.add_argument("--settle", type=float, default=0.01,
                    help="then measure again ops whose two best passes differ by more than this (default 0.01; 0: off)")
    ap.add_argument("--max-passes", type=int, default=0, help="most passes per op with settling (default 2 x --passes)")
    ap.add_argument("--net-runs", type=int, default=5, help="whole calibration nets: timed runs per round (default 5)")
    ap.add_argument("--net-warmup", type=int, default=1, help="whole nets: untimed runs before each round's (default 1)")
    ap.add_argument("--net-rounds", type=int, default=100, help="whole nets: short interleaved rounds (default 100)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core when --threads 1")
    ap.add_argument("--priority", choices=PRIORITIES, default="realtime",
                    help="measuring thread's scheduling: realtime (SCHED_FIFO where permitted, else nice -20; default), nice, none")
    ap.add_argument("--quiet-load", type=float, default=0.15, help="before each pass wait until others use under this many cores")
    ap.add_argument("--quiet-wait", type=float, default=10.0, help="longest wait for a quiet machine, seconds (0: never wait)")
    ap.add_argument("--limit", type=int, default=None, help="time only the first N ops (for a trial run)")
    args = ap.parse_args(argv)
    for name in ("threads", "runs", "passes", "net_runs", "net_rounds"):
        if getattr(args, name) < 1:
            print(f"runner.py: --{name.replace('_', '-')} {getattr(args, name)}: must be at least 1", file=sys.stderr)
            return 2
    for name in ("warmup", "net_warmup"):
        if getattr(args, name) < 0:
            print(f"runner.py: --{name.replace('_', '-')} {getattr(args, name)}: must be >= 0", file=sys.stderr)
            return 2
    try:
        out = run_folder(args.folder, args.out, args.threads, args.runs, args.warmup, args.passes,
                         pin=False if args.no_pin else None, quiet_load=args.quiet_load,
                         quiet_wait=args.quiet_wait, limit=args.limit, priority=args.priority,
                         settle=args.settle, max_passes=args.max_passes, net_runs=args.net_runs,
                         net_warmup=args.net_warmup, net_rounds=args.net_rounds)
    except RunnerError as exc:
        print(f"runner.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrunner.py: interrupted; rows measured so far are kept, run again to finish", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
