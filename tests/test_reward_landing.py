"""Where each reward puts the best net of a pool: soft pays for speed, hard and abs land at the target."""

import json

import optuna
import pytest

from experiments.reward_landing import landing, main

POOL = [(0.880, 1.0), (0.885, 1.6), (0.890, 1.98), (0.895, 2.2), (0.870, 0.6)]


def test_each_reward_picks_its_own_best():
    got = {x["reward"]: x for x in landing(POOL, 2.0)}
    # soft at -0.15: 0.87 x 0.3^-0.15 = 1.04 beats every slower net
    assert got["soft, w -0.15"]["latency_ms"] == 0.6
    # hard: the most accurate net at or under the target; 2.2 ms is over it and pays (2/2.2)^1
    assert got["hard (alpha 0, beta -1)"]["latency_ms"] == 1.98
    # abs: 0.895 - 0.1 x 0.1 = 0.885 < 0.890 - 0.1 x 0.01
    assert got["abs, beta -0.1"]["latency_ms"] == 1.98
    assert got["abs, beta -0.1"]["over_target"] == pytest.approx(-0.01)


def _study(path, trials):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="nas-search", storage=storage, direction="maximize")
    for acc, ms in trials:
        t = study.ask()
        t.set_user_attr("accuracy", acc)
        t.set_user_attr("latency_ms", ms)
        study.tell(t, acc)


def test_reads_the_random_runs_and_writes_the_table(tmp_path, capsys):
    for seed in (0, 1):
        d = tmp_path / "out" / "runs" / f"random-s{seed}"
        d.mkdir(parents=True)
        _study(d / "study.log", POOL[seed:])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"target_ms": 2.0}}))
    res = tmp_path / "landing"
    assert main(["--out", str(tmp_path / "out"), "--benchmark", str(bench), "--results", str(res)]) == 0
    out = json.loads(res.with_suffix(".json").read_text())
    assert out["runs"] == ["random-s0", "random-s1"]
    hard = next(s for s in out["summary"] if s["reward"].startswith("hard"))
    assert hard["over_target_median"] == pytest.approx(-0.01)
    assert res.with_suffix(".png").stat().st_size > 0 and "hard" in capsys.readouterr().out


def test_bad_paths_exit_2(tmp_path, capsys):
    assert main(["--benchmark", str(tmp_path / "nope.json")]) == 2
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"target_ms": 2.0}}))
    assert main(["--out", str(tmp_path), "--benchmark", str(bench)]) == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and "no random-sSEED runs" in err
