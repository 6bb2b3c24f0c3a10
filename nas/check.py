"""`nas check`: a spec next to the paper's table, with params, MAdds, latency, accuracy, reward.

Both nets are measured the same way in one run: predicted latency from this machine's
table, measured latency end to end (interleaved rounds, so drift hits both alike), proxy
accuracy from the same training budget, data split and initial-weight seed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from latency.timing import DEFAULT_ROUNDS
from search_space import ArchSpec, count, render, render_diff, zoo
from search_space.errors import UserError
from search_space.render import format_table

CHECK_AGAINST = ("mnv3-large", "mnv3-small")
PAPER_W = {"mnv3-large": -0.07, "mnv3-small": -0.15}


@dataclass
class NetFigures:
    name: str
    params: int
    madds: int
    predicted_ms: float | None = None
    measured_ms: float | None = None
    accuracy: float | None = None
    reward: float | None = None


@dataclass
class CheckReport:
    spec: ArchSpec
    against: ArchSpec
    nets: list[NetFigures]
    target_ms: float | None
    w: float
    measure_noise: float | None = None  # median |half A - half B| / mean of the end-to-end timings
    notes: list[str] = field(default_factory=list)

    def summary_rows(self) -> list[tuple[str, ...]]:
        def f(v, fmt):
            return "-" if v is None else fmt.format(v)

        rows = []
        for n in self.nets:
            rows.append((n.name, f"{n.params:,}", f"{n.madds / 1e6:.1f}M", f(n.predicted_ms, "{:.3f}"),
                         f(n.measured_ms, "{:.3f}"), f(n.accuracy, "{:.4f}"), f(n.reward, "{:.4f}")))
        return rows

    def to_markdown(self) -> str:
        parts = [f"### {self.spec.name} vs {self.against.name} (paper table)", "",
                 "Rows side by side; `~` marks a changed row (changed cells carry `*`), `+`/`-` a row only "
                 "on one side.", "", render_diff(self.against, self.spec, markdown=True), "",
                 "#### Summary (both nets measured the same way, in the same run)", "",
                 format_table(SUMMARY_HEADERS, self.summary_rows(), markdown=True), ""]
        if self.target_ms is not None:
            parts.append(f"Reward: ACC x (LAT / {self.target_ms:.3f} ms)^{self.w:g}, LAT = predicted latency.")
        if self.measure_noise is not None:
            parts.append(f"End-to-end measurement noise (two halves of the rounds): {self.measure_noise:.1%} median.")
        parts += [f"Note: {n}" for n in self.notes]
        return "\n".join(parts) + "\n"

    def to_text(self) -> str:
        parts = [render_diff(self.against, self.spec), "",
                 format_table(SUMMARY_HEADERS, self.summary_rows())]
        if self.target_ms is not None:
            parts.append(f"reward = ACC x (LAT / {self.target_ms:.3f} ms)^{self.w:g} with LAT predicted")
        if self.measure_noise is not None:
            parts.append(f"end-to-end measurement noise: {self.measure_noise:.1%} median between halves")
        parts += [f"note: {n}" for n in self.notes]
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "against": self.against.name, "target_ms": self.target_ms,
                "w": self.w, "measure_noise": self.measure_noise, "notes": self.notes,
                "nets": [dataclasses.asdict(n) for n in self.nets]}


SUMMARY_HEADERS = ("net", "params", "MAdds", "predicted ms", "measured ms", "proxy accuracy", "reward")


def latency_notes(nets: list[NetFigures], paper_spec: ArchSpec, calibration: dict | None) -> list[str]:
    """What the end-to-end figures say beyond the table: the two nets' latency ratio, predicted
    and measured (drift cancels in a ratio measured in one run), and how fast the machine runs
    now against when the table was calibrated (the paper net is the space's reference net)."""
    ours, paper = nets
    out = []
    if all(v for v in (ours.predicted_ms, ours.measured_ms, paper.predicted_ms, paper.measured_ms)):
        out.append(f"latency of {ours.name} relative to {paper.name}: predicted {ours.predicted_ms / paper.predicted_ms:.3f}, "
                   f"measured {ours.measured_ms / paper.measured_ms:.3f} (both measured in the same run)")
    cal = calibration or {}
    ref = cal.get("reference") or {}
    if not paper.measured_ms or ref.get("spec") != paper_spec.to_dict():
        return out
    if cal.get("net_runs") is None:
        # Before short rounds a net's time was its best of a few long rounds, a number the
        # best of many short rounds is not comparable with.
        out.append("the table was calibrated with the earlier end-to-end protocol (a few long rounds): "
                   "the machine's speed now is not compared with then")
        return out
    # Like with like: the reference's best round then against the paper net's best round now.
    then = ref.get("best_ms") or (cal.get("drift") or {}).get("reference_min_ms")
    if then:
        factor = paper.measured_ms / then
        out.append(f"{paper.name} measured {paper.measured_ms:.3f} ms now against {then:.3f} ms when the "
                   f"table was calibrated: the machine runs {abs(factor - 1):.0%} {'slower' if factor >= 1 else 'faster'} "
                   "than then, which moves every measured figure alike")
    return out


def task_spec(spec: ArchSpec, resolution: int, in_channels: int, num_classes: int) -> ArchSpec:
    """The same rows at another input geometry (the proxy task's, or the latency geometry)."""
    return dataclasses.replace(spec, resolution=resolution, in_channels=in_channels, num_classes=num_classes)


def run_check(spec: ArchSpec, against: str, *, table=None, data=None, proxy_cfg=None, target_ms: float | None = None,
              w: float | None = None, measure_rounds: int = DEFAULT_ROUNDS, latency_resolution: int = 224,
              progress: bool = False) -> CheckReport:
    """Compare `spec` with a paper net. Without `table` no latency; without `data` no accuracy."""
    if against not in CHECK_AGAINST:
        raise UserError(f"--against {against!r}: expected one of {', '.join(CHECK_AGAINST)}")
    paper = zoo(against)
    w = PAPER_W[against] if w is None else w
    lat_specs = [task_spec(s, latency_resolution, 3, 1000) for s in (spec, paper)]
    nets = [NetFigures(s.name, count(s).params, count(s).madds) for s in lat_specs]
    report = CheckReport(spec, paper, nets, target_ms, w)
    if table is not None:
        from latency.e2e import measure_nets
        from latency.predict import predict, protocol_of

        protocol = protocol_of(table)
        for n, s in zip(nets, lat_specs):
            n.predicted_ms = float(predict(s, table, measure_missing=True, protocol=protocol, progress=progress).ms)
        if measure_rounds:
            times = measure_nets(lat_specs, protocol, rounds=measure_rounds, progress=progress,
                                 names=[n.name + f"#{i}" for i, n in enumerate(nets)])
            summ = times.summary()
            for n, (_, r) in zip(nets, summ.iterrows()):
                n.measured_ms = float(r["measured_ms"])
            noise = summ["noise"].abs().median()
            report.measure_noise = None if noise != noise else float(noise)
            report.notes += latency_notes(nets, lat_specs[1], table.calibration)
        if report.target_ms is None:
            report.target_ms = nets[1].predicted_ms
            report.notes.append(f"no target given: the target is {paper.name}'s predicted latency on this table")
    if data is not None:
        from nas.proxy import ProxyConfig, train_proxy
        from search_space import build

        cfg = proxy_cfg or ProxyConfig()
        for n, s in zip(nets, (spec, paper)):
            model = build(task_spec(s, cfg.resolution, data.in_channels, data.num_classes), seed=0)
            res = train_proxy(model, data, cfg)
            n.accuracy = None if res.diverged else float(res.val_accuracy)
        report.notes.append(f"proxy accuracy: {cfg.steps} steps at {cfg.resolution}x{cfg.resolution} on "
                            f"{getattr(data, 'name', 'the data set')}, held-out validation split, same seeds")
    if report.target_ms is not None:
        from nas.reward import Reward

        rew = Reward.soft(report.target_ms, w)
        for n in nets:
            if n.accuracy is not None and n.predicted_ms is not None:
                n.reward = rew(n.accuracy, n.predicted_ms)
    return report


def write_report(report: CheckReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.md").write_text(report.to_markdown())
    (out / "check.json").write_text(json.dumps(report.to_dict(), indent=1))


def paper_table(name: str) -> str:
    return render(zoo(name))
