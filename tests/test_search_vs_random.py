"""The standalone proof's candidates: one per net, across controllers and rewards."""

import pytest

from experiments.search_vs_random import controller_candidates


def _bench(reward, target, runs):
    controllers = sorted({r["controller"] for r in runs})
    return {"meta": {"evaluator": "supernet", "reward": reward, "target_ms": target, "controllers": controllers},
            "runs": runs}


def _run(controller, seed, arch, reward_value, acc=0.88):
    return {"controller": controller, "run": f"{controller}-s{seed}", "best_arch": arch,
            "best_reward": reward_value, "best_accuracy": acc}


def test_best_run_per_controller_and_twins_merge():
    soft = _bench("mnas", 2.0, [_run("tpe", 0, "A", 0.99), _run("tpe", 1, "B", 0.95),
                                _run("evolution", 0, "A", 0.99), _run("random", 0, "C", 0.94)])
    absr = _bench("abs", 2.0, [_run("evolution", 0, "D", 0.879), _run("tpe", 0, "C", 0.87)])
    cands, target = controller_candidates([("soft.json", soft), ("abs.json", absr)])
    assert target == 2.0
    by_arch = {c["arch"]: c for c in cands}
    assert set(by_arch) == {"A", "C", "D"}  # B lost to A within tpe; C found twice is one candidate
    assert by_arch["A"]["candidate"] == "search:evolution,tpe"
    assert by_arch["C"]["candidate"] == "search:random,tpe-abs"
    assert by_arch["D"]["candidate"] == "search:evolution-abs"


def test_foreign_benchmarks_are_refused(capsys):
    soft = _bench("mnas", 2.0, [_run("tpe", 0, "A", 0.99)])
    other = _bench("abs", 3.0, [_run("tpe", 0, "B", 0.9)])
    with pytest.raises(SystemExit) as exc:
        controller_candidates([("soft.json", soft), ("other.json", other)])
    assert exc.value.code == 2 and "other.json" in capsys.readouterr().err
    proxy = {**soft, "meta": {**soft["meta"], "evaluator": "proxy"}}
    with pytest.raises(SystemExit):
        controller_candidates([("proxy.json", proxy)])
