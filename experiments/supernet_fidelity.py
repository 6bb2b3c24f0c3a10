"""How well does a cheap score rank nets? Supernet and proxy against standalone training.

Nets: ``--nets`` (default 40) nets of a space chosen to spread over its cost range (2,000
random points sorted by MAdds at the latency geometry, one taken at each of ``--nets``
evenly spaced quantiles), plus the space's known points (MobileNetV3-Small's nearest point
in ``small``). MAdds stand in for latency when choosing (they correlate ~0.95 with it here,
and need no timing while training runs beside); the report adds table latency when this
machine has a table.

For every net:

- ``truth``: trained from scratch with ``--truth-steps`` (default 900 = 3x the search's 300)
  for each of ``--truth-seeds`` seeds (initial weights and data order follow the seed),
  scored on the search's held-out split; the truth is the mean over seeds.
- ``proxy``: the search's default proxy score (300 steps, seed 0), as ``nas search
  --evaluator proxy`` computes it.
- ``supernet``: the supernet's score (``nas supernet eval``) for each supernet given with
  ``--supernet DIR`` (repeatable: one column per design).

Reported: Kendall tau and Spearman of each score against the truth, the truth's own
seed-to-seed tau, top-10% overlap, seconds per net of each evaluator, each score's tau
against the nets' MAdds (does it rank by size?), and the ceiling: the tau a perfect ranker
would reach against this truth, given the seed noise the truth runs show (`truth_ceiling`),
and which choices of the space each score rewards (`choice_effects`). Every run is appended
to the CSV as it finishes; running the same command again continues where it stopped.

    python experiments/supernet_fidelity.py --phase standalone        # truth + proxy (hours)
    python experiments/supernet_fidelity.py --phase supernet --supernet runs/supernet-small
    python experiments/supernet_fidelity.py --phase report --supernet runs/supernet-small
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("net", "arch", "kind", "seed", "steps", "val_accuracy", "seconds", "diverged", "evaluator")


def choose_nets(space, n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """(label, point) pairs: ``n`` nets at evenly spaced MAdds quantiles, then the known points."""
    from search_space import count

    rng = random.Random(f"fidelity:{seed}")
    pool = {}
    for _ in range(2000):
        params = space.sample_params(rng)
        pool.setdefault(space.code(params), params)
    ranked = sorted(pool.values(), key=lambda p: count(space.decode(p)).madds)
    picks = [ranked[round(i * (len(ranked) - 1) / max(1, n - 1))] for i in range(n)]
    out = [(f"n{i:02d}", p) for i, p in enumerate(picks)]
    for name, params in space.known_points().items():
        out.append((name, params))
    return out


class RunLog:
    """Runs appended to a CSV as they finish; a finished run is never run again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            with open(path, newline="") as fh:
                self.rows = list(csv.DictReader(fh))

    def done(self, net: str, kind: str, seed: int, evaluator: str = "") -> bool:
        return any(r["net"] == net and r["kind"] == kind and int(r["seed"]) == seed
                   and r.get("evaluator", "") == evaluator for r in self.rows)

    def add(self, row: dict) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in FIELDS})
        self.rows.append({k: str(row.get(k, "")) for k in FIELDS})


def standalone(args, space, nets, log: RunLog, data) -> None:
    """Truth (long, several seeds) and proxy (the search's default) runs, net by net."""
    from nas.proxy import ProxyConfig, build_seeded, train_proxy
    from nas.search import DEFAULT_STEPS
    from search_space import build

    jobs = []
    for label, params in nets:
        for s in range(args.truth_seeds):
            jobs.append((label, params, "truth", s, args.truth_steps))
        jobs.append((label, params, "proxy", 0, DEFAULT_STEPS))
    k, n = args.shard
    mine = [j for i, j in enumerate(jobs) if i % n == k]
    todo = [j for j in mine if not log.done(j[0], j[2], j[3])]
    print(f"standalone runs (shard {k}/{n}): {len(mine) - len(todo)} of {len(mine)} done, {len(todo)} to go",
          file=sys.stderr)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task("standalone training", total=len(todo))
        for label, params, kind, seed, steps in todo:
            spec = space.decode(params, resolution=args.resolution, in_channels=data.in_channels,
                                num_classes=data.num_classes, name=label)
            model = build_seeded(lambda: build(spec), seed)
            cfg = ProxyConfig(steps=steps, seed=seed, threads=1, resolution=args.resolution)
            res = train_proxy(model, data, cfg)
            log.add({"net": label, "arch": space.code(params), "kind": kind, "seed": seed, "steps": steps,
                     "val_accuracy": f"{res.val_accuracy:.6f}", "seconds": f"{res.seconds:.2f}",
                     "diverged": int(res.diverged)})
            bar.console.print(f"{label} {kind} seed {seed}: {res.val_accuracy:.4f} in {res.seconds:.0f} s")
            bar.advance(task)


