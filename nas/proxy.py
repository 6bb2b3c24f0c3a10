"""Proxy training: a short, seeded training run that estimates how accurate a net can be.

MnasNet trained each sampled net 5 epochs on ImageNet and scored it on held-out training
images; here a few hundred SGD steps at low resolution on an in-memory data set stand in
for that. After training, BatchNorm running statistics are recomputed from training batches:
with momentum 0.01 a short run leaves them near their initial values and eval-mode accuracy
falls to chance.

Determinism: the result is a function of the model's initial weights, the data, the config
and the thread count. Initial weights are the caller's: build the model with
`build_seeded(factory, seed)` (or under ``torch.manual_seed``). Data order, augmentation and
dropout are drawn from ``cfg.seed`` without touching the caller's global RNG state.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

import torch
from torch import nn

from nas.data import Dataset, Split, search_splits, test_split
from nas.devices import autocast
from search_space.errors import UserError

SCHEDULES = ("cosine", "onecycle", "constant")
ProgressFn = Callable[[int, int, float], None]  # (step done, steps in all, smoothed loss)


@dataclass
class ProxyConfig:
    """Settings of one proxy-training run; defaults measured on Fashion-MNIST at 32x32
    (see experiments/proxy_budget.py).

    ``threads`` defaults to 1: on a 2-core machine shared with other busy processes, 2 torch
    threads ran 10-20x slower than 1 (OpenMP threads wait on each other); to use more cores,
    run more search workers.
    """

    # 300: seed std 0.2-0.4 points against 1.5 between MobileNetV3-Large and Small-0.75;
    # 150 steps was noise (std 0.9 > gap 0.3), 600 no steadier (experiments/proxy_budget.py)
    steps: int = 300
    batch_size: int = 128
    lr: float = 0.2                  # peak; MobileNetV3-Small diverged at 0.8, trained alike at 0.1-0.4
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5       # conv/linear weights only; BN and biases are exempt
    # "onecycle": cosine up from lr/25 over 30% of the steps, cosine down to 0 (torch's
    # OneCycleLR shape; as accurate as "cosine" in short runs, and its long warm-up is the
    # safer one for sampled nets); "cosine": linear warm-up, then cosine to 0; "constant"
    schedule: str = "onecycle"
    warmup: float = 0.05             # fraction of steps of linear warm-up ("cosine" only)
    label_smoothing: float = 0.1
    resolution: int = 32
    val_size: int | float = 10000    # count, or fraction of the training images
    split_seed: int = 0              # fixes the held-out split: keep it equal across a search
    seed: int = 0                    # data order, augmentation, dropout
    threads: int | None = 1          # torch.set_num_threads for the run (None leaves it); see below
    bn_recalib_batches: int = 20     # 0 disables recalibration
    max_train_images: int | None = None
    eval_batches: int | None = None  # None: the whole validation set
    eval_batch_size: int = 500
    flip: bool = False               # random horizontal flips (off: Fashion-MNIST is not symmetric)
    channels_last: bool = True       # NHWC during the run: depthwise convs ran 2-4x faster on CPU
    device: str = "cpu"

    def __post_init__(self):
        def bad(name: str, why: str):
            raise UserError(f"proxy setting {name}={getattr(self, name)!r} {why}")

        for name in ("steps", "bn_recalib_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        for name in ("batch_size", "resolution", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        for name in ("max_train_images", "eval_batches", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                bad(name, "must be a positive integer or None")
        if not self.lr > 0:  # also rejects NaN
            bad("lr", "must be > 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if not self.weight_decay >= 0:
            bad("weight_decay", "must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "must be in [0, 1)")
        if not 0 <= self.warmup < 1:
            bad("warmup", "must be a fraction in [0, 1)")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {', '.join(SCHEDULES)}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ProxyResult:
    val_accuracy: float       # in [0, 1]; 0.0 when diverged
    train_loss: float         # smoothed (EMA) training loss at the end; NaN when diverged
    steps: int                # steps actually taken
    images_per_second: float  # training throughput (forward + backward + update)
    seconds: float            # whole run: training, BN recalibration, validation
    diverged: bool            # loss or weights became NaN/inf: the trial failed
    val_images: int = 0       # images the accuracy was measured on


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` with initial weights fixed by ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def train_proxy(model: nn.Module, data: Dataset, cfg: ProxyConfig | None = None,
                progress: ProgressFn | None = None) -> ProxyResult:
    """Train ``model`` in place for ``cfg.steps`` steps, recalibrate BN, score on held-out data.

    ``model`` maps (N, data.in_channels, R, R) float to (N, data.num_classes) logits.
    Divergence (NaN/inf loss or weights) ends the run early with ``diverged=True``.
    """
    cfg = cfg or ProxyConfig()
    return _train(model, data, cfg, cfg.steps, progress)


def fine_tune(model: nn.Module, data: Dataset, steps: int, cfg: ProxyConfig | None = None,
              progress: ProgressFn | None = None) -> ProxyResult:
    """Continue training an already trained ``model`` for ``steps`` steps (fresh optimizer
    and schedule from ``cfg``; pass a lower ``lr`` for short-term fine-tuning), then
    recalibrate BN and score it like `train_proxy`."""
    cfg = cfg or ProxyConfig()
    if not isinstance(steps, int) or steps < 0:
        raise UserError(f"fine-tune steps must be an integer >= 0, got {steps!r}")
    return _train(model, data, cfg, steps, progress)


def evaluate(model: nn.Module, data: Dataset, split: str = "val", cfg: ProxyConfig | None = None) -> float:
    """Accuracy of ``model`` as it stands (eval mode, no recalibration).

    ``split="val"`` is the search's held-out part of the training images (``cfg.eval_batches``
    applies); ``split="test"`` is the whole test set, for final reports only.
    """
    cfg = cfg or ProxyConfig()
    if split == "val":
        _, val = search_splits(data, resolution=cfg.resolution, val_size=cfg.val_size,
                               split_seed=cfg.split_seed, max_train_images=cfg.max_train_images)
        limit = cfg.eval_batches
    elif split == "test":
        val, limit = test_split(data, resolution=cfg.resolution), None
    else:
        raise UserError(f"evaluation split must be 'val' or 'test', got {split!r}")
    _check_model(model, data)
    with _threads(cfg.threads), _placed(model, cfg):
        acc, _, _ = _accuracy(model, val, cfg, limit)
    return acc


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
                   device: str = "cpu") -> int:
    """Recompute every BatchNorm layer's running statistics as a plain average over
    ``batches`` (image tensors, or (images, labels) pairs); returns the number of batches
    used. The model is left in eval mode.

    Only the BatchNorm layers run in train mode, so dropout stays off while the statistics
    are gathered.
    """
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    model.eval()
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                used += 1
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.eval()
    return used


# ---------------------------------------------------------------- internals

@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _placed(model: nn.Module, cfg: ProxyConfig):
    """The model on ``cfg.device``, channels-last while inside; plain layout again after, so
    weight surgery and export see ordinary tensors."""
    model.to(cfg.device)
    if not cfg.channels_last:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _inputs(x: torch.Tensor, cfg: ProxyConfig) -> torch.Tensor:
    x = x.to(cfg.device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _check_model(model: nn.Module, data: Dataset) -> None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != data.in_channels:
        raise UserError(f"model takes {first.in_channels} input channels but data set "
                        f"{data.name} has {data.in_channels}")


def _lr_factor(schedule: str, steps: int, warmup: float) -> Callable[[int], float]:
    if schedule == "constant" or steps == 0:
        return lambda t: 1.0
    if schedule == "onecycle":  # torch's OneCycleLR shape: cosine up from 1/25 over 30%, cosine down
        peak, start = max(1, round(0.3 * steps)), 1 / 25

        def onecycle(t: int) -> float:
            if t < peak:
                return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t / peak))
            return 0.5 * (1 + math.cos(math.pi * (t - peak) / max(1, steps - peak)))
        return onecycle
    warm = round(warmup * steps)

    def cosine(t: int) -> float:
        if t < warm:
            return (t + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, steps - warm)))
    return cosine


def _optimizer(model: nn.Module, cfg: ProxyConfig) -> torch.optim.Optimizer:
    # weight decay on conv/linear weights only: decaying BN scales and biases hurts short runs
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


@torch.inference_mode()
def _accuracy(model: nn.Module, split: Split, cfg: ProxyConfig, limit: int | None) -> tuple[float, bool, int]:
    """(accuracy, all logits finite, images seen)."""
    model.eval()
    # a subset must not depend on the index order (an image folder is sorted by class), and
    # must be the same for every trial: shuffle with the split seed, not the training seed
    gen = torch.Generator().manual_seed(cfg.split_seed) if limit is not None else None
    correct = seen = 0
    finite = True
    for x, y in split.batches(cfg.eval_batch_size, shuffle=limit is not None, generator=gen, limit=limit):
        logits = model(_inputs(x, cfg))
        finite &= bool(torch.isfinite(logits).all())
        correct += int((logits.argmax(1).cpu() == y).sum())
        seen += len(y)
    return correct / max(seen, 1), finite, seen


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _train(model: nn.Module, data: Dataset, cfg: ProxyConfig, steps: int,
           progress: ProgressFn | None) -> ProxyResult:
    start = time.perf_counter()
    _check_model(model, data)
    train, val = search_splits(data, resolution=cfg.resolution, val_size=cfg.val_size,
                               split_seed=cfg.split_seed, max_train_images=cfg.max_train_images)
    gen = torch.Generator().manual_seed(cfg.seed)
    with _threads(cfg.threads), torch.random.fork_rng(devices=[]), _placed(model, cfg):
        torch.manual_seed(cfg.seed)  # dropout and any other use of the global RNG
        model.train()
        opt = _optimizer(model, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.schedule, steps, cfg.warmup))
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        batches = train.stream(cfg.batch_size, generator=gen, flip=cfg.flip) if steps else None

        ema, done, diverged = 0.0, 0, False
        t0 = time.perf_counter()
        while done < steps:
            x, y = next(batches)
            with autocast(cfg.device):
                logits = model(_inputs(x, cfg)).float()  # the loss in full precision
            if done == 0 and (logits.dim() != 2 or logits.shape[1] != data.num_classes):
                raise UserError(f"model outputs shape {tuple(logits.shape)} but data set "
                                f"{data.name} has {data.num_classes} classes")
            loss = criterion(logits, y.to(cfg.device))
            value = loss.item()
            if not math.isfinite(value):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            ema = 0.95 * ema + 0.05 * value
            smoothed = ema / (1 - 0.95 ** done)  # bias-corrected: early steps are not pulled to 0
            if progress is not None:
                progress(done, steps, smoothed)
        train_seconds = time.perf_counter() - t0
        speed = done * cfg.batch_size / train_seconds if done and train_seconds > 0 else 0.0

        diverged = diverged or not _finite_params(model)
        acc, val_n = 0.0, 0
        if not diverged:
            if cfg.bn_recalib_batches:
                recalib = torch.Generator().manual_seed(cfg.seed + 1)
                recalibrate_bn(model, (_inputs(x, cfg) for x, _ in train.batches(
                    cfg.batch_size, shuffle=True, generator=recalib, drop_last=True,
                    limit=cfg.bn_recalib_batches)), cfg.device)
            acc, finite, val_n = _accuracy(model, val, cfg, cfg.eval_batches)
            diverged = not finite
        model.eval()
    if diverged:
        acc = 0.0
    return ProxyResult(
        val_accuracy=acc, train_loss=float("nan") if diverged or not done else smoothed,
        steps=done, images_per_second=speed, seconds=time.perf_counter() - start,
        diverged=diverged, val_images=val_n)
