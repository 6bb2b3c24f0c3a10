"""`nas pipeline` and `nas check`: the recipe end to end on a tiny real set-up, and its resume.

Real pieces throughout: a search space (the tiny JSON space, or the presets' own spaces in
the slow test), a latency table measured here with onnxruntime at 32x32, proxy training on a
few hundred Fashion-MNIST images, NetAdapt with weight surgery, end-to-end timing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.pipeline import Pipeline, PipelineConfig
from search_space import ArchSpec, UserError

TINY_BUDGET = dict(trials=2, search_steps=3, proxy_resolution=16, short_steps=1, long_steps=1, init_steps=1,
                   check_steps=2, measure_rounds=1, calibrate_nets=0, latency_resolution=32, eval_batches=1,
                   max_train_images=256, val_size=100, progress=False)


def _cfg(tiny, out, **kw):
    return PipelineConfig(preset="small", out=out, space=tiny["space"], data=str(tiny["data"]),
                          table=tiny["table"], **{**TINY_BUDGET, **kw})


def test_pipeline_runs_to_the_end_and_resumes(tiny, tmp_path):
    out = tmp_path / "run"
    logs: list[str] = []

    class Stop(Exception):
        pass

    def stop_before_netadapt(line: str) -> None:
        logs.append(line)
        if line == "pipeline: stage netadapt":
            raise Stop

    with pytest.raises(Stop):
        Pipeline(_cfg(tiny, out), log=stop_before_netadapt).run()
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["search"]
    trials_before = (out / "search" / "trials.csv").read_text()

    logs.clear()
    Pipeline(_cfg(tiny, out), log=logs.append).run()
    assert "pipeline: stage search already finished, skipping" in logs
    assert (out / "search" / "trials.csv").read_text() == trials_before  # no trial re-run
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["search", "netadapt", "check", "report"]

    final = ArchSpec.load(out / "final.json")
    report = (out / "report.md").read_text()
    assert "## 3. Final spec against the paper" in report and "proxy accuracy" in report
    check = json.loads((out / "check" / "check.json").read_text())
    assert [n["name"] for n in check["nets"]] == [final.name, "mnv3-small"]
    for net in check["nets"]:
        assert net["predicted_ms"] > 0 and net["measured_ms"] > 0 and 0 <= net["accuracy"] <= 1
    assert f"latency of {final.name} relative to mnv3-small: predicted" in report
    # the final spec is accepted by the other commands
    for args in (["show", str(out / "final.json")], ["check", str(out / "final.json"), "--against", "mnv3-small",
                                                      "--no-latency", "--no-accuracy"]):
        proc = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    # a rerun of a finished pipeline does nothing again
    logs.clear()
    Pipeline(_cfg(tiny, out), log=logs.append).run()
    assert sum("already finished" in line for line in logs) == 4


def test_latency_notes_give_the_ratio_and_the_machine_speed():
    from nas.check import NetFigures, latency_notes, task_spec
    from search_space import zoo

    paper = task_spec(zoo("mnv3-small"), 224, 3, 1000)
    nets = [NetFigures("ours", 1, 1, predicted_ms=1.0, measured_ms=1.3), NetFigures("mnv3-small", 1, 1, 2.0, 2.4)]
    cal = {"net_runs": 5, "reference": {"spec": paper.to_dict(), "median_ms": 2.2, "best_ms": 2.0}}
    notes = latency_notes(nets, paper, cal)
    assert "predicted 0.500, measured 0.542" in notes[0]
    assert "20% slower" in notes[1]  # best round against best round, not against the median
    # a calibration from before short rounds: said so, no speed figure
    old = latency_notes(nets, paper, {"reference": {"spec": paper.to_dict(), "median_ms": 2.0}})
    assert "earlier end-to-end protocol" in old[1] and "slower" not in old[1]
    # another reference net (or none): no speed note, and no ratio without measurements
    assert len(latency_notes(nets, paper, {**cal, "reference": {"spec": {}, "best_ms": 2.0}})) == 1
    assert latency_notes([NetFigures("ours", 1, 1, 1.0), NetFigures("p", 1, 1, 2.0)], paper, None) == []


def test_pipeline_refuses_other_settings_in_the_same_folder(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.json").write_text(json.dumps({"settings": {**_cfg(tiny, out).settings(), "trials": 99},
                                                   "stages": {}}))
    with pytest.raises(UserError, match="trials=99"):
        Pipeline(_cfg(tiny, out))


@pytest.mark.parametrize("args, needle", [
    (["pipeline", "--preset", "medium"], "invalid choice"),
    (["pipeline", "--preset", "small", "--trials", "0"], "--trials"),
    (["pipeline", "--preset", "small", "--netadapt-frac", "2"], "--netadapt-frac"),
    (["check", "mnv3-small", "--against", "mnv2-100"], "invalid choice"),
    (["check", "missing.json", "--against", "mnv3-small"], "no such spec file"),
])
def test_bad_input_exits_2(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["small", "large"])
def test_both_presets_run_to_the_end(preset, tiny, tmp_path):
    """The presets' own spaces (every op measured at 32x32), tiny training budgets."""
    cfg = PipelineConfig(preset=preset, out=tmp_path / preset, data=str(tiny["data"]),
                         table=str(tmp_path / "table.parquet"), **TINY_BUDGET)
    Pipeline(cfg, log=lambda s: None).run()
    assert (tmp_path / preset / "report.md").exists()
    assert ArchSpec.load(tmp_path / preset / "final.json").rows
