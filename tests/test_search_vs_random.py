"""The standalone proof's candidates: one per net, across controllers and rewards."""

import pytest

from experiments.search_vs_random import controller_candidates, same_net_key
from search_space import get_space


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


def test_two_codes_of_one_net_are_one_candidate():
    space = get_space("small")
    # stage 1 has 16 channels: width 0.75 rounds up to the same 16 (multiples of 8)
    a, b = "1k3e3w75_1k3e3w100_2k3e3w75_1k3e3w75_2k3e3w75", "1k3e3w100_1k3e3w100_2k3e3w75_1k3e3w75_2k3e3w75"
    c = "1k3e3w100_1k3e3w100_2k3e3w75_1k3e3w75_2k3e3w100"
    assert same_net_key(space, a) == same_net_key(space, b) != same_net_key(space, c)
    soft = _bench("mnas", 2.0, [_run("tpe", 0, a, 0.99), _run("evolution", 0, b, 0.99), _run("random", 0, c, 0.9)])
    cands, _ = controller_candidates([("soft.json", soft)], key=lambda x: same_net_key(space, x))
    assert [x["candidate"] for x in cands] == ["search:evolution,tpe", "search:random"]


def test_per_run_takes_every_runs_best():
    soft = _bench("mnas", 2.0, [_run("tpe", 0, "A", 0.99), _run("tpe", 1, "B", 0.95),
                                _run("evolution", 0, "A", 0.99), _run("random", 0, "C", 0.94)])
    cands, _ = controller_candidates([("soft.json", soft)], per_run=True)
    by_arch = {c["arch"]: c["candidate"] for c in cands}
    assert by_arch == {"A": "search:evolution-s0,tpe-s0", "B": "search:tpe-s1", "C": "search:random-s0"}


def test_groups_split_searched_random_and_reference():
    from experiments.search_vs_random import group_of, group_summary

    assert group_of("search:tpe-s0") == group_of("evolution") == "searched (soft reward)"
    assert group_of("search:evolution-abs-s0") == group_of("search:tpe-abs") == "searched (abs reward)"
    assert group_of("search:random-s2") == "random search (soft reward)"
    assert group_of("random (latency-matched) s1") == "latency-matched random search"
    table = [{"candidate": "search:tpe-s0,random (latency-matched) s1", "test_mean": 0.90, "table_ms": 1.0},
             {"candidate": "search:rl-s1", "test_mean": 0.88, "table_ms": 2.0},
             {"candidate": "random (latency-matched)", "test_mean": 0.89, "table_ms": 2.0},
             {"candidate": "mnv3-small", "test_mean": 0.87, "table_ms": 2.0},
             {"candidate": "search:nsga2-s0", "test_mean": None, "table_ms": 1.0}]  # not trained yet
    g = {x["group"]: x for x in group_summary(table)}
    assert g["searched (soft reward)"]["nets"] == 2 and g["searched (soft reward)"]["best"] == 0.90
    assert abs(g["searched (soft reward)"]["mean"] - 0.89) < 1e-12
    assert g["latency-matched random search"]["nets"] == 2  # the shared net counts in both
    assert g["reference (MobileNetV3)"]["std"] == 0.0 and "random search (soft reward)" not in g


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from experiments.search_vs_random import main

    with pytest.raises(SystemExit) as exc:
        main(["--benchmark", str(tmp_path / "missing.json"), "--phase", "report"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "missing.json" in err and len(err.splitlines()) == 1
    bench = tmp_path / "b.json"
    bench.write_text('{"meta": {"target_like": "mnv3-small"}, "runs": []}')
    with pytest.raises(SystemExit) as exc:
        main(["--benchmark", str(bench), "--space", "no-such-space", "--phase", "report", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "no-such-space" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--benchmark", str(bench), "--matched-seeds", "1,1"])
    assert exc.value.code == 2 and "1,1" in capsys.readouterr().err
