"""The NetAdapt loop on real Fashion-MNIST with tiny step counts: stopping rules, selection,
outputs, resume, CLI."""

import csv
import json

import pytest
import torch

from latency.timing import Protocol
from nas.cli import main
from nas.data import Dataset, load_dataset
from nas.proxy import ProxyConfig
from netadapt.latency_model import TableLatency
from netadapt.loop import NetAdaptConfig, run_netadapt
from search_space import ArchSpec, UserError, build
from netadapt_helpers import madds_ms, one_thread, tiny_spec  # noqa: F401  (one_thread: autouse fixture)




PROXY = ProxyConfig(resolution=16, batch_size=32, val_size=500, eval_batches=1, eval_batch_size=250,
                    bn_recalib_batches=1, max_train_images=None, threads=1)
FAST = Protocol(runs=5, warmup=1, passes=1, quiet_wait=0, pin=False)


def config(**kw):
    base = dict(short_steps=2, long_steps=2, init_steps=4, test_eval=False, proxy=PROXY)
    base.update(kw)
    return NetAdaptConfig(**base)


@pytest.fixture(scope="module")
def data():
    """Real Fashion-MNIST, cut to 4000 training and 1000 test images (the split bookkeeping
    of the full 60K costs more than the tiny trainings here)."""
    full = load_dataset()
    return Dataset(name=full.name, train_x=full.train_x[:4000], train_y=full.train_y[:4000],
                   test_x=full.test_x[:1000], test_y=full.test_y[:1000], num_classes=full.num_classes,
                   in_channels=full.in_channels, class_names=full.class_names, source=full.source)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    return tmp_path_factory.mktemp("table") / "latency.parquet"


