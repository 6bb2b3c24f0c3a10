"""A search's results, from its study alone (any worker, or a later call, can regenerate them).

Written to the output folder (each file atomically, so readers never see half a file):

- ``trials.csv``: every trial: number, state, accuracy, latency_ms, reward, the controller's
  choices (one column each), the net's short code, params, MAdds, seconds, worker, spec JSON;
- ``best.json``: the best net's spec (highest reward; at the latency geometry, 224x224x3 by
  default): ``nas show best.json`` renders it;
- ``best_table.txt``: the best net as the paper's table, diffed against the space's seed;
- ``best_weights.pt`` + ``best_train.json`` + ``best_weights.json``: the proxy-trained (or supernet-inherited) weights
  of the best net this folder's worker trained, with the spec they fit (proxy geometry);
- ``pareto.csv``: the completed trials no other trial beats on both accuracy and latency;
- ``summary.json``: settings, counts, best trial, Pareto front, the zoo nets (proxy-trained
  the same way) and whether a found net beats each at equal or lower latency;
- ``accuracy_latency.png``: accuracy vs latency of every trial, the target, the Pareto front
  and the zoo nets; ``history.png``: Optuna's optimization history of the reward.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_space import ArchSpec

from .study import SETTINGS_ATTR

BASE_COLUMNS = ["number", "state", "accuracy", "latency_ms", "reward", "arch", "n_params", "madds",
                "seconds", "train_seconds", "reused_from", "known_point", "retry_of", "worker",
                "datetime_start", "datetime_complete", "failed_because"]


# ---- tables -----------------------------------------------------------------------------------
def _f(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    ua = t.user_attrs
    rec: dict[str, Any] = {
        "number": t.number, "state": t.state.name,
        "accuracy": _f(ua.get("accuracy")), "latency_ms": _f(ua.get("latency_ms")), "reward": _f(ua.get("reward")),
        "arch": ua.get("arch"), "n_params": ua.get("n_params"), "madds": ua.get("madds"),
        "seconds": ua.get("seconds"), "train_seconds": ua.get("train_seconds"),
        "reused_from": ua.get("reused_from"), "known_point": ua.get("known_point"), "retry_of": ua.get("retry_of"),
        "worker": ua.get("worker"),
        "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
        "failed_because": ua.get("failed_because"),
    }
    for name, value in t.params.items():
        rec[name] = value
    rec["spec"] = ua.get("spec")
    return rec


def trials_frame(study: optuna.Study):
    import pandas as pd

    rows = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    choice_cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in BASE_COLUMNS and k != "spec" and k not in choice_cols:
                choice_cols.append(k)
    return pd.DataFrame(rows, columns=BASE_COLUMNS + choice_cols + ["spec"])


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _f(t.user_attrs.get("accuracy")) is not None and _f(t.user_attrs.get("latency_ms")) is not None]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the highest reward (earliest on ties)."""
    best = None
    for t in completed(study):
        r = _f(t.user_attrs.get("reward"))
        if r is not None and (best is None or r > best[0]):
            best = (r, t)
    return best[1] if best else None


def best_record(study: optuna.Study) -> dict | None:
    t = best_trial(study)
    if t is None:
        return None
    ua = t.user_attrs
    return {"number": t.number, "reward": float(ua["reward"]), "accuracy": float(ua["accuracy"]),
            "latency_ms": float(ua["latency_ms"]), "arch": ua.get("arch"), "n_params": ua.get("n_params"),
            "madds": ua.get("madds"), "params": dict(t.params)}


