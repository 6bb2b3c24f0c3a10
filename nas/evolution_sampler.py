"""Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019).

The population is the ``population`` most recent completed trials; each new trial picks
``sample_size`` of them at random, takes the one with the best objective as the parent and
changes ``mutations`` of its choices to another value. Old nets leave the population by age,
not by score, which is what keeps the search from clinging to a lucky early evaluation.
Until the study has ``population`` finished trials, trials are drawn uniformly.

State is rebuilt from the study as the RL controller's is (`nas.rl_sampler`): the history is
the finished trials, in number order, below the first unfinished one (a trial left running
by a dead worker stops blocking once ``max_lag`` later trials have finished), and trial n's
random stream is seeded by (seed, n). A resumed search or another worker therefore proposes
exactly what an uninterrupted single process would have proposed from the same history.
Multi-objective studies fall back to uniform sampling.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from .sampler_common import StudySampler, decode, encode, trial_reward

_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


class EvolutionSampler(StudySampler):
    """Aging evolution over a static categorical space (`SearchSpace.choices()`)."""

    def __init__(self, choices: Mapping[str, Sequence[Any]], seed: int | None = 0, population: int = 50,
                 sample_size: int = 10, mutations: int = 1, max_lag: int = 32) -> None:
        if not choices:
            raise ValueError("EvolutionSampler needs a non-empty choices dict")
        if population < 2 or not 1 <= sample_size <= population or mutations < 1:
            raise ValueError(f"EvolutionSampler: population {population}, sample_size {sample_size}, "
                             f"mutations {mutations} out of range")
        self._choices = {str(k): list(v) for k, v in choices.items()}
        self._seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        self.population, self.sample_size, self.mutations = int(population), int(sample_size), int(mutations)
        self.max_lag = int(max_lag)
        self._random = RandomSampler(seed=self._seed)
        self._lock = threading.Lock()

    # ---- Optuna API ------------------------------------------------------------------------
    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            params = self.propose(trial.number, self.history(study, before=trial.number))
        return {k: v for k, v in params.items() if k in search_space}

    # ---- the algorithm ---------------------------------------------------------------------
    def history(self, study: Study, before: int | None = None) -> list[tuple[list[int], float]]:
        """(tokens, reward) of the finished trials in number order, up to the first unfinished one."""
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if before is not None:
            trials = [t for t in trials if t.number < before]
        out = []
        for i, t in enumerate(trials):
            if t.state in _UNFINISHED:
                if sum(1 for u in trials[i + 1:] if u.state not in _UNFINISHED) < self.max_lag:
                    break
                continue
            reward = trial_reward(study, t)
            tokens = encode(self._choices, t.params) if reward is not None else None
            if tokens is not None:
                out.append((tokens, reward))
        return out

    def propose(self, number: int, history: Sequence[tuple[list[int], float]]) -> dict[str, Any]:
        """Trial ``number``'s params given the finished history: uniform while the population
        fills, then the best of a random sample of the population, mutated."""
        rng = np.random.default_rng(np.random.SeedSequence([self._seed, int(number)]))
        sizes = [len(v) for v in self._choices.values()]
        if len(history) < self.population:
            return self._decode([int(rng.integers(n)) for n in sizes])
        population = list(history[-self.population:])
        picked = rng.choice(len(population), size=self.sample_size, replace=False)
        parent = max((population[int(i)] for i in picked), key=lambda e: e[1])[0]
        child = list(parent)
        mutable = [i for i, n in enumerate(sizes) if n > 1]
        for pos in rng.choice(mutable, size=min(self.mutations, len(mutable)), replace=False):
            others = [v for v in range(sizes[int(pos)]) if v != child[int(pos)]]
            child[int(pos)] = int(others[int(rng.integers(len(others)))])
        return self._decode(child)

    def _decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        return decode(self._choices, tokens)


__all__ = ["EvolutionSampler"]
