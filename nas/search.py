"""The search loop: an Optuna study whose trials are nets of a search space.

Each trial: the controller (an Optuna sampler) picks the choices; the net is decoded twice,
at the space's geometry (224x224x3, 1000 classes by default) for its latency from the
lookup table, and at the proxy task's geometry for its accuracy from short proxy training;
the reward is MnasNet's ``ACC x (LAT/TAR)^w`` (`nas.reward`). Single-objective controllers
maximise the reward; ``nsga2`` keeps accuracy (max) and latency (min) as two objectives and
records the reward alongside, so every controller is compared on the same number.

Trial user attrs: accuracy, latency_ms, reward, n_params, madds, arch (the point's short code),
spec (JSON of the net at the latency geometry), seconds, train_seconds, worker, and
reused_from when an identical net was already evaluated (proxy training is deterministic
given the net, the data and the seeds, so its result is reused instead of trained again).

Budget and resume: ``trials`` counts COMPLETE trials in the study, across all workers and
runs; a search started again with the same settings continues up to it. Failed trials (a
diverged proxy run, a killed worker) do not count. See `nas.study` for storage, the gate
that keeps the count exact with several workers, and dead-worker recovery.

The pieces written elsewhere are reached through one small adapter each: `load_space`
(search_space.spaces), `make_sampler` (nas.rl_sampler for ``rl``), `ensure_table` /
`TableLatency` (latency), `proxy_evaluator` (nas.proxy, nas.data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from latency.latency_fn import TableLatency  # the one spec -> ms adapter, shared with NetAdapt
from latency.machine_table import DEFAULT_CALIBRATION_NETS, default_table_path, ensure_table
from search_space import ArchSpec
from search_space.errors import UserError

from . import study as st
from .evaluators import EVALUATORS, Evaluation, ProxyEvaluator
from .progress import Bar
from .reward import Reward, check_target, make_reward

CONTROLLERS = ("rl", "evolution", "tpe", "nsga2", "random")

DEFAULT_TRIALS = 12  # the README main command must finish in ~15 min on 2 cores
DEFAULT_SUPERNET_TRIALS = 500  # --evaluator supernet: 2-4 s a net here, so 15-30 min on one core
DEFAULT_OUT = "results/search"
DEFAULT_STUDY = "nas-search"
DEFAULT_STEPS = 300  # proxy budget: seed std 0.27 points vs 1.5 points between nets (experiments/proxy_budget.py)
DEFAULT_THREADS = 1  # torch threads per proxy run: 2 threads ran 2-10x slower here as soon as anything else ran
DEFAULT_ZOO_REFERENCE = {"small": ("mnv3-small", "mnv3-small-075"), "large": ("mnv3-large", "mnasnet-a1")}
CATCH = (RuntimeError, MemoryError, FloatingPointError)  # a trial that crashes torch fails; the search goes on
SINGLE = ["maximize"]
MULTI = ["maximize", "minimize"]  # accuracy, latency

AccuracyFn = Callable[[ArchSpec], Any]  # -> float (NaN = diverged) or an object with val_accuracy/diverged
LatencyFn = Callable[[ArchSpec], float]


@dataclass
class SearchConfig:
    """Everything `nas search` takes (CLI flags map one to one)."""

    space: str = "small"
    controller: str = "rl"
    target_ms: float | None = None
    target_like: str | None = None  # a zoo net whose latency (on this table) is the target
    w: float | None = None
    alpha: float | None = None
    beta: float | None = None
    hard: bool = False
    reward: str = "mnas"  # "abs": TuNAS's ACC + beta x |LAT/TAR - 1|
    trials: int = DEFAULT_TRIALS
    timeout: float | None = None
    storage: str | None = None
    study: str | None = None
    out: str | Path = DEFAULT_OUT
    data: str | None = None
    seed: int = 0
    table: str | Path | None = None
    resolution: int | None = None  # latency geometry (default: the space's, 224)
    proxy: dict = field(default_factory=dict)  # ProxyConfig overrides (steps, resolution, ...)
    evaluator: str = "proxy"  # how a net is scored: proxy training, or a trained supernet's weights
    supernet: str | Path | None = None  # the supernet folder (--evaluator supernet)
    recalib_images: int | None = None  # supernet evaluator: BN recalibration images (default: evaluators')
    val_images: int | None = None  # supernet evaluator: held-out images scored (default: evaluators')
    finetune_steps: int = 0  # supernet evaluator: SGD steps on the inherited weights before scoring
    enqueue_known: bool | None = None  # None: on
    zoo_reference: tuple[str, ...] | None = None  # None: the space's default list; () none
    calibrate_nets: int = DEFAULT_CALIBRATION_NETS
    progress: bool = True
    report_only: bool = False
    plots: bool = True  # the PNGs (a headless worker of a shared study can skip them)
    max_failures: int | None = None  # stop after this many failed trials in one run (default max(10, trials))

    def validate(self) -> None:
        if self.controller not in CONTROLLERS:
            raise UserError(f"--controller {self.controller!r}: expected one of {', '.join(CONTROLLERS)}")
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise UserError(f"--trials {self.trials!r}: must be a positive integer")
        if self.timeout is not None and not (self.timeout > 0):
            raise UserError(f"--timeout {self.timeout!r}: must be a positive number of seconds")
        if self.target_ms is not None and self.target_like is not None:
            raise UserError("--target-ms and --target-like both given; choose one")
        if self.target_ms is not None:
            check_target(self.target_ms)
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 8):
            raise UserError(f"--resolution {self.resolution!r}: must be an integer >= 8")
        if self.evaluator not in EVALUATORS:
            raise UserError(f"--evaluator {self.evaluator!r}: expected one of {', '.join(EVALUATORS)}")
        if self.evaluator == "supernet" and not self.supernet:
            raise UserError("--evaluator supernet needs --supernet DIR (train one with `nas supernet train`)")
        if self.evaluator != "supernet" and self.supernet:
            raise UserError("--supernet is only used with --evaluator supernet")
        if self.study is not None and not str(self.study).strip():
            raise UserError("--study '': give the study a name")


@dataclass
class SearchOutcome:
    study_name: str
    storage: str
    completed: int
    failed: int
    ran: int  # trials this process ran
    stopped: str  # why this process stopped: budget, timeout, failures, report-only
    best: dict | None
    summary: dict
    out: Path


# ---- adapters to the parts written elsewhere --------------------------------------------------
def load_space(name: str):
    """search_space.spaces.get_space (UserError for an unknown name)."""
    from search_space import spaces

    return spaces.get_space(name)


def space_key(space) -> str:
    """'large' or 'small': which MobileNetV3 defaults (w, zoo references) apply."""
    seed = getattr(space, "seed_name", "") or getattr(space, "name", "")
    return "small" if "small" in seed else "large"


def latency_geometry(space, resolution: int | None) -> dict:
    return {"resolution": resolution or space.resolution, "in_channels": space.in_channels,
            "num_classes": space.num_classes}


def make_sampler(controller: str, space, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The controller: an Optuna sampler."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings (multivariate TPE, ...)
        if controller == "rl":
            try:
                from nas.rl_sampler import RLSampler
            except ImportError as exc:
                raise UserError(f"--controller rl: the RL controller is not available ({exc})") from None
            # a PPO update every few completed trials: small budgets still get several updates; at
            # 1,000 trials batch 16 with lr 0.01 tuned best (experiments/rl_tuning.py, on a surrogate)
            return RLSampler(space.choices(), seed=seed, lr=0.01, batch_size=max(2, min(16, trials // 10)))
        if controller == "evolution":
            from nas.evolution_sampler import EvolutionSampler

            # Real et al. used P=100, S=25 for 20,000 nets; scaled so a small budget still evolves
            population = max(4, min(50, trials // 10))
            return EvolutionSampler(space.choices(), seed=seed, population=population,
                                    sample_size=max(2, population // 5))
        if controller == "tpe":
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed,
                                              n_startup_trials=max(4, min(10, trials // 4)))
        if controller == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if controller == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, trials // 5)), seed=seed)
    raise UserError(f"--controller {controller!r}: expected one of {', '.join(CONTROLLERS)}")


def proxy_config(overrides: dict, seed: int):
    """The ProxyConfig of a search: the proxy's defaults, the search's step default, overrides."""
    from nas.proxy import ProxyConfig

    kw = {"steps": DEFAULT_STEPS, "threads": DEFAULT_THREADS, "seed": seed}
    kw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ProxyConfig(**kw)
    except TypeError as exc:
        raise UserError(f"proxy settings: {exc}") from None


def proxy_evaluator(data, cfg, init_seed: int = 0) -> ProxyEvaluator:
    """Short proxy training (`nas.proxy.train_proxy`) of a net with fixed initial weights."""
    return ProxyEvaluator(data, cfg, init_seed)


def supernet_evaluator(cfg: SearchConfig, data, space, pcfg):
    """The search's supernet evaluator; refuses a supernet of another space, data set or geometry."""
    from .evaluators import SupernetEvaluator

    kw = {k: v for k, v in (("recalib_images", cfg.recalib_images), ("val_images", cfg.val_images)) if v is not None}
    kw["finetune_steps"] = cfg.finetune_steps
    given = (cfg.proxy or {}).get("resolution")
    ev = SupernetEvaluator.open(cfg.supernet, data, space=space, resolution=given, threads=pcfg.threads,
                                device=pcfg.device, **kw)
    for key in ("val_size", "split_seed"):  # the held-out images must be the ones the supernet never saw
        asked = (cfg.proxy or {}).get(key)
        if asked is not None and asked != ev.meta["config"][key]:
            raise UserError(f"--supernet {cfg.supernet}: trained with {key} {ev.meta['config'][key]}, not {asked}")
    return ev