def pareto_indices(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, latency) points no other point beats on both (higher accuracy,
    lower latency), by increasing latency. Of identical points the first is kept."""
    pts = list(points)
    order = sorted(range(len(pts)), key=lambda i: (pts[i][1], -pts[i][0], i))
    front, best_acc = [], -math.inf
    for i in order:
        if pts[i][0] > best_acc:
            front.append(i)
            best_acc = pts[i][0]
    return front


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    trials = completed(study)
    idx = pareto_indices([(float(t.user_attrs["accuracy"]), float(t.user_attrs["latency_ms"])) for t in trials])
    return [trials[i] for i in idx]


def reach_index(rewards: list[float], fraction: float = 0.95, reference: float | None = None) -> int | None:
    """1-based count of trials after which the best reward so far first reaches
    `fraction` x `reference` (default: the best of `rewards`); None if never."""
    vals = [r for r in rewards]
    finite = [r for r in vals if r is not None and math.isfinite(r)]
    if not finite:
        return None
    goal = fraction * (max(finite) if reference is None else reference)
    best = -math.inf
    for i, r in enumerate(vals, start=1):
        if r is not None and math.isfinite(r):
            best = max(best, r)
        if best >= goal:
            return i
    return None


# ---- files ------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda p: p.write_text(text))


def write_trials(study: optuna.Study, out: str | Path) -> Path:
    """trials.csv and best.json (cheap; written after every trial)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    _atomic_write(out / "trials.csv", lambda p: df.to_csv(p, index=False))
    best = best_trial(study)
    if best is not None and best.user_attrs.get("spec"):
        spec = ArchSpec.from_json(best.user_attrs["spec"], source=f"trial {best.number}")
        spec = spec.with_rows(spec.rows, name=f"best-trial{best.number}")
        _write_text(out / "best.json", spec.to_json() + "\n")
    return out / "trials.csv"


def compare_with_zoo(study: optuna.Study, zoo: dict[str, dict]) -> dict[str, dict]:
    """For each zoo net: the most accurate trial at equal or lower latency, and whether it is
    more accurate than the zoo net."""
    trials = completed(study)
    out = {}
    for name, z in zoo.items():
        if z.get("accuracy") is None:
            continue
        ok = [t for t in trials if float(t.user_attrs["latency_ms"]) <= z["latency_ms"]]
        best = max(ok, key=lambda t: (float(t.user_attrs["accuracy"]), -t.number), default=None)
        rec = {"zoo_accuracy": z["accuracy"], "zoo_latency_ms": z["latency_ms"], "trials_at_or_below": len(ok)}
        if best is not None:
            rec.update({"trial": best.number, "accuracy": float(best.user_attrs["accuracy"]),
                        "latency_ms": float(best.user_attrs["latency_ms"]),
                        "beats": float(best.user_attrs["accuracy"]) > z["accuracy"]})
        else:
            rec.update({"trial": None, "beats": False})
        out[name] = rec
    return out


