"""The NetAdapt loop as MobileNetV3 ran it (Sec. 4.2), resumable after every iteration.

    lat, acc = latency and accuracy of the (trained) seed
    while lat > target:
        delta = 0.01 * lat_seed                      (or 0.025 * lat_seed * 0.96**(i-1))
        for each unit (expansion layer, residual group):
            largest width (multiple of 8) with predicted latency <= lat - delta
            inherit weights (largest-L2 filters), fine-tune T steps, measure accuracy
        keep the proposal with the best dAcc / |dLat|   (or the best accuracy)
    long-term fine-tune the result

Two specs travel together: the *latency spec* (what latency is predicted for, e.g. 224x224x3
and 1000 classes) and the *training spec* (the same rows at the proxy resolution, with the
data set's channels and classes). Proposals change rows only and apply to both.

Files in the output folder:
  state.json            the loop's state; written last, after the weights it names
  weights/iter_NNNN.pt  the current net's weights (training spec); the seed's stays too
  history.csv, history.png   every proposal of every iteration, the seed and the final net
  final_spec.json, final_train_spec.json, final.pt, diff.txt   when the run finishes
Running again with the same folder continues after the last finished iteration.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nas.data import Dataset
from nas.proxy import ProxyConfig, ProxyResult, evaluate, fine_tune, train_proxy
from search_space import build, render_diff
from search_space.errors import UserError
from search_space.spec import ArchSpec

from .proposals import PredictFn, Proposal, apply, propose, units
from .surgery import shrink

STATE_VERSION = 1
DELTA_SCHEDULES = ("mnv3", "decay")
SELECT_RULES = ("mnv3", "netadapt")
DEFAULT_STEP_FRAC = {"mnv3": 0.01, "decay": 0.025}
# settings that change what the iterations compute: a resumed run must use the same ones
LOCKED = ("delta_schedule", "step_frac", "decay", "select", "short_steps", "short_lr", "init_steps",
          "include_last", "seed", "proxy")
HISTORY_COLUMNS = ["iteration", "kind", "unit", "rows", "old_width", "new_width", "latency_ms",
                   "delta_latency_ms", "step_ms", "accuracy", "delta_accuracy", "score", "selected",
                   "train_steps", "test_accuracy", "seconds"]


@dataclass
class NetAdaptConfig:
    target_ms: float
    delta_schedule: str = "mnv3"  # 'mnv3': delta = step_frac * seed latency every iteration
    step_frac: float | None = None  # None: 0.01 ('mnv3', the paper) / 0.025 ('decay', the official code)
    decay: float = 0.96  # 'decay': delta_i = step_frac * seed latency * decay**(i-1)
    select: str = "mnv3"  # 'mnv3': max dAcc/|dLat|; 'netadapt': max accuracy
    short_steps: int = 100  # short-term fine-tune of each proposal (the paper: 10,000 on ImageNet)
    long_steps: int = 500  # long-term fine-tune of the result
    init_steps: int = 500  # proxy training of a seed without trained weights
    short_lr: float | None = None  # None: proxy.lr / 10
    long_lr: float | None = None  # None: proxy.lr / 10
    max_iters: int = 1000
    include_last: bool = False  # also prune the last 1x1 conv's width
    seed: int = 0
    test_eval: bool = True  # score the seed and the final net on the test set
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise UserError(f"NetAdapt setting {name}={getattr(self, name)!r} {why}")

        if not isinstance(self.target_ms, (int, float)) or not self.target_ms > 0 or math.isinf(self.target_ms):
            bad("target_ms", "must be a positive number of milliseconds")
        if self.delta_schedule not in DELTA_SCHEDULES:
            bad("delta_schedule", f"must be one of {', '.join(DELTA_SCHEDULES)}")
        if self.select not in SELECT_RULES:
            bad("select", f"must be one of {', '.join(SELECT_RULES)}")
        if self.step_frac is not None and not 0 < self.step_frac < 1:
            bad("step_frac", "must be in (0, 1)")
        if not 0 < self.decay <= 1:
            bad("decay", "must be in (0, 1]")
        for name in ("short_steps", "long_steps", "init_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "must be an integer >= 0")
        if not isinstance(self.max_iters, int) or self.max_iters < 1:
            bad("max_iters", "must be a positive integer")
        for name in ("short_lr", "long_lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                bad(name, "must be > 0")

    @property
    def frac(self) -> float:
        return self.step_frac if self.step_frac is not None else DEFAULT_STEP_FRAC[self.delta_schedule]

    def delta_ms(self, initial_ms: float, iteration: int) -> float:
        """The latency cut iteration `iteration` (1, 2, ...) must make."""
        base = self.frac * initial_ms
        if self.delta_schedule == "decay":
            return base * self.decay ** (iteration - 1)
        return base

    def short_cfg(self, iteration: int) -> ProxyConfig:
        lr = self.short_lr if self.short_lr is not None else self.proxy.lr / 10
        return dataclasses.replace(self.proxy, lr=lr, warmup=0.0, seed=self.seed + iteration)

    def long_cfg(self) -> ProxyConfig:
        lr = self.long_lr if self.long_lr is not None else self.proxy.lr / 10
        return dataclasses.replace(self.proxy, lr=lr, seed=self.seed + 100_000)

    def init_cfg(self) -> ProxyConfig:
        return dataclasses.replace(self.proxy, steps=self.init_steps, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["proxy"] = self.proxy.to_dict()
        return d


@dataclass
class NetAdaptResult:
    status: str  # 'reached', 'target_met' (nothing to do), 'unreachable', 'max_iters'
    message: str
    initial_ms: float
    final_ms: float
    target_ms: float
    iterations: int
    spec: ArchSpec  # final latency spec
    train_spec: ArchSpec  # final training spec
    model: nn.Module | None
    history: list[dict]
    accuracy: float | None  # val accuracy of the final net (after long-term fine-tuning)
    test_accuracy: float | None
    train_steps: int  # every training step taken, seed training included
    out_dir: Path


def training_spec(spec: ArchSpec, data: Dataset, resolution: int) -> ArchSpec:
    """`spec`'s rows at the proxy resolution with the data set's channels and classes."""
    return spec.with_rows(spec.rows, resolution=resolution, in_channels=data.in_channels,
                          num_classes=data.num_classes)


def score(select: str, acc: float, lat: float, cur_acc: float, cur_lat: float) -> float:
    """The selection metric (larger is better)."""
    if select == "netadapt":
        return acc
    return (acc - cur_acc) / max(cur_lat - lat, 1e-12)


# ---- files ------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_weights(path: Path, model: nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _load_model(spec: ArchSpec, path: Path) -> nn.Module:
    model = build(spec, seed=0)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: weights named by state.json are missing; start over with another --out") from None
    model.load_state_dict(state)
    return model.eval()


def write_history(out: Path, rows: list[dict]) -> None:
    tmp = out / f".history.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, HISTORY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in HISTORY_COLUMNS})
    os.replace(tmp, out / "history.csv")


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float) and not isinstance(v, bool):
        return f"{v:.6g}" if abs(v) < 1e-3 and v != 0 else round(v, 6)
    return v


def plot_history(path: Path, rows: list[dict], target_ms: float, title: str = "") -> None:
    """Accuracy vs latency: the kept net of each iteration joined by a line, proposals faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    props = [r for r in rows if r["kind"] == "proposal" and not r["selected"]]
    if props:
        ax.scatter([r["latency_ms"] for r in props], [r["accuracy"] for r in props], s=12, color="0.6",
                   alpha=0.35, label="proposals", zorder=1)
    path_rows = [r for r in rows if r["kind"] == "seed" or r["selected"]]
    xs, ys = [r["latency_ms"] for r in path_rows], [r["accuracy"] for r in path_rows]
    ax.plot(xs, ys, "-o", color="C0", ms=4, label="kept net per iteration", zorder=2)
    for r in path_rows:
        ax.annotate(str(r["iteration"]), (r["latency_ms"], r["accuracy"]), textcoords="offset points",
                    xytext=(3, 4), fontsize=7, color="C0")
    final = [r for r in rows if r["kind"] == "final"]
    if final:
        ax.scatter([final[-1]["latency_ms"]], [final[-1]["accuracy"]], marker="*", s=120, color="C3",
                   label="after long-term fine-tune", zorder=3)
    ax.axvline(target_ms, color="C2", ls="--", lw=1, label=f"target {target_ms:.2f} ms")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "NetAdapt")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ---- progress ---------------------------------------------------------------------------------
