"""What the study-rebuilt controllers (`nas.rl_sampler`, `nas.evolution_sampler`) share: a point of a
static categorical space as a token list, and a finished trial's reward."""

from __future__ import annotations

import math
import threading
from typing import Any, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def encode(choices: Mapping[str, Sequence[Any]], params: Mapping[str, Any]) -> list[int] | None:
    """The index of each choice's value (an exact type match first: 1 and 1.0 and True differ)."""
    tokens = []
    for name, values in choices.items():
        if name not in params:
            return None
        value = params[name]
        idx = next((i for i, v in enumerate(values) if v == value and type(v) is type(value)), None)
        if idx is None:
            idx = next((i for i, v in enumerate(values) if v == value), None)
        if idx is None:
            return None
        tokens.append(idx)
    return tokens


def decode(choices: Mapping[str, Sequence[Any]], tokens: Sequence[int]) -> dict[str, Any]:
    return {name: values[a] for (name, values), a in zip(choices.items(), tokens)}


def trial_reward(study: Study, trial: FrozenTrial) -> float | None:
    """A COMPLETE single-objective trial's value, as a quantity to maximise; None otherwise."""
    if trial.state != TrialState.COMPLETE or trial.values is None or len(trial.values) != 1:
        return None
    value = float(trial.values[0])
    if not math.isfinite(value):
        return None
    return -value if study.direction == optuna.study.StudyDirection.MINIMIZE else value


class StudySampler(BaseSampler):
    """Optuna plumbing of a controller over ``self._choices`` whose state comes from the study:
    relative sampling of every choice (none in a multi-objective study, which falls back to
    ``self._random``), and pickling without the lock that guards its state."""

    _choices: dict[str, list]
    _random: BaseSampler
    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        """Reseed the uniform fallback. Samples are keyed by (seed, trial number), so threads
        sharing this instance never draw the same stream and a resume stays exact."""
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if len(study.directions) > 1:
            return {}
        return {name: CategoricalDistribution(values) for name, values in self._choices.items()}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)


__all__ = ["StudySampler", "decode", "encode", "trial_reward"]
