"""What the study-rebuilt controllers (`nas.rl_sampler`, `nas.evolution_sampler`) share: a point of a
static categorical space as a token list, and a finished trial's reward."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import optuna
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


__all__ = ["decode", "encode", "trial_reward"]