def supernet_scores(args, space, nets, log: RunLog, data) -> None:
    """Each supernet's score of every net (cheap: seconds per net)."""
    from nas.evaluators import SupernetEvaluator

    for sdir in args.supernet:
        tag = Path(sdir).name + (f"+ft{args.finetune_steps}" if args.finetune_steps else "")
        ev = SupernetEvaluator.open(sdir, data, space=space, finetune_steps=args.finetune_steps)
        for label, params in nets:
            if log.done(label, "supernet", 0, tag):
                continue
            spec = space.decode(params, resolution=args.resolution, in_channels=data.in_channels,
                                num_classes=data.num_classes, name=label)
            t0 = time.perf_counter()
            r = ev(spec)
            log.add({"net": label, "arch": space.code(params), "kind": "supernet", "seed": 0, "steps": 0,
                     "val_accuracy": f"{r.accuracy:.6f}", "seconds": f"{time.perf_counter() - t0:.3f}",
                     "diverged": int(r.diverged), "evaluator": tag})
            print(f"{tag} {label}: {r.accuracy:.4f}", file=sys.stderr)


def side_by_side_cost(args, space, nets, data, prefix: Path, n: int = 3) -> dict:
    """Seconds per net of the proxy and of each supernet on the same nets, in one process, one thread."""
    import statistics

    from nas.evaluators import ProxyEvaluator, SupernetEvaluator
    from nas.search import proxy_config

    proxy = ProxyEvaluator(data, proxy_config({"resolution": args.resolution}, 0))
    evaluators = [("proxy", proxy)] + [(f"supernet:{Path(s).name}", SupernetEvaluator.open(s, data, space=space))
                                       for s in args.supernet]
    picks = nets[:: max(1, len(nets) // n)][:n]
    out: dict = {}
    for name, ev in evaluators:
        secs = []
        for label, params in picks:
            spec = space.decode(params, resolution=args.resolution, in_channels=data.in_channels,
                                num_classes=data.num_classes, name=label)
            t0 = time.perf_counter()
            ev(spec)
            secs.append(time.perf_counter() - t0)
        out[name] = {"median_seconds": statistics.median(secs), "seconds": secs,
                     "nets_per_hour_one_core": 3600 / statistics.median(secs)}
        print(f"{name}: {statistics.median(secs):.2f} s per net", file=sys.stderr)
    Path(str(prefix) + "_cost.json").write_text(json.dumps({"nets": [lab for lab, _ in picks], **out}, indent=1) + "\n")
    return out


def _rank_stats(a: list[float], b: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    return float(kendalltau(a, b).statistic), float(spearmanr(a, b).statistic)


def _top_overlap(a: list[float], b: list[float], frac: float = 0.1) -> float:
    k = max(1, round(frac * len(a)))
    top = lambda v: set(sorted(range(len(v)), key=lambda i: -v[i])[:k])  # noqa: E731
    return len(top(a) & top(b)) / k


def truth_ceiling(pivot, sims: int = 4000, seed: int = 0) -> dict:
    """Expected tau (and 95% range) of a perfect ranker against the mean of the truth's seeds.

    Model: a net's run = its true accuracy + Gaussian seed noise. The noise variance comes
    from the spread between a net's seeds, the true accuracies' variance from what remains
    of the variance of the nets' means (method of moments); then both are simulated. No
    score can be expected to rank better than the true accuracies themselves, so a target
    above this ceiling asks for more truth seeds, not a better evaluator.
    """
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    runs = pivot.dropna().to_numpy()
    n, k = runs.shape
    noise_var = float(runs.var(axis=1, ddof=1).mean())
    true_var = max(float(runs.mean(axis=1).var(ddof=1)) - noise_var / k, 0.0)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(sims):
        true = rng.normal(0.0, true_var ** 0.5, n)
        measured = true + rng.normal(0.0, (noise_var / k) ** 0.5, n)
        taus.append(kendalltau(true, measured).statistic)
        rhos.append(spearmanr(true, measured).statistic)
    return {"kendall_tau": float(np.mean(taus)), "tau_low": float(np.percentile(taus, 2.5)),
            "tau_high": float(np.percentile(taus, 97.5)), "spearman": float(np.mean(rhos)),
            "seed_noise_sd": noise_var ** 0.5, "true_sd": true_var ** 0.5, "nets": n, "seeds": k}


def choice_effects(space, nets, table):
    """Kendall tau of each choice of the space (as its index among the choice's values) against
    the truth and every score: which choices each evaluator rewards, and where they disagree."""
    import pandas as pd

    points = dict(nets)
    choices = space.choices()
    rows = {}
    for name, values in choices.items():
        if len(values) < 2:
            continue
        col = pd.Series({lab: list(values).index(points[lab][name]) for lab in table.index})
        if col.nunique() < 2:
            continue
        row = {}
        for score in table.columns:
            sub = table[score].dropna()  # each score over the nets it has
            if score != "madds" and len(sub) >= 3:
                row[score] = _rank_stats(list(col.reindex(sub.index)), list(sub))[0]
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def report(args, space, nets, log: RunLog, prefix: Path) -> dict:
    import pandas as pd

    runs = pd.DataFrame(log.rows)
    if runs.empty:
        print("no runs yet", file=sys.stderr)
        return {}
    runs["val_accuracy"] = runs.val_accuracy.astype(float)
    runs["seconds"] = runs.seconds.astype(float)
    runs["seed"] = runs.seed.astype(int)
    truth_runs = runs[runs.kind == "truth"]
    truth = truth_runs.groupby("net").val_accuracy.mean()
    counts = truth_runs.groupby("net").size()
    complete = [lab for lab, _ in nets if counts.get(lab, 0) >= args.truth_seeds]
    table = pd.DataFrame({"truth": truth.reindex(complete)})
    scores = {"proxy": runs[runs.kind == "proxy"].set_index("net").val_accuracy}
    cost = {"proxy": runs[runs.kind == "proxy"].seconds.median(),
            "truth (1 seed)": truth_runs.seconds.median()}
    side = Path(str(prefix) + "_cost.json")
    if side.exists():  # measured side by side in one run: preferred over the runs' own timings
        for name, v in json.loads(side.read_text()).items():
            if isinstance(v, dict) and "median_seconds" in v:
                cost[name] = v["median_seconds"]
    for tag, g in runs[runs.kind == "supernet"].groupby("evaluator"):
        scores[f"supernet:{tag}"] = g.set_index("net").val_accuracy
        cost[f"supernet:{tag}"] = g.seconds.median()
    for name, s in scores.items():
        table[name] = s.reindex(complete)
    from search_space import count_madds

    madds = pd.Series({lab: count_madds(space.decode(p)) for lab, p in nets}).reindex(complete)
    table["madds"] = madds

    def size_tau(values) -> float:
        return _rank_stats(list(values), list(madds.reindex(values.index)))[0]

    rows = []
    ceiling = None
    # the truth's own noise: tau between seed 0 and seed 1 of the long runs
    pivot = truth_runs.pivot_table(index="net", columns="seed", values="val_accuracy").reindex(complete)
    if pivot.shape[1] >= 2 and len(pivot) >= 3:
        tau, rho = _rank_stats(list(pivot[0]), list(pivot[1]))
        rows.append({"score": "truth seed 0 vs seed 1", "nets": len(pivot), "kendall_tau": tau, "spearman": rho,
                     "top10_overlap": _top_overlap(list(pivot[0]), list(pivot[1])),
                     "seconds_per_net": cost["truth (1 seed)"], "madds_tau": size_tau(table.truth.dropna())})
        ceiling = truth_ceiling(pivot)
        rows.append({"score": "ceiling: a perfect ranker vs truth (seed-noise model)", "nets": ceiling["nets"],
                     "kendall_tau": ceiling["kendall_tau"], "spearman": ceiling["spearman"],
                     "top10_overlap": None, "seconds_per_net": None, "madds_tau": None})
    for name in scores:
        sub = table[["truth", name]].dropna()
        if len(sub) < 3:
            continue
        tau, rho = _rank_stats(list(sub[name]), list(sub.truth))
        rows.append({"score": f"{name} vs truth", "nets": len(sub), "kendall_tau": tau, "spearman": rho,
                     "top10_overlap": _top_overlap(list(sub[name]), list(sub.truth)),
                     "seconds_per_net": cost[name], "madds_tau": size_tau(sub[name])})
    summary = pd.DataFrame(rows)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(str(prefix) + "_nets.csv")
    effects = choice_effects(space, nets, table)
    effects.to_csv(str(prefix) + "_choices.csv")
    summary.to_csv(str(prefix) + ".csv", index=False)
    meta = {"space": space.name, "nets": len(nets), "complete_nets": len(complete),
            "truth_steps": args.truth_steps, "truth_seeds": args.truth_seeds, "resolution": args.resolution,
            "machine": _machine(), "ceiling": ceiling, "rows": rows}
    (Path(str(prefix) + ".json")).write_text(json.dumps(meta, indent=1) + "\n")
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(summary.to_string(index=False))
        if not effects.empty:
            print("\nchoices each score rewards (Kendall tau of the choice's index vs the score), "
                  "by the truth's strength:")
            print(effects.reindex(effects.truth.abs().sort_values(ascending=False).index).head(8).to_string())
    _plot(table, Path(str(prefix) + ".png"))
    return meta


def _plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if c not in ("truth", "madds")]
    if not cols or table.empty:
        return
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 4), squeeze=False)
    for ax, c in zip(axes[0], cols):
        sub = table[["truth", c]].dropna()
        ax.scatter(sub[c] * 100, sub.truth * 100, s=14)
        if len(sub) >= 3:
            tau, _ = _rank_stats(list(sub[c]), list(sub.truth))
            ax.set_title(f"{c}: tau {tau:.2f} ({len(sub)} nets)", fontsize=9)
        ax.set_xlabel(f"{c} score (%)")
        ax.set_ylabel("standalone truth (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/2") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", choices=("standalone", "supernet", "cost", "report", "all"), default="all")
    p.add_argument("--space", default="small")
    p.add_argument("--nets", type=int, default=40)
    p.add_argument("--truth-steps", type=int, default=900)
    p.add_argument("--truth-seeds", type=int, default=2)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--data", default=None)
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="standalone phase: run only every N-th job from the K-th (one process per core)")
    p.add_argument("--supernet", action="append", default=[], help="supernet folder (repeatable)")
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="supernet phase: fine-tune each inherited net this many steps before scoring")
    p.add_argument("--out", default=str(RESULTS / "supernet_fidelity"), help="output prefix")
    args = p.parse_args(argv)
    from nas.data import load_dataset
    from search_space import get_space

    space = get_space(args.space)
    nets = choose_nets(space, args.nets)
    prefix = Path(args.out)
    log = RunLog(Path(str(prefix) + "_runs.csv"))
    data = None
    if args.phase in ("standalone", "supernet", "cost", "all"):
        data = load_dataset(args.data)
    if args.phase == "cost":
        side_by_side_cost(args, space, nets, data, prefix)
    if args.phase in ("standalone", "all"):
        standalone(args, space, nets, log, data)
    if args.phase in ("supernet", "all") and args.supernet:
        supernet_scores(args, space, nets, log, data)
    report(args, space, nets, log, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