def load_data(path: str | None):
    from nas.data import load_dataset

    return load_dataset(path)


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _as_evaluation(result: Any, seconds: float) -> Evaluation:
    if isinstance(result, Evaluation):
        return result
    if hasattr(result, "val_accuracy"):
        return Evaluation(float(result.val_accuracy), bool(getattr(result, "diverged", False)),
                          float(getattr(result, "seconds", seconds)))
    acc = float(result)
    return Evaluation(acc, not math.isfinite(acc), seconds)


# ---- the objective ----------------------------------------------------------------------------
class Objective:
    """One trial: choices -> nets -> latency, accuracy -> reward (or the two objectives)."""

    def __init__(self, space, reward: Reward, latency_fn: LatencyFn, evaluate: AccuracyFn, *,
                 lat_geometry: dict, train_geometry: dict, multi: bool, gate: st.Gate | None = None,
                 weights_dir: Path | None = None) -> None:
        self.space, self.reward, self.latency_fn, self.evaluate = space, reward, latency_fn, evaluate
        self.lat_geometry, self.train_geometry = lat_geometry, train_geometry
        self.multi = multi
        self.gate = gate
        self.weights_dir = weights_dir
        self.worker = st.worker_id()

    def __call__(self, trial: optuna.Trial):
        # mark the trial as ours before letting other workers create theirs (see nas.study)
        trial.set_user_attr(st.WORKER_ATTR, self.worker)
        if self.gate is not None:
            self.gate.release()
        t0 = time.perf_counter()
        self.space.suggest(trial)  # one suggest per choice: the controller decides here
        params = {name: trial.params[name] for name in self.space.choices()}
        arch = self.space.code(params)
        lat_spec = self.space.decode(params, name=f"trial{trial.number}", **self.lat_geometry)
        train_spec = self.space.decode(params, name=f"trial{trial.number}", **self.train_geometry)
        from search_space import count

        cost = count(lat_spec)
        net_key = _net_key(lat_spec)
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("net_key", net_key)
        trial.set_user_attr("n_params", int(cost.params))
        trial.set_user_attr("madds", int(cost.madds))
        trial.set_user_attr("spec", lat_spec.to_json(indent=None))
        latency = float(self.latency_fn(lat_spec))
        trial.set_user_attr("latency_ms", latency)

        previous = _find_evaluated(trial.study, net_key, trial.number)
        if previous is not None:
            ev = Evaluation(float(previous.user_attrs["accuracy"]), False, 0.0)
            trial.set_user_attr("reused_from", previous.number)
        else:
            t1 = time.perf_counter()
            ev = _as_evaluation(self.evaluate(train_spec), time.perf_counter() - t1)
        seconds = time.perf_counter() - t0
        trial.set_user_attr("seconds", round(seconds, 3))
        trial.set_user_attr("train_seconds", round(ev.train_seconds, 3))
        for k, v in ev.extra.items():
            trial.set_user_attr(k, v)
        if ev.diverged or not math.isfinite(ev.accuracy):
            trial.set_user_attr("diverged", True)
            trial.set_user_attr("failed_because", "proxy training diverged (NaN/inf loss)")
            # NaN: Optuna records the trial as FAIL (with a one-line warning) and goes on
            return (math.nan, math.nan) if self.multi else math.nan
        r = self.reward(ev.accuracy, latency)
        trial.set_user_attr("accuracy", ev.accuracy)
        trial.set_user_attr("reward", r)
        if ev.model is not None and self.weights_dir is not None:
            self._keep_if_best(trial, r, ev.model, train_spec)
        return (ev.accuracy, latency) if self.multi else r

    def _keep_if_best(self, trial: optuna.Trial, r: float, model, train_spec: ArchSpec) -> None:
        """Save the trained weights of a new best net (best_weights.pt + best_weights.json)."""
        from .results import best_record

        best = best_record(trial.study)
        if best is not None and best["reward"] >= r:
            return
        save_weights(self.weights_dir, model, train_spec, trial.number, r)
        trial.set_user_attr("weights_saved", True)