class Reporter:
    """Progress on stderr with rich: iteration, proposal, latency and accuracy."""

    def __init__(self, quiet: bool = False, console=None) -> None:
        self.quiet = quiet
        self.console = None
        self._progress = None
        if not quiet:
            from rich.console import Console

            self.console = console or Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, soft_wrap=True)

    def plain(self, text: str) -> None:
        """Text with no markup (tables)."""
        if self.console is not None:
            self.console.print(text, soft_wrap=True, markup=False)

    def training(self, description: str, steps: int):
        """A context manager yielding a progress callback for `nas.proxy` training."""
        import contextlib

        if self.console is None or steps == 0 or not self.console.is_terminal:
            return contextlib.nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        @contextlib.contextmanager
        def ctx():
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                          console=self.console, transient=True) as bar:
                task = bar.add_task(description, total=steps, loss="-")

                def cb(done: int, total: int, loss: float) -> None:
                    bar.update(task, completed=done, loss=f"{loss:.3f}")

                yield cb
        return ctx()


# ---- the loop ---------------------------------------------------------------------------------
def _row(iteration: int, kind: str, *, latency_ms: float, accuracy: float, unit: str = "", rows: str = "",
         old_width: int | None = None, new_width: int | None = None, delta_latency_ms: float | None = None,
         step_ms: float | None = None, delta_accuracy: float | None = None, score_: float | None = None,
         selected: bool = False, train_steps: int = 0, test_accuracy: float | None = None,
         seconds: float = 0.0) -> dict:
    return {"iteration": iteration, "kind": kind, "unit": unit, "rows": rows, "old_width": old_width,
            "new_width": new_width, "latency_ms": latency_ms, "delta_latency_ms": delta_latency_ms,
            "step_ms": step_ms, "accuracy": accuracy, "delta_accuracy": delta_accuracy, "score": score_,
            "selected": selected, "train_steps": train_steps, "test_accuracy": test_accuracy,
            "seconds": round(seconds, 3)}


