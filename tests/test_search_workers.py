"""`nas search` as real processes: kill and resume, several workers on one study.

Everything is real but tiny: a small custom search space (a JSON file), a latency table
measured here with onnxruntime at 32x32 (a quick protocol: 1 pass of 5 runs), proxy training
of a few SGD steps at 16x16 on a few hundred Fashion-MNIST images (random images when the
Debian package is missing), and, for the shared study, a private PostgreSQL server
(tests/pg.py; skipped with the reason when the server binaries are missing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import pg
from nas import study as st

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
def search_cmd(tiny, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "search", "--space", tiny["space"], "--data", str(tiny["data"]),
            "--table", tiny["table"], "--resolution", "32", "--calibrate", "0",
            "--steps", "3", "--batch-size", "16", "--proxy-resolution", "16", "--val-size", "64",
            "--max-train-images", "256", "--threads", "1", "--zoo-reference", "none",
            "--target-ms", f"{tiny['target']:.6f}", "--w", "-0.07", "--no-progress", "--no-plots",
            "--out", str(out), *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _journal_study(path: Path, name: str = "nas-search"):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))
    except KeyError:
        return None


def test_table_was_measured_for_the_space(tiny):
    from latency.table import LatencyTable

    table = LatencyTable.load(tiny["table"])
    assert "tiny" in table.meta["spaces"]
    assert all(table.ms(k) > 0 for k in table.keys())


def test_missing_ops_are_measured_on_the_spot(tiny, tmp_path):
    import dataclasses
    import shutil

    from latency.table import LatencyTable
    from nas.search import TableLatency
    from search_space import zoo

    path = tmp_path / "table.parquet"
    shutil.copy(tiny["table"], path)
    table = LatencyTable.load(path)
    lat = TableLatency(table)
    net = dataclasses.replace(zoo("mnv3-small-075"), resolution=32)  # not a net of the tiny space
    ms = lat(net)
    assert ms > 0 and len(LatencyTable.load(path)) > tiny["n_ops"]  # measured, added, saved
    assert lat(net) == ms


def test_killed_search_resumes_without_losing_trials(tiny, tmp_path):
    out = tmp_path / "run"
    cmd = search_cmd(tiny, out, "--controller", "rl", "--trials", "6", "--seed", "3")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    before: dict[int, tuple] = {}
    killed_running = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            study = _journal_study(out / "study.log") if (out / "study.log").exists() else None
            if study is not None:
                trials = study.get_trials()
                done = [t for t in trials if t.state == TrialState.COMPLETE]
                running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker")]
                if len(done) >= 2 and (running or len(done) >= 4):
                    proc.send_signal(signal.SIGKILL)  # no chance to clean up
                    proc.wait(30)
                    study = _journal_study(out / "study.log")
                    trials = study.get_trials()
                    before = {t.number: (t.params, t.user_attrs["accuracy"], t.user_attrs["reward"])
                              for t in trials if t.state == TrialState.COMPLETE}
                    killed_running = [t.number for t in trials if t.state == TrialState.RUNNING
                                      and "spec" in t.user_attrs]  # its net was decided
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert before, f"the first run never completed 2 trials: {proc.stdout.read().decode()[-3000:]}"
    assert len(before) < 6

    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    study = _journal_study(out / "study.log")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # each trial recorded once
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 6
    for n, (params, acc, reward) in before.items():  # nothing completed was lost or redone
        assert trials[n].state == TrialState.COMPLETE
        assert trials[n].params == params and trials[n].user_attrs["accuracy"] == acc
        assert trials[n].user_attrs["reward"] == reward
    for n in killed_running or []:  # the cut-off trial is failed and its choices run again
        assert trials[n].state == TrialState.FAIL
        assert "died" in trials[n].user_attrs["failed_because"]
        retry = [t for t in trials if t.user_attrs.get("retry_of") == n]
        assert len(retry) == 1 and retry[0].params == trials[n].params
    assert "resuming" in res.stderr
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == len(trials) and (df["state"] == "COMPLETE").sum() == 6
    spec = json.loads((out / "best.json").read_text())
    assert spec["resolution"] == 32 and spec["schema"] == "mnv3-nas/arch-spec"
    assert "best trial" in (out / "best_table.txt").read_text()
    # the best net's proxy-trained weights fit its training spec (a start for NetAdapt)
    import torch

    from search_space import ArchSpec, build

    meta = json.loads((out / "best_weights.json").read_text())
    assert trials[meta["trial"]].state == TrialState.COMPLETE
    model = build(ArchSpec.load(out / "best_train.json"))
    model.load_state_dict(torch.load(out / "best_weights.pt", weights_only=True))


def _run_workers(tiny, tmp_path, storage: str, trials: int, n: int = 3) -> list[subprocess.CompletedProcess]:
    procs = []
    for i in range(n):
        cmd = search_cmd(tiny, tmp_path / f"worker{i}", "--controller", "tpe", "--trials", str(trials),
                         "--storage", storage, "--study", "shared", "--steps", "12")
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def _check_shared(study: optuna.Study, trials: int, results) -> None:
    for r in results:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    all_trials = study.get_trials()
    numbers = [t.number for t in all_trials]
    assert sorted(numbers) == list(range(len(numbers)))  # unique and contiguous
    done = [t for t in all_trials if t.state == TrialState.COMPLETE]
    assert len(done) == trials  # exactly the budget, no overshoot
    assert not [t for t in all_trials if t.state == TrialState.RUNNING]
    assert all("accuracy" in t.user_attrs and "reward" in t.user_attrs for t in done)
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) >= 2, f"only {workers} ran trials"
    assert study.user_attrs[st.SETTINGS_ATTR]["space"] == "tiny"


@pytest.mark.slow
def test_three_workers_share_a_journal_file(tiny, tmp_path):
    storage = str(tmp_path / "shared.log")
    results = _run_workers(tiny, tmp_path, storage, trials=9)
    _check_shared(_journal_study(Path(storage), "shared"), 9, results)


@pytest.fixture(scope="module")
def postgres():
    reason = pg.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pg.PgServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_three_workers_share_a_postgres_study(tiny, tmp_path, postgres):
    # the three start at once on an empty database: table creation races are retried
    results = _run_workers(tiny, tmp_path, postgres.url, trials=9)
    study = optuna.load_study(study_name="shared", storage=postgres.url)
    _check_shared(study, 9, results)
    # any worker (or a later call) regenerates the results from the study alone
    from nas.search import SearchConfig, run_search

    out = tmp_path / "report"
    rep = run_search(SearchConfig(space=tiny["space"], controller="tpe", storage=postgres.url, study="shared",
                                  out=out, report_only=True, progress=False, plots=False))
    assert rep.ran == 0 and rep.completed == 9
    df = pd.read_csv(out / "trials.csv")
    assert (df["state"] == "COMPLETE").sum() == 9
    assert rep.best["number"] in set(df["number"])