def save_weights(out: Path, model, train_spec: ArchSpec, number: int, reward: float) -> None:
    """The proxy-trained state dict of trial `number` (for its training spec, saved alongside):
    NetAdapt can start from it (`nas netadapt best_train.json --weights best_weights.pt --latency-resolution 224 --latency-channels 3 --latency-classes 1000`)."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".best_weights.pt.tmp{os.getpid()}"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out / "best_weights.pt")
    spec = train_spec.with_rows(train_spec.rows, name=f"best-trial{number}-train")
    (out / f".best_train.json.tmp{os.getpid()}").write_text(spec.to_json() + "\n")
    os.replace(out / f".best_train.json.tmp{os.getpid()}", out / "best_train.json")
    meta = {"trial": number, "reward": reward, "weights": "best_weights.pt", "spec": "best_train.json"}
    (out / f".best_weights.json.tmp{os.getpid()}").write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(out / f".best_weights.json.tmp{os.getpid()}", out / "best_weights.json")


def _net_key(spec: ArchSpec) -> str:
    """Identifies a net by its rows (two choices that round to the same widths are one net)."""
    import hashlib

    text = json.dumps([r.to_dict() for r in spec.rows], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _find_evaluated(study: optuna.Study, net_key: str, number: int):
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.user_attrs.get("net_key") == net_key and "accuracy" in t.user_attrs:
            return t
    return None


# ---- the search -------------------------------------------------------------------------------
class _Bar(Bar):
    """The search's bar: completed trials of the budget and the best reward so far."""

    def __init__(self, enabled: bool, total: int, done: int, label: str) -> None:
        super().__init__(enabled, total, done, label, ("best_reward",))

    def update(self, done: int, best: dict | None) -> None:
        text = "-" if best is None else (f"{best['reward']:.4f} (trial {best['number']}: acc {best['accuracy']:.4f}, "
                                         f"{best['latency_ms']:.3g} ms)")
        super().update(done, best_reward=text)