class _Run:
    def __init__(self, spec, data, predict_ms, out, cfg, reporter) -> None:
        self.spec, self.data, self.predict_ms, self.out, self.cfg, self.rep = spec, data, predict_ms, out, cfg, reporter
        self.state: dict[str, Any] = {}

    # state ----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / "state.json"

    def commit(self, model: nn.Module | None) -> None:
        """Write the weights (new file), then the state that names them, then drop old weights."""
        st = self.state
        if model is not None:
            name = f"iter_{st['iteration']:04d}.pt"
            _save_weights(self.out / "weights" / name, model)
            old = st.get("weights")
            st["weights"] = name
        else:
            old = None
        _atomic_write(self.state_path, json.dumps(st, indent=1) + "\n")
        write_history(self.out, st["history"])
        plot_history(self.out / "history.png", st["history"], st["target_ms"], f"NetAdapt {self.spec.name}")
        if old and old != st["weights"] and old != st.get("seed_weights"):
            (self.out / "weights" / old).unlink(missing_ok=True)

    def check_resume(self, st: dict) -> None:
        if st.get("version") != STATE_VERSION:
            raise UserError(f"{self.state_path}: state version {st.get('version')!r}; this build reads {STATE_VERSION}")
        if st["seed_spec"] != self.spec.to_dict():
            raise UserError(f"{self.out}: holds a NetAdapt run of another spec ({st['seed_spec'].get('name')}); "
                            "use another --out")
        mine = self.cfg.to_dict()
        for key in LOCKED:
            was, now = st["config"].get(key), mine.get(key)
            if key == "proxy" and isinstance(was, dict):  # where it runs (threads, device) may change
                was, now = ({k: v for k, v in d.items() if k not in ("threads", "device")} for d in (was, now))
            if was != now:
                raise UserError(f"{self.out}: was run with {key}={was!r}, not {now!r}; "
                                "use the same setting to resume or another --out")


