"""The search loop, storage helpers and results, in process.

Accuracy and latency are injected here (the pieces not under test): accuracy is a smooth
deterministic function of the net's MAdds and latency is MAdds / 1e7 "ms" — test stand-ins
only. Real proxy training and a real latency table run in test_search_workers.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas import study as st
from nas.results import pareto_indices, reach_index
from nas.search import SearchConfig, run_search
from search_space import ArchSpec, count_madds
from search_space.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def fake_latency(spec: ArchSpec) -> float:
    """Test stand-in for the latency table: MAdds / 1e7."""
    return count_madds(spec) / 1e7


def fake_accuracy(spec: ArchSpec) -> float:
    """Test stand-in for proxy training: more MAdds, more accuracy (saturating)."""
    return 0.7 + 0.2 * math.tanh(count_madds(spec) / 3e6)


def config(tmp_path, **kw) -> SearchConfig:
    base = dict(space="small", controller="random", trials=6, out=tmp_path / "out", target_ms=5.0,
                progress=False, zoo_reference=(), seed=0, plots=False)
    base.update(kw)
    return SearchConfig(**base)


def load(tmp_path, name="nas-search") -> optuna.Study:
    storage = st.open_storage(st.parse_storage(None, tmp_path / "out"))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.parametrize("controller", ["random", "tpe", "nsga2", "rl", "evolution"])
def test_each_controller_completes_the_budget(tmp_path, controller):
    out = run_search(config(tmp_path, controller=controller, trials=5, plots=controller in ("rl", "nsga2")),
                     evaluate_accuracy=fake_accuracy,
                     latency_fn=fake_latency)
    assert out.completed == 5 and out.failed == 0
    study = load(tmp_path)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 5
    for t in done:
        ua = t.user_attrs
        spec = ArchSpec.from_json(ua["spec"])
        assert spec.resolution == 224 and spec.num_classes == 1000 and spec.in_channels == 3
        assert ua["latency_ms"] == pytest.approx(fake_latency(spec))
        assert ua["reward"] == pytest.approx(ua["accuracy"] * (ua["latency_ms"] / 5.0) ** -0.15)
        if controller == "nsga2":
            assert t.values == pytest.approx([ua["accuracy"], ua["latency_ms"]])
        else:
            assert t.value == pytest.approx(ua["reward"])
    # the known point (MobileNetV3-Small's nearest) is evaluated first
    assert done[0].user_attrs.get("known_point") == "mnv3-small"
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"trials.csv", "best.json", "best_table.txt", "pareto.csv", "summary.json", "study.log"} <= files
    if controller in ("rl", "nsga2"):
        assert {"accuracy_latency.png", "history.png"} <= files
    df = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(df["number"]) == list(range(5))
    assert {"accuracy", "latency_ms", "reward", "seconds", "spec", "s1_kernel", "s5_width"} <= set(df.columns)
    best = max(done, key=lambda t: t.user_attrs["reward"])
    best_spec = ArchSpec.load(tmp_path / "out" / "best.json")
    assert best_spec.rows == ArchSpec.from_json(best.user_attrs["spec"]).rows
    table = (tmp_path / "out" / "best_table.txt").read_text()
    assert f"best trial {best.number}" in table and "mnv3-small" in table
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["best"]["number"] == best.number
    assert summary["settings"]["controller"] == controller


def test_resume_continues_to_the_total(tmp_path):
    run_search(config(tmp_path, trials=3), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    first = {t.number: (t.params, t.user_attrs["reward"]) for t in load(tmp_path).trials}
    out = run_search(config(tmp_path, trials=7), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    assert out.completed == 7 and out.ran == 4
    trials = load(tmp_path).trials
    assert [t.number for t in trials] == list(range(7))
    for n, (params, r) in first.items():
        assert trials[n].params == params and trials[n].user_attrs["reward"] == r
    # a resumed random search does not replay its first samples
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 7
    # nothing left to do: a third run runs no trial
    again = run_search(config(tmp_path, trials=7), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    assert again.ran == 0 and again.completed == 7


def test_diverged_trials_fail_and_the_search_goes_on(tmp_path):
    calls = []

    def flaky(spec):
        calls.append(spec)
        return float("nan") if len(calls) % 3 == 0 else fake_accuracy(spec)

    out = run_search(config(tmp_path, trials=6, enqueue_known=False), evaluate_accuracy=flaky,
                     latency_fn=fake_latency)
    assert out.completed == 6
    study = load(tmp_path)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) >= 2
    assert all(t.user_attrs.get("diverged") for t in failed)
    df = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert (df["state"] == "FAIL").sum() == len(failed)


def test_a_crashing_evaluation_fails_the_trial_only(tmp_path):
    calls = []

    def crashes_once(spec):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return fake_accuracy(spec)

    out = run_search(config(tmp_path, trials=3, enqueue_known=False), evaluate_accuracy=crashes_once,
                     latency_fn=fake_latency)
    assert out.completed == 3 and out.failed == 1


def test_failures_stop_the_run(tmp_path):
    out = run_search(config(tmp_path, trials=3, max_failures=2, enqueue_known=False),
                     evaluate_accuracy=lambda s: float("nan"), latency_fn=fake_latency)
    assert out.stopped == "failures" and out.completed == 0 and out.failed == 2


def test_identical_nets_are_not_trained_twice(tmp_path):
    calls = []

    def counting(spec):
        calls.append(spec)
        return fake_accuracy(spec)

    from search_space.spaces import get_space

    space = get_space("small")
    cfg = config(tmp_path, trials=3, enqueue_known=False)
    run_search(cfg, evaluate_accuracy=counting, latency_fn=fake_latency)
    study = load(tmp_path)
    study.enqueue_trial(study.trials[0].params)
    run_search(config(tmp_path, trials=4, enqueue_known=False), evaluate_accuracy=counting, latency_fn=fake_latency)
    t = load(tmp_path).trials[3]
    assert t.user_attrs["reused_from"] == 0
    assert t.user_attrs["accuracy"] == load(tmp_path).trials[0].user_attrs["accuracy"]
    assert len(calls) == 3
    assert space.code(t.params) == t.user_attrs["arch"]


def test_resume_with_other_settings_is_refused(tmp_path):
    run_search(config(tmp_path, trials=2), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    with pytest.raises(UserError, match="alpha"):
        run_search(config(tmp_path, trials=3, w=-0.07), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    with pytest.raises(UserError, match="target_ms"):
        run_search(config(tmp_path, trials=3, target_ms=6.0), evaluate_accuracy=fake_accuracy,
                   latency_fn=fake_latency)
    with pytest.raises(UserError, match="--controller|controller"):
        run_search(config(tmp_path, trials=3, controller="tpe"), evaluate_accuracy=fake_accuracy,
                   latency_fn=fake_latency)
    with pytest.raises(UserError, match="minimize|controller"):
        run_search(config(tmp_path, trials=3, controller="nsga2"), evaluate_accuracy=fake_accuracy,
                   latency_fn=fake_latency)


def test_target_like_takes_a_zoo_nets_latency(tmp_path):
    from search_space import zoo

    out = run_search(config(tmp_path, trials=2, target_ms=None, target_like="mnv3-small-075",
                            zoo_reference=("mnv3-small",)),
                     evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    s = out.summary["settings"]
    assert s["target_like"] == "mnv3-small-075"
    assert s["target_ms"] == pytest.approx(fake_latency(zoo("mnv3-small-075")))
    z = out.summary["zoo"]["mnv3-small"]
    assert z["latency_ms"] == pytest.approx(fake_latency(zoo("mnv3-small")))
    trained_as = dataclasses.replace(zoo("mnv3-small"), resolution=32, in_channels=1, num_classes=10)
    assert z["accuracy"] == pytest.approx(fake_accuracy(trained_as))
    assert "mnv3-small" in out.summary["vs_zoo"]
    # cached in the study: a resume does not train it again
    calls = []
    run_search(config(tmp_path, trials=2, target_ms=None, target_like="mnv3-small-075", zoo_reference=("mnv3-small",)),
               evaluate_accuracy=lambda s: calls.append(s) or fake_accuracy(s), latency_fn=fake_latency)
    assert calls == []


def test_dead_workers_trial_is_failed_and_run_again(tmp_path):
    run_search(config(tmp_path, trials=2, enqueue_known=False), evaluate_accuracy=fake_accuracy,
               latency_fn=fake_latency)
    # a trial left RUNNING by a process of this machine that has since died
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    study = load(tmp_path)
    t = study.ask({n: optuna.distributions.CategoricalDistribution(v)
                   for n, v in __import__("search_space.spaces", fromlist=["x"]).get_space("small").choices().items()})
    import socket

    t.set_user_attr(st.WORKER_ATTR, f"{socket.gethostname()}:{pid}:12345")
    t.set_user_attr("spec", "{}")  # it had decided its net
    # and one RUNNING trial of a live worker elsewhere is left alone
    assert st.worker_alive(f"{socket.gethostname()}:{os.getpid()}:0") is True
    assert st.worker_alive(f"{socket.gethostname()}:{pid}:12345") is False
    assert st.worker_alive("some-other-host:1:1") is None
    out = run_search(config(tmp_path, trials=4, enqueue_known=False), evaluate_accuracy=fake_accuracy,
                     latency_fn=fake_latency)
    trials = load(tmp_path).trials
    assert trials[2].state == TrialState.FAIL
    assert "died" in trials[2].user_attrs["failed_because"]
    retry = [u for u in trials if u.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[2].params
    assert out.completed == 4
    assert not [u for u in trials if u.state == TrialState.RUNNING]


def test_report_only_regenerates_results(tmp_path):
    run_search(config(tmp_path, trials=3), evaluate_accuracy=fake_accuracy, latency_fn=fake_latency)
    for name in ("trials.csv", "best.json", "summary.json"):
        (tmp_path / "out" / name).unlink()
    out = run_search(config(tmp_path, trials=3, report_only=True, plots=True), latency_fn=fake_latency)
    assert out.ran == 0 and out.stopped == "report-only"
    assert (tmp_path / "out" / "trials.csv").exists() and (tmp_path / "out" / "accuracy_latency.png").exists()


def test_report_only_needs_a_study(tmp_path):
    with pytest.raises(UserError, match="no study"):
        run_search(config(tmp_path, report_only=True), latency_fn=fake_latency)


# ---- storage ------------------------------------------------------------------------------------
def test_parse_storage():
    assert st.parse_storage(None, "o").kind == "journal"
    assert st.parse_storage("sqlite:///x.db", None).is_sqlite
    ref = st.parse_storage("postgresql://me:secret@db.example:5432/nas", None)
    assert ref.is_postgres and "secret" not in ref.shown and "***" in ref.shown
    assert st.parse_storage("postgres://h/db", None).url.startswith("postgresql://")
    assert st.parse_storage("runs/a.log", None).kind == "journal"
    with pytest.raises(UserError, match="--storage"):
        st.parse_storage("redis://localhost", None)


def test_unreachable_storage_is_a_user_error():
    # port 1 on loopback: refused at once
    with pytest.raises(UserError) as exc:
        st.open_storage(st.parse_storage("postgresql://nobody:pw@127.0.0.1:1/nas", None))
    assert "cannot connect" in str(exc.value) and "pw" not in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(UserError, match="does not exist"):
        st.open_storage(st.parse_storage("sqlite:////nonexistent-folder/x.db", None))


def test_sqlite_storage_and_settings_roundtrip(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = run_search(config(tmp_path, trials=2, storage=url, study="s1"), evaluate_accuracy=fake_accuracy,
                     latency_fn=fake_latency)
    assert out.completed == 2
    study = optuna.load_study(study_name="s1", storage=url)
    assert study.user_attrs[st.SETTINGS_ATTR]["space"] == "small"


def test_torn_journal_line_is_dropped(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    st.repair_journal(path)
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'


# ---- results helpers ----------------------------------------------------------------------------
def test_pareto_indices():
    pts = [(0.80, 5.0), (0.85, 6.0), (0.82, 7.0), (0.90, 9.0), (0.79, 4.0), (0.90, 10.0), (0.80, 5.0)]
    assert pareto_indices(pts) == [4, 0, 1, 3]


def test_reach_index():
    assert reach_index([0.5, 0.6, 0.9, 1.0]) == 4  # 0.9 < 0.95 x 1.0
    assert reach_index([0.5, 0.96, 0.9, 1.0]) == 2
    assert reach_index([None, float("nan"), 0.5]) == 3
    assert reach_index([]) is None
    assert reach_index([0.5, 0.6], reference=1.0) is None


# ---- CLI: bad input is one line and exit 2 ---------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--w", "0.5"], "--w 0.5"),
    (["--target-ms", "-1"], "--target-ms -1"),
    (["--space", "nope"], "nope"),
    (["--controller", "nope"], "nope"),
    (["--data", "/nonexistent/data"], "/nonexistent/data"),
    (["--storage", "postgresql://u@127.0.0.1:1/db", "--data", "SKIPDATA"], "cannot connect"),
    (["--trials", "0"], "--trials"),
    (["--alpha", "-0.1"], "--beta"),
    (["--target-like", "nonet"], "nonet"),
    (["--zoo-reference", "nonet"], "nonet"),
])
def test_cli_bad_input(tmp_path, capsys, args, fragment):
    from nas.cli import main

    args = [a if a != "SKIPDATA" else str(_tiny_idx(tmp_path)) for a in args]
    try:
        code = main(["search", "--out", str(tmp_path / "o"), "--no-progress", "--table", str(tmp_path / "t.parquet"),
                     *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.parquet").exists()  # nothing slow happened before the error


def _tiny_idx(tmp_path):
    """A minimal IDX data folder (so the storage error comes after a quick data load)."""
    import gzip
    import struct

    import numpy as np

    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        x = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(d / f"{split}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
        with gzip.open(d / f"{split}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 0x801, n) + y.tobytes())
    return d