def _sampler_seed(seed: int, existing: int, shared: bool) -> int:
    """The controller's seed: the search seed on a fresh single-process study; mixed with how
    far the study is (a resumed random search must not replay its first samples) and, for a
    shared study, with the worker's identity (workers started alike must not sample alike)."""
    if existing == 0 and not shared:
        return seed
    mix = f"{seed}:{existing}:{st.worker_id() if shared else ''}"
    return zlib.crc32(mix.encode()) & 0x7FFFFFFF


def _data_fingerprint(data) -> dict:
    return {"name": data.name, "num_classes": int(data.num_classes), "in_channels": int(data.in_channels),
            "train_images": int(len(data.train_y)), "test_images": int(len(data.test_y))}


def run_search(cfg: SearchConfig, *, evaluate_accuracy: AccuracyFn | None = None,
               latency_fn: LatencyFn | None = None, data=None,
               train_geometry: dict | None = None, log: Callable[[str], None] | None = None) -> SearchOutcome:
    """Run (or continue) a search; write its results to ``cfg.out``.

    Injection points (tests, other tasks): `evaluate_accuracy(spec)` replaces proxy training
    (return a float, NaN for a diverged run, or an object with val_accuracy/diverged);
    `latency_fn(spec)` replaces the latency table; `data` a loaded `nas.data.Dataset`;
    `train_geometry` the proxy geometry when no data set is used
    (resolution, in_channels, num_classes; default 32, 1, 10).
    """
    from . import results as res

    cfg.validate()
    log = log or (lambda s: print(s, file=sys.stderr))
    out = Path(cfg.out)
    space = load_space(cfg.space)
    key = space_key(space)
    if cfg.target_like is not None:
        from search_space import ZOO_NAMES

        if cfg.target_like not in ZOO_NAMES:
            raise UserError(f"--target-like {cfg.target_like!r}: not a zoo net ({', '.join(ZOO_NAMES)})")
    # reward settings are checked before anything slow (the target may come from the table)
    make_reward(cfg.target_ms or 1.0, w=cfg.w, alpha=cfg.alpha, beta=cfg.beta, hard=cfg.hard, space=key,
                form=cfg.reward)
    zoo_names = _zoo_names(cfg, key)
    target_like = cfg.target_like if cfg.target_ms is None and cfg.target_like else (
        None if cfg.target_ms is not None else space.seed_name)
    lat_geometry = latency_geometry(space, cfg.resolution)

    # data and proxy (unless an evaluator is injected)
    pcfg = proxy_config(cfg.proxy, cfg.seed)
    evaluator: AccuracyFn
    if evaluate_accuracy is None:
        if data is None and not cfg.report_only:
            data = load_data(cfg.data)
        if data is None:
            evaluator = None
        elif cfg.evaluator == "supernet":
            evaluator = supernet_evaluator(cfg, data, space, pcfg)
            pcfg = dataclasses.replace(pcfg, resolution=evaluator.resolution)
        else:
            evaluator = proxy_evaluator(data, pcfg, init_seed=cfg.seed)
    else:
        evaluator = evaluate_accuracy
    if data is not None:
        train_geometry = {"resolution": pcfg.resolution, "in_channels": data.in_channels, "num_classes": data.num_classes}
    train_geometry = train_geometry or {"resolution": pcfg.resolution, "in_channels": 1, "num_classes": 10}

    # storage (fails fast on a bad URL)
    ref = st.parse_storage(cfg.storage, out)
    if ref.kind == "journal" or cfg.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    storage = st.open_storage(ref)
    study_name = cfg.study or DEFAULT_STUDY
    multi = cfg.controller == "nsga2"
    directions = MULTI if multi else SINGLE
    if cfg.report_only:
        return _report_only(cfg, storage, ref, study_name, space, out, log)

    # latency: the machine's table (built or extended first), unless injected
    table_fp: Any = "custom"
    if latency_fn is None:
        from search_space import zoo

        extra = [dataclasses.replace(zoo(n), **lat_geometry) for n in {*zoo_names, *([target_like] if target_like else [])}]
        table = ensure_table(cfg.table or default_table_path(), space, lat_geometry["resolution"], extra,
                             progress=cfg.progress, calibrate_nets=cfg.calibrate_nets, seed=cfg.seed, log=log)
        lat = TableLatency(table)
        latency_fn, table_fp = lat, lat.fingerprint()

    # the study: created once (retried on races), settings stored or checked
    probe = st.create_or_load_study(storage, study_name, directions)
    existing = len(probe.get_trials(deepcopy=False))
    stored = probe.user_attrs.get(st.SETTINGS_ATTR) or {}
    if cfg.target_ms is not None:
        target = float(cfg.target_ms)
    elif stored.get("target_like") == target_like and stored.get("target_ms"):
        target = float(stored["target_ms"])  # resume: the target the study started with
    else:
        from search_space import zoo

        target = float(latency_fn(dataclasses.replace(zoo(target_like), **lat_geometry)))
    reward = make_reward(target, w=cfg.w, alpha=cfg.alpha, beta=cfg.beta, hard=cfg.hard, space=key,
                         form=cfg.reward)
    settings = {
        "space": space.name, "controller": cfg.controller, "objectives": ["accuracy", "latency_ms"] if multi else ["reward"],
        "target_ms": reward.target_ms, "target_like": target_like, "alpha": reward.alpha, "beta": reward.beta,
        "seed": cfg.seed, "latency_geometry": lat_geometry, "train_geometry": train_geometry,
        "data": _data_fingerprint(data) if data is not None else "custom",
        "table": table_fp,
    }
    if reward.form != "mnas":  # only then: older studies (MnasNet reward) resume unchanged
        settings["reward"] = reward.form
    if evaluate_accuracy is not None:
        settings["proxy"] = "custom"
    elif cfg.evaluator == "supernet":
        settings["evaluator"] = evaluator.settings()  # which supernet scored the trials
    else:  # as before evaluators existed, so older studies resume
        settings["proxy"] = {k: v for k, v in pcfg.to_dict().items() if k not in ("threads", "device")}
    settings = st.check_settings(probe, settings)

    shared = cfg.storage is not None
    # the RL and evolution controllers rebuild their state from (seed, history) and draw trial n from
    # (seed, n): they keep the search seed; the others are reseeded on a resume or per worker
    sampler_seed = cfg.seed if cfg.controller in ("rl", "evolution") else _sampler_seed(cfg.seed, existing, shared)
    sampler = make_sampler(cfg.controller, space, sampler_seed, cfg.trials)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    gate = st.make_gate(ref, storage, study_name)
    ran, stopped = 0, "budget"
    try:
        with gate:
            if not study.user_attrs.get(st.KNOWN_ATTR):
                if cfg.enqueue_known is not False and not study.get_trials(deepcopy=False):
                    names = space.enqueue_known_points(study)
                    if names:
                        log(f"queued known point(s): {', '.join(names)}")
                study.set_user_attr(st.KNOWN_ATTR, True)
        ran, stopped = _work(study, gate, cfg, space, reward, latency_fn, evaluator, lat_geometry,
                             train_geometry, multi, out, log)
    finally:
        gate.close()

    # zoo references (cached in the study) and the results
    zoo_records = {}
    if zoo_names:
        zoo_records = zoo_reference(study, zoo_names, reward, latency_fn, evaluator, lat_geometry, train_geometry,
                                    log=log)
    summary = res.write_results(study, out, space=space, zoo=zoo_records, log=log, plots=cfg.plots)
    c = st.counts(study)
    return SearchOutcome(study_name, ref.shown, c[TrialState.COMPLETE], c[TrialState.FAIL], ran, stopped,
                         summary.get("best"), summary, out)