def write_results(study: optuna.Study, out: str | Path, *, space=None, zoo: dict[str, dict] | None = None,
                  log: Callable[[str], None] | None = None, plots: bool = True) -> dict:
    """Every result file; returns the summary (also written as summary.json)."""
    from search_space import render_diff, zoo as zoo_net

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zoo = zoo or {}
    settings = study.user_attrs.get(SETTINGS_ATTR) or {}
    write_trials(study, out)
    best = best_trial(study)
    front = pareto_trials(study)
    import pandas as pd

    pareto_df = pd.DataFrame([trial_record(t) for t in front], columns=None)
    if len(pareto_df):
        pareto_df = pareto_df[[c for c in ["number", "accuracy", "latency_ms", "reward", "arch", "n_params", "madds"]
                               if c in pareto_df.columns]]
    _atomic_write(out / "pareto.csv", lambda p: pareto_df.to_csv(p, index=False))

    if best is not None and best.user_attrs.get("spec"):
        spec = ArchSpec.from_json(best.user_attrs["spec"], source=f"trial {best.number}")
        spec = spec.with_rows(spec.rows, name=f"best-trial{best.number}")
        seed_name = getattr(space, "seed_name", None)
        if seed_name:
            import dataclasses

            seed = dataclasses.replace(zoo_net(seed_name), resolution=spec.resolution,
                                       in_channels=spec.in_channels, num_classes=spec.num_classes)
            header = (f"best trial {best.number}: reward {best.user_attrs['reward']:.4f}, accuracy "
                      f"{best.user_attrs['accuracy']:.4f}, latency {best.user_attrs['latency_ms']:.3f} ms "
                      f"(target {settings.get('target_ms', float('nan')):.3f} ms)\n"
                      f"choices: {best.user_attrs.get('arch')}\n\n")
            _write_text(out / "best_table.txt", header + render_diff(seed, spec) + "\n")

    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    rewards = [_f(t.user_attrs.get("reward")) for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    weights = None
    with contextlib.suppress(OSError, ValueError):
        weights = json.loads((out / "best_weights.json").read_text())
    summary = {
        "study": study.study_name, "settings": settings, "trials": states,
        "target_ms": settings.get("target_ms"),
        "best": best_record(study),
        "trials_to_95pct_of_best": reach_index(rewards, 0.95),
        "pareto": [{"number": t.number, "accuracy": float(t.user_attrs["accuracy"]),
                    "latency_ms": float(t.user_attrs["latency_ms"]), "reward": _f(t.user_attrs.get("reward")),
                    "arch": t.user_attrs.get("arch")} for t in front],
        "zoo": zoo, "vs_zoo": compare_with_zoo(study, zoo),
        # the proxy-trained weights kept by the worker(s) writing to this folder
        "best_weights": weights,
    }
    _write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    if not plots:
        return summary
    try:
        plot_accuracy_latency(study, out / "accuracy_latency.png", settings=settings, zoo=zoo)
        plot_history(study, out / "history.png")
    except Exception as exc:  # a plot must never lose a search's results
        if log:
            log(f"warning: could not draw the plots: {exc.__class__.__name__}: {exc}")
    return summary


# ---- plots ------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_latency(study: optuna.Study, path: str | Path, *, settings: dict | None = None,
                          zoo: dict[str, dict] | None = None) -> Path:
    plt = _pyplot()
    settings = settings or {}
    trials = completed(study)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    if trials:
        xs = [float(t.user_attrs["latency_ms"]) for t in trials]
        ys = [float(t.user_attrs["accuracy"]) for t in trials]
        sc = ax.scatter(xs, ys, c=[t.number for t in trials], cmap="viridis", s=22, alpha=0.85, label="trials",
                        zorder=2)
        fig.colorbar(sc, ax=ax, label="trial")
        front = pareto_trials(study)
        fx = [float(t.user_attrs["latency_ms"]) for t in front]
        fy = [float(t.user_attrs["accuracy"]) for t in front]
        ax.step(fx, fy, where="post", color="tab:red", lw=1.5, label="Pareto front", zorder=3)
        ax.scatter(fx, fy, facecolors="none", edgecolors="tab:red", s=60, zorder=3)
        best = best_trial(study)
        if best is not None:
            ax.scatter([best.user_attrs["latency_ms"]], [best.user_attrs["accuracy"]], marker="*", s=260,
                       color="gold", edgecolors="black", zorder=5, label=f"best reward (trial {best.number})")
    target = settings.get("target_ms")
    if target:
        like = settings.get("target_like")
        ax.axvline(target, color="gray", ls="--", lw=1.2,
                   label=f"target {target:.3g} ms" + (f" ({like})" if like else ""))
    for name, z in (zoo or {}).items():
        if z.get("accuracy") is None:
            continue
        ax.scatter([z["latency_ms"]], [z["accuracy"]], marker="D", s=55, color="black", zorder=4)
        ax.annotate(name, (z["latency_ms"], z["accuracy"]), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set_xlabel("latency (ms, lookup table)")
    ax.set_ylabel("supernet accuracy (inherited weights)" if settings.get("evaluator") else "proxy accuracy")
    title = f"{study.study_name}: {settings.get('space', '')} space, {settings.get('controller', '')}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    _atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return path


def plot_history(study: optuna.Study, path: str | Path) -> Path | None:
    """Optuna's optimization history (matplotlib backend) of the reward."""
    plt = _pyplot()
    if not completed(study):
        return None
    from optuna.visualization.matplotlib import plot_optimization_history

    # Optuna switches matplotlib's global style: keep that inside this block
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore")
        if len(study.directions) == 1:  # the objective is the reward: Optuna adds the best-so-far line
            ax = plot_optimization_history(study, target_name="reward")
        else:
            ax = plot_optimization_history(
                study, target=lambda t: float(t.user_attrs.get("reward", float("nan"))), target_name="reward")
        fig = ax.figure
        fig.set_size_inches(7.5, 4.5)
        fig.tight_layout()
        path = Path(path)
        _atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
        plt.close(fig)
    return path


__all__ = ["best_record", "best_trial", "compare_with_zoo", "completed", "pareto_indices", "pareto_trials",
           "plot_accuracy_latency", "plot_history", "reach_index", "trial_record", "trials_frame",
           "write_results", "write_trials"]