def comparable(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_target_already_met_stops_at_once(tmp_path, data, capsys):
    spec = tiny_spec()
    lat = madds_ms(spec)
    res = run_netadapt(spec, data, madds_ms, tmp_path, config(target_ms=2 * lat))
    assert res.status == "target_met" and "already meets the target" in res.message
    assert res.train_steps == 0 and res.model is None and res.history == []
    assert not (tmp_path / "state.json").exists()
    assert ArchSpec.load(tmp_path / "final_spec.json") == spec
    assert "already meets" in capsys.readouterr().err


def test_unreachable_target_stops_and_keeps_the_best_net(tmp_path, data):
    spec = tiny_spec()
    lat = madds_ms(spec)
    cfg = config(target_ms=0.01 * lat, step_frac=0.25, select="netadapt")
    res = run_netadapt(spec, data, madds_ms, tmp_path, cfg, quiet=True)
    assert res.status == "unreachable"
    assert "no proposal can cut" in res.message and "keeping the best net found" in res.message
    assert res.iterations >= 1
    kept = [r for r in res.history if r["selected"]]
    assert len(kept) == res.iterations
    assert res.final_ms == pytest.approx(min(r["latency_ms"] for r in kept))
    assert res.final_ms == pytest.approx(madds_ms(res.spec))
    # every proposal made its iteration's step; netadapt's rule keeps the most accurate
    cur = lat
    for i in range(1, res.iterations + 1):
        rows = [r for r in res.history if r["iteration"] == i and r["kind"] == "proposal"]
        assert all(r["latency_ms"] <= cur - 0.25 * lat + 1e-9 for r in rows)
        chosen = next(r for r in rows if r["selected"])
        assert chosen["accuracy"] == max(r["accuracy"] for r in rows)
        cur = chosen["latency_ms"]
    # outputs: the final spec, weights that load into it, history, plot, diff
    final = ArchSpec.load(tmp_path / "final_train_spec.json")
    assert final.rows == res.spec.rows and final.resolution == 16 and final.in_channels == 1
    build(final).load_state_dict(torch.load(tmp_path / "final.pt", weights_only=True))
    with open(tmp_path / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["kind"] == "seed" and rows[-1]["kind"] == "final"
    assert (tmp_path / "history.png").stat().st_size > 1000
    assert "~" in (tmp_path / "diff.txt").read_text()
    assert json.loads((tmp_path / "state.json").read_text())["phase"] == "done"


class Stop(Exception):
    pass


def test_interrupted_run_resumes_after_the_last_finished_iteration(tmp_path, data, table_path):
    # latency from a real table (measured here, on the spot); timings are noisy on a busy
    # machine, so the step is small enough that some unit always makes it
    spec = tiny_spec(resolution=64)
    predict = TableLatency(table_path, protocol=FAST, log=lambda m: None)
    lat = predict(spec)
    step = 0.03
    cfg = config(target_ms=0.5 * lat, step_frac=step, max_iters=3)

    whole = run_netadapt(spec, data, predict, tmp_path / "whole", cfg, quiet=True)
    assert whole.iterations == 3 and whole.status == "max_iters"

    def stop_after_first(state):
        if state["iteration"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_netadapt(spec, data, predict, tmp_path / "cut", cfg, on_iteration=stop_after_first, quiet=True)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["iteration"] == 1 and state["phase"] == "adapt"

    seen = []
    resumed = run_netadapt(spec, data, predict, tmp_path / "cut", cfg,
                           on_iteration=lambda st: seen.append(st["iteration"]), quiet=True)
    assert seen[0] == 2
    assert comparable(resumed.history) == comparable(whole.history)
    assert resumed.spec == whole.spec and resumed.final_ms == whole.final_ms
    # every proposal in the history met its step (under the real table)
    cur = lat
    for i in range(1, whole.iterations + 1):
        rows = [r for r in whole.history if r["iteration"] == i and r["kind"] == "proposal"]
        assert rows and all(r["latency_ms"] <= cur - step * lat + 1e-9 for r in rows)
        chosen = next(r for r in rows if r["selected"])
        assert chosen["score"] == max(r["score"] for r in rows)  # mnv3: best dAcc/|dLat|
        cur = chosen["latency_ms"]

    # a finished run is not redone; another config in the same folder is refused
    again = run_netadapt(spec, data, predict, tmp_path / "cut", cfg, quiet=True)
    assert comparable(again.history) == comparable(whole.history)
    with pytest.raises(UserError, match="short_steps"):
        run_netadapt(spec, data, predict, tmp_path / "cut", config(target_ms=0.5 * lat, step_frac=step,
                                                                    short_steps=3), quiet=True)


def test_cli_bad_input_and_target_met(tmp_path, capsys, table_path):
    spec_file = tmp_path / "tiny.json"
    tiny_spec().save(spec_file)
    base = ["netadapt", str(spec_file), "--table", str(table_path), "--out", str(tmp_path / "o")]
    assert main(base + ["--target-ms", "0"]) == 2
    assert "--target-ms" in capsys.readouterr().err
    assert main(base + ["--target-ms", "-1"]) == 2
    assert main(["netadapt", "nope.json", "--target-ms", "1", "--table", str(table_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert main(base + ["--target-ms", "1", "--resume"]) == 2
    assert "no NetAdapt run to resume" in capsys.readouterr().err
    # a target above the seed's latency: a message, exit 0, no training
    assert main(base + ["--target-frac", "1.5", "--no-test"]) == 0
    assert "already meets the target" in capsys.readouterr().err


def test_a_lower_target_continues_a_finished_run(tmp_path, data):
    spec = tiny_spec()
    lat = madds_ms(spec)
    first = run_netadapt(spec, data, madds_ms, tmp_path, config(target_ms=0.9 * lat, step_frac=0.08), quiet=True)
    assert first.status == "reached" and first.final_ms <= 0.9 * lat
    second = run_netadapt(spec, data, madds_ms, tmp_path, config(target_ms=0.75 * lat, step_frac=0.08), quiet=True)
    assert second.status == "reached" and second.final_ms <= 0.75 * lat < first.final_ms
    assert second.iterations > first.iterations
    n = first.iterations
    assert comparable([r for r in second.history if r["iteration"] <= n and r["kind"] != "final"]) == \
        comparable([r for r in first.history if r["kind"] != "final"])
    assert [r["kind"] for r in second.history].count("final") == 1
    assert second.train_steps == sum(r["train_steps"] for r in second.history)
