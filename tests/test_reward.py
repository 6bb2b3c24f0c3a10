"""The MnasNet reward, against the numbers of MnasNet's Fig. 3 (ACC 0.5, T 80 ms)."""

import math

import pytest

from nas.reward import DEFAULT_W, Reward, make_reward, reward
from search_space.errors import UserError

T = 80.0
ACC = 0.5


def test_at_target_reward_is_accuracy():
    for r in (Reward.soft(T, -0.07), Reward.hard(T), Reward(T, -0.07, -0.5)):
        assert r(ACC, T) == pytest.approx(ACC)


def test_soft_fig3_values():
    r = Reward.soft(T, -0.07)
    # half the target: (1/2)^-0.07 = 1.0497; twice: 2^-0.07 = 0.9526
    assert r(ACC, 40.0) == pytest.approx(0.5 * 2 ** 0.07)
    assert r(ACC, 40.0) == pytest.approx(0.52486, abs=1e-5)
    assert r(ACC, 160.0) == pytest.approx(0.47632, abs=1e-5)
    # the paper's calibration of w = -0.07: twice the latency for ~5% more accuracy is a wash
    assert r(ACC * 1.05, 160.0) == pytest.approx(r(ACC, 80.0), rel=2e-3)
    # monotone: slower is never better at equal accuracy
    lats = [10, 20, 40, 80, 120, 160, 320]
    vals = [r(ACC, x) for x in lats]
    assert vals == sorted(vals, reverse=True)


def test_hard_fig3_values():
    r = Reward.hard(T)
    assert r(ACC, 40.0) == pytest.approx(ACC)  # alpha 0: no bonus for being faster
    assert r(ACC, 10.0) == pytest.approx(ACC)
    assert r(ACC, 160.0) == pytest.approx(0.25)  # beta -1: ACC * T / LAT
    assert r(ACC, 100.0) == pytest.approx(0.4)


def test_alpha_beta_switch_at_target():
    r = Reward(T, -0.07, -0.5)
    assert r(ACC, 40.0) == pytest.approx(ACC * 0.5 ** -0.07)
    assert r(ACC, 160.0) == pytest.approx(ACC * 2 ** -0.5)
    assert reward(ACC, 160.0, T, -0.07, -0.5) == r(ACC, 160.0)


def test_nan_accuracy_gives_nan():
    assert math.isnan(Reward.soft(T, -0.07)(float("nan"), 50.0))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"w": 0.5}, "--w 0.5"),
    ({"w": float("nan")}, "--w"),
    ({"alpha": 0.1, "beta": -1.0}, "--alpha 0.1"),
    ({"alpha": -0.1, "beta": 0.2}, "--beta 0.2"),
    ({"alpha": -0.1}, "--beta is missing"),
    ({"hard": True, "w": -0.07}, "--hard"),
    ({"w": -0.07, "beta": -1.0}, "--beta"),
])
def test_bad_exponents_are_user_errors(kwargs, fragment):
    with pytest.raises(UserError) as exc:
        make_reward(80.0, **kwargs)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("target", [-1, 0, float("inf"), float("nan")])
def test_bad_target(target):
    with pytest.raises(UserError, match="--target-ms"):
        make_reward(target, w=-0.07)


def test_make_reward_forms_and_defaults():
    assert make_reward(80, hard=True).kind == "hard"
    r = make_reward(80, w=-0.07)
    assert (r.alpha, r.beta, r.kind) == (-0.07, -0.07, "soft")
    r = make_reward(80, alpha=-0.07, beta=-0.5)
    assert (r.alpha, r.beta, r.kind) == (-0.07, -0.5, "mnasnet")
    assert make_reward(80, space="small").alpha == DEFAULT_W["small"] == -0.15
    assert make_reward(80, space="large").alpha == DEFAULT_W["large"] == -0.07
    assert "80 ms" in make_reward(80, w=-0.07).describe()
    assert make_reward(80, w=0.0)(0.5, 160) == pytest.approx(0.5)  # w 0: accuracy only


def test_tunas_absolute_reward_values_and_flags():
    from nas.reward import TUNAS_BETA, abs_reward, make_reward

    r = make_reward(10.0, form="abs")
    assert r.beta == TUNAS_BETA == -0.1 and r.kind == "abs"
    assert r(0.8, 10.0) == pytest.approx(0.8)  # on target: accuracy alone
    assert r(0.8, 11.0) == pytest.approx(0.79)  # 10% slower: -1 point
    assert r(0.8, 9.0) == pytest.approx(0.79)  # 10% faster: the same penalty (lands on target)
    assert make_reward(10.0, form="abs", beta=-0.5)(0.8, 12.0) == pytest.approx(0.7)
    assert abs_reward(0.5, 20.0, 10.0, -0.1) == pytest.approx(0.4)
    for kw in ({"w": -0.07}, {"alpha": -0.1}, {"hard": True}):
        with pytest.raises(UserError, match="--reward abs takes only --beta"):
            make_reward(10.0, form="abs", **kw)
    with pytest.raises(UserError, match="must be <= 0"):
        make_reward(10.0, form="abs", beta=0.1)
    with pytest.raises(UserError, match="--reward 'tunas'"):
        make_reward(10.0, form="tunas")
    assert "TuNAS" in r.describe()


def test_search_with_abs_reward_scores_and_records_it(tmp_path):
    import math

    from nas.search import SearchConfig, run_search
    from search_space import count_madds

    out = run_search(SearchConfig(space="small", controller="evolution", trials=40, out=tmp_path / "o", target_ms=7.0,
                                  reward="abs", progress=False, plots=False, zoo_reference=()),
                     evaluate_accuracy=lambda s: 0.7 + 0.2 * math.tanh(count_madds(s) / 3e6),
                     latency_fn=lambda s: count_madds(s) / 1e7)
    assert out.summary["settings"]["reward"] == "abs"
    best = out.best
    assert best["reward"] == pytest.approx(best["accuracy"] - 0.1 * abs(best["latency_ms"] / 7.0 - 1))
