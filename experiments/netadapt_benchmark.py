"""NetAdapt vs a uniform width multiplier at the same predicted latency (MobileNetV3 Sec. 4.2).

For each of MobileNetV3-Large and -Small:
  1. proxy-train the seed (the training spec: proxy resolution, the data set's channels and
     classes) and predict its latency from the table (the latency spec: 224x224x3, 1000
     classes);
  2. NetAdapt to --target-frac (default 80%) of the seed's predicted latency, then a
     long-term fine-tune: every training step taken, seed training included, is the budget B;
  3. the uniform width multiplier whose predicted latency is closest to NetAdapt's result
     (TF-slim scaling, `search_space.zoo.mnv3_large(width_mult)`), trained from scratch for B
     steps;
  4. NetAdapt's final architecture trained from scratch for B steps (MobileNetV3 re-trained
     the adapted net from scratch), so the two architectures also compare on equal terms.
Accuracy is on the Fashion-MNIST test set (never seen by NetAdapt's selection, which uses
the held-out part of the training images).

  python experiments/netadapt_benchmark.py --quick          # a few minutes on 2 cores
  python experiments/netadapt_benchmark.py --nets small --init-steps 600 --short-steps 20 ...

Writes experiments/results/netadapt_benchmark.{csv,json} and, per net, the NetAdapt history
(CSV, PNG), the final spec and its diff against the seed as experiments/results/netadapt_<net>_*.
The NetAdapt runs themselves (weights included) live under runs/netadapt_benchmark/<net>/
(--out); reruns reuse their finished iterations and finished arms.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nas.data import load_dataset  # noqa: E402
from nas.proxy import ProxyConfig, evaluate, train_proxy  # noqa: E402
from netadapt.latency_model import TableLatency  # noqa: E402
from netadapt.loop import NetAdaptConfig, run_netadapt, training_spec  # noqa: E402
from search_space import build, count  # noqa: E402
from search_space.zoo import mnv3_large, mnv3_small  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
MAKERS = {"large": mnv3_large, "small": mnv3_small}
QUICK = dict(init_steps=150, short_steps=5, long_steps=60, step_frac=0.1, eval_batches=2, bn_recalib_batches=5)


def match_multiplier(make, predict, target_ms: float, lo: float = 0.2, hi: float = 1.0, iters: int = 10):
    """The width multiplier whose predicted latency is closest to `target_ms` (bisection;
    latency grows with the multiplier up to rounding)."""
    seen: dict[float, float] = {}

    def lat(m: float) -> float:
        m = round(m, 4)
        if m not in seen:
            seen[m] = predict(make(m))
        return seen[m]

    for _ in range(iters):
        mid = (lo + hi) / 2
        if lat(mid) > target_ms:
            hi = mid
        else:
            lo = mid
    lat(lo), lat(hi)
    best = min(seen, key=lambda m: (abs(seen[m] - target_ms), -m))
    return best, seen[best], seen


def train_scratch(spec, data, steps: int, proxy: ProxyConfig, seed: int):
    model = build(spec, seed=seed)
    cfg = dataclasses.replace(proxy, steps=steps, seed=seed)
    res = train_proxy(model, data, cfg)
    test = evaluate(model, data, "test", proxy)
    return res.val_accuracy, test, res.seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", choices=sorted(MAKERS), default=["small", "large"])
    ap.add_argument("--table", default=str(RESULTS / "netadapt_latency.parquet"),
                    help="latency table (created/extended here)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "netadapt_benchmark"),
                    help="NetAdapt run folders (weights, state); small artifacts are copied to experiments/results")
    ap.add_argument("--data", default=None)
    ap.add_argument("--target-frac", type=float, default=0.8)
    ap.add_argument("--init-steps", type=int, default=500, help="proxy training of the seed")
    ap.add_argument("--short-steps", type=int, default=20, help="short-term fine-tune per proposal")
    ap.add_argument("--long-steps", type=int, default=300, help="long-term fine-tune at the end")
    ap.add_argument("--step-frac", type=float, default=None,
                    help="NetAdapt step as a fraction of the seed's latency (default 0.01, the paper's)")
    ap.add_argument("--delta-schedule", choices=("mnv3", "decay"), default="mnv3")
    ap.add_argument("--select", choices=("mnv3", "netadapt"), default="mnv3")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--eval-batches", type=int, default=10, help="validation batches (of 500) per proposal")
    ap.add_argument("--bn-recalib-batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-scratch", action="store_true", help="skip retraining NetAdapt's net from scratch")
    ap.add_argument("--lat-runs", type=int, default=50, help="timed runs per op for a new table")
    ap.add_argument("--lat-passes", type=int, default=2, help="passes per op for a new table")
    ap.add_argument("--quiet-wait", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)

    from latency.timing import Protocol

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predict = TableLatency(args.table, protocol=Protocol(runs=args.lat_runs, passes=args.lat_passes,
                                                         quiet_wait=args.quiet_wait),
                           quiet_wait=args.quiet_wait)
    data = load_dataset(args.data)
    proxy = ProxyConfig(resolution=args.resolution, eval_batches=args.eval_batches, threads=args.threads,
                        bn_recalib_batches=args.bn_recalib_batches)
    budget = {k: getattr(args, k) for k in ("init_steps", "short_steps", "long_steps", "step_frac", "delta_schedule",
                                            "select", "resolution", "eval_batches", "seed", "target_frac")}
    rows = []
    for net in args.nets:
        make = MAKERS[net]
        spec = make()
        lat0 = predict(spec)
        target = args.target_frac * lat0
        print(f"\n== MobileNetV3-{net}: {lat0:.3f} ms predicted, target {target:.3f} ms ==", file=sys.stderr)
        cfg = NetAdaptConfig(target_ms=target, delta_schedule=args.delta_schedule, step_frac=args.step_frac,
                             select=args.select, short_steps=args.short_steps, long_steps=args.long_steps,
                             init_steps=args.init_steps, seed=args.seed, proxy=proxy)
        t0 = time.perf_counter()
        na = run_netadapt(spec, data, predict, out / net, cfg)
        na_seconds = time.perf_counter() - t0
        B = na.train_steps
        seed_row = na.history[0]

        arms_path = out / net / "arms.json"
        arms = json.loads(arms_path.read_text()) if arms_path.exists() else {}
        key = json.dumps({**budget, "B": B, "final": na.spec.to_dict()["rows"]}, sort_keys=True)
        if arms.get("key") != key:
            arms = {"key": key}

        if "multiplier" not in arms:
            m, m_lat, tried = match_multiplier(make, predict, na.final_ms)
            mspec = make(m)
            print(f"width multiplier {m:.4f}: {m_lat:.3f} ms (NetAdapt {na.final_ms:.3f} ms); "
                  f"training it from scratch for {B} steps", file=sys.stderr)
            val, test, secs = train_scratch(training_spec(mspec, data, args.resolution), data, B, proxy, args.seed)
            arms["multiplier"] = dict(width_mult=m, spec=mspec.to_dict(), latency_ms=m_lat, val=val, test=test,
                                      seconds=secs, tried={str(k): v for k, v in sorted(tried.items())})
            arms_path.write_text(json.dumps(arms, indent=1))
        if not args.no_scratch and "scratch" not in arms:
            print(f"NetAdapt's net from scratch for {B} steps", file=sys.stderr)
            val, test, secs = train_scratch(na.train_spec, data, B, proxy, args.seed)
            arms["scratch"] = dict(val=val, test=test, seconds=secs)
            arms_path.write_text(json.dumps(arms, indent=1))

        import shutil

        for name in ("history.csv", "history.png", "diff.txt", "final_spec.json"):
            if (out / net / name).exists():
                shutil.copy(out / net / name, RESULTS / f"netadapt_{net}_{name}")
        mult = arms["multiplier"]
        from search_space import ArchSpec

        mspec = ArchSpec.from_dict(mult["spec"])

        def row(method, spec_, lat, val, test, steps, secs, note=""):
            c = count(spec_)
            return {"net": f"mnv3-{net}", "method": method, "latency_ms": round(lat, 4),
                    "latency_frac": round(lat / lat0, 4), "params_M": round(c.params / 1e6, 3),
                    "madds_M": round(c.madds / 1e6, 1), "val_acc": None if val is None else round(val, 4),
                    "test_acc": None if test is None else round(test, 4), "train_steps": steps,
                    "seconds": round(secs, 1), "note": note}

        its = na.iterations
        rows.append(row("seed (proxy-trained)", spec, lat0, seed_row["accuracy"], seed_row["test_accuracy"],
                        args.init_steps, seed_row["seconds"]))
        rows.append(row("NetAdapt (inherited weights, fine-tuned)", na.spec, na.final_ms, na.accuracy,
                        na.test_accuracy, B, na_seconds, f"{its} iterations, {na.status}"))
        rows.append(row(f"width multiplier {mult['width_mult']:.3f} (scratch)", mspec, mult["latency_ms"],
                        mult["val"], mult["test"], B, mult["seconds"]))
        if "scratch" in arms:
            rows.append(row("NetAdapt architecture (scratch)", na.spec, na.final_ms, arms["scratch"]["val"],
                            arms["scratch"]["test"], B, arms["scratch"]["seconds"]))

    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(headers, widths)))
    stem = RESULTS / "netadapt_benchmark"
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, headers)
        w.writeheader()
        w.writerows(rows)
    meta = {"budget": budget, "latency_table": str(args.table), "table": predict.describe(),
            "threads": args.threads, "torch": torch.__version__, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"\nwrote {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
