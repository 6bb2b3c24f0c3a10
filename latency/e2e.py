"""End-to-end timing of whole nets, with a protocol that separates the nets from the drift.

- Every net is exported once (and quantized for INT8) and gets one session.
- Rounds: in each round every net is timed once, briefly (protocol.net_warmup + net_runs,
  default 1 + 5 runs), in a fresh random order; many rounds (default DEFAULT_ROUNDS). The
  host's speed here changes every few seconds (other tenants of the machine): a round of
  100 runs lands wholly inside one fast or slow spell, while many short rounds spread over
  minutes visit many, and the best of them finds the net's floor. At the same number of
  runs per net, 333 rounds of 5 runs repeated between two runs minutes apart within 0.9%
  (median over 16 nets), 18 rounds of 100 runs within 3.0%
  (experiments/latency_protocol.py, results/latency_protocol_budget2000.json).
- Settling rounds over just the nets whose two best rounds differ by more than
  protocol.settle, up to twice the rounds.
- A reference net is timed at the start of each round and after every `ref_every` nets;
  its spread over the run is the drift the protocol had to beat, reported next to the error.
- Every few seconds the machine is given a (capped) chance to become quiet.
- A net's measured latency is its best round (interference only ever slows a run down;
  `NetTimes.summary(across=...)` gives other reductions).
- The measurement's own run-to-run variation: the best of the even rounds against the best
  of the odd rounds, per net (two independent measurements taken in the same run).
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from . import export as _export
from .timing import DEFAULT_ROUNDS, QUIET_CHECK_S, Protocol, Timer, measuring, now_iso

REFERENCE = "__reference__"

# How a net's rounds are reduced to one figure. The default, "min" (the best round), repeated
# best between runs minutes apart; the median or mean of many short rounds agrees more tightly
# within one run but follows the host's load from run to run (experiments/latency_protocol.py).
ACROSS = {
    "min": "min",
    "p25": lambda v: float(np.percentile(v, 25)),
    "median": "median",
    "mean": "mean",
}


def net_model(spec, precision: str = "float32", calib_data: np.ndarray | None = None, workdir=None,
              runtime: str = "onnxruntime") -> bytes:
    """The model a whole net is timed as (ONNX, or .tflite for LiteRT), quantized for int8."""
    if runtime == "litert":
        from .build import check_runtime
        from .litert import convert_net

        check_runtime(runtime, precision)
        return convert_net(spec, precision=precision, calib_data=calib_data)
    data = _export.export_net(spec)
    if precision == "int8":
        from .quantize import quantize_model

        data = quantize_model(data, [_export.net_input_shape(spec)], data=calib_data, workdir=workdir)
    return data


@dataclass
class NetTimes:
    """Per-round times of named nets plus the reference."""

    rounds: pd.DataFrame  # net, round, order, value_ms, median_ms, other_load, at
    reference: pd.DataFrame  # round, index, value_ms, t (seconds since start)
    protocol: Protocol
    names: list[str] = field(default_factory=list)
    priority: str = "none"  # what was in effect

    def summary(self, across: str = "min") -> pd.DataFrame:
        """One row per net: measured_ms (the `across` statistic of its rounds), half_a/half_b
        (the same statistic of the even and of the odd rounds), noise between the halves."""
        stat = ACROSS[across]
        r = self.rounds
        g = r.groupby("net", sort=False)["value_ms"]
        out = pd.DataFrame({"measured_ms": g.agg(stat), "rounds": g.size(), "round_median_ms": g.median(),
                            "round_min_ms": g.min()})
        out["half_a_ms"] = r[r["round"] % 2 == 0].groupby("net")["value_ms"].agg(stat)
        out["half_b_ms"] = r[r["round"] % 2 == 1].groupby("net")["value_ms"].agg(stat)
        out["noise"] = (out["half_a_ms"] - out["half_b_ms"]) / out[["half_a_ms", "half_b_ms"]].mean(axis=1)
        out["other_load"] = r.groupby("net")["other_load"].mean()
        return out.reindex(self.names)

    def drift(self) -> dict:
        ref = self.reference["value_ms"].to_numpy()
        if ref.size == 0:
            return {}
        per_round = self.reference.groupby("round")["value_ms"].min().to_numpy()
        return {
            "reference_median_ms": float(np.median(ref)),
            "reference_min_ms": float(ref.min()),
            "reference_max_ms": float(ref.max()),
            "reference_spread": float(ref.max() / ref.min() - 1.0),
            "reference_round_spread": float(per_round.max() / per_round.min() - 1.0),
            "reference_cv": float(ref.std() / ref.mean()) if ref.size > 1 else 0.0,
            "reference_samples": int(ref.size),
        }


def measure_nets(specs: Sequence, protocol: Protocol, rounds: int = DEFAULT_ROUNDS, reference=None, ref_every: int = 10,
                 precision: str = "float32", progress: bool = True, seed: int = 0,
                 calib_data: np.ndarray | None = None, names: Sequence[str] | None = None,
                 max_rounds: int | None = None) -> NetTimes:
    """Time whole nets end to end under `protocol` (protocol.net_runs runs per round):
    `rounds` interleaved rounds over all nets, then settling rounds (up to `max_rounds`,
    default 2 x rounds) over the nets whose two best rounds still differ by more than
    protocol.settle."""
    from .build import _Progress

    names = list(names) if names is not None else _unique_names(specs)
    timer = Timer(protocol.for_nets(), max_sessions=max(len(specs) + 1, 8), seed=seed)
    rng = random.Random(seed)
    rows, refs = [], []
    with _Progress(progress) as bar, tempfile.TemporaryDirectory(prefix="lat-nets-") as tmp:
        task = bar.task(f"export nets ({precision})", len(specs) + (reference is not None))
        for name, spec in zip(names, specs):
            timer.add(name, net_model(spec, precision, calib_data, tmp, protocol.runtime))
            bar.advance(task)
        if reference is not None:
            timer.add(REFERENCE, net_model(reference, precision, calib_data, tmp, protocol.runtime))
            bar.advance(task)
        if max_rounds is None:
            max_rounds = 2 * rounds if protocol.settle > 0 else rounds
        per_net: dict[str, list[float]] = {n: [] for n in names}
        every = max(1, ref_every)
        total = rounds * (len(specs) + ((len(specs) - 1) // every + 1 if reference is not None else 0))
        task = bar.task("time nets", total)
        t0 = time.monotonic()
        quiet_at = float("-inf")
        with measuring(protocol) as state:
            priority = state["priority"]
            for rd in range(max(rounds, max_rounds)):
                if rd < rounds:
                    order = list(names)
                else:
                    order = [n for n in names if protocol.unsettled(per_net[n])]
                    if not order:
                        break
                    total += len(order) + ((len(order) - 1) // every + 1 if reference is not None else 0)
                    bar.set_total(task, total)
                rng.shuffle(order)
                if time.monotonic() - quiet_at >= QUIET_CHECK_S:
                    timer.wait_quiet()
                    quiet_at = time.monotonic()
                label = f"round {rd + 1}/{rounds}" if rd < rounds else f"settling round {rd + 1}, {len(order)} nets"
                for i, name in enumerate(order):
                    if reference is not None and i % every == 0:
                        s = timer.measure(REFERENCE)
                        refs.append({"round": rd, "index": i, "value_ms": s["value_ms"],
                                     "t": time.monotonic() - t0, "other_load": s["other_load"]})
                        bar.advance(task)
                    s = timer.measure(name)
                    per_net[name].append(s["value_ms"])
                    rows.append({"net": name, "round": rd, "order": i, "value_ms": s["value_ms"],
                                 "median_ms": s["median_ms"], "min_ms": s["min_ms"], "p10_ms": s["p10_ms"],
                                 "other_load": s["other_load"], "t": time.monotonic() - t0, "at": now_iso()})
                    bar.advance(task, description=f"time nets ({label})")
    return NetTimes(pd.DataFrame(rows), pd.DataFrame(refs, columns=["round", "index", "value_ms", "t", "other_load"]),
                    protocol, names, priority)


def _unique_names(specs) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        n = s.name
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[s.name]}"
        else:
            seen[n] = 0
        out.append(n)
    return out
