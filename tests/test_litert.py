"""LiteRT beside onnxruntime: conversion from the same builder, tables, refusals, the runner.

Converting needs the `litert` extra (litert-torch: ~5 s to import, ~1 s per op), so these
tests convert a handful of small ops at 32 px, with a converted-file cache shared by the
module; the standalone runner is run in a venv holding only ai-edge-litert and numpy.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import search_space
from latency import litert
from latency.ops import enumerate_ops
from search_space.errors import UserError

pytestmark = pytest.mark.skipif(not litert.available(), reason="needs the litert extra (pip install -e '.[litert]')")


@pytest.fixture(scope="module", autouse=True)
def litert_cache(tmp_path_factory):
    """Converted files cached in a folder of this module's own (not the user's ~/.cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MNV3_NAS_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def small32():
    return dataclasses.replace(search_space.zoo("mnv3-small"), resolution=32)


def few_ops():
    """Three ops of MobileNetV3-Small at 32 px: the stem, a block with SE and residual, the head."""
    ops = enumerate_ops([small32()])
    se_res = next(o for o in ops if "se" in o.key and o.key.endswith("res"))
    head = next(o for o in ops if o.kind == "head")
    return [ops[0], se_res, head]


def test_converted_ops_match_torch_and_run_in_one_delegate():
    from latency.export import op_inputs
    from latency.runner import make_session
    from search_space.latency_ops import build_op

    for op in few_ops():
        data = litert.convert_op(op)
        torch.manual_seed(0)
        module = build_op(op).eval()
        x = op_inputs(op)
        with torch.no_grad():
            ref = module(*x)
        ref = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        got = litert.run(data, [t.numpy() for t in x])
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            assert np.abs(a - b).max() / np.abs(a).max() < 1e-4, op.key
        sess = make_session(data, runtime="litert")
        assert sess.fully_delegated(), op.key
        if len(op.input_shapes[0]) == 4:  # channels-last I/O: no transpose at the ends of a lone op
            n, c, h, w = op.input_shapes[0]
            assert sess.input_specs()[0][1] == [n, h, w, c]
        assert litert.convert_op(op) == data  # cached: same bytes, no second conversion


def test_a_wrong_model_is_caught_by_the_relative_check():
    """The check that passes a right conversion fails a wrong one (another op's weights)."""
    from latency.export import op_inputs
    from search_space.latency_ops import build_op

    op = few_ops()[1]
    torch.manual_seed(0)
    module = build_op(op).eval()
    x = op_inputs(op)
    with torch.no_grad():
        ref = module(*x).numpy()
    torch.manual_seed(1)
    other = litert.convert_module(build_op(op).eval(), x)
    got = litert.run(other, [t.numpy() for t in x])[0]
    assert np.abs(ref - got).max() / np.abs(ref).max() > 1e-2


