"""README figure: every zoo net's params and MAdds next to the published figures.

Writes experiments/results/reproduction.{csv,json,png}; exits 1 if a checked figure is
outside its tolerance (as `nas reproduce` does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from search_space.published import reproduce  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def main() -> int:
    rows = []
    for c in reproduce():
        f = c.figure
        rows.append({"net": f.net, "metric": f.metric, "ours": c.ours, "published": f.value, "rel_diff": c.rel_diff,
                     "tolerance": f.tolerance(), "checked": f.checked, "ok": c.ok, "source": f.source, "note": f.note})
    df = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "reproduction.csv", index=False)
    (OUT / "reproduction.json").write_text(json.dumps(rows, indent=1))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df[["net", "metric", "ours", "published", "rel_diff", "tolerance", "checked", "ok"]].to_string(index=False))

    checked = df[df["checked"]]
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = [f"{n} {m}" for n, m in zip(checked["net"], checked["metric"])]
    ax.barh(labels, 100 * checked["rel_diff"], color=["tab:green" if ok else "tab:red" for ok in checked["ok"]])
    ax.errorbar([0] * len(checked), range(len(checked)), xerr=100 * checked["tolerance"], fmt="none", ecolor="grey",
                capsize=3, label="tolerance")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("ours vs published (%)")
    ax.set_title("Zoo nets: params and MAdds vs the papers")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "reproduction.png", dpi=120)
    failed = int((~checked["ok"]).sum())
    print(f"{len(checked) - failed} of {len(checked)} checked figures within tolerance; wrote {OUT}/reproduction.*")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
