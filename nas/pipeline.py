"""`nas pipeline`: the MobileNetV3 recipe end to end.

Stages, each resumable, in one output folder:
  1. search    platform-aware search (Large: w = -0.07, Small: w = -0.15), target = the paper
               net's latency on this machine's table (80 ms on a Pixel 1 means nothing here);
  2. netadapt  NetAdapt on the best net found, to min(target, frac x its latency);
  3. check     the final spec against the paper's table, both nets measured the same way;
  4. report    report.md with every stage's tables and plots, final.json.
`pipeline.json` records the settings and each finished stage, so a pipeline interrupted at
any point continues where it stopped: the search through its Optuna study, NetAdapt from its
last finished iteration, and finished stages are not run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from latency.timing import DEFAULT_ROUNDS
from search_space import ArchSpec
from search_space.errors import UserError

PRESETS = {
    "large": {"space": "large", "w": -0.07, "against": "mnv3-large"},
    "small": {"space": "small", "w": -0.15, "against": "mnv3-small"},
}
STAGES = ("supernet", "search", "netadapt", "check", "train", "report")
# settings added later: an older run's pipeline.json lacks them and compares as these defaults
EVALUATOR_DEFAULTS = {"evaluator": "proxy", "supernet": None, "supernet_steps": None, "train_epochs": 0}


@dataclass
class PipelineConfig:
    preset: str
    out: str | Path
    space: str | None = None  # another search space (name or JSON file) than the preset's
    latency_resolution: int = 224  # the geometry latency is predicted and measured at
    controller: str = "rl"
    trials: int = 30
    search_steps: int = 300  # proxy steps per searched net
    proxy_resolution: int = 32
    netadapt_frac: float = 0.9  # NetAdapt target: min(search target, frac x the found net's latency)
    short_steps: int = 100
    long_steps: int = 500
    init_steps: int = 500
    check_steps: int = 500  # proxy steps for the final comparison (both nets)
    measure_rounds: int = DEFAULT_ROUNDS  # end-to-end rounds (of a few runs each) in the final check
    data: str | None = None
    table: str | None = None
    seed: int = 0
    max_train_images: int | None = None
    eval_batches: int | None = None
    val_size: int | float = 10000  # held-out validation images carved from the training set
    calibrate_nets: int = 8
    evaluator: str = "proxy"  # how the search scores nets: proxy training or a supernet's weights
    supernet: str | None = None  # a trained supernet; None with evaluator "supernet": trained in OUT/supernet
    supernet_steps: int | None = None  # steps when the pipeline trains the supernet (default: nas.supernet's)
    train_epochs: int = 0  # > 0: a last stage trains final.json for real (`nas train`) for this many epochs
    progress: bool = True
    device: str = "cpu"  # where every stage trains and scores (may change on a resume)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"--preset {self.preset!r}: expected one of {', '.join(PRESETS)}")
        for name in ("trials", "search_steps", "proxy_resolution", "check_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")
        for name in ("short_steps", "long_steps", "init_steps", "measure_rounds"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise UserError(f"--{name.replace('_', '-')} {v!r}: must be an integer >= 0")
        if not 0 < self.netadapt_frac <= 1:
            raise UserError(f"--netadapt-frac {self.netadapt_frac!r}: must be in (0, 1]")
        if self.evaluator not in ("proxy", "supernet"):
            raise UserError(f"--evaluator {self.evaluator!r}: expected proxy or supernet")
        if not isinstance(self.train_epochs, int) or self.train_epochs < 0:
            raise UserError(f"--train-epochs {self.train_epochs!r}: must be an integer >= 0")
        if self.evaluator != "supernet" and (self.supernet or self.supernet_steps):
            raise UserError("--supernet/--supernet-steps are only used with --evaluator supernet")

    @property
    def space_name(self) -> str:
        return self.space or PRESETS[self.preset]["space"]

    @property
    def w(self) -> float:
        return PRESETS[self.preset]["w"]

    @property
    def against(self) -> str:
        return PRESETS[self.preset]["against"]

    def settings(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("out", "progress", "device"):
            d.pop(k)
        if self.evaluator == "proxy":  # as before evaluators existed, so older runs resume
            for k in ("evaluator", "supernet", "supernet_steps"):
                d.pop(k)
        return d


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self.state_path = self.out / "pipeline.json"
        self.state = self._load_state()

    # ---- state ---------------------------------------------------------------------------
    def _load_state(self) -> dict:
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: is a file, not a folder")
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{self.state_path}: corrupt pipeline state; remove it to start over") from None
            was = dict(state.get("settings", {}))
            now = self.cfg.settings()
            for k, default in EVALUATOR_DEFAULTS.items():  # absent in a proxy run's settings: compare as defaults
                was.setdefault(k, default)
                now.setdefault(k, default)
            if "train" not in state.get("stages", {}):  # the last stage may be added to a finished run
                was["train_epochs"] = now["train_epochs"]
            changed = [k for k in now if k in was and was[k] != now[k]]
            if changed:
                k = changed[0]
                raise UserError(f"{self.out} holds a pipeline run with {k}={was[k]!r}, not {now[k]!r}; "
                                "use another --out or the same settings")
            return state
        return {"settings": self.cfg.settings(), "stages": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".pipeline.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def _finish(self, stage: str, info: dict, started: float) -> None:
        self.state["stages"][stage] = {**info, "seconds": round(time.time() - started, 1),
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._save_state()

    # ---- shared pieces -------------------------------------------------------------------
    def table(self):
        from nas.check import task_spec
        from latency.machine_table import default_table_path, ensure_table, seed_spec
        from nas.search import load_space
        from search_space import zoo

        path = Path(self.cfg.table) if self.cfg.table else default_table_path()
        space = load_space(self.cfg.space_name)
        res = self.cfg.latency_resolution
        paper = task_spec(zoo(self.cfg.against), res, 3, 1000)
        return ensure_table(path, space, res, extra_specs=[paper, seed_spec(space, res)],
                            progress=self.cfg.progress, calibrate_nets=self.cfg.calibrate_nets, log=self.log)

    def data(self):
        from nas.data import load_dataset

        return load_dataset(self.cfg.data)

    def proxy(self, steps: int):
        from nas.proxy import ProxyConfig

        return ProxyConfig(steps=steps, resolution=self.cfg.proxy_resolution, seed=self.cfg.seed,
                           val_size=self.cfg.val_size,
                           max_train_images=self.cfg.max_train_images, eval_batches=self.cfg.eval_batches,
                           device=self.cfg.device)

    # ---- stages --------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self._save_state()
        for stage in STAGES:
            if stage == "supernet" and self.cfg.evaluator != "supernet":
                continue
            if stage == "train" and not self.cfg.train_epochs:
                continue
            if self.done(stage):
                self.log(f"pipeline: stage {stage} already finished, skipping")
                continue
            self.log(f"pipeline: stage {stage}")
            getattr(self, f"stage_{stage}")()
        return self.state

    def stage_supernet(self) -> None:
        """With ``--evaluator supernet`` and no ``--supernet``: train one in OUT/supernet (resumes)."""
        started = time.time()
        c = self.cfg
        if c.supernet:
            from nas.search import load_space
            from nas.supernet import open_supernet

            # refused now (another space, data set, resolution or split), not after the table is built
            _, meta = open_supernet(c.supernet, space=load_space(c.space_name), data=self.data(),
                                    resolution=c.proxy_resolution)
            if meta["config"]["val_size"] != c.val_size:
                raise UserError(f"--supernet {c.supernet}: trained with val_size {meta['config']['val_size']}, "
                                f"not {c.val_size}: its training images would overlap this run's held-out images")
            self._finish("supernet", {"path": str(c.supernet), "trained": False}, started)
            return
        from nas.supernet import SupernetConfig, train_supernet

        kw = {"steps": c.supernet_steps} if c.supernet_steps else {}
        scfg = SupernetConfig(space=c.space_name, resolution=c.proxy_resolution, val_size=c.val_size, seed=c.seed,
                              device=c.device, **kw)
        outcome = train_supernet(scfg, self.out / "supernet", self.data(), progress=c.progress, log=self.log)
        self._finish("supernet", {"path": str(self.out / "supernet"), "trained": True, "steps": outcome.steps,
                                  "train_seconds": round(outcome.seconds, 1)}, started)

    def supernet_path(self) -> str | None:
        info = self.state["stages"].get("supernet") or {}
        return info.get("path")

    def stage_search(self) -> None:
        from nas.search import SearchConfig, run_search

        started = time.time()
        c = self.cfg
        proxy = {"steps": c.search_steps, "resolution": c.proxy_resolution, "val_size": c.val_size,
                 "device": c.device}
        if c.max_train_images:
            proxy["max_train_images"] = c.max_train_images
        if c.eval_batches:
            proxy["eval_batches"] = c.eval_batches
        scfg = SearchConfig(space=c.space_name, controller=c.controller, target_like=c.against,
                            w=c.w, trials=c.trials, out=self.out / "search", data=c.data, seed=c.seed,
                            table=c.table, resolution=c.latency_resolution, proxy=proxy,
                            calibrate_nets=c.calibrate_nets, progress=c.progress,
                            evaluator=c.evaluator, supernet=self.supernet_path() if c.evaluator == "supernet" else None)
        outcome = run_search(scfg)
        if not outcome.best:
            raise UserError(f"search in {self.out / 'search'} completed no trial; see its trials.csv")
        best_spec = self.out / "search" / "best.json"
        if not best_spec.exists():
            raise UserError(f"search finished but wrote no {best_spec}")
        self._finish("search", {"completed": outcome.completed, "failed": outcome.failed,
                                "best": _jsonable(outcome.best), "summary": _jsonable(outcome.summary),
                                "best_spec": str(best_spec)}, started)

    def _search_target_ms(self) -> float:
        summary = self.state["stages"]["search"].get("summary") or {}
        for key in ("target_ms", "target"):
            if isinstance(summary.get(key), (int, float)):
                return float(summary[key])
        from latency.predict import predict
        from nas.check import task_spec
        from search_space import zoo

        paper = task_spec(zoo(self.cfg.against), self.cfg.latency_resolution, 3, 1000)
        return float(predict(paper, self.table(), measure_missing=True).ms)

    def stage_netadapt(self) -> None:
        from netadapt.latency_model import TableLatency
        from netadapt.loop import NetAdaptConfig, run_netadapt

        started = time.time()
        c = self.cfg
        seed_spec = ArchSpec.load(self.state["stages"]["search"]["best_spec"])
        # Measures the ops a width scan lacks in one batch (not one op at a time).
        predict_ms = TableLatency(self.table().path, progress=c.progress, log=self.log)

        start_ms = predict_ms(seed_spec)
        target = min(self._search_target_ms(), c.netadapt_frac * start_ms)
        ncfg = NetAdaptConfig(target_ms=target, short_steps=c.short_steps, long_steps=c.long_steps,
                              init_steps=c.init_steps, seed=c.seed, proxy=self.proxy(c.search_steps))
        # Start from the search's trained weights of the best net when it saved them (same rows,
        # proxy geometry); otherwise NetAdapt proxy-trains the seed first.
        weights = None
        wpath, wmeta = self.out / "search" / "best_weights.pt", self.out / "search" / "best_weights.json"
        best_number = (self.state["stages"]["search"].get("best") or {}).get("number")
        if wpath.exists() and wmeta.exists() and json.loads(wmeta.read_text()).get("trial") == best_number:
            import torch

            weights = torch.load(wpath, map_location="cpu", weights_only=True)
        result = run_netadapt(seed_spec, self.data(), predict_ms, self.out / "netadapt", ncfg, weights=weights,
                              quiet=not c.progress)
        final = self.out / "final.json"
        result.spec.with_rows(result.spec.rows, name=f"{c.preset}-final").save(final)
        self._finish("netadapt", {"status": result.status, "message": result.message,
                                  "initial_ms": result.initial_ms, "final_ms": result.final_ms,
                                  "target_ms": target, "iterations": result.iterations,
                                  "accuracy": result.accuracy, "test_accuracy": result.test_accuracy,
                                  "final_spec": str(final)}, started)

    def stage_check(self) -> None:
        from nas.check import run_check, write_report

        started = time.time()
        c = self.cfg
        final = ArchSpec.load(self.state["stages"]["netadapt"]["final_spec"])
        report = run_check(final, c.against, table=self.table(), data=self.data(), proxy_cfg=self.proxy(c.check_steps),
                           target_ms=self._search_target_ms(), w=c.w, measure_rounds=c.measure_rounds,
                           latency_resolution=c.latency_resolution, progress=c.progress)
        write_report(report, self.out / "check")
        self._finish("check", {"nets": [dataclasses.asdict(n) for n in report.nets]}, started)

    def stage_train(self) -> None:
        """`nas train` of final.json at the proxy geometry, EMA weights scored on the test set once."""
        from nas.train import TrainConfig, train_net

        started = time.time()
        c = self.cfg
        final = ArchSpec.load(self.state["stages"]["netadapt"]["final_spec"])
        tcfg = TrainConfig(epochs=c.train_epochs, resolution=c.proxy_resolution, val_size=c.val_size, seed=c.seed,
                           device=c.device)
        result = train_net(final, self.data(), self.out / "train", tcfg, progress=c.progress, log=self.log)
        self._finish("train", {**result, "out": str(self.out / "train")}, started)

    def stage_report(self) -> None:
        started = time.time()
        (self.out / "report.md").write_text(render_report(self.out, self.state, self.cfg))
        self._finish("report", {"path": str(self.out / "report.md")}, started)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def render_report(out: Path, state: dict, cfg: PipelineConfig) -> str:
    """report.md: what each stage did, with its tables and plots (relative links)."""
    st = state["stages"]
    lines = [f"# MobileNetV3 recipe, preset `{cfg.preset}`", "",
             f"Search space `{cfg.space_name}`, controller `{cfg.controller}`, reward "
             f"ACC x (LAT/TAR)^{cfg.w:g} with TAR = {cfg.against}'s latency on this machine's table; "
             + (f"{cfg.trials} trials of {cfg.search_steps} proxy steps at {cfg.proxy_resolution}x{cfg.proxy_resolution}."
              if cfg.evaluator == "proxy" else
              f"{cfg.trials} trials scored with a weight-sharing supernet's inherited weights "
              f"(`{st.get('supernet', {}).get('path', cfg.supernet)}`) at {cfg.proxy_resolution}x{cfg.proxy_resolution}."),
             ""]
    total = sum(s.get("seconds", 0) for s in st.values())
    lines += ["| stage | time (s) | result |", "|---|---|---|"]
    if st.get("supernet", {}).get("trained"):
        lines.append(f"| supernet | {st['supernet']['seconds']} | trained {st['supernet']['steps']} steps |")
    if "search" in st:
        b = st["search"].get("best") or {}
        lines.append(f"| search | {st['search']['seconds']} | {st['search']['completed']} trials, "
                     f"best reward {_fmt(b.get('reward'))} (acc {_fmt(b.get('accuracy'))}, "
                     f"{_fmt(b.get('latency_ms'))} ms) |")
    if "netadapt" in st:
        n = st["netadapt"]
        lines.append(f"| netadapt | {n['seconds']} | {n['status']}: {_fmt(n['initial_ms'])} -> {_fmt(n['final_ms'])} ms "
                     f"(target {_fmt(n['target_ms'])}) in {n['iterations']} iterations, acc {_fmt(n.get('accuracy'))} |")
    if "check" in st:
        lines.append(f"| check | {st['check']['seconds']} | see below |")
    if "train" in st:
        t = st["train"]
        lines.append(f"| train | {t['seconds']} | {t['epochs']} epochs: held-out {_fmt(t['best_val_acc_ema'])}, "
                     f"test {_fmt(t['test_acc_ema'])} (EMA weights; `train/curves.png`) |")
    lines += [f"| total | {round(total, 1)} | |", ""]
    lines += ["## 1. Search", ""]
    p = out / "search" / "best_table.txt"
    if p.exists():
        lines += ["Best net against the space's seed:", "", "```", p.read_text().rstrip(), "```", ""]
    for png in sorted((out / "search").glob("*.png")):
        lines += [f"![{png.stem}](search/{png.name})", ""]
    lines += ["## 2. NetAdapt", ""]
    if "netadapt" in st:
        lines += [st["netadapt"]["message"], ""]
    for name in ("netadapt/diff.txt", "netadapt/final_diff.txt"):
        p = out / name
        if p.exists():
            lines += ["```", p.read_text().rstrip(), "```", ""]
    for png in sorted((out / "netadapt").glob("*.png")):
        lines += [f"![{png.stem}](netadapt/{png.name})", ""]
    lines += ["## 3. Final spec against the paper", ""]
    check = out / "check" / "check.md"
    if check.exists():
        lines += [check.read_text(), ""]
    lines += ["`final.json` is the final spec: `nas show final.json`, `nas export final.json --onnx final.onnx`, "
              f"`nas check final.json --against {cfg.against}`.", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