def _report_only(cfg: SearchConfig, storage, ref, study_name: str, space, out: Path, log) -> SearchOutcome:
    """The results of a study as it stands: no trial, no table, no data, no training."""
    from . import results as res

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise UserError(f"--report-only: no study {study_name!r} in {ref.shown}") from None
    settings = study.user_attrs.get(st.SETTINGS_ATTR) or {}
    zoo_records = {}
    if settings.get("target_ms"):
        reward = Reward(float(settings["target_ms"]), float(settings["alpha"]), float(settings["beta"]),
                        settings.get("reward", "mnas"))
        names = [k[len(ZOO_ATTR):] for k in study.user_attrs if k.startswith(ZOO_ATTR)]
        zoo_records = zoo_reference(study, names, reward, None, None, {}, {}, log=log)
    summary = res.write_results(study, out, space=space, zoo=zoo_records, log=log, plots=cfg.plots)
    c = st.counts(study)
    return SearchOutcome(study_name, ref.shown, c[TrialState.COMPLETE], c[TrialState.FAIL], 0, "report-only",
                         summary.get("best"), summary, out)


def _zoo_names(cfg: SearchConfig, key: str) -> tuple[str, ...]:
    from search_space import ZOO_NAMES

    names = DEFAULT_ZOO_REFERENCE[key] if cfg.zoo_reference is None else tuple(cfg.zoo_reference)
    for n in names:
        if n not in ZOO_NAMES:
            raise UserError(f"--zoo-reference {n!r}: not a zoo net ({', '.join(ZOO_NAMES)})")
        if n.startswith("lraspp"):
            raise UserError(f"--zoo-reference {n!r}: a segmentation net; give classification nets")
    return tuple(dict.fromkeys(names))


