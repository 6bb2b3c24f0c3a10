"""Standalone proof: are the nets a search finds better than random search's and MobileNetV3's?

Candidates, all at the same latency target (the benchmark's ``--target-like`` net's on this
machine's table: MobileNetV3-Small on ``small``, MobileNetV3-Large on ``large``):

- each controller's best net from a supernet-scored controllers benchmark
  (``experiments/controllers.py --evaluator supernet``; the run with the highest reward);
- latency-matched random search: random nets of the space within +-``--band`` (2%) of the
  target latency, as many as the benchmark's trials per run, scored by the same supernet
  (the same evaluation cache), the best taken;
- that MobileNetV3 itself.

Each is trained from scratch ``--steps`` steps (default 900 = 3x the search's proxy budget) for
each of ``--seeds`` and scored on the **test set** once; then the nets are timed end to end
with onnxruntime (``--measure``, on a quiet machine). Every training run is appended to the CSV
as it finishes, so the same command continues; ``--shard K/N`` splits the runs over processes.

    python experiments/search_vs_random.py \\
        --benchmark experiments/results/controllers_supernet.json --phase all

Writes results/search_vs_random.{csv,json,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "mnv3-small"  # when a benchmark does not name its target net
FIELDS = ("candidate", "arch", "seed", "steps", "test_accuracy", "val_accuracy", "seconds", "diverged")


def _fail(msg: str):
    print(f"search_vs_random: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def controller_candidates(benchmarks: list[tuple[str, dict]], key=lambda arch: arch,
                          per_run: bool = False) -> tuple[list[dict], float]:
    """Each controller's best net over its runs, per benchmark (one per reward), and their common target;
    with ``per_run``, every run's best (one net per controller and seed: a spread, not one draw).

    A net two controllers (or runs) both found is one candidate named for both (it is trained once);
    ``key`` says which arch codes are the same net (two codes of a space can decode to one net)."""
    out: dict[str, dict] = {}  # by key: each net once
    target = None
    for b, bench in benchmarks:
        meta = bench["meta"]
        if meta.get("evaluator") != "supernet":
            _fail(f"{b}: not a supernet-scored controllers benchmark")
        if target is not None and abs(float(meta["target_ms"]) / target - 1) > 1e-9:
            _fail(f"{b}: target {meta['target_ms']} ms differs from the first benchmark's {target} ms")
        target = float(meta["target_ms"])
        tag = "" if meta.get("reward", "mnas") == "mnas" else f"-{meta['reward']}"
        for c in meta["controllers"]:
            runs = [r for r in bench["runs"] if r["controller"] == c and r.get("best_arch")]
            if not runs:
                continue
            for best in (sorted(runs, key=lambda r: r["run"]) if per_run
                         else [max(runs, key=lambda r: r["best_reward"])]):
                name = best["run"] if per_run else f"{c}{tag}"
                twin = out.get(key(best["best_arch"]))
                if twin:
                    twin["candidate"] += f",{name}"
                    twin["from"] += f", {best['run']}"
                    continue
                out[key(best["best_arch"])] = {"candidate": f"search:{name}", "arch": best["best_arch"],
                                               "supernet_score": best["best_accuracy"],
                                               "reward": best["best_reward"], "from": best["run"]}
    return list(out.values()), target


def same_net_key(space, arch: str) -> str:
    """What a net is, whatever its code: its decoded spec without the name (widths round to
    multiples of 8, so e.g. width 0.75 and 1.0 of a 16-channel stage are one net)."""
    from search_space.supernet import parse_arch

    d = space.decode(parse_arch(space, arch)).to_dict()
    d.pop("name", None)
    return json.dumps(d, sort_keys=True, default=str)


def pick(args, space, data, latency, named: list[tuple[str, dict]]) -> list[dict]:
    """The candidates: each controller's best, latency-matched random search's best, the reference."""
    from experiments.controllers import EvalCache, cached_supernet_evaluator
    from nas.evaluators import SupernetEvaluator

    out, target = controller_candidates(named, key=lambda a: same_net_key(space, a), per_run=args.per_run)
    benches = [b for _, b in named]
    meta = benches[0]["meta"]
    # the benchmark's own cache (its --out), so the random nets it scored are reused
    cache = EvalCache(Path(args.cache) if args.cache else
                      Path(meta.get("out") or RESULTS / "controllers-supernet") / "eval_cache.jsonl")
    sn = SupernetEvaluator.open(meta["supernet"], data, space=space)
    evaluate = cached_supernet_evaluator(cache, sn)
    n = max(int(b["meta"]["trials"]) for b in benches)
    from rich.progress import Progress

    seen = {same_net_key(space, c["arch"]): c for c in out}
    for seed in args.matched_seeds:
        # seed 0 is named as before this option existed: its trained runs stay its own
        name = "random (latency-matched)" + ("" if seed == 0 else f" s{seed}")
        best, found, tries = _latency_matched_best(space, data, sn, evaluate, latency, target, args.band, n,
                                                    random.Random(f"latency-matched:{seed}"), Progress, name)
        if best is None:
            continue
        best["from"] = f"best of {found} nets within {args.band:.0%} of {target:.3f} ms ({tries} drawn)"
        twin = seen.get(same_net_key(space, best["arch"]))
        if twin:  # random search drew a net a controller found: one candidate, both names
            twin["candidate"] += f",{name}"
            continue
        seen[same_net_key(space, best["arch"])] = best
        out.append(best)
    out.append({"candidate": meta.get("target_like", REFERENCE), "arch": None, "supernet_score": None, "from": "zoo"})
    for c in out:
        spec = _spec(space, c)
        c["table_ms"] = latency(spec)
        c["target_ms"] = target
    return out


def _latency_matched_best(space, data, sn, evaluate, latency, target, band, n, rng, progress, name):
    """Random search restricted to nets within ``band`` of the target: the best supernet score of ``n``."""
    tries, found, best = 0, 0, None
    with progress() as bar:
        task = bar.add_task(name, total=n)
        while found < n and tries < 200 * n:
            tries += 1
            params = space.sample_params(rng)
            ms = latency(space.decode(params))
            if abs(ms / target - 1) > band:
                continue
            found += 1
            spec = space.decode(params, resolution=sn.resolution, in_channels=data.in_channels,
                                num_classes=data.num_classes)
            acc = evaluate(spec).accuracy
            if math.isfinite(acc) and (best is None or acc > best["supernet_score"]):
                best = {"candidate": name, "arch": space.code(params), "supernet_score": acc}
            bar.advance(task)
    return best, found, tries


def train(args, space, data, cands: list[dict], path: Path) -> None:
    from nas.proxy import ProxyConfig, build_seeded, evaluate, train_proxy
    from search_space import build
    from netadapt.loop import training_spec

    done = set()
    if path.exists():
        with open(path, newline="") as fh:
            # keyed by net, not name: a candidate renamed (another controller found it too) keeps its runs
            done = {(r["arch"], int(r["seed"])) for r in csv.DictReader(fh)}
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c["candidate"] for c in cands}
        if unknown:
            _fail(f"--only: no candidate {sorted(unknown)[0]!r} (candidates: {', '.join(c['candidate'] for c in cands)})")
        cands = [c for c in cands if c["candidate"] in wanted]
    jobs = [(c, s) for s in args.seeds for c in cands]
    k, n = args.shard
    todo = [(c, s) for i, (c, s) in enumerate(jobs) if i % n == k and (_net(c), s) not in done]
    print(f"standalone runs (shard {k}/{n}): {len(todo)} to go", file=sys.stderr)
    for c, seed in todo:
        base = _spec(space, c)
        spec = training_spec(base, data, args.resolution)
        cfg = ProxyConfig(steps=args.steps, seed=seed, threads=1, resolution=args.resolution)
        model = build_seeded(lambda: build(spec), seed)
        res = train_proxy(model, data, cfg)
        test = evaluate(model, data, "test", cfg) if not res.diverged else math.nan
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow({"candidate": c["candidate"], "arch": _net(c), "seed": seed, "steps": args.steps,
                        "test_accuracy": f"{test:.6f}", "val_accuracy": f"{res.val_accuracy:.6f}",
                        "seconds": f"{res.seconds:.1f}", "diverged": int(res.diverged)})
        print(f"{c['candidate']} seed {seed}: test {test:.4f}", file=sys.stderr)


def measure(space, cands: list[dict]) -> None:
    from latency.e2e import measure_nets
    from latency.timing import Protocol

    specs = [_spec(space, c) for c in cands]
    times = measure_nets(specs, Protocol(), names=[_label(c) for c in cands])
    summary = times.summary()
    for c in cands:
        c["measured_ms"] = float(summary.loc[_label(c), "measured_ms"])


def _net(c: dict) -> str:
    """A candidate's net as the runs CSV names it (its arch code; the reference by name)."""
    return c["arch"] or c["candidate"]


