"""Latency-aware rewards: MnasNet's ``ACC(m) x [LAT(m) / TAR] ^ w`` and TuNAS's absolute reward.

``w = alpha`` when the net meets the target (LAT <= TAR) and ``beta`` when it does not
(MnasNet, Tan et al. 2019, Eq. 2 and Fig. 3):

- soft: ``alpha = beta = w``; MnasNet and MobileNetV3-Large use w = -0.07, MobileNetV3-Small
  -0.15. With w = -0.07 a net twice as slow needs about 5% (relative) more accuracy for the
  same reward.
- hard: ``alpha = 0, beta = -1``: accuracy alone under the target, accuracy x TAR / LAT over it.

Both exponents must be <= 0: a positive exponent would reward a slower net.

- abs (TuNAS, Bender et al. 2020): ``ACC + beta x |LAT / TAR - 1|`` with beta < 0 (TuNAS's
  default -0.1: a 10% miss in either direction costs 1 point of accuracy). It penalises
  being faster than the target too, so the search lands on the target without a sweep over
  w (TuNAS needed ~7 searches per target with the MnasNet reward).

Pure functions; no torch, no Optuna.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from search_space.errors import UserError

# Default soft exponents per search space (MobileNetV3, Sec. 5.1 / 5.2).
DEFAULT_W = {"large": -0.07, "small": -0.15}
MNASNET_W = -0.07
TUNAS_BETA = -0.1
FORMS = ("mnas", "abs")


def reward(accuracy: float, latency_ms: float, target_ms: float, alpha: float, beta: float) -> float:
    """``accuracy * (latency_ms / target_ms) ** (alpha if latency_ms <= target_ms else beta)``.

    NaN accuracy gives NaN (a failed trial); latency and target must be positive.
    """
    if not (latency_ms > 0 and math.isfinite(latency_ms)):
        raise ValueError(f"latency must be a positive finite number of ms, got {latency_ms!r}")
    if not (target_ms > 0 and math.isfinite(target_ms)):
        raise ValueError(f"target must be a positive finite number of ms, got {target_ms!r}")
    w = alpha if latency_ms <= target_ms else beta
    return float(accuracy) * (latency_ms / target_ms) ** w


def abs_reward(accuracy: float, latency_ms: float, target_ms: float, beta: float) -> float:
    """TuNAS's ``accuracy + beta * |latency_ms / target_ms - 1|`` (no outer absolute value)."""
    if not (latency_ms > 0 and math.isfinite(latency_ms)):
        raise ValueError(f"latency must be a positive finite number of ms, got {latency_ms!r}")
    if not (target_ms > 0 and math.isfinite(target_ms)):
        raise ValueError(f"target must be a positive finite number of ms, got {target_ms!r}")
    return float(accuracy) + beta * abs(latency_ms / target_ms - 1.0)


@dataclass(frozen=True)
class Reward:
    """A reward function with its target and exponents; call it with (accuracy, latency_ms)."""

    target_ms: float
    alpha: float
    beta: float
    form: str = "mnas"  # "abs": ACC + beta x |LAT/TAR - 1| (alpha unused, kept equal to beta)

    def __post_init__(self) -> None:
        check_target(self.target_ms)
        if self.form not in FORMS:
            raise UserError(f"--reward {self.form!r}: expected one of {', '.join(FORMS)}")
        for name in ("alpha", "beta"):
            check_exponent(getattr(self, name), f"--{name}")

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if self.form == "abs":
            return abs_reward(accuracy, latency_ms, self.target_ms, self.beta)
        return reward(accuracy, latency_ms, self.target_ms, self.alpha, self.beta)

    @classmethod
    def soft(cls, target_ms: float, w: float) -> "Reward":
        check_exponent(w, "--w")
        return cls(target_ms, w, w)

    @classmethod
    def hard(cls, target_ms: float) -> "Reward":
        return cls(target_ms, 0.0, -1.0)

    @property
    def kind(self) -> str:
        if self.form == "abs":
            return "abs"
        if self.alpha == 0.0 and self.beta == -1.0:
            return "hard"
        return "soft" if self.alpha == self.beta else "mnasnet"

    def describe(self) -> str:
        t = f"{self.target_ms:.4g} ms"
        if self.kind == "abs":
            return f"ACC {self.beta:+g} x |LAT / {t} - 1| (TuNAS absolute reward)"
        if self.kind == "hard":
            return f"ACC if LAT <= {t}, else ACC x ({t} / LAT) (hard constraint)"
        if self.kind == "soft":
            return f"ACC x (LAT / {t})^{self.alpha:g}"
        return f"ACC x (LAT / {t})^w, w = {self.alpha:g} under the target, {self.beta:g} over it"

    def to_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind}


def check_exponent(value: float, flag: str = "--w") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value!r}: expected a number <= 0") from None
    if math.isnan(v) or math.isinf(v):
        raise UserError(f"{flag} {value!r}: expected a finite number <= 0")
    if v > 0:
        raise UserError(f"{flag} {value!r}: must be <= 0 (a positive exponent rewards slower nets); "
                        f"MnasNet uses -0.07, MobileNetV3-Small -0.15")
    return v


def check_target(value: float, flag: str = "--target-ms") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value!r}: expected a latency in ms > 0") from None
    if not (v > 0 and math.isfinite(v)):
        raise UserError(f"{flag} {value!r}: the target latency must be a finite number of ms > 0")
    return v


def make_reward(target_ms: float, *, w: float | None = None, alpha: float | None = None,
                beta: float | None = None, hard: bool = False, space: str | None = None,
                form: str = "mnas") -> Reward:
    """The reward the CLI flags describe: ``--hard``, ``--w``, or ``--alpha`` with ``--beta``;
    ``--reward abs [--beta B]`` for TuNAS's absolute reward (B default -0.1).

    With none of them: a constant w, the space's MobileNetV3 default (-0.07 Large, -0.15 Small).
    """
    check_target(target_ms)
    if form not in FORMS:
        raise UserError(f"--reward {form!r}: expected one of {', '.join(FORMS)}")
    if form == "abs":
        for flag, v in (("--w", w), ("--alpha", alpha), ("--hard", hard or None)):
            if v is not None:
                raise UserError(f"--reward abs takes only --beta (the penalty per unit of |LAT/TAR - 1|); drop {flag}")
        b = check_exponent(TUNAS_BETA if beta is None else beta, "--beta")
        return Reward(target_ms, b, b, "abs")
    given = [name for name, v in (("--w", w), ("--alpha", alpha), ("--beta", beta)) if v is not None]
    if hard:
        if given:
            raise UserError(f"--hard fixes alpha = 0 and beta = -1; drop {given[0]}")
        return Reward.hard(target_ms)
    if w is not None:
        if alpha is not None or beta is not None:
            raise UserError(f"--w sets both exponents; drop {'--alpha' if alpha is not None else '--beta'}")
        return Reward.soft(target_ms, w)
    if (alpha is None) != (beta is None):
        missing = "--beta" if beta is None else "--alpha"
        raise UserError(f"--alpha and --beta go together: {missing} is missing")
    if alpha is not None:
        return Reward(target_ms, check_exponent(alpha, "--alpha"), check_exponent(beta, "--beta"))
    return Reward.soft(target_ms, DEFAULT_W.get(space or "", MNASNET_W))


__all__ = ["DEFAULT_W", "FORMS", "MNASNET_W", "TUNAS_BETA", "Reward", "abs_reward", "check_exponent", "check_target", "make_reward", "reward"]