def _work(study, gate, cfg, space, reward, latency_fn, evaluator, lat_geometry, train_geometry, multi, out, log):
    from . import results as res

    if evaluator is None:
        raise UserError("no data set to train on (report-only study?); pass --data")
    objective = Objective(space, reward, latency_fn, evaluator, lat_geometry=lat_geometry,
                          train_geometry=train_geometry, multi=multi, gate=gate, weights_dir=out)
    heartbeat = _heartbeat_enabled(study._storage)
    max_fail = cfg.max_failures if cfg.max_failures is not None else max(10, cfg.trials)
    start = time.monotonic()
    ran = failures = 0
    stopped = "budget"
    c = st.counts(study)
    with _Bar(cfg.progress, cfg.trials, c[TrialState.COMPLETE], f"search {space.name} ({cfg.controller})") as bar:
        bar.update(c[TrialState.COMPLETE], res.best_record(study))
        if c[TrialState.COMPLETE]:
            bar.log(f"resuming study {study.study_name!r}: {c[TrialState.COMPLETE]} of {cfg.trials} trials complete")
        waited = 0.0
        while True:
            if cfg.timeout is not None and time.monotonic() - start >= cfg.timeout:
                stopped = "timeout"
                break
            if failures >= max_fail:
                stopped = "failures"
                bar.log(f"stopping: {failures} trials failed in this run")
                break
            gate.acquire()
            try:
                recovered = st.recover_dead_trials(study, unmarked_are_dead=gate.exact)
                if recovered:
                    bar.log(f"trial(s) {', '.join(map(str, recovered))} were cut off by a dead worker: "
                            "marked failed and queued again")
                if heartbeat:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        optuna.storages.fail_stale_trials(study)
                c = st.counts(study)
                if c[TrialState.COMPLETE] >= cfg.trials:
                    break
                if c[TrialState.COMPLETE] + c[TrialState.RUNNING] >= cfg.trials:
                    # the rest of the budget is running on other workers: wait in case one fails
                    gate.release()
                    time.sleep(min(2.0, 0.2 + waited))
                    waited += 0.5
                    continue
                waited = 0.0
                before = _last_number(study)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                    try:
                        study.optimize(objective, n_trials=1, catch=CATCH)
                    except KeyboardInterrupt:
                        # Optuna has recorded the trial as failed; queue its choices again so
                        # the next run redoes it (Ctrl-C is not the net's fault)
                        cut = _my_last_trial(study, objective.worker, before)
                        if cut is not None and cut.state == TrialState.FAIL:
                            st.retry_trial(study, cut)
                        raise
            finally:
                gate.release()
            ran += 1
            mine = _my_last_trial(study, objective.worker, before)
            if mine is not None and mine.state == TrialState.FAIL:
                failures += 1
                why = mine.user_attrs.get("failed_because", "an error")
                bar.log(f"trial {mine.number} failed: {why}; the search goes on")
            with contextlib.suppress(OSError):
                res.write_trials(study, out)
            c = st.counts(study)
            bar.update(c[TrialState.COMPLETE], res.best_record(study))
    return ran, stopped


