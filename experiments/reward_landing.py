"""Where each reward puts the best net: its latency against the target, on one pool of nets.

Random search samples nets without looking at the reward, so its trials are a pool every
reward can be judged on side by side: for each random run of a supernet-scored controllers
benchmark (``experiments/controllers.py``, runs ``random-sSEED`` under ``--out``), take the
net each reward ranks first and report its latency over the target and its supernet score.
The rewards: MnasNet's soft reward at MobileNetV3-Small's w (-0.15) and MnasNet's (-0.07),
MnasNet's hard reward (alpha 0, beta -1) and TuNAS's absolute reward (beta -0.1; also -0.5).
A controller optimising a reward lands where that reward's best net is, as far as it climbs.

    python experiments/reward_landing.py --out experiments/results/controllers-supernet

Writes results/reward_landing.{csv,json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def rewards(target_ms: float) -> dict:
    from nas.reward import make_reward

    return {"soft, w -0.15": make_reward(target_ms, w=-0.15), "soft, w -0.07": make_reward(target_ms, w=-0.07),
            "hard (alpha 0, beta -1)": make_reward(target_ms, hard=True),
            "abs, beta -0.1": make_reward(target_ms, form="abs", beta=-0.1),
            "abs, beta -0.5": make_reward(target_ms, form="abs", beta=-0.5)}


def landing(pool: list[tuple[float, float]], target_ms: float) -> list[dict]:
    """Each reward's best net of ``pool`` ((accuracy, latency_ms) pairs): where it lands."""
    out = []
    for name, r in rewards(target_ms).items():
        acc, ms = max(pool, key=lambda p: r(*p))
        out.append({"reward": name, "accuracy": acc, "latency_ms": ms, "over_target": ms / target_ms - 1,
                    "reward_value": r(acc, ms)})
    return out


def read_pool(study_log: Path) -> list[tuple[float, float]]:
    import logging

    import optuna

    from nas.results import completed
    from nas.search import DEFAULT_STUDY

    optuna.logging.set_verbosity(logging.WARNING)
    # read-only: a plain JournalStorage, not nas.study.open_storage, which repairs (writes) the journal
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_log)))
    study = optuna.load_study(study_name=DEFAULT_STUDY, storage=storage)
    return [(float(t.user_attrs["accuracy"]), float(t.user_attrs["latency_ms"])) for t in completed(study)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS / "controllers-supernet"), help="the controllers benchmark's --out")
    p.add_argument("--benchmark", default=str(RESULTS / "controllers_supernet.json"),
                   help="its results JSON (for the target)")
    p.add_argument("--results", default=str(RESULTS / "reward_landing"))
    args = p.parse_args(argv)

    def fail(msg):
        print(f"reward_landing: error: {msg}", file=sys.stderr)
        return 2

    bench = Path(args.benchmark)
    if not bench.is_file():
        return fail(f"--benchmark {args.benchmark!r}: no such file (run experiments/controllers.py first)")
    target = float(json.loads(bench.read_text())["meta"]["target_ms"])
    logs = sorted(Path(args.out).glob("runs/random-s*/study.log"))
    if not logs:
        return fail(f"--out {args.out!r}: no random-sSEED runs there (experiments/controllers.py --controllers random)")
    pools = {log.parent.name: read_pool(log) for log in logs}
    pools = {run: pool for run, pool in pools.items() if pool}
    rows = [{"run": run, "nets": len(pool), **x} for run, pool in pools.items() for x in landing(pool, target)]
    if not rows:
        return fail(f"--out {args.out!r}: the random runs have no completed trials yet")

    import pandas as pd

    df = pd.DataFrame(rows)
    prefix = Path(args.results)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(prefix.with_suffix(".csv"), index=False)
    summary = []
    for name in rewards(target):
        d = df[df.reward == name]
        summary.append({"reward": name, "runs": len(d),
                        "over_target_median": float(d.over_target.median()),
                        "over_target_min": float(d.over_target.min()), "over_target_max": float(d.over_target.max()),
                        "accuracy_mean": float(d.accuracy.mean())})
    prefix.with_suffix(".json").write_text(json.dumps({"target_ms": target, "runs": sorted(set(df.run)),
                                                       "summary": summary}, indent=1) + "\n")
    lines = [f"Best net per reward on random search's nets ({len(set(df.run))} runs, "
             f"{statistics.median(df.groupby('run').nets.first()):.0f} nets each; target {target:.3f} ms):", "",
             "| reward | best net's latency vs target (median; min .. max over runs) | its supernet score (mean) |",
             "|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['reward']} | {100 * s['over_target_median']:+.1f}% ({100 * s['over_target_min']:+.1f}% .. "
                     f"{100 * s['over_target_max']:+.1f}%) | {100 * s['accuracy_mean']:.2f} |")
    text = "\n".join(lines)
    print(text)
    prefix.with_suffix(".md").write_text(text + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    shown, pool = next(iter(pools.items()))
    ax.scatter([ms for _, ms in pool], [100 * a for a, _ in pool], s=4, color="0.75", label=f"{shown}'s nets")
    for i, name in enumerate(rewards(target)):
        d = df[(df.reward == name) & (df.run == shown)]
        ax.scatter(d.latency_ms, 100 * d.accuracy, s=60, marker="osD^v"[i], color=f"C{i}", label=f"best: {name}")
    ax.axvline(target, color="k", lw=0.8, ls="--", label="target")
    ax.set_xlabel("latency (table ms)")
    ax.set_ylabel("supernet score (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(prefix.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
