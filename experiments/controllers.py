"""Controllers benchmark: rl, tpe, nsga2, evolution and random at the same trial budget, several seeds.

Every run is a real `nas search` (nas.search.run_search) on the same space, reward, latency
table and proxy training; only the controller and its seed change. The proxy's own seeds
(initial weights, data order) stay fixed across runs, so a net gets the same accuracy
whichever run samples it: evaluations are cached across runs (and across invocations, in
the output folder) and a net is trained once.

Reported per run: best reward, the best net's accuracy and latency, trials needed to reach
95% of the best reward found by any run (the raw criterion) and to close 95% of the gap
between a random net's median reward and that best (raw 95% is reached at once when rewards
sit in a narrow band), and whether the run found a net that beats the ``--target-like`` net
(MobileNetV3-Small by default; same proxy, same table) at equal or lower latency. With ``--confirm-seeds K`` the nets that beat
it, and MobileNetV3-Small itself, are trained again with K other proxy seeds, and the
verdict is taken on the mean (the proxy's seed-to-seed noise is of the order of the gaps).

    python experiments/controllers.py                      # the README table (~15 min on 2 cores,
                                                           # with this machine's latency table built)
    python experiments/controllers.py --trials 40 --seeds 0,1,2,3 --steps 150 --proxy-resolution 32

At scale, with a trained supernet scoring each net in seconds (one evaluation cache for all runs,
kept in the output folder, so the benchmark resumes and can be split over days):

    python experiments/controllers.py --evaluator supernet --supernet runs/supernet-small \
        --controllers rl,tpe,nsga2,evolution,random --seeds 0,1,2 --trials 1000 \
        --out experiments/results/controllers-supernet --results experiments/results/controllers_supernet

The cache is an append-only file that several processes share, so one machine's cores (or
several machines on a shared folder) split the runs: start one process per group of
controllers (or seeds) with the same --out and its own --results, then run the full command
once more to gather every run into one table (finished runs are read back, not re-run).

Budget flags: --trials, --seeds, --controllers, --steps, --proxy-resolution, --batch-size,
--val-size, --confirm-seeds. Run again with the same flags to continue an interrupted run.
Writes experiments/results/controllers.{csv,json,md,png} and per-run studies under
experiments/results/controllers/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_space.errors import UserError  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "mnv3-small"


class EvalCache:
    """Evaluations by key, in an append-only JSON-lines file (``eval_cache.jsonl``).

    Several benchmark processes can share one file: each appends its results under an
    exclusive lock and, on a miss, reads what the others appended since it last looked, so a
    net scored by one process is not scored again by another. A kill loses at most the line
    being written. A legacy ``eval_cache.json`` (one dict) beside it is read as well."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self.path = path.with_suffix(".jsonl")
        self.data: dict[str, dict] = {}
        legacy = path.with_suffix(".json")
        if legacy.exists():
            try:
                self.data.update(json.loads(legacy.read_text()))
            except (json.JSONDecodeError, OSError):
                pass
        self._offset = 0
        self._refresh()
        self.hits = self.misses = 0

    def _refresh(self) -> None:
        """Read the complete lines appended since the last look."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
                self.data[rec.pop("key")] = rec
            except (json.JSONDecodeError, KeyError, AttributeError):
                continue  # a line torn by a kill
        self._offset += end

    @staticmethod
    def key(spec, proxy: dict, init_seed: int) -> str:
        rows = [r.to_dict() for r in spec.rows]
        text = json.dumps({"rows": rows, "geometry": [spec.resolution, spec.in_channels, spec.num_classes],
                           "se_mode": spec.se_mode, "proxy": proxy, "init": init_seed}, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, key: str):
        if key not in self.data:
            self._refresh()
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        import fcntl

        self.data[key] = value
        line = json.dumps({"key": key, **value}, default=str).encode() + b"\n"
        with open(self.path, "a+b") as fh:  # appends go to the end whatever the read position
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                end = fh.seek(0, os.SEEK_END)
                if end:
                    fh.seek(end - 1)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line  # a line torn by a killed writer must not swallow this one
                fh.write(line)
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(cache: EvalCache, score, settings: dict, init_seed: int, arch_of=None):
    """``score(spec)`` looked up in, or else added to, ``cache`` under (net, ``settings``, seed)."""
    from nas.search import Evaluation

    def evaluate(spec):
        key = cache.key(spec, settings, init_seed)
        hit = cache.get(key)
        if hit is not None:
            cache.hits += 1
            return Evaluation(hit["accuracy"], hit["diverged"], 0.0, {"cached": True})
        cache.misses += 1
        ev = score(spec)
        entry = {"accuracy": ev.accuracy, "diverged": ev.diverged, "seconds": ev.train_seconds}
        if arch_of is not None:
            entry["arch"] = arch_of(spec)
        cache.put(key, entry)
        return Evaluation(ev.accuracy, ev.diverged, ev.train_seconds, ev.extra)  # no weights kept

    return evaluate


def cached_evaluator(cache: EvalCache, data, pcfg, init_seed: int):
    """Proxy training, cached by (training spec, proxy settings, initial-weight seed)."""
    from nas.search import proxy_evaluator

    proxy = {k: v for k, v in pcfg.to_dict().items() if k not in ("threads", "device")}
    return _cached(cache, proxy_evaluator(data, pcfg, init_seed=init_seed), proxy, init_seed)


def cached_supernet_evaluator(cache: EvalCache, evaluator):
    """The supernet's score of a net is a function of the net (and of the scoring settings): one
    cache serves every run, and every invocation of the benchmark. Entries keep the net's arch
    code, so the cache doubles as a data set of (net, score) pairs."""
    space = evaluator.space

    def arch_of(spec) -> str:
        params = space.encode(spec)
        return space.code(params) if params is not None else spec.name

    return _cached(cache, evaluator, evaluator.settings(), 0, arch_of)


def best_so_far(rewards: list[float | None]) -> list[float]:
    out, best = [], -math.inf
    for r in rewards:
        if r is not None and math.isfinite(r):
            best = max(best, r)
        out.append(best)
    return out


def first_reaching(curve: list[float], goal: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= goal), None)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="small")
    p.add_argument("--controllers", default="rl,tpe,nsga2,random")
    p.add_argument("--evaluator", choices=("proxy", "supernet"), default="proxy",
                   help="proxy training (default) or a trained supernet's weights (--supernet DIR)")
    p.add_argument("--supernet", default=None, help="supernet folder (`nas supernet train`)")
    p.add_argument("--recalib-images", type=int, default=None, help="supernet scoring: BN recalibration images")
    p.add_argument("--val-images", type=int, default=None, help="supernet scoring: held-out images")
    p.add_argument("--reward", choices=("mnas", "abs"), default="mnas",
                   help="mnas: ACC x (LAT/TAR)^w; abs: ACC + beta x |LAT/TAR - 1| (TuNAS)")
    p.add_argument("--beta", type=float, default=None, help="abs reward's beta (default -0.1); runs are named "
                   "CONTROLLER-abs-sSEED beside the default reward's")
    p.add_argument("--seeds", default="0,1", help="controller seeds (comma-separated)")
    p.add_argument("--trials", type=int, default=14, help="completed trials per run")
    p.add_argument("--target-like", default=REFERENCE)
    p.add_argument("--w", type=float, default=-0.15)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--proxy-resolution", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-size", type=float, default=1000)
    p.add_argument("--bn-recalib", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--confirm-seeds", type=int, default=2, help="extra proxy seeds to confirm 'beats the --target-like net'")
    p.add_argument("--table", default=None, help="latency table (default: this machine's, built if missing)")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(RESULTS / "controllers"), help="per-run studies and the evaluation cache")
    p.add_argument("--results", default=str(RESULTS / "controllers"), help="prefix of the .csv/.json/.md/.png")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"controllers: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    import logging

    import optuna

    from nas.data import load_dataset
    from nas.results import completed
    from nas.search import (CONTROLLERS, SearchConfig, TableLatency, default_table_path, ensure_table, load_space,
                            proxy_config, run_search)
    from search_space import zoo

    optuna.logging.set_verbosity(logging.WARNING)
    controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    for c in controllers:
        if c not in CONTROLLERS:
            raise UserError(f"--controllers: unknown controller {c!r} ({', '.join(CONTROLLERS)})")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    space = load_space(args.space)
    table_path = Path(args.table) if args.table else default_table_path()
    table = ensure_table(table_path, space, extra_specs=[zoo(args.target_like)],
                         progress=not args.no_progress)
    latency = TableLatency(table)
    data = load_dataset(args.data)
    val = int(args.val_size) if args.val_size >= 1 else args.val_size
    overrides = {"steps": args.steps, "resolution": args.proxy_resolution, "batch_size": args.batch_size,
                 "val_size": val, "bn_recalib_batches": args.bn_recalib, "threads": args.threads}
    cache = EvalCache(out / "eval_cache.jsonl")
    if args.evaluator == "supernet":
        from nas.evaluators import SupernetEvaluator

        if not args.supernet:
            raise UserError("--evaluator supernet needs --supernet DIR")
        kw = {k: v for k, v in (("recalib_images", args.recalib_images), ("val_images", args.val_images)) if v}
        sn = SupernetEvaluator.open(args.supernet, data, space=space, threads=args.threads, **kw)
        # the trials' training geometry and held-out split are the supernet's
        overrides.update(resolution=sn.resolution, val_size=sn.meta["config"]["val_size"])
        evaluate = cached_supernet_evaluator(cache, sn)
        args.confirm_seeds = 0  # the standalone proof of found nets is experiments/search_vs_random.py
    elif args.supernet:
        raise UserError("--supernet is only used with --evaluator supernet")
    pcfg = proxy_config(overrides, seed=0)
    if args.evaluator == "proxy":
        evaluate = cached_evaluator(cache, data, pcfg, init_seed=0)

    runs = []
    for seed in seeds:  # seeds outer: an interrupted benchmark has every controller at equal seeds
        for controller in controllers:
            # runs of another reward live beside the default's and share its cache (a net's score
            # does not depend on the reward)
            name = f"{controller}-s{seed}" if args.reward == "mnas" else f"{controller}-{args.reward}-s{seed}"
            cfg = SearchConfig(space=args.space, controller=controller, target_like=args.target_like,
                               w=args.w if args.reward == "mnas" else None,
                               trials=args.trials, out=out / "runs" / name, seed=seed, table=str(table_path),
                               reward=args.reward, **({"beta": args.beta} if args.beta is not None else {}),
                               proxy=overrides, enqueue_known=False, zoo_reference=(args.target_like,),
                               progress=not args.no_progress, plots=False)
            t0 = time.time()
            misses0 = cache.misses
            outcome = run_search(cfg, evaluate_accuracy=evaluate, latency_fn=latency, data=data,
                                 log=lambda s: print(f"[{name}] {s}", file=sys.stderr))
            storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(out / "runs" / name / "study.log")))
            study = optuna.load_study(study_name="nas-search", storage=storage)
            trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            rewards = [t.user_attrs.get("reward") if t.state.name == "COMPLETE" else None for t in trials]
            rewards = [r for r, t in zip(rewards, trials) if t.state.name == "COMPLETE"]
            best = outcome.best or {}
            vs = (outcome.summary.get("vs_zoo") or {}).get(args.target_like, {})
            ref = (outcome.summary.get("zoo") or {}).get(args.target_like, {})
            under = [t for t in completed(study) if t.user_attrs["latency_ms"] <= ref.get("latency_ms", -1)]
            runs.append({
                "run": name, "controller": controller, "seed": seed, "completed": outcome.completed,
                "failed": outcome.failed, "best_reward": best.get("reward"), "best_accuracy": best.get("accuracy"),
                "best_latency_ms": best.get("latency_ms"), "best_trial": best.get("number"), "best_arch": best.get("arch"),
                "curve": best_so_far(rewards), "rewards": rewards,
                "ref_accuracy": ref.get("accuracy"), "ref_latency_ms": ref.get("latency_ms"),
                "beats_ref": bool(vs.get("beats")), "challenger_trial": vs.get("trial"),
                "challenger_accuracy": vs.get("accuracy"), "challenger_latency_ms": vs.get("latency_ms"),
                "challenger_spec": next((t.user_attrs["spec"] for t in under if t.number == vs.get("trial")), None),
                "distinct_nets": len({t.user_attrs.get("arch") for t in completed(study)}),
                "new_trainings": cache.misses - misses0, "seconds": round(time.time() - t0, 1),
                "target_ms": outcome.summary.get("target_ms"),
            })
            print(f"[{name}] best reward {best.get('reward', float('nan')):.4f} "
                  f"({runs[-1]['new_trainings']} nets trained, {runs[-1]['seconds']:.0f} s)", file=sys.stderr)

    # 95% criteria against the best reward any run found
    global_best = max(r["best_reward"] for r in runs if r["best_reward"] is not None)
    pool = [x for r in runs if r["controller"] == "random" for x in r["rewards"] if x is not None] or \
        [x for r in runs for x in r["rewards"] if x is not None]
    base = statistics.median(pool)
    random_finals = [r["best_reward"] for r in runs if r["controller"] == "random" and r["best_reward"] is not None]
    random_best = statistics.median(random_finals) if random_finals else None
    for r in runs:
        r["trials_to_95pct"] = first_reaching(r["curve"], 0.95 * global_best)
        r["trials_to_95pct_gap"] = first_reaching(r["curve"], base + 0.95 * (global_best - base))
        # the question of the issue: how soon does a controller match what random search ends with?
        r["trials_to_random_best"] = first_reaching(r["curve"], random_best) if random_best is not None else None
        tail = [x for x in r["rewards"][len(r["rewards"]) * 3 // 4:] if x is not None and math.isfinite(x)]
        r["last_quarter_mean_reward"] = statistics.mean(tail) if tail else None
        r["best_latency_over_target"] = (r["best_latency_ms"] / r["target_ms"] - 1
                                         if r["best_latency_ms"] and r["target_ms"] else None)

    confirm = confirm_challengers(runs, args.confirm_seeds, data, overrides, cache, space, args.target_like) if args.confirm_seeds else {}
    for r in runs:
        c = confirm.get(r["run"])
        r["confirmed_beats_ref"] = None if c is None else c["beats"]

    per = summarize(runs, controllers)
    meta = {"space": args.space, "trials": args.trials, "seeds": seeds, "controllers": controllers,
            "proxy": {k: v for k, v in pcfg.to_dict().items() if k != "device"}, "w": args.w,
            "target_like": args.target_like, "target_ms": runs[0]["target_ms"], "table": str(table_path),
            "table_cpu": table.meta.get("cpu"), "global_best_reward": global_best, "random_median_reward": base,
            "confirm_seeds": args.confirm_seeds, "confirm": confirm, "evaluator": args.evaluator,
            "supernet": args.supernet, "out": str(out), "reward": args.reward, "beta": args.beta, "random_final_best_median": random_best,
            "cache_hits": cache.hits, "cache_misses": cache.misses, "seconds": round(time.time() - t_start, 1),
            "nets_trained": len(cache.data), "load_avg_1min_end": os.getloadavg()[0]}
    write_outputs(Path(args.results), runs, per, meta)
    return 0


def confirm_challengers(runs, k, data, overrides, cache, space, reference=REFERENCE) -> dict:
    """Train each run's challenger (its most accurate net at or below the reference's latency,
    MobileNetV3-Small by default) and the reference with k other proxy seeds; the verdict on the mean."""
    import dataclasses as dc

    from nas.search import proxy_config
    from search_space import ArchSpec, zoo

    def mean_acc(spec, base_acc):
        accs = [base_acc]
        for s in range(1, k + 1):
            ev = cached_evaluator(cache, data, proxy_config(overrides, seed=s), init_seed=s)(spec)
            accs.append(ev.accuracy)
        return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0), accs

    first = next((r for r in runs if r["ref_accuracy"] is not None), None)
    if first is None:
        return {}
    geometry = {"resolution": overrides["resolution"], "in_channels": data.in_channels, "num_classes": data.num_classes}
    ref_spec = dc.replace(zoo(reference), **geometry)
    ref_mean, ref_std, ref_accs = mean_acc(ref_spec, first["ref_accuracy"])
    out = {"_reference": {"mean": ref_mean, "std": ref_std, "accs": ref_accs}}
    for r in runs:
        if not r["challenger_spec"]:
            out[r["run"]] = {"beats": False, "mean": None}
            continue
        spec = ArchSpec.from_json(r["challenger_spec"])
        spec = dc.replace(spec, **geometry)
        m, s, accs = mean_acc(spec, r["challenger_accuracy"])
        out[r["run"]] = {"beats": m > ref_mean, "mean": m, "std": s, "accs": accs}
    return out


def _ms(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(runs, controllers):
    per = []
    for c in controllers:
        rs = [r for r in runs if r["controller"] == c]
        m, s = _ms([r["best_reward"] for r in rs])
        acc, _ = _ms([r["best_accuracy"] for r in rs])
        lat, _ = _ms([r["best_latency_ms"] for r in rs])
        reach = [r["trials_to_95pct_gap"] for r in rs]
        per.append({
            "controller": c, "runs": len(rs), "best_reward_mean": m, "best_reward_std": s,
            "best_accuracy_mean": acc, "best_latency_ms_mean": lat,
            "trials_to_95pct_median": statistics.median([x for x in (r["trials_to_95pct"] for r in rs) if x] or [0]) or None,
            "trials_to_95pct_gap_median": statistics.median([x for x in reach if x]) if any(reach) else None,
            "reached_95pct_gap": sum(1 for x in reach if x),
            "beats_ref": sum(r["beats_ref"] for r in rs),
            "confirmed_beats_ref": sum(1 for r in rs if r.get("confirmed_beats_ref")),
            "distinct_nets_mean": _ms([r["distinct_nets"] for r in rs])[0],
            "trials_to_random_best_median": _median_or_none([r.get("trials_to_random_best") for r in rs]),
            "reached_random_best": sum(1 for r in rs if r.get("trials_to_random_best")),
            "last_quarter_mean_reward": _ms([r.get("last_quarter_mean_reward") for r in rs])[0],
            "best_latency_over_target_mean": _ms([r.get("best_latency_over_target") for r in rs])[0],
        })
    return per


def _median_or_none(values):
    vals = [v for v in values if v]
    return statistics.median(vals) if vals else None


def _fmt(x, spec=".4f"):
    return "-" if x is None else format(x, spec)


def write_outputs(prefix: Path, runs, per, meta) -> None:
    import pandas as pd

    prefix.parent.mkdir(parents=True, exist_ok=True)
    flat = [{k: v for k, v in r.items() if k not in ("curve", "rewards", "challenger_spec")} for r in runs]
    pd.DataFrame(flat).to_csv(prefix.with_suffix(".csv"), index=False)
    (prefix.with_suffix(".json")).write_text(json.dumps({"meta": meta, "per_controller": per, "runs": [
        {k: v for k, v in r.items() if k != "challenger_spec"} for r in runs]}, indent=1, default=str) + "\n")
    n = meta["trials"]
    if meta.get("evaluator") == "supernet":
        scorer = f"supernet {meta['supernet']} (BN recalibrated, held-out images)"
    else:
        scorer = f"proxy {meta['proxy']['steps']} steps at {meta['proxy']['resolution']}px"
    reward = (f"ACC + {meta.get('beta') or -0.1} x |LAT/{meta['target_ms']:.3f} ms - 1|" if meta.get("reward") == "abs"
              else f"ACC x (LAT/{meta['target_ms']:.3f} ms)^{meta['w']}")
    lines = [f"Controllers on the `{meta['space']}` space, {n} trials per run, seeds {meta['seeds']}; reward "
             f"{reward} (target: {meta['target_like']} on this table); scored by {scorer}.", "",
             "| controller | best reward (mean ± std) | best net: acc / ms | best net's latency vs target | "
             "trials to random's final best (median) | mean reward, last quarter | trials to 95% of gap | "
             f"beats {meta['target_like']} at ≤ its latency | confirmed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in per:
        lat = p.get("best_latency_over_target_mean")
        lines.append(f"| {p['controller']} | {_fmt(p['best_reward_mean'])} ± {_fmt(p['best_reward_std'])} | "
                     f"{_fmt(p['best_accuracy_mean'])} / {_fmt(p['best_latency_ms_mean'], '.3f')} | "
                     f"{'-' if lat is None else format(100 * lat, '+.1f') + '%'} | "
                     f"{_fmt(p.get('trials_to_random_best_median'), '.0f')} ({p.get('reached_random_best', 0)}/"
                     f"{p['runs']} runs) | {_fmt(p.get('last_quarter_mean_reward'))} | "
                     f"{_fmt(p['trials_to_95pct_gap_median'], '.1f')} ({p['reached_95pct_gap']}/{p['runs']} runs) | "
                     f"{p['beats_ref']}/{p['runs']} | "
                     + (f"{p['confirmed_beats_ref']}/{p['runs']} |" if meta.get("confirm_seeds") else
                        "- (search_vs_random.py) |"))
    ref = meta["confirm"].get("_reference") if meta.get("confirm") else None
    lines += ["", f"Best reward of any run {meta['global_best_reward']:.4f}; median reward of a random net "
                  f"{meta['random_median_reward']:.4f}. {meta['nets_trained']} distinct nets scored (the shared cache), "
                  f"{meta['seconds'] / 60:.1f} min in all (load average at the end {meta['load_avg_1min_end']:.1f})."]
    if ref:
        lines.append(f"{meta['target_like']} over {len(ref['accs'])} proxy seeds: {ref['mean']:.4f} ± {ref['std']:.4f}.")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(prefix.with_suffix(".png"), runs, meta)


def plot(path: Path, runs, meta) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colors = {"rl": "tab:red", "tpe": "tab:blue", "nsga2": "tab:green", "random": "tab:gray",
              "evolution": "tab:purple"}
    for c in meta["controllers"]:
        curves = [r["curve"] for r in runs if r["controller"] == c and r["curve"]]
        if not curves:
            continue
        n = min(len(cv) for cv in curves)
        xs = range(1, n + 1)
        mean = [statistics.mean(cv[i] for cv in curves) for i in range(n)]
        ax.plot(xs, mean, color=colors.get(c), lw=2.2, label=f"{c} (mean of {len(curves)} seeds)")
        if len(curves) > 1:  # 95% band of the mean: Student's t, as 3-5 seeds are far from a normal 1.96
            from scipy.stats import t as student_t

            q = float(student_t.ppf(0.975, len(curves) - 1))
            se = [statistics.stdev(cv[i] for cv in curves) / math.sqrt(len(curves)) for i in range(n)]
            ax.fill_between(xs, [m - q * e for m, e in zip(mean, se)], [m + q * e for m, e in zip(mean, se)],
                            color=colors.get(c), alpha=0.15, lw=0)
        else:
            ax.plot(xs, curves[0][:n], color=colors.get(c), alpha=0.25, lw=1)
    if meta.get("random_final_best_median") is not None:
        ax.axhline(meta["random_final_best_median"], color="tab:gray", ls="--", lw=1,
                   label="random search's final best (median)")
    if meta["trials"] >= 100:
        ax.set_xscale("log")
    ax.axhline(meta["global_best_reward"] * 0.95, color="black", ls=":", lw=1, label="95% of best")
    ax.set_xlabel("completed trials")
    ax.set_ylabel("best reward so far")
    ax.set_title(f"controllers on the {meta['space']} space")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