def _heartbeat_enabled(storage) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat

    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def _last_number(study) -> int:
    trials = study.get_trials(deepcopy=False)
    return trials[-1].number if trials else -1


def _my_last_trial(study, worker: str, after: int):
    mine = [t for t in study.get_trials(deepcopy=False)
            if t.number > after and t.user_attrs.get(st.WORKER_ATTR) == worker]
    return mine[-1] if mine else None


# ---- zoo references ---------------------------------------------------------------------------
ZOO_ATTR = "nas:zoo:"


def zoo_reference(study, names, reward: Reward, latency_fn, evaluator, lat_geometry, train_geometry,
                  log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Each zoo net proxy-trained and timed like the trials; cached in the study's user attrs
    (so a resume, another worker or a report does not train it again)."""
    from search_space import count, zoo

    log = log or (lambda s: print(s, file=sys.stderr))
    out: dict[str, dict] = {}
    for name in names:
        cached = study.user_attrs.get(ZOO_ATTR + name)
        if cached is None:
            if evaluator is None:
                continue
            lat_spec = dataclasses.replace(zoo(name), **lat_geometry)
            train_spec = dataclasses.replace(zoo(name), **train_geometry)
            log(f"zoo reference {name}: scoring it like the trials")
            t0 = time.perf_counter()
            ev = _as_evaluation(evaluator(train_spec), 0.0)
            cost = count(lat_spec)
            cached = {"name": name, "accuracy": None if ev.diverged else ev.accuracy,
                      **({"scored_as": ev.extra["scored_as"]} if ev.extra.get("scored_as") else {}),
                      "latency_ms": float(latency_fn(lat_spec)), "n_params": int(cost.params), "madds": int(cost.madds),
                      "seconds": round(time.perf_counter() - t0, 3)}
            study.set_user_attr(ZOO_ATTR + name, cached)
        rec = dict(cached)
        rec["reward"] = reward(rec["accuracy"], rec["latency_ms"]) if rec.get("accuracy") is not None else None
        out[name] = rec
    return out


__all__ = [
    "CONTROLLERS", "DEFAULT_STEPS", "DEFAULT_SUPERNET_TRIALS", "DEFAULT_TRIALS", "Evaluation", "Objective", "SearchConfig", "SearchOutcome",
    "TableLatency", "default_table_path", "ensure_table", "load_space", "make_sampler", "proxy_config",
    "proxy_evaluator", "run_search", "zoo_reference",
]