def test_int8_ops_are_quantized_and_close_to_torch():
    """INT8 (PT2E static) conversions: integer tensors inside, integer image input fed
    quantized by the runner, outputs within quantization error of the float op."""
    from latency.build import op_model, table_meta
    from latency.export import op_inputs
    from latency.runner import make_session, random_feeds
    from latency.timing import Protocol
    from search_space.latency_ops import build_op

    stem, _, head = few_ops()
    for op in (stem, head):
        data = op_model(op, "int8", runtime="litert")
        assert data != litert.convert_op(op)  # not the float file
        sess = make_session(data, runtime="litert")
        assert sum(d["dtype"] == np.int8 for d in sess.interpreter.get_tensor_details()) >= 3, op.key
        assert sess.delegate_partitions() >= 1, op.key
        assert sess.input_specs()[0][2] is np.int8, op.key  # the first op quantizes its own input
        feed = next(iter(random_feeds(sess).values()))
        assert feed.dtype == np.int8 and len(np.unique(feed)) > 20  # quantized normal values, not 0/1
        torch.manual_seed(0)
        module = build_op(op).eval()
        x = op_inputs(op)
        with torch.no_grad():
            ref = module(*x).numpy()
        got = litert.run(data, [t.numpy() for t in x])[0]
        assert got.dtype == np.float32 and got.shape == ref.shape
        rms = float(np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
        assert rms < 0.1 and np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99, (op.key, rms)
        assert op_model(op, "int8", runtime="litert") == data  # cached
    meta = table_meta(Protocol(runtime="litert"), "int8")
    assert meta["precision"] == "int8" and "PT2E" in meta["quantization"]
    with pytest.raises(UserError, match="int4"):
        op_model(stem, "int4", runtime="litert")


def test_build_litert_table_then_refuse_the_other_runtime(tmp_path, capsys):
    from latency.cli import main as cli_main
    from latency.table import LatencyTable

    spec_file = tmp_path / "net.json"
    spec_file.write_text(small32().to_json())
    table = tmp_path / "litert.parquet"
    quick = ["--runs", "3", "--warmup", "1", "--passes", "1", "--quiet-wait", "0", "--priority", "none",
             "--no-progress"]
    assert cli_main(["build", "--space", str(spec_file), "--out", str(table), "--no-zoo", "--calibrate", "1",
                     "--calibration-rounds", "2", "--resolution", "32", "--runtime", "litert", *quick]) == 0
    t = LatencyTable.load(table)
    assert t.meta["runtime"] == "litert" and t.meta["runtime_version"].startswith("2.")
    assert "litert-torch" in t.meta["exporter"]
    assert len(t) == len(enumerate_ops([small32()])) and all(t.ms(k) > 0 for k in t.keys())
    assert t.calibration and t.calibration["records"][0]["measured_ms"] > 0
    capsys.readouterr()
    # predicted with the table it was built as; refused where onnxruntime is expected
    assert cli_main(["predict", str(spec_file), "--table", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == "litert"
    assert cli_main(["predict", str(spec_file), "--table", str(table), "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert "litert" in err and "--runtime onnxruntime" in err and len(err.splitlines()) == 1
    # extending it with the other runtime, or an onnxruntime table with LiteRT, is refused
    assert cli_main(["build", "--space", str(spec_file), "--out", str(table), "--no-zoo", "--calibrate", "0",
                     "--resolution", "32", "--runtime", "onnxruntime", *quick]) == 2
    ort_table = tmp_path / "ort.parquet"
    assert cli_main(["build", "--space", str(spec_file), "--out", str(ort_table), "--no-zoo", "--calibrate", "0",
                     "--resolution", "32", *quick]) == 0
    assert LatencyTable.load(ort_table).meta["runtime"] == "onnxruntime"
    capsys.readouterr()
    assert cli_main(["validate", "--table", str(ort_table), "--samples", "0", "--runtime", "litert"]) == 2
    assert "onnxruntime" in capsys.readouterr().err


def test_protocol_rejects_unknown_runtime():
    from latency.timing import Protocol

    with pytest.raises(UserError, match="tflite"):
        Protocol(runtime="tflite")


@pytest.fixture(scope="module")
def litert_only_python(tmp_path_factory):
    """A venv holding ai-edge-litert + numpy only (pip's local mirror; no torch, no onnxruntime)."""
    venv = tmp_path_factory.mktemp("litertvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "ai-edge-litert==2.3.*",
                        "numpy"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for mod in ("torch", "onnxruntime", "pandas"):
        assert subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True).returncode != 0, mod
    return py


def test_litert_runner_in_minimal_venv_then_import(tmp_path, litert_only_python):
    from latency.remote import export_ops, import_csv

    spec = small32()
    ops = enumerate_ops([spec])
    folder = export_ops(ops, tmp_path / "ops", nets=[spec], progress=False, space="test", runtime="litert")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["runtime"] == "litert" and all(e["file"].endswith(".tflite") for e in manifest["ops"])
    out = tmp_path / "device.csv"
    r = subprocess.run([str(litert_only_python), "runner.py", str(folder), "--out", str(out), "--runs", "3",
                        "--warmup", "1", "--passes", "1", "--quiet-wait", "0", "--priority", "none", "--settle", "0",
                        "--net-rounds", "3", "--net-runs", "2"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    side = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert side["runtime"] == "litert" and side["runtime_version"].startswith("2.")
    table = import_csv(out, folder, tmp_path / "device.parquet")
    assert table.meta["runtime"] == "litert"
    assert len(table) == len({o.key for o in ops}) and all(table.ms(k) > 0 for k in table.keys())
    assert table.calibration and table.calibration["nets"] == 1
    # the same folder, onnxruntime's export beside it, is refused (a folder holds one runtime's files)
    with pytest.raises(UserError, match="litert"):
        export_ops(ops[:1], folder, progress=False)
    # an onnxruntime folder timed into the LiteRT CSV: the same op keys, but not the same measurements
    from latency import runner

    ort_folder = export_ops(ops[:1], tmp_path / "ort", progress=False)
    assert runner.main([str(ort_folder), "--out", str(out), "--runs", "2", "--passes", "1", "--quiet-wait", "0",
                        "--priority", "none", "--no-pin"]) == 2
    with pytest.raises(UserError, match="litert"):
        import_csv(out, ort_folder, tmp_path / "x.parquet")


def test_nas_export_tflite_checks_against_torch(tmp_path, capsys):
    from nas.cli import main as nas_main

    spec_file = tmp_path / "net.json"
    spec_file.write_text(small32().to_json())
    out = tmp_path / "net.tflite"
    assert nas_main(["export", str(spec_file), "--tflite", str(out), "--onnx", str(tmp_path / "net.onnx")]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 0 and "LiteRT vs torch" in text and "onnxruntime vs torch" in text
    rel = float(text.split("LiteRT vs torch")[1].split(",")[1].split()[0])
    assert rel < 1e-4
    assert nas_main(["export", str(spec_file)]) == 2
    assert "--onnx" in capsys.readouterr().err