def run_netadapt(spec: ArchSpec, data: Dataset, predict_ms: PredictFn, out_dir: str | Path,
                 cfg: NetAdaptConfig, weights: dict[str, torch.Tensor] | None = None, *,
                 train_first: bool | None = None, on_iteration: Callable[[dict], None] | None = None,
                 quiet: bool = False, console=None) -> NetAdaptResult:
    """Run (or resume) NetAdapt on `spec` until its predicted latency reaches `cfg.target_ms`.

    `spec` is the latency spec; the net trained is `training_spec(spec, data, resolution)`.
    `weights`: a state dict of the training spec's model; without one the seed is proxy-
    trained for `cfg.init_steps` first (`train_first=True` also trains given weights,
    e.g. ImageNet weights with a fresh classifier). `on_iteration(state)` is called after
    each iteration is saved; raising from it stops the run, which a later call resumes.
    """
    if spec.seg_head is not None:
        raise UserError(f"{spec.name}: NetAdapt adapts classification specs; this one has a segmentation head")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rep = Reporter(quiet, console)
    run = _Run(spec, data, predict_ms, out, cfg, rep)
    train_spec0 = training_spec(spec, data, cfg.proxy.resolution)
    if not units(spec, include_last=cfg.include_last):
        raise UserError(f"{spec.name}: nothing to prune (no expansion layers or bottleneck widths)")

    model: nn.Module | None = None
    if run.state_path.exists():
        try:
            st = json.loads(run.state_path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{run.state_path}: corrupt state file; use another --out") from None
        run.check_resume(st)
        run.state = st
        st["config"] = cfg.to_dict()
        st["target_ms"] = cfg.target_ms
        cur_train = ArchSpec.from_dict(st["train_spec"])
        model = _load_model(cur_train, out / "weights" / st["weights"])
        more = st["latency_ms"] > cfg.target_ms and (
            st["status"] == "reached" or (st["status"] == "max_iters" and st["iteration"] < cfg.max_iters))
        if st["phase"] == "done" and more:  # a lower target, or more iterations: carry on
            st["phase"], st["status"], st["message"] = "adapt", "", ""
            st["train_steps"] -= sum(r["train_steps"] for r in st["history"] if r["kind"] == "final")
            st["history"] = [r for r in st["history"] if r["kind"] != "final"]
            st.pop("final_spec", None), st.pop("final_train_spec", None)
        elif st["phase"] == "done":
            rep.line(f"[bold]{out}[/]: run already finished ({st['status']}); outputs are in place")
            return _result(run, model)
        rep.line(f"resuming {out} after iteration {st['iteration']} "
                 f"({st['latency_ms']:.3f} ms, accuracy {st['accuracy']:.4f})")
    else:
        lat0 = float(predict_ms(spec))
        if lat0 <= cfg.target_ms:
            msg = (f"{spec.name}: predicted latency {lat0:.3f} ms already meets the target {cfg.target_ms:.3f} ms; "
                   "nothing to do")
            rep.line(msg)
            spec.save(out / "final_spec.json")
            train_spec0.save(out / "final_train_spec.json")
            if weights is not None:
                torch.save(dict(weights), out / "final.pt")
            return NetAdaptResult("target_met", msg, lat0, lat0, cfg.target_ms, 0, spec, train_spec0, None, [],
                                  None, None, 0, out)
        run.state = {
            "version": STATE_VERSION, "seed_spec": spec.to_dict(), "config": cfg.to_dict(),
            "target_ms": cfg.target_ms, "initial_ms": lat0, "phase": "init", "status": "", "message": "",
            "iteration": 0, "spec": spec.to_dict(), "train_spec": train_spec0.to_dict(),
            "latency_ms": lat0, "accuracy": None, "train_steps": 0, "history": [],
        }
        model = _seed(run, train_spec0, weights, train_first)

    st = run.state
    lat0 = st["initial_ms"]
    cur_spec = ArchSpec.from_dict(st["spec"])
    cur_train = ArchSpec.from_dict(st["train_spec"])
    rep.line(f"[bold]NetAdapt[/] {spec.name}: {st['latency_ms']:.3f} ms now, target {cfg.target_ms:.3f} ms; "
             f"step {cfg.delta_ms(lat0, st['iteration'] + 1):.3f} ms ({cfg.delta_schedule}), "
             f"select {cfg.select}, {cfg.short_steps} fine-tune steps per proposal")

    while st["phase"] == "adapt":
        if st["latency_ms"] <= cfg.target_ms:
            st["status"] = "reached"
            st["message"] = (f"target reached after {st['iteration']} iteration(s): "
                             f"{st['latency_ms']:.3f} ms <= {cfg.target_ms:.3f} ms")
            break
        if st["iteration"] >= cfg.max_iters:
            st["status"] = "max_iters"
            st["message"] = (f"stopped after max_iters={cfg.max_iters} iterations at {st['latency_ms']:.3f} ms "
                             f"(target {cfg.target_ms:.3f} ms)")
            break
        i = st["iteration"] + 1
        delta = cfg.delta_ms(lat0, i)
        cur_lat, cur_acc = st["latency_ms"], st["accuracy"]
        t_prop = time.perf_counter()
        proposals, failed = propose(cur_spec, predict_ms, cur_lat, delta, also=[cur_train],
                                    include_last=cfg.include_last)
        rep.line(f"[bold]iteration {i}[/]: {cur_lat:.3f} ms, step {delta:.3f} ms -> at most {cur_lat - delta:.3f} ms; "
                 f"{len(proposals)} proposal(s), {len(failed)} unit(s) cannot cut the step "
                 f"({time.perf_counter() - t_prop:.1f} s)")
        if not proposals:
            st["status"] = "unreachable"
            st["message"] = (f"no proposal can cut {delta:.3f} ms from {cur_lat:.3f} ms (target {cfg.target_ms:.3f} ms): "
                             f"stopping; keeping the best net found ({cur_lat:.3f} ms, iteration {st['iteration']})")
            break
        best: tuple[float, int, Proposal, ArchSpec, nn.Module, ProxyResult] | None = None
        rows: list[dict] = []
        for k, p in enumerate(proposals):
            t0 = time.perf_counter()
            tspec = apply(cur_train, p.unit, p.width)
            candidate = shrink(model, cur_train, tspec, seed=cfg.seed)
            desc = f"iter {i} [{k + 1}/{len(proposals)}] {p.unit.label} {p.unit.width}->{p.width} {p.latency_ms:.3f} ms"
            with rep.training(desc, cfg.short_steps) as cb:
                res = fine_tune(candidate, run.data, cfg.short_steps, cfg.short_cfg(i), progress=cb)
            sc = score(cfg.select, res.val_accuracy, p.latency_ms, cur_acc, cur_lat)
            rows.append(_row(i, "proposal", latency_ms=p.latency_ms, accuracy=res.val_accuracy, unit=p.unit.label,
                             rows=" ".join(map(str, p.unit.rows)), old_width=p.unit.width, new_width=p.width,
                             delta_latency_ms=p.latency_ms - cur_lat, step_ms=delta,
                             delta_accuracy=res.val_accuracy - cur_acc, score_=sc, train_steps=res.steps,
                             seconds=time.perf_counter() - t0))
            rep.line(f"  {desc}  acc {res.val_accuracy:.4f} ({res.val_accuracy - cur_acc:+.4f})  score {sc:+.4f}")
            if best is None or sc > best[0]:
                best = (sc, k, p, tspec, candidate, res)
            else:
                del candidate
        assert best is not None
        _, k, p, tspec, model, res = best
        rows[k]["selected"] = True
        st["history"].extend(rows)
        st["train_steps"] += sum(r["train_steps"] for r in rows)
        cur_spec, cur_train = p.spec, tspec
        st.update(iteration=i, spec=cur_spec.to_dict(), train_spec=cur_train.to_dict(),
                  latency_ms=p.latency_ms, accuracy=res.val_accuracy)
        run.commit(model)
        rep.line(f"[green]iteration {i}[/]: kept {p.unit.label} {p.unit.width}->{p.width}: "
                 f"{p.latency_ms:.3f} ms ({p.latency_ms / lat0 - 1:+.1%} vs seed), accuracy {res.val_accuracy:.4f}")
        if on_iteration is not None:
            on_iteration(st)

    if st["phase"] == "adapt":
        st["phase"] = "long"
        run.commit(None)
        rep.line(("[yellow]" if st["status"] != "reached" else "[green]") + st["message"] + "[/]")
    return _finish(run, model, cur_spec, cur_train)


def _seed(run: _Run, train_spec: ArchSpec, weights, train_first: bool | None) -> nn.Module:
    cfg, st, rep = run.cfg, run.state, run.rep
    t0 = time.perf_counter()
    model = build(train_spec, seed=cfg.seed)
    if weights is not None:
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise UserError(f"weights do not fit {train_spec.name}: {first[1].strip() if len(first) > 1 else first[0]}") from None
    train = weights is None if train_first is None else train_first
    if train:
        rep.line(f"proxy-training the seed {train_spec.name} for {cfg.init_steps} steps")
        with rep.training("seed", cfg.init_steps) as cb:
            res = train_proxy(model, run.data, cfg.init_cfg(), progress=cb)
        steps = res.steps
    else:
        res = fine_tune(model, run.data, 0, cfg.init_cfg())  # BN recalibration + validation only
        steps = 0
    test = evaluate(model, run.data, "test", cfg.proxy) if cfg.test_eval else None
    st["accuracy"] = res.val_accuracy
    st["train_steps"] = steps
    st["history"].append(_row(0, "seed", latency_ms=st["latency_ms"], accuracy=res.val_accuracy,
                              unit=train_spec.name, train_steps=steps, test_accuracy=test,
                              seconds=time.perf_counter() - t0))
    st["phase"] = "adapt"
    st["seed_weights"] = "iter_0000.pt"
    run.commit(model)
    rep.line(f"seed: {st['latency_ms']:.3f} ms, validation accuracy {res.val_accuracy:.4f}"
             + (f", test accuracy {test:.4f}" if test is not None else ""))
    return model


def _finish(run: _Run, model: nn.Module, cur_spec: ArchSpec, cur_train: ArchSpec) -> NetAdaptResult:
    cfg, st, rep, out = run.cfg, run.state, run.rep, run.out
    t0 = time.perf_counter()
    acc, steps = st["accuracy"], 0
    if cfg.long_steps:
        rep.line(f"long-term fine-tune: {cfg.long_steps} steps")
        with rep.training("long-term fine-tune", cfg.long_steps) as cb:
            res = fine_tune(model, run.data, cfg.long_steps, cfg.long_cfg(), progress=cb)
        acc, steps = res.val_accuracy, res.steps
    test = evaluate(model, run.data, "test", cfg.proxy) if cfg.test_eval else None
    st["train_steps"] += steps
    st["history"].append(_row(st["iteration"], "final", latency_ms=st["latency_ms"], accuracy=acc,
                              unit=cur_spec.name, delta_accuracy=acc - st["accuracy"], train_steps=steps,
                              test_accuracy=test, seconds=time.perf_counter() - t0))
    st["final_accuracy"], st["final_test_accuracy"] = acc, test
    seed = ArchSpec.from_dict(st["seed_spec"])
    if cur_spec.name == seed.name:
        cur_spec = dataclasses.replace(cur_spec, name=f"{seed.name}-netadapt")
        cur_train = dataclasses.replace(cur_train, name=cur_spec.name)
    st["final_spec"], st["final_train_spec"] = cur_spec.to_dict(), cur_train.to_dict()
    cur_spec.save(out / "final_spec.json")
    cur_train.save(out / "final_train_spec.json")
    _save_weights(out / "final.pt", model)
    diff = render_diff(seed, cur_spec)
    (out / "diff.txt").write_text(diff + "\n")
    st["phase"] = "done"
    run.commit(None)
    rep.plain(diff)
    rep.line(f"[bold]final[/]: {st['latency_ms']:.3f} ms ({st['latency_ms'] / st['initial_ms']:.1%} of the seed's "
             f"{st['initial_ms']:.3f} ms), validation accuracy {acc:.4f}"
             + (f", test accuracy {test:.4f}" if test is not None else "")
             + f"; {st['train_steps']} training steps in all; outputs in {out}")
    return _result(run, model)


def _result(run: _Run, model: nn.Module | None) -> NetAdaptResult:
    st = run.state
    return NetAdaptResult(
        status=st["status"], message=st["message"], initial_ms=st["initial_ms"], final_ms=st["latency_ms"],
        target_ms=st["target_ms"], iterations=st["iteration"],
        spec=ArchSpec.from_dict(st.get("final_spec") or st["spec"]),
        train_spec=ArchSpec.from_dict(st.get("final_train_spec") or st["train_spec"]), model=model, history=st["history"],
        accuracy=st.get("final_accuracy"), test_accuracy=st.get("final_test_accuracy"),
        train_steps=st["train_steps"], out_dir=run.out)
