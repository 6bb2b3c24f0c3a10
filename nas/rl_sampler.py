"""The MnasNet controller as an Optuna sampler: a recurrent policy trained by PPO.

MnasNet (Sec. 4.2) maps a model to a token sequence a_1..a_T, samples it from an RNN
controller, and maximizes the expected reward J = E[R(m)] with Proximal Policy Optimization.
`RLSampler` is that controller for a static categorical space (`SearchSpace.choices()`):

- Policy: an LSTM (hidden 64) fed the embedding of the previous token (a start token
  first); at step t a linear head over the t-th choice's options. The heads start at zero,
  so the initial policy is exactly uniform.
- Algorithm: PPO (clipped surrogate, clip 0.2, a few epochs per batch, entropy bonus), with
  advantage = reward - an exponential-moving-average baseline, divided by a running RMS of
  the advantage so the step does not depend on the reward's scale. Why PPO and not plain
  REINFORCE: MnasNet used PPO, and here a batch of trials costs minutes of proxy training
  while an update costs milliseconds, so reusing each batch for several gradient epochs is
  free sample efficiency; the clipping keeps those epochs from moving the policy too far.
  (With ``ppo_epochs=1`` the update is REINFORCE with a baseline: the ratio is 1 at the
  first epoch.)
- Rewards: the trial's objective value (the search's single objective ACC*(LAT/T)^w,
  maximized; for a minimized study the negated value). Multi-objective studies are not
  supported: every parameter then falls back to uniform sampling.

State is rebuilt from the study, so the sampler resumes and works with many workers. Before
each sample it reads the study's trials and consumes, in trial-number order, the finished
trials below the first unfinished one (RUNNING or WAITING): COMPLETE trials with every choice
of the space give (tokens, reward); others are skipped. Every ``batch_size`` consumed rewards
make one PPO update. The consumed prefix, the policy and its optimizer are cached on the
instance, so each worker updates incrementally; a fresh process (a resume, another worker)
replays the same prefix from the same seed and reaches the same policy, bit for bit, on the
same machine. The importance ratio of each update is taken against the policy just before the
update (recomputed, not stored at sampling time): the policy is then a pure function of the
seed and the ordered history, wherever a trial was sampled (another worker's older policy,
an enqueued known point, warm-up). A trial left RUNNING by a crashed worker would block
updates: once ``max_lag`` later trials have finished, it is skipped (fail stale trials on
resume so every process skips it alike).

Sampling is deterministic per trial: the random stream of trial n is seeded by
(seed, n), so workers sharing a seed draw different nets and a replayed trial draws the same.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from .sampler_common import StudySampler, decode, encode, trial_reward

_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Policy(nn.Module):
    """LSTM controller: embedding of the previous token -> LSTM -> the t-th choice's head.

    The heads of all choices are one linear layer whose output is sliced per choice; with the
    previous tokens known (teacher forcing) a whole batch of sequences is scored in one LSTM
    call, which keeps an update to a few milliseconds.
    """

    def __init__(self, sizes: Sequence[int], hidden: int = 64, embed: int = 32) -> None:
        super().__init__()
        self.sizes = list(sizes)
        starts = [0]
        for n in self.sizes[:-1]:
            starts.append(starts[-1] + n)
        self.starts = starts  # where choice t's options start among all options
        total = sum(self.sizes)
        self.embed = nn.Embedding(1 + total, embed)  # token 0 is the start token
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, total)
        nn.init.zeros_(self.head.weight)  # start from the uniform policy
        nn.init.zeros_(self.head.bias)
        width = max(self.sizes)
        index = torch.zeros(len(self.sizes), width, dtype=torch.long)
        mask = torch.ones(len(self.sizes), width, dtype=torch.bool)
        for t, (s0, n) in enumerate(zip(self.starts, self.sizes)):
            index[t, :n] = torch.arange(s0, s0 + n)
            mask[t, :n] = False
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("pad", mask, persistent=False)
        self.register_buffer("offsets", torch.tensor(self.starts, dtype=torch.long) + 1, persistent=False)

    def _logp_table(self, out: torch.Tensor) -> torch.Tensor:
        """Per-step log-probabilities over each choice's options, padded to the widest choice."""
        b, t = out.shape[0], out.shape[1]
        logits = self.head(out)  # B x T x total
        logits = logits.gather(2, self.index[:t].unsqueeze(0).expand(b, -1, -1))
        logits = logits.masked_fill(self.pad[:t].unsqueeze(0), -1e9)
        return torch.log_softmax(logits, dim=-1)

    def log_prob(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over steps of log pi(a_t | a_<t) and of the step entropies, per sequence."""
        b = actions.shape[0]
        prev = torch.cat([torch.zeros(b, 1, dtype=torch.long), actions[:, :-1] + self.offsets[:-1]], 1)
        out, _ = self.lstm(self.embed(prev))
        lp = self._logp_table(out)
        logp = lp.gather(2, actions.unsqueeze(2)).squeeze(2).sum(1)
        ent = -(lp.exp() * lp).sum((1, 2))
        return logp, ent

    @torch.no_grad()
    def sample(self, rng: np.random.Generator, greedy: bool = False) -> list[int]:
        lstm = self.lstm
        weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        h = torch.zeros(1, lstm.hidden_size)
        c = torch.zeros(1, lstm.hidden_size)
        token = 0
        out: list[int] = []
        for t, n in enumerate(self.sizes):
            h, c = torch.lstm_cell(self.embed.weight[token: token + 1], (h, c), *weights)
            s0 = self.starts[t]
            logits = torch.nn.functional.linear(h[0], self.head.weight[s0: s0 + n], self.head.bias[s0: s0 + n]).double()
            if greedy:
                a = int(torch.argmax(logits))
            else:
                p = torch.softmax(logits, -1).numpy()
                a = int(rng.choice(n, p=p / p.sum()))
            out.append(a)
            token = self.starts[t] + 1 + a
        return out


class RLSampler(StudySampler):
    """MnasNet-style RL controller (LSTM policy, PPO) over a static categorical space.

    The objective must suggest these names with exactly these options (as
    ``SearchSpace.suggest`` does); other parameters are sampled uniformly. Every process
    working on one study should use the same ``seed``, ``batch_size`` and update settings:
    they then hold the same policy at the same point of the history.

    Args:
        choices: the space, ``{name: [options]}`` in sampling order (``SearchSpace.choices()``).
        seed: fixes the policy's initialization and the per-trial sampling streams.
        lr: Adam learning rate of the policy.
        batch_size: completed trials per PPO update.
        ppo_epochs: gradient epochs per batch (1 = REINFORCE with a baseline).
        clip: PPO's clipping epsilon.
        entropy: weight of the entropy bonus (sum over the choices).
        baseline_decay: decay of the reward's exponential moving average (the baseline).
        warmup_trials: trials numbered below this are sampled uniformly at random (they
            still train the policy).
        hidden: LSTM width.
        max_lag: an unfinished trial stops blocking updates once this many later trials
            have finished.
    """

    def __init__(self, choices: Mapping[str, Sequence[Any]], seed: int | None = 0, lr: float = 0.01,
                 batch_size: int = 8, ppo_epochs: int = 4, clip: float = 0.2, entropy: float = 0.01,
                 baseline_decay: float = 0.95, warmup_trials: int = 0, hidden: int = 64, max_lag: int = 32) -> None:
        if not choices:
            raise ValueError("RLSampler needs a non-empty choices dict")
        self._choices = {str(k): list(v) for k, v in choices.items()}
        for name, values in self._choices.items():
            if not values:
                raise ValueError(f"RLSampler: choice {name!r} has no options")
        self._names = list(self._choices)
        self._seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        self.lr, self.batch_size, self.ppo_epochs, self.clip = lr, int(batch_size), int(ppo_epochs), clip
        self.entropy, self.baseline_decay, self.warmup_trials = entropy, baseline_decay, int(warmup_trials)
        self.hidden, self.max_lag = int(hidden), int(max_lag)
        self._random = RandomSampler(seed=self._seed)
        self._lock = threading.Lock()
        self._reset(None)

    # ---- state -----------------------------------------------------------------------------
    def _reset(self, study_key: Any) -> None:
        self._study_key = study_key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            self.policy = _Policy([len(v) for v in self._choices.values()], hidden=self.hidden)
        self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self._next_number = 0  # every trial numbered below this has been consumed
        self._pending: list[tuple[list[int], float]] = []
        self._baseline: float | None = None
        self._adv_sq: float | None = None
        self.updates = 0
        self.consumed_rewards = 0

    @property
    def choices(self) -> dict[str, list]:
        return {k: list(v) for k, v in self._choices.items()}

    def policy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    # ---- Optuna API ------------------------------------------------------------------------
    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            self._sync(study)
            params = self._propose(trial.number)
        return {k: v for k, v in params.items() if k in search_space}

    # ---- public helpers --------------------------------------------------------------------
    def sync(self, study: Study) -> int:
        """Consume the study's newly finished trials (updating the policy); returns how many
        rewards have been consumed in all."""
        with self._lock:
            self._sync(study)
            return self.consumed_rewards

    def propose(self, number: int) -> dict[str, Any]:
        """The params the current policy draws for trial ``number`` (what `sample_relative`
        returns, without reading the study)."""
        with self._lock:
            return self._propose(number)

    def most_likely(self) -> dict[str, Any]:
        """The greedy (arg-max, step by step) point of the current policy."""
        with self._lock, _one_thread():
            tokens = self.policy.sample(np.random.default_rng(0), greedy=True)
        return self._decode(tokens)

    def log_prob(self, params: Mapping[str, Any]) -> float:
        """log pi(params) under the current policy."""
        tokens = self._encode(params)
        if tokens is None:
            raise ValueError("params are not a point of this sampler's space")
        with self._lock, _one_thread(), torch.no_grad():
            return float(self.policy.log_prob(torch.tensor([tokens]))[0][0])

    # ---- internals -------------------------------------------------------------------------
    def _rng(self, number: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self._seed, int(number)]))

    def _propose(self, number: int) -> dict[str, Any]:
        rng = self._rng(number)
        if number < self.warmup_trials:
            tokens = [int(rng.integers(len(v))) for v in self._choices.values()]
        else:
            with _one_thread():
                tokens = self.policy.sample(rng)
        return self._decode(tokens)

    def _decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        return decode(self._choices, tokens)

    def _encode(self, params: Mapping[str, Any]) -> list[int] | None:
        return encode(self._choices, params)

    def _reward(self, study: Study, trial: FrozenTrial) -> float | None:
        return trial_reward(study, trial)

    def _sync(self, study: Study) -> None:
        key = (study.study_name, getattr(study, "_study_id", None))
        if key != self._study_key:
            self._reset(key)
        if len(study.directions) > 1:
            return
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        trials = [t for t in trials if t.number >= self._next_number]
        for i, t in enumerate(trials):
            if t.state in _UNFINISHED:
                later_done = sum(1 for u in trials[i + 1:] if u.state not in _UNFINISHED)
                if later_done < self.max_lag:
                    break
                self._next_number = t.number + 1  # stale: skip it
                continue
            reward = self._reward(study, t)
            tokens = self._encode(t.params) if reward is not None else None
            self._next_number = t.number + 1
            if tokens is None or reward is None:
                continue
            self._pending.append((tokens, reward))
            self.consumed_rewards += 1
            if len(self._pending) >= self.batch_size:
                batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
                self._update(batch)

    def _update(self, batch: list[tuple[list[int], float]]) -> None:
        rewards = np.array([r for _, r in batch], dtype=np.float64)
        if self._baseline is None:
            self._baseline = float(rewards.mean())
        adv = rewards - self._baseline
        d = self.baseline_decay
        sq = float(np.mean(adv**2))
        self._adv_sq = sq if self._adv_sq is None else d * self._adv_sq + (1 - d) * sq
        for r in rewards:  # the baseline for the next batch
            self._baseline = d * self._baseline + (1 - d) * float(r)
        scale = math.sqrt(self._adv_sq)
        self.updates += 1
        if scale < 1e-12:
            return
        actions = torch.tensor([tok for tok, _ in batch], dtype=torch.long)
        advantage = torch.tensor(adv / scale, dtype=torch.float32)
        with _one_thread():
            with torch.no_grad():
                old_logp, _ = self.policy.log_prob(actions)
            for _ in range(self.ppo_epochs):
                logp, ent = self.policy.log_prob(actions)
                ratio = torch.exp(logp - old_logp)
                surrogate = torch.minimum(ratio * advantage,
                                          torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * advantage)
                loss = -surrogate.mean() - self.entropy * ent.mean()
                self._optimizer.zero_grad()
                loss.backward()
                self._optimizer.step()


__all__ = ["RLSampler"]
