"""Regularized evolution as an Optuna sampler: it evolves, resumes exactly, agrees across workers."""

from __future__ import annotations

import optuna
import pytest

from nas.evolution_sampler import EvolutionSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = {f"c{i}": [0, 1, 2, 3] for i in range(8)}


def objective(trial: optuna.Trial) -> float:
    """Best at every choice = 3; no noise."""
    return float(sum(trial.suggest_categorical(k, v) for k, v in CHOICES.items()))


def run(sampler, n: int, study: optuna.Study | None = None) -> optuna.Study:
    study = study or optuna.create_study(direction="maximize", sampler=sampler)
    study.sampler = sampler
    study.optimize(objective, n_trials=n)
    return study


def test_evolution_beats_random_and_mutates_one_choice():
    evo = run(EvolutionSampler(CHOICES, seed=0, population=20, sample_size=5), 200)
    rnd = run(optuna.samplers.RandomSampler(seed=0), 200)
    last = lambda s: sum(t.value for t in s.trials[-50:]) / 50  # noqa: E731
    assert last(evo) > last(rnd) + 4  # random's mean is 12 of 24
    # after the population fills, each child differs from some member of the history in one choice
    params = [tuple(t.params[k] for k in CHOICES) for t in evo.trials]
    for i in range(20, 40):
        assert min(sum(a != b for a, b in zip(params[i], params[j])) for j in range(i)) <= 1


def test_resumed_study_proposes_what_an_uninterrupted_one_would():
    whole = run(EvolutionSampler(CHOICES, seed=3, population=10, sample_size=3), 40)
    part = run(EvolutionSampler(CHOICES, seed=3, population=10, sample_size=3), 25)
    part = run(EvolutionSampler(CHOICES, seed=3, population=10, sample_size=3), 15, study=part)  # a new process
    assert [t.params for t in whole.trials] == [t.params for t in part.trials]


def test_workers_agree_on_the_next_proposal():
    study = run(EvolutionSampler(CHOICES, seed=1, population=10, sample_size=3), 30)
    a, b = (EvolutionSampler(CHOICES, seed=1, population=10, sample_size=3) for _ in range(2))
    assert a.propose(30, a.history(study)) == b.propose(30, b.history(study))
    # a trial left running blocks the history only until max_lag later trials finish
    running = study.ask()
    hist = a.history(study)
    assert len(hist) == 30
    study.tell(running, 1.0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        EvolutionSampler(CHOICES, population=1)
    with pytest.raises(ValueError):
        EvolutionSampler(CHOICES, population=10, sample_size=11)
