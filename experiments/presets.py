"""README figure: both MobileNetV3 presets end to end (`nas pipeline --preset large|small`).

Runs each preset in its own folder under experiments/results/presets/ (resumable: rerun the
same command to continue), times it, and writes experiments/results/presets.{csv,json} with
the search, NetAdapt and check figures of each.

    python experiments/presets.py --trials 20 --search-steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from latency.runner import cpu_model
from nas.pipeline import Pipeline, PipelineConfig

OUT = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,large")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--search-steps", type=int, default=200)
    p.add_argument("--short-steps", type=int, default=50)
    p.add_argument("--long-steps", type=int, default=300)
    p.add_argument("--init-steps", type=int, default=300)
    p.add_argument("--check-steps", type=int, default=300)
    p.add_argument("--controller", default="rl")
    p.add_argument("--table", default=None,
                   help="latency table; '{space}' in it is replaced by the preset's space name")
    p.add_argument("--out", default=str(OUT / "presets"))
    args = p.parse_args(argv)

    rows = []
    for preset in args.presets.split(","):
        cfg = PipelineConfig(preset=preset, out=Path(args.out) / preset, controller=args.controller,
                             trials=args.trials, search_steps=args.search_steps, short_steps=args.short_steps,
                             long_steps=args.long_steps, init_steps=args.init_steps, check_steps=args.check_steps,
                             table=args.table.format(space=preset) if args.table else None)
        t0 = time.time()
        state = Pipeline(cfg).run()
        st = state["stages"]
        final, paper = st["check"]["nets"]
        rows.append({
            "preset": preset, "wall_s_this_call": round(time.time() - t0, 1),
            "stage_seconds": sum(s.get("seconds", 0) for s in st.values()),
            "trials": st["search"]["completed"], "best_reward": (st["search"]["best"] or {}).get("reward"),
            "netadapt_status": st["netadapt"]["status"], "netadapt_iterations": st["netadapt"]["iterations"],
            "netadapt_ms": f"{st['netadapt']['initial_ms']:.3f} -> {st['netadapt']['final_ms']:.3f}",
            "final_params": final["params"], "final_madds_M": round(final["madds"] / 1e6, 1),
            "final_pred_ms": final["predicted_ms"], "final_meas_ms": final["measured_ms"],
            "final_acc": final["accuracy"], "final_reward": final["reward"],
            "paper_params": paper["params"], "paper_madds_M": round(paper["madds"] / 1e6, 1),
            "paper_pred_ms": paper["predicted_ms"], "paper_meas_ms": paper["measured_ms"],
            "paper_acc": paper["accuracy"], "paper_reward": paper["reward"],
            "cpu": cpu_model(), "settings": json.dumps(cfg.settings()),
        })
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    if (OUT / "presets.csv").exists():  # keep the rows of presets not run in this call
        old = pd.read_csv(OUT / "presets.csv")
        df = pd.concat([old[~old["preset"].isin(df["preset"])], df], ignore_index=True)
        rows = df.to_dict("records")
    df.to_csv(OUT / "presets.csv", index=False)
    (OUT / "presets.json").write_text(json.dumps(rows, indent=1))
    plot(df["preset"].tolist(), Path(args.out), OUT / "presets.png")
    print(df.drop(columns=["settings"]).T.to_string())
    return 0


def plot(presets: list[str], runs: Path, path: Path) -> None:
    """Per preset: every searched net (proxy accuracy vs predicted latency), the NetAdapt
    trajectory from the best one, and the search target (the paper net's latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4.2), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        run = runs / preset
        trials = pd.read_csv(run / "search" / "trials.csv")
        done = trials[trials["state"] == "COMPLETE"]
        ax.scatter(done["latency_ms"], done["accuracy"], s=16, color="0.6", label="searched nets")
        best = done.loc[done["reward"].idxmax()]
        ax.scatter([best["latency_ms"]], [best["accuracy"]], s=90, marker="*", color="tab:blue", label="best reward")
        hist_path = run / "netadapt" / "history.csv"
        if hist_path.exists():
            h = pd.read_csv(hist_path)
            kept = h[(h["kind"] == "seed") | (h["selected"].astype(str) == "True")]
            ax.plot(kept["latency_ms"], kept["accuracy"], "o-", color="tab:red", ms=4,
                    label="NetAdapt (short fine-tune)")
        summary = json.loads((run / "search" / "summary.json").read_text()) if (run / "search" / "summary.json").exists() else {}
        target = summary.get("target_ms")
        if isinstance(target, (int, float)):
            ax.axvline(target, ls="--", color="k", lw=1, label=f"target {target:.2f} ms")
        ax.set_title(f"preset {preset}")
        ax.set_xlabel("predicted latency (ms, this machine's table)")
        ax.set_ylabel("proxy accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