def _spec(space, c: dict):
    """A candidate's net: its arch decoded, or the zoo net it names (the reference)."""
    from search_space import zoo
    from search_space.supernet import parse_arch

    return zoo(c["candidate"]) if c["arch"] is None else space.decode(parse_arch(space, c["arch"]))


def _label(c: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", c["candidate"])


GROUPS = ("searched (soft reward)", "searched (abs reward)", "random search (soft reward)",
          "latency-matched random search", "reference (MobileNetV3)")


def group_of(name: str) -> str:
    """Which kind of search a candidate name (one of its comma-separated names) comes from."""
    from search_space import ZOO_NAMES

    if name in ZOO_NAMES:
        return GROUPS[4]
    if name.startswith("random (latency-matched"):
        return GROUPS[3]
    run = name.removeprefix("search:")
    controller = re.sub(r"-s\d+$", "", run)
    if controller.endswith("-abs") or "-abs-" in run:
        return GROUPS[1]
    return GROUPS[2] if controller == "random" else GROUPS[0]


def group_summary(table: list[dict]) -> list[dict]:
    """Each kind of search's nets (a net found by two kinds counts in both): the spread of their
    trained accuracies is what a single best net cannot show."""
    out = []
    for g in GROUPS:
        nets = [t for t in table if t.get("test_mean") is not None
                and g in {group_of(n) for n in t["candidate"].split(",")}]
        if not nets:
            continue
        means = [t["test_mean"] for t in nets]
        out.append({"group": g, "nets": len(nets), "mean": statistics.mean(means),
                    "std": statistics.stdev(means) if len(means) > 1 else 0.0, "best": max(means),
                    "table_ms": statistics.median(t["table_ms"] for t in nets)})
    return out


def report(cands: list[dict], path: Path, prefix: Path) -> dict:
    rows = list(csv.DictReader(open(path, newline=""))) if path.exists() else []
    table = []
    for c in cands:
        accs = [float(r["test_accuracy"]) for r in rows if r["arch"] == _net(c)
                and math.isfinite(float(r["test_accuracy"]))]
        table.append({**c, "seeds": len(accs), "test_mean": statistics.mean(accs) if accs else None,
                      "test_std": statistics.stdev(accs) if len(accs) > 1 else None})
    ref = next((t for t in table if t["arch"] is None), None)
    lines = [f"| net | test accuracy (mean ± std, seeds) | vs {ref['candidate'] if ref else 'reference'} | "
             "table ms | measured ms | "
             "supernet score |", "|---|---|---|---|---|---|"]
    for t in table:
        gap = (100 * (t["test_mean"] - ref["test_mean"]) if ref and ref["test_mean"] is not None
               and t["test_mean"] is not None else None)
        lines.append(f"| {t['candidate']} | " + (f"{100 * t['test_mean']:.2f} ± {100 * (t['test_std'] or 0):.2f} "
                                                  f"({t['seeds']})" if t["test_mean"] is not None else "-")
                     + f" | {'-' if gap is None else format(gap, '+.2f') + ' pt'} | {t['table_ms']:.3f} | "
                     + (f"{t['measured_ms']:.3f}" if t.get("measured_ms") else "-") + " | "
                     + (f"{100 * t['supernet_score']:.2f}" if t.get("supernet_score") else "-") + " |")
    groups = group_summary(table)
    if any(g["nets"] > 1 for g in groups):
        lines += ["", "| group | nets | test accuracy over the nets (mean ± std of their means) | best net | "
                  "table ms (median) |", "|---|---|---|---|---|"]
        for g in groups:
            lines.append(f"| {g['group']} | {g['nets']} | {100 * g['mean']:.2f} ± {100 * g['std']:.2f} | "
                         f"{100 * g['best']:.2f} | {g['table_ms']:.3f} |")
    text = "\n".join(lines)
    print(text)
    prefix.with_suffix(".md").write_text(text + "\n")
    prefix.with_suffix(".json").write_text(json.dumps({"candidates": table, "groups": groups}, indent=1,
                                                      default=str) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    labelled = set()
    for t in table:
        if t["test_mean"] is None:
            continue
        g = group_of(t["candidate"].split(",")[0])
        ax.errorbar(t.get("measured_ms") or t["table_ms"], 100 * t["test_mean"], yerr=100 * (t["test_std"] or 0),
                    fmt="osD^*"[GROUPS.index(g)], color=f"C{GROUPS.index(g)}", capsize=3,
                    label=None if g in labelled else g)
        labelled.add(g)
    ax.set_xlabel("latency (ms; measured where timed, else table)")
    ax.set_ylabel("test accuracy, trained from scratch (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(prefix.with_suffix(".png"), dpi=120)
    return {"candidates": table}


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct and >= 0: {text!r}")
    return seeds


def main(argv=None) -> int:
    from experiments.supernet_fidelity import _shard

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", required=True,
                   help="JSON of a supernet-scored controllers benchmark (several, comma-separated: one per reward)")
    p.add_argument("--cache", default=None,
                   help="evaluation cache (default: the benchmark's, in its --out folder; random nets scored "
                        "there are reused)")
    p.add_argument("--phase", choices=("pick", "train", "measure", "report", "all"), default="all")
    p.add_argument("--space", default="small")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="training seeds of each candidate")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--band", type=float, default=0.02, help="latency match of the random nets (fraction)")
    p.add_argument("--matched-seeds", type=_seeds, default=[0],
                   help="latency-matched random search: one search (and its best net) per seed")
    p.add_argument("--per-run", action="store_true",
                   help="every run's best net (controller x seed), not only each controller's best")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N")
    p.add_argument("--candidates", default=None, help="candidates file (default: OUT_candidates.json)")
    p.add_argument("--only", default=None, help="train: these candidates only (comma-separated names)")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(RESULTS / "search_vs_random"))
    args = p.parse_args(argv)

    from latency.latency_fn import TableLatency
    from latency.machine_table import default_table_path, ensure_table
    from nas.data import load_dataset
    from nas.search import load_space
    from search_space import zoo
    from search_space.errors import UserError

    for b in args.benchmark.split(","):
        if not Path(b).is_file():
            _fail(f"--benchmark {b!r}: no such file (experiments/controllers.py --evaluator supernet writes it)")
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        space = load_space(args.space)
        data = load_dataset(args.data)
    except UserError as exc:
        _fail(str(exc))
    named = [(b, json.loads(Path(b).read_text())) for b in args.benchmark.split(",")]
    refs = {bench["meta"].get("target_like", REFERENCE) for _, bench in named}
    latency = TableLatency(ensure_table(default_table_path(), space, extra_specs=[zoo(r) for r in sorted(refs)]))
    cands_path = Path(args.candidates) if args.candidates else prefix.with_name(prefix.name + "_candidates.json")
    if args.phase in ("pick", "all") or not cands_path.exists():
        cands_path.write_text(json.dumps(pick(args, space, data, latency, named), indent=1) + "\n")
    cands = json.loads(cands_path.read_text())
    runs = prefix.with_suffix(".csv")
    if args.phase in ("train", "all"):
        train(args, space, data, cands, runs)
    if args.phase in ("measure", "all"):
        measure(space, cands)
        cands_path.write_text(json.dumps(cands, indent=1) + "\n")
    if args.phase in ("report", "all", "measure"):
        report(cands, runs, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
