"""The standalone runner in a virtual environment holding only onnxruntime and numpy.

export-ops -> runner.py (minimal venv, its own folder as cwd) -> import -> table. Also
checks that the runner resumes (rows already in the CSV are not measured again) and that
runner.py imports nothing from the package.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

import search_space
from latency.ops import enumerate_ops
from latency.remote import export_ops, import_csv
from latency.runner import CSV_COLUMNS
from latency.table import LatencyTable
from search_space.errors import UserError

RUNNER = Path(__file__).resolve().parents[1] / "latency" / "runner.py"


def test_runner_imports_only_stdlib_numpy_and_a_runtime():
    tree = ast.parse(RUNNER.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "runner.py must not use relative imports"
            mods.add(node.module.split(".")[0])
    third_party = mods - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= {"numpy", "onnxruntime", "ai_edge_litert"}, third_party


@pytest.fixture(scope="module")
def minimal_python(tmp_path_factory) -> Path:
    """A venv with onnxruntime + numpy only (pip's local wheel mirror; no network)."""
    venv = tmp_path_factory.mktemp("minvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "onnxruntime", "numpy"],
                       capture_output=True, text=True)
    if r.returncode != 0:  # older pip without --python: bootstrap the venv's own pip
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "onnxruntime", "numpy"], check=True)
    probe = subprocess.run([str(py), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, "the minimal venv must not see torch"
    probe = subprocess.run([str(py), "-c", "import pandas"], capture_output=True)
    assert probe.returncode != 0, "the minimal venv must not see pandas"
    return py


def _read(csv_path):
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_runner_in_minimal_venv_then_import(tmp_path, minimal_python):
    spec = dataclasses.replace(search_space.zoo("mnv3-small"), resolution=32)
    ops = enumerate_ops([spec])
    folder = export_ops(ops, tmp_path / "ops", nets=[spec], progress=False, space="test")
    assert (folder / "runner.py").read_text() == RUNNER.read_text()
    out = tmp_path / "device.csv"
    base = [str(minimal_python), "runner.py", str(folder), "--out", str(out), "--runs", "3", "--warmup", "1",
            "--passes", "2", "--quiet-wait", "0", "--priority", "none", "--settle", "0",
            "--net-rounds", "4", "--net-runs", "2"]
    # A first, partial run (as if interrupted), then the full run: only the rest is measured.
    r = subprocess.run(base + ["--limit", "3"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(_read(out)) == 3 * 2
    r = subprocess.run(base, cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = _read(out)
    # the ops in passes, then the calibration net in its own short rounds
    net_rows = [x for x in rows if x["key"].startswith("net:")]
    assert len(rows) == len(ops) * 2 + 4 and len(net_rows) == 4
    assert sorted(int(x["pass"]) for x in net_rows) == [0, 1, 2, 3] and {x["runs"] for x in net_rows} == {"2"}
    assert len({(x["key"], x["pass"]) for x in rows}) == len(rows)
    assert list(rows[0]) == CSV_COLUMNS
    for x in rows:
        assert float(x["min_ms"]) > 0 and math.isfinite(float(x["median_ms"]))
    assert (tmp_path / "device.csv.meta.json").exists()
    # Bad input: a different --runs on an existing CSV is refused with exit 2.
    r = subprocess.run(base + ["--runs", "5"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 2 and "--runs" in r.stderr

    table = import_csv(out, folder, tmp_path / "device.parquet")
    assert len(table) == len(ops)
    back = LatencyTable.load(tmp_path / "device.parquet")
    assert back.meta["runs"] == 3 and back.meta["passes"] == 2 and back.meta["cpu"]
    assert all(back.passes(o.key) == 2 and back.ms(o.key) > 0 for o in ops)
    cal = back.calibration
    assert cal and cal["nets"] == 1 and cal["records"][0]["measured_ms"] > 0
    assert cal["rounds"] == 4 and cal["net_runs"] == 2
    net = [x for x in rows if x["key"].startswith("net:")]
    assert cal["records"][0]["measured_ms"] == pytest.approx(min(float(x["min_ms"]) for x in net), rel=1e-5)


def test_import_rejects_foreign_csv(tmp_path):
    spec = dataclasses.replace(search_space.zoo("mnv3-small"), resolution=32)
    folder = export_ops(enumerate_ops([spec])[:2], tmp_path / "ops", progress=False)
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a runner CSV"):
        import_csv(bad, folder, tmp_path / "t.parquet")
    with pytest.raises(UserError, match="no manifest"):
        import_csv(bad, tmp_path, tmp_path / "t.parquet")


def test_runner_settling_and_resume_in_process(tmp_path, monkeypatch):
    from latency import runner

    spec = dataclasses.replace(search_space.zoo("mnv3-small"), resolution=32)
    ops = enumerate_ops([spec])[:2]
    folder = export_ops(ops, tmp_path / "ops", progress=False)
    script = {ops[0].key: [1.0, 1.5, 1.004, 9.0], ops[1].key: [2.0, 2.001, 9.0, 9.0]}

    def fake(folder, op, threads, runs, warmup, seed, runtime="onnxruntime"):
        v = script[op["key"]].pop(0)
        return {"min_ms": v, "p10_ms": v, "median_ms": v, "mean_ms": v, "std_ms": 0.0, "runs": runs}, 0.0

    monkeypatch.setattr(runner, "_time_entry", fake)
    out = tmp_path / "t.csv"
    runner.run_folder(folder, out, runs=3, warmup=1, passes=2, settle=0.01, max_passes=4, quiet_wait=0,
                      progress=False, priority="none", pin=False)
    rows = _read(out)
    assert sorted((r["key"] == ops[0].key, int(r["pass"])) for r in rows) == [(False, 0), (False, 1), (True, 0), (True, 1), (True, 2)]
    runner.run_folder(folder, out, runs=3, warmup=1, passes=2, settle=0.01, max_passes=4, quiet_wait=0,
                      progress=False, priority="none", pin=False)
    assert len(_read(out)) == 5  # nothing missing: nothing measured
    table = import_csv(out, folder)
    assert table.ms(ops[0].key) == 1.0 and table.passes(ops[0].key) == 3


def test_cli_export_ops_runner_import(tmp_path, capsys):
    from latency import runner
    from latency.cli import main as cli_main

    spec = dataclasses.replace(search_space.zoo("mnv3-small"), resolution=32)
    spec_file = tmp_path / "net.json"
    spec_file.write_text(spec.to_json())
    folder = tmp_path / "dev"
    assert cli_main(["export-ops", "--space", str(spec_file), "--out", str(folder), "--no-zoo", "--calibrate", "1",
                     "--no-progress", "--resolution", "32"]) == 0
    assert (folder / "manifest.json").exists() and (folder / "runner.py").exists()
    csv_path = tmp_path / "dev.csv"
    assert runner.main([str(folder), "--out", str(csv_path), "--runs", "2", "--warmup", "0", "--passes", "1",
                        "--settle", "0", "--priority", "none", "--no-pin", "--quiet-wait", "0"]) == 0
    # net rows of other rounds are not mixed in, even without the sidecar (an older runner's CSV)
    Path(str(csv_path) + ".meta.json").unlink()
    assert runner.main([str(folder), "--out", str(csv_path), "--runs", "2", "--warmup", "0", "--passes", "1",
                        "--settle", "0", "--priority", "none", "--no-pin", "--net-runs", "3"]) == 2
    assert "--net-runs" in capsys.readouterr().err
    table_path = tmp_path / "dev.parquet"
    assert cli_main(["import", str(csv_path), "--manifest", str(folder), "--out", str(table_path)]) == 0
    assert cli_main(["predict", str(spec_file), "--table", str(table_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"predicted_ms"' in out
    assert cli_main(["import", str(spec_file), "--manifest", str(folder), "--out", str(tmp_path / "x.parquet")]) == 2


@pytest.mark.parametrize("flag, value", [("--net-runs", "0"), ("--net-rounds", "0"), ("--net-warmup", "-1")])
def test_runner_rejects_bad_net_rounds(tmp_path, capsys, flag, value):
    from latency import runner

    assert runner.main([str(tmp_path), flag, value]) == 2
    assert flag in capsys.readouterr().err
