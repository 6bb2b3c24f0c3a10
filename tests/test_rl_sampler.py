"""The MnasNet-style RL controller as an Optuna sampler."""

from __future__ import annotations

import pickle
import random

import numpy as np
import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas.rl_sampler import RLSampler
from search_space.spaces import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = get_space("small").choices()


def _target(seed: int) -> dict:
    rng = random.Random(1000 + seed)
    return {k: rng.choice(v) for k, v in CHOICES.items()}


def _objective(target: dict):
    """Reward: the fraction of choices equal to a hidden target."""

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()}
        return sum(params[k] == target[k] for k in CHOICES) / len(CHOICES)

    return objective


def _same_policy(a: RLSampler, b: RLSampler) -> bool:
    sa, sb = a.policy_state(), b.policy_state()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_rl_beats_random_on_a_synthetic_objective():
    rl_means, random_means = [], []
    for seed in range(3):
        objective = _objective(_target(seed))
        for sampler, means in ((RLSampler(CHOICES, seed=seed), rl_means),
                               (optuna.samplers.RandomSampler(seed=seed), random_means)):
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(objective, n_trials=200)
            means.append(np.mean([t.value for t in study.trials[-50:]]))
    assert np.mean(rl_means) > np.mean(random_means) + 0.2, (rl_means, random_means)
    assert min(rl_means) > max(random_means)


def test_policy_is_rebuilt_from_the_study_deterministically():
    study = optuna.create_study(direction="maximize", sampler=RLSampler(CHOICES, seed=3))
    study.optimize(_objective(_target(3)), n_trials=40)
    incremental = study.sampler
    fresh_a, fresh_b = RLSampler(CHOICES, seed=3), RLSampler(CHOICES, seed=3)
    assert fresh_a.sync(study) == fresh_b.sync(study) == 40
    assert fresh_a.updates == 5
    assert _same_policy(fresh_a, fresh_b)
    assert fresh_a.propose(40) == fresh_b.propose(40)
    assert fresh_a.propose(40) != fresh_a.propose(41)  # per-trial streams differ
    # The sampler that ran the study updated incrementally; after consuming the last trial
    # it has the same policy as a replay from scratch.
    assert incremental.sync(study) == 40
    assert _same_policy(incremental, fresh_a)
    assert not _same_policy(fresh_a, RLSampler(CHOICES, seed=3))  # it did learn
    other_seed = RLSampler(CHOICES, seed=4)
    other_seed.sync(study)
    assert not _same_policy(other_seed, fresh_a)


def test_journal_storage_resume(tmp_path):
    path = str(tmp_path / "journal.log")
    objective = _objective(_target(0))
    study = optuna.create_study(study_name="rl", direction="maximize", sampler=RLSampler(CHOICES, seed=0, batch_size=4),
                                storage=JournalStorage(JournalFileBackend(path)))
    study.optimize(objective, n_trials=10)
    first = study.sampler
    resumed = optuna.load_study(study_name="rl", sampler=RLSampler(CHOICES, seed=0, batch_size=4),
                                storage=JournalStorage(JournalFileBackend(path)))
    resumed.optimize(objective, n_trials=10)
    trials = resumed.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 20 and [t.number for t in trials] == list(range(20))
    assert all(set(t.params) == set(CHOICES) for t in trials)
    # The first process catches up with what the resumed one did, to the same policy.
    reloaded = optuna.load_study(study_name="rl", storage=JournalStorage(JournalFileBackend(path)))
    assert first.sync(reloaded) == resumed.sampler.sync(reloaded) == 20
    assert _same_policy(first, resumed.sampler)


def test_two_workers_on_one_storage(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    objective = _objective(_target(1))
    a = optuna.create_study(study_name="w", direction="maximize", storage=storage, sampler=RLSampler(CHOICES, seed=7))
    b = optuna.load_study(study_name="w", storage=storage, sampler=RLSampler(CHOICES, seed=7))
    seen = []
    for _ in range(12):  # interleaved ask/tell, as two workers would
        ta, tb = a.ask(), b.ask()
        a.tell(ta, objective(ta))
        b.tell(tb, objective(tb))
        seen += [tuple(ta.params.values()), tuple(tb.params.values())]
    assert len(set(seen)) == len(seen)  # workers sharing a seed still draw different nets
    assert a.sampler.sync(a) == b.sampler.sync(b) == 24
    assert _same_policy(a.sampler, b.sampler)


def test_unfinished_trials_block_updates_until_max_lag():
    sampler = RLSampler(CHOICES, seed=0, max_lag=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = _objective(_target(0))
    study.optimize(objective, n_trials=3)
    stuck = study.ask()
    for name, values in CHOICES.items():
        stuck.suggest_categorical(name, values)
    study.optimize(objective, n_trials=4)
    assert sampler.sync(study) == 3  # trials after the RUNNING one wait for it
    study.optimize(objective, n_trials=1)
    assert sampler.sync(study) == 8  # 5 later trials finished: the stuck one is skipped
    study.tell(stuck, 1.0)
    assert sampler.sync(study) == 8  # and stays skipped
    fresh = RLSampler(CHOICES, seed=0, max_lag=5)
    assert fresh.sync(study) == 9  # a fresh process sees it completed


def test_enqueued_points_failed_trials_and_minimize():
    space = get_space("small")
    study = optuna.create_study(direction="minimize", sampler=RLSampler(CHOICES, seed=0, batch_size=4))
    space.enqueue_known_points(study)

    def objective(trial):
        spec = space.suggest(trial)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return float(len(spec.rows))

    study.optimize(objective, n_trials=12)
    assert study.trials[0].params == space.known_points()["mnv3-small"]
    sampler = study.sampler
    assert sampler.sync(study) == 11
    assert sampler._baseline is not None and sampler._baseline < 0  # minimized: reward = -value
    assert sampler.updates == 2


def test_uniform_start_warmup_and_helpers():
    sampler = RLSampler(CHOICES, seed=0, warmup_trials=5)
    uniform = -sum(np.log(len(v)) for v in CHOICES.values())
    params = sampler.propose(7)
    assert set(params) == set(CHOICES) and all(params[k] in CHOICES[k] for k in CHOICES)
    assert sampler.log_prob(params) == pytest.approx(uniform, abs=1e-4)
    assert sampler.propose(3) == sampler.propose(3)
    assert sampler.most_likely() == {k: v[0] for k, v in CHOICES.items()}
    with pytest.raises(ValueError):
        RLSampler({})


def test_multi_objective_falls_back_to_random():
    sampler = RLSampler(CHOICES, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_categorical("s1_kernel", [3, 5]), 1.0), n_trials=3)
    assert len(study.trials) == 3 and sampler.updates == 0


def test_pickle_and_reseed():
    sampler = RLSampler(CHOICES, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective(_target(0)), n_trials=9)
    clone = pickle.loads(pickle.dumps(sampler))
    assert _same_policy(clone, sampler) and clone.propose(9) == sampler.propose(9)
    sampler.reseed_rng()
    assert clone.propose(9) == sampler.propose(9)  # policy streams are keyed by trial number
    study.optimize(_objective(_target(0)), n_trials=2, n_jobs=2)
    assert len(study.trials) == 11
