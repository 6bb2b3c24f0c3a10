"""latency/: op keys, export, table file, resume, missing ops, bad files, calibration, CLI.

Timing runs here use a few runs on tiny inputs; no test asserts a wall-clock time (only
that times are positive and finite and that structures are right).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

import search_space
from latency import export
from latency.build import build_table, table_meta
from latency.cli import main as cli_main
from latency.ops import enumerate_ops, net_keys, net_ops
from latency.predict import MissingOpsError, Predictor, apply_calibration, fit_calibration, predict
from latency.runner import time_session, make_session, random_feeds
from latency.table import LatencyTable
from latency.timing import Protocol
from latency.validate import spearman
from search_space.errors import UserError

FAST = Protocol(runs=3, warmup=1, passes=1, pin=False, quiet_wait=0, priority="none", settle=0)


def small(res: int = 32):
    return dataclasses.replace(search_space.zoo("mnv3-small"), resolution=res)


def large(res: int = 32):
    return dataclasses.replace(search_space.zoo("mnv3-large"), resolution=res)


def new_table(path, protocol=FAST, precision="float32"):
    return LatencyTable.load_or_new(path, table_meta(protocol, precision))


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "small.parquet"
    table = new_table(path)
    build_table(enumerate_ops([small()]), table, FAST, progress=False)
    return path


# ---- op keys ---------------------------------------------------------------------------------
def test_same_op_same_key_distinct_ops_distinct_keys():
    a, b = net_ops(large()), net_ops(large())
    assert [o.key for o in a] == [o.key for o in b]
    distinct = enumerate_ops([large()])
    assert len({o.key for o in distinct}) == len(distinct)
    # Large repeats an identical block (2x e184): net_ops keeps each use, enumerate_ops one.
    assert len(a) > len(distinct)
    keys = net_keys(large())
    assert max(keys.count(k) for k in keys) == 2
    # Changing what determines latency changes the key: kernel, input shape, SE.
    rows = list(large().rows)
    i = next(j for j, r in enumerate(rows) if r.op == "bneck" and r.kernel == 3 and j > 2)
    k5 = dataclasses.replace(large(), rows=tuple(rows[:i] + [dataclasses.replace(rows[i], kernel=5)] + rows[i + 1:]))
    assert net_keys(k5)[i] != keys[i]
    assert net_keys(k5)[:i] == keys[:i]
    assert net_keys(large(64))[1] != keys[1]  # the input shape is part of the key
    se = dataclasses.replace(large(), rows=tuple(rows[:i] + [dataclasses.replace(rows[i], se=0.25)] + rows[i + 1:]))
    assert net_keys(se)[i] != keys[i]
    # Different nets share a key only for the same op at the same shape.
    shared = set(net_keys(large())) & set(net_keys(small()))
    for k in shared:
        assert "in=" in k


def test_enumerate_ops_of_many_specs_is_the_union():
    ops = enumerate_ops([small(), large(), small()])
    assert {o.key for o in ops} == set(net_keys(small())) | set(net_keys(large()))


# ---- export ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 4, -1])  # stem conv, an SE + h-swish block, the head
def test_op_export_matches_torch(which):
    op = net_ops(small(64))[which]
    module = search_space.build_op(op)
    inputs = export.op_inputs(op)
    assert export.max_abs_diff(module, inputs, export.export_module(module, inputs)) < 1e-4


def test_a_wrong_export_is_caught_at_the_output_scale():
    spec = small(64)
    fresh = search_space.build(spec, seed=0).eval()
    inputs = export.random_inputs([export.net_input_shape(spec)])
    onnx = export.export_module(fresh, inputs)
    wrong = search_space.build(spec, seed=0).eval()
    with torch.no_grad():
        wrong.classifier[-1].weight.mul_(1.05)  # torch and the file now disagree by 5%
    # untrained BN: logits ~1e-9, so an absolute tolerance passes the wrong pair as well
    assert export.max_abs_diff(wrong, inputs, onnx) < 1e-4
    assert export.output_scale_diff(wrong, inputs, onnx)[1] > 1e-2
    assert export.output_scale_diff(fresh, inputs, onnx)[1] < 1e-4
    # with BN statistics from a batch the outputs have working scale and the check stays tight
    batch = torch.randn(4, *export.net_input_shape(spec)[1:], generator=torch.Generator().manual_seed(1))
    calibrated = export.set_bn_statistics(search_space.build(spec, seed=0), batch)
    with torch.no_grad():
        assert calibrated(*inputs).abs().max() > 1e3 * fresh(*inputs).abs().max()
    assert export.output_scale_diff(calibrated, inputs, export.export_module(calibrated, inputs))[1] < 1e-4


def test_net_export_matches_torch(tmp_path):
    spec = small(64)
    module = search_space.build(spec, seed=0).eval()
    inputs = export.random_inputs([export.net_input_shape(spec)])
    path = export.export_module(module, inputs, tmp_path / "net.onnx")
    assert path.exists()
    assert export.max_abs_diff(module, inputs, path) < 1e-4


def test_measuring_context_restores_affinity_and_priority():
    from latency.timing import measuring

    before = (os.sched_getaffinity(0), os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
    with measuring(dataclasses.replace(FAST, pin=True, priority="realtime")) as state:
        assert state["priority"] in ("realtime", "nice", "none")
        if state["core"] is not None:
            assert os.sched_getaffinity(0) == {state["core"]}
    assert (os.sched_getaffinity(0), os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)) == before


def test_timing_statistics_are_ordered_and_positive():
    sess = make_session(export.export_op(net_ops(small())[1]))
    st = time_session(sess, random_feeds(sess), runs=7, warmup=1)
    assert st["runs"] == 7
    for k in ("min_ms", "p10_ms", "median_ms", "mean_ms"):
        assert math.isfinite(st[k]) and st[k] > 0
    assert st["min_ms"] <= st["p10_ms"] <= st["median_ms"]


# ---- table file ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_round_trip_keeps_rows_and_metadata(small_table, tmp_path, suffix):
    table = LatencyTable.load(small_table)
    assert len(table) == len(enumerate_ops([small()]))
    assert table.meta["threads"] == 1 and table.meta["runs"] == 3 and table.meta["precision"] == "float32"
    for k in ("runtime_version", "cpu", "hostname", "created", "statistic"):
        assert table.meta[k]
    out = table.save(tmp_path / f"copy{suffix}")
    back = LatencyTable.load(out)
    assert back.meta["schema"] == table.meta["schema"] and back.meta["cpu"] == table.meta["cpu"]
    pd.testing.assert_frame_equal(back.df, table.df, check_dtype=False)
    assert all(back.ms(k) > 0 and math.isfinite(back.ms(k)) for k in back.keys())


def test_interrupted_build_keeps_rows_and_rebuild_measures_only_missing(tmp_path):
    path = tmp_path / "t.parquet"
    ops = enumerate_ops([small()])
    proto = dataclasses.replace(FAST, passes=2)
    table = new_table(path, proto)
    seen = []

    def stop_after_5(key, p, row):
        seen.append((key, p))
        if len(seen) == 5:
            raise KeyboardInterrupt("simulated Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        build_table(ops, table, proto, progress=False, on_row=stop_after_5, flush_s=1e9)
    saved = LatencyTable.load(path)
    assert sum(saved.passes(k) for k in saved.keys()) == 5  # every measured pass is on disk
    kept = {k: saved.row(k)["pass_ms"] for k in saved.keys()}

    again = []
    resumed = LatencyTable.load(path)
    build_table(ops, resumed, proto, progress=False, on_row=lambda k, p, r: again.append((k, p)))
    assert len(again) == 2 * len(ops) - 5  # only what was missing
    assert not set(again) & set(seen)
    final = LatencyTable.load(path)
    assert len(final) == len(ops) and all(final.passes(o.key) == 2 for o in ops)
    for k, v in kept.items():  # nothing measured before was lost or re-measured
        assert json.loads(final.row(k)["pass_ms"])[: len(json.loads(v))] == json.loads(v)
    assert build_table(ops, final, proto, progress=False).measured == 0


def test_extending_with_another_protocol_is_refused(small_table):
    other = dataclasses.replace(FAST, threads=2)
    with pytest.raises(UserError, match="threads"):
        LatencyTable.load_or_new(small_table, table_meta(other))
    with pytest.raises(UserError, match="precision"):
        LatencyTable.load_or_new(small_table, table_meta(FAST, "int8"))


# ---- bad files -------------------------------------------------------------------------------
def _bad_files(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(os.urandom(300))
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(b"PAR1" + os.urandom(100))
    foreign_pq = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(foreign_pq)
    foreign_csv = tmp_path / "foreign.csv"
    foreign_csv.write_text("name,value\nfoo,1\nbar,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    return [garbage, truncated, foreign_pq, foreign_csv, empty, tmp_path / "nonexistent.parquet"]


def test_corrupt_or_foreign_table_is_a_user_error(tmp_path):
    for path in _bad_files(tmp_path):
        with pytest.raises(UserError) as exc:
            LatencyTable.load(path)
        msg = str(exc.value)
        assert str(path) in msg and "\n" not in msg


def test_tampered_table_is_a_user_error(small_table, tmp_path):
    table = LatencyTable.load(small_table)
    bad_meta = table.save(tmp_path / "t.csv")
    meta_path = tmp_path / "t.csv.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["schema"] = "someone-else/table"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not a latency table"):
        LatencyTable.load(bad_meta)
    df = table.df.astype({"lat_ms": object})
    df.loc[0, "lat_ms"] = "fast"
    table.save(tmp_path / "u.csv")
    df.to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(UserError, match="corrupt"):
        LatencyTable.load(tmp_path / "u.csv")


def test_cli_bad_table_exits_2_with_one_line(tmp_path, capsys):
    for path in _bad_files(tmp_path):
        assert cli_main(["predict", "mnv3-small", "--table", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(path) in err


# ---- predict ---------------------------------------------------------------------------------
def test_missing_ops_error_names_keys_and_the_fix(small_table, tmp_path):
    table = LatencyTable.load(small_table)
    table.save(tmp_path / "t.parquet")
    table = LatencyTable.load(tmp_path / "t.parquet")
    spec = large()
    with pytest.raises(MissingOpsError) as exc:
        predict(spec, table)
    missing = [k for k in dict.fromkeys(net_keys(spec)) if k not in table]
    assert exc.value.keys == missing
    msg = str(exc.value)
    assert missing[0] in msg and f"{len(missing)} op(s)" in msg and "--measure-missing" in msg and "\n" not in msg
    p = predict(spec, table, measure_missing=True, protocol=FAST)
    assert math.isfinite(p.ms) and p.ms > 0 and p.n_ops == len(net_ops(spec))
    assert all(k in LatencyTable.load(tmp_path / "t.parquet") for k in missing)  # added and saved


def test_predict_is_sum_without_calibration_and_scaled_with(small_table):
    table = LatencyTable.load(small_table)
    spec = small()
    raw = sum(table.ms(k) for k in net_keys(spec))
    assert predict(spec, table).ms == pytest.approx(raw)
    table.meta["calibration"] = {"model": "scale", "coef": [1.25], "terms": ["sum"]}
    assert Predictor(table)(spec) == pytest.approx(1.25 * raw)


def test_calibration_fit_recovers_synthetic_models():
    rng = np.random.default_rng(0)
    s = rng.uniform(2, 10, 30)
    n = rng.integers(10, 25, 30)
    recs = [{"sum_ms": a, "n_ops": b, "measured_ms": 1.12 * a * (1 + rng.normal(0, 0.005))} for a, b in zip(s, n)]
    cal = fit_calibration(recs)
    assert cal["model"] == "scale" and cal["coef"][0] == pytest.approx(1.12, rel=0.01)
    recs = [{"sum_ms": a, "n_ops": b, "measured_ms": 1.05 * a - 0.04 * b} for a, b in zip(s, n)]
    cal = fit_calibration(recs)
    assert cal["model"] == "ops" and cal["coef"] == pytest.approx([1.05, -0.04], rel=1e-6)
    assert fit_calibration(recs[:3])["model"] in ("none", "scale")  # too few nets for 2 coefficients
    # Weights streamed from memory: a cost per million weights the op sums cannot see.
    p = rng.uniform(1, 6, 30)
    recs = [{"sum_ms": a, "n_ops": b, "params_m": c, "measured_ms": 1.03 * a - 0.3 + 0.12 * c} for a, b, c in zip(s, n, p)]
    cal = fit_calibration(recs)
    assert cal["model"] == "params" and cal["coef"] == pytest.approx([1.03, -0.3, 0.12], rel=1e-6)
    assert apply_calibration(cal, 5.0, 18, 2.0) == pytest.approx(1.03 * 5 - 0.3 + 0.24)
    with pytest.raises(ValueError):
        apply_calibration(cal, 5.0, 18)  # a params model needs the weight count
    assert fit_calibration(recs[:8])["model"] != "params"  # 3 coefficients want >= 9 nets


def test_calibration_records_without_params_get_them_from_the_spec():
    spec = small()
    rec = {"sum_ms": 1.0, "n_ops": 3, "measured_ms": 1.1, "spec": spec.to_dict()}
    from latency.predict import record_features
    from search_space.counting import count_params

    feats = record_features([rec])
    assert feats["params_m"][0] == pytest.approx(count_params(spec) / 1e6)
    with pytest.raises(UserError, match="params"):
        fit_calibration([{"sum_ms": 1.0, "n_ops": 3, "measured_ms": 1.1}] * 12, "params")


def test_spearman_without_scipy():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_build_predict_info(tmp_path, capsys):
    spec_file = tmp_path / "net.json"
    spec_file.write_text(small().to_json())
    out = tmp_path / "t.csv"
    args = ["build", "--space", str(spec_file), "--out", str(out), "--no-zoo", "--calibrate", "0", "--runs", "3",
            "--warmup", "1", "--passes", "1", "--no-pin", "--quiet-wait", "0", "--no-progress", "--resolution", "32",
            "--priority", "none"]
    assert cli_main(args) == 0
    assert out.exists() and (tmp_path / "t.csv.meta.json").exists()
    assert cli_main(args) == 0  # nothing missing: measures nothing
    assert "0 op-passes measured" in capsys.readouterr().out
    assert cli_main(["predict", str(spec_file), "--table", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["predicted_ms"] > 0 and res["n_ops"] == len(net_ops(small()))
    assert cli_main(["info", str(out)]) == 0
    assert cli_main(["predict", "mnv3-large", "--table", str(out)]) == 2  # ops missing
    err = capsys.readouterr().err
    assert "missing" in err and "--measure-missing" in err
    assert cli_main(["predict", "no-such-net", "--table", str(out)]) == 2
    assert cli_main(["build", "--space", "huge", "--out", str(tmp_path / "x.parquet"), "--no-progress"]) == 2
    assert cli_main(["build", "--space", str(spec_file), "--out", str(out), "--threads", "2", "--no-progress",
                     "--calibrate", "0"]) == 2


def test_space_sources_sample_and_enumerate(tmp_path):
    from latency.ops import get_space

    sp = get_space("small", 32)
    specs = sp.sample_specs(20, seed=3)
    assert len({s.to_json() for s in specs}) > 15 and all(s.resolution == 32 for s in specs)
    assert specs == sp.sample_specs(20, seed=3)  # deterministic
    assert {o.key for o in enumerate_ops(specs)} <= {o.key for o in sp.all_ops()}
    f = tmp_path / "nets.json"
    f.write_text(json.dumps([small().to_dict(), large().to_dict()]))
    fixed = get_space(str(f))
    assert {o.key for o in fixed.all_ops()} == {o.key for o in enumerate_ops([small(), large()])}
    with pytest.raises(UserError, match="huge"):
        get_space("huge")


# ---- INT8 and validation -----------------------------------------------------------------------
def test_int8_ops_are_quantized_and_kept_apart(tmp_path):
    import onnx

    from latency.build import op_model

    ops = enumerate_ops([small()])[:3]
    model = onnx.load_from_string(op_model(ops[1], "int8"))
    kinds = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    path = tmp_path / "int8.parquet"
    table = new_table(path, precision="int8")
    build_table(ops, table, FAST, progress=False)
    back = LatencyTable.load(path)
    assert back.precision == "int8" and all(back.ms(o.key) > 0 for o in ops)
    with pytest.raises(UserError, match="precision"):
        LatencyTable.load_or_new(path, table_meta(FAST, "float32"))


def test_validate_reports_errors_noise_and_writes_files(small_table, tmp_path):
    from latency.ops import get_space
    from latency.validate import validate

    table = LatencyTable.load(small_table)
    table.path = tmp_path / "t.parquet"
    specs = [small(), *get_space("small", 32).sample_specs(2, seed=1)]
    rep = validate(table, specs, ["zoo", "sample", "sample"], FAST, rounds=2, reference=small(), ref_every=2,
                   progress=False, out_dir=tmp_path / "out")
    s = rep.summary
    assert s["n_nets"] == 3 and len(rep.nets) == 3
    assert 0 <= s["error"]["within_5"] <= s["error"]["within_10"] <= 1
    assert s["error"]["median_abs"] >= 0 and math.isfinite(s["noise"]["median_abs"])
    assert -1 <= s["spearman"] <= 1 and s["drift"]["reference_samples"] >= 2
    assert (rep.nets["measured_ms"] > 0).all() and (rep.nets["predicted_ms"] > 0).all()
    for suffix in (".csv", ".json", ".png", "_rounds.parquet"):
        assert (tmp_path / "out" / f"latency_validation{suffix}").stat().st_size > 0
    assert len(rep.lines()) == 4


def test_calibration_nets_are_scored_leave_one_out(small_table, tmp_path):
    from latency.ops import get_space
    from latency.predict import calibrate, loo_coefficients
    from latency.validate import validate

    table = LatencyTable.load(small_table)
    table.path = tmp_path / "t.parquet"
    space = get_space("small", 32)
    cal_specs = space.sample_specs(4, seed=5)
    cal = calibrate(table, cal_specs, FAST, rounds=2, model="scale", progress=False)
    loo = loo_coefficients(cal)
    assert set(loo) == {s.name for s in cal_specs}
    full = cal["coef"][0]
    assert all(len(c) == 1 and abs(c[0] / full - 1) < 0.5 for c in loo.values())
    assert any(c[0] != full for c in loo.values())  # each refit saw one net fewer
    held = space.sample_specs(2, seed=6)
    rep = validate(table, cal_specs[:2] + held, ["sample"] * 4, FAST, rounds=2, progress=False)
    nets = rep.nets.set_index("net")
    assert nets.loc[cal_specs[0].name, "in_calibration"] and math.isfinite(nets.loc[cal_specs[0].name, "loo_error"])
    assert not math.isfinite(nets.loc[held[0].name, "loo_error"])
    assert rep.summary["n_nets"] == 2  # calibration nets are not counted as held-out nets
    assert set(rep.summary["error_calibration_nets_loo_by_net"]) == {s.name for s in cal_specs[:2]}
    assert "each predicted by a fit without it" in rep.lines()[-1]


def test_settling_passes_measure_only_what_disagrees(tmp_path, monkeypatch):
    from latency import timing

    proto = dataclasses.replace(FAST, passes=2, settle=0.01, max_passes=4)
    assert proto.wants_more([1.0]) and not proto.wants_more([1.0, 1.005]) and proto.wants_more([1.0, 1.5])
    assert not proto.wants_more([1.0, 1.5, 1.4, 1.3])  # capped at max_passes
    ops = enumerate_ops([small()])[:2]
    script = {ops[0].key: [1.0, 1.5, 1.004, 9.0], ops[1].key: [2.0, 2.001, 9.0, 9.0]}

    def fake_measure(self, name):
        v = script[name].pop(0)
        return {"min_ms": v, "p10_ms": v, "median_ms": v, "mean_ms": v, "std_ms": 0.0, "runs": 3,
                "other_load": 0.0, "value_ms": v}

    monkeypatch.setattr(timing.Timer, "measure", fake_measure)
    table = new_table(tmp_path / "s.parquet", proto)
    rep = build_table(ops, table, proto, progress=False)
    assert table.passes(ops[0].key) == 3 and table.passes(ops[1].key) == 2 and rep.measured == 5
    assert table.ms(ops[0].key) == 1.0 and table.ms(ops[1].key) == 2.0
    assert build_table(ops, table, proto, progress=False).measured == 0


def test_nets_are_timed_in_short_rounds_and_reduced_across_rounds():
    from latency.e2e import NetTimes, measure_nets

    # end-to-end rounds use net_runs, not the ops' runs: with one run per round min == median
    times = measure_nets([small()], dataclasses.replace(FAST, runs=7, net_runs=1, net_warmup=0), rounds=3,
                         progress=False)
    assert len(times.rounds) == 3 and (times.rounds["min_ms"] == times.rounds["median_ms"]).all()

    rounds = pd.DataFrame({"net": "a", "round": range(6), "value_ms": [1.0, 2, 3, 4, 5, 6], "other_load": 0.0})
    t = NetTimes(rounds, pd.DataFrame(), FAST, ["a"])
    expect = {"min": (1, 1, 2), "median": (3.5, 3, 4), "p25": (2.25, 2, 3), "mean": (3.5, 3, 4)}
    for across, (measured, even, odd) in expect.items():
        row = t.summary(across).loc["a"]
        assert (row["measured_ms"], row["half_a_ms"], row["half_b_ms"]) == pytest.approx((measured, even, odd))
        assert row["round_min_ms"] == 1 and row["rounds"] == 6
    with pytest.raises(KeyError):
        t.summary("max")


@pytest.mark.parametrize("field, value, flag", [("net_runs", 0, "--net-runs"), ("net_warmup", -1, "--net-warmup")])
def test_protocol_rejects_bad_net_rounds(field, value, flag):
    with pytest.raises(UserError, match=flag):
        Protocol(**{field: value})


def test_machine_speed_compares_only_nets_timed_alike():
    from latency.validate import machine_speed

    recs = [{"name": f"n{i}", "measured_ms": 1.0 + i} for i in range(4)]
    now = {f"n{i}": 1.1 * (1.0 + i) for i in range(4)}
    cal = {"records": recs, "net_runs": 5}
    speed = machine_speed(cal, None, {}, now, net_runs=5)
    assert speed["corrected"] and speed["factor"] == pytest.approx(1.1) and speed["nets"] == 4
    for other in ({"records": recs}, {"records": recs, "net_runs": 100}):  # long rounds then, short now
        speed = machine_speed(other, None, {}, now, net_runs=5)
        assert not speed["corrected"] and speed["factor"] == 1.0 and "other end-to-end rounds" in speed["why"]
