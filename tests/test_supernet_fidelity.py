"""The fidelity benchmark's ceiling: what a perfect ranker can reach against a noisy truth."""

import numpy as np
import pandas as pd

from experiments.supernet_fidelity import truth_ceiling


def _runs(true_sd, noise_sd, nets=40, seeds=2, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(0.9, true_sd, nets)
    return pd.DataFrame({s: true + rng.normal(0, noise_sd, nets) for s in range(seeds)})


def test_ceiling_falls_as_seed_noise_grows_and_recovers_the_noise():
    quiet = truth_ceiling(_runs(0.004, 0.0005), sims=300)
    noisy = truth_ceiling(_runs(0.004, 0.004), sims=300)
    assert quiet["kendall_tau"] > 0.9
    assert 0.3 < noisy["kendall_tau"] < 0.8
    assert noisy["tau_low"] < noisy["kendall_tau"] < noisy["tau_high"]
    assert abs(noisy["seed_noise_sd"] - 0.004) < 0.0015
    # more seeds in the truth raise the ceiling
    more = truth_ceiling(_runs(0.004, 0.004, seeds=6), sims=300)
    assert more["kendall_tau"] > noisy["kendall_tau"]


def test_pure_noise_truth_has_no_ceiling_to_speak_of():
    c = truth_ceiling(_runs(0.0, 0.004), sims=300)
    assert c["true_sd"] < 0.002 and abs(c["kendall_tau"]) < 0.35


def test_choice_effects_find_the_choice_a_score_follows():
    import random

    from experiments.supernet_fidelity import choice_effects
    from search_space import get_space

    space = get_space("small")
    rng = random.Random(0)
    nets = [(f"n{i}", space.sample_params(rng)) for i in range(30)]
    k = {lab: p["s1_kernel"] for lab, p in nets}
    table = pd.DataFrame({"truth": {lab: -k[lab] + 0.01 * i for i, (lab, _) in enumerate(nets)},
                          "score": {lab: k[lab] + 0.01 * i for i, (lab, _) in enumerate(nets)}})
    effects = choice_effects(space, nets, table)
    assert effects.loc["s1_kernel", "truth"] < -0.6 < 0.6 < effects.loc["s1_kernel", "score"]
    assert effects.drop("s1_kernel").abs().max().max() < 0.6
