"""Full training of one net (`nas train`): the paper's recipe scaled to the data set.

MobileNetV3 (Sec. 6.1) trained with RMSProp (decay 0.9, momentum 0.9), weight decay 1e-5,
dropout before the classifier, an exponential moving average of the weights and label
smoothing, at batch 4096 and lr 0.1. Here:

- RMSProp with TF's epsilon convention (1e-3 inside the square root: ~0.0316 outside, as
  torch applies it), lr 0.1 x batch / 4096 (linear scaling), one epoch of linear warm-up,
  then cosine decay to zero (a short run needs its decay to finish; `--schedule exp` gives
  MnasNet's x0.97 every 2.4 epochs), weight decay 1e-5 on conv/linear weights, label
  smoothing 0.1, the spec's dropout;
- EMA of weights and BatchNorm statistics (`torch.optim.swa_utils.AveragedModel`), decay
  0.999 (0.9999 suits ImageNet's 10,000 steps an epoch, not a few hundred), warmed up as
  TF's ExponentialMovingAverage(num_updates=step) that the MnasNet code used; the EMA model is
  what validation, the best checkpoint and the test score use. BatchNorm is as trained: no
  recalibration after a full run;
- augmentation: random crops of the image padded by 1/8 of its side; horizontal flips with
  ``--flip`` (off for Fashion-MNIST, whose classes are not mirror-symmetric).

Validation every epoch on the held-out split of the training images; the test set is scored
once, at the end, with the best epoch's EMA weights. ``last.pt`` is written every few
minutes and at each epoch's end (never mid-step, so it is always consistent), ``best.pt`` when
validation improves; batch order, crops and dropout are functions of (seed, step), so a run
killed at any moment and started again continues from ``last.pt`` and, on CPU, reaches the
weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_space.errors import UserError

from .progress import Bar

FORMAT = "mnv3-nas/train"
SCHEDULES = ("cosine", "exp")


def ema_update(decay: float):
    """EMA step for AveragedModel with TF's warm-up: decay min(decay, (1 + n) / (10 + n)) at
    the n-th update. With a fixed 0.999 the average of a 390-step epoch still holds 68% of the
    random initialisation: the EMA net scored chance (10.0%) after epochs 1 and 2 here."""

    @torch.no_grad()
    def update(averaged: list, current: list, n_averaged) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # BatchNorm's step counters: the model's own
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


@dataclass
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float | None = None          # None: 0.1 x batch / 4096 (MobileNetV3's, linearly scaled)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    ema_decay: float = 0.999
    resolution: int = 32
    val_size: int | float = 10000
    split_seed: int = 0
    seed: int = 0
    flip: bool = False
    threads: int | None = 1
    device: str = "cpu"
    checkpoint_minutes: float = 2.0
    accumulate: int = 1  # micro-batches per step and process (gradient accumulation; BN statistics per micro-batch)

    def __post_init__(self) -> None:
        def bad(name: str, why: str):
            raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {why}")

        for name in ("epochs", "batch_size", "resolution", "accumulate"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be a positive integer")
        if self.lr is not None and not self.lr > 0:
            bad("lr", "must be > 0")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"expected one of {', '.join(SCHEDULES)}")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", "must be in [0, 1)")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 4096

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    EXEMPT = ("threads", "device", "checkpoint_minutes", "accumulate")  # may change on a resume


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = cfg.epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.peak_lr * (step + 1) / (warm + 1)
    if cfg.schedule == "exp":
        return cfg.peak_lr * 0.97 ** ((step - warm) / (2.4 * steps_per_epoch))
    return cfg.peak_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _augment(x: torch.Tensor, g: torch.Generator, flip: bool, part: slice | None = None, total: int = 0) -> torch.Tensor:
    """Random crops of the zero-padded image (pad = side / 8), and optional flips.

    ``x`` is the ``part`` of a global batch of ``total`` images that this process holds: the
    random numbers are drawn for the whole batch, so N processes crop as one process does.
    """
    n, _, h, w = x.shape
    part = part or slice(0, n)
    total = total or n
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (total,), generator=g)[part]
    dx = torch.randint(0, 2 * pad + 1, (total,), generator=g)[part]
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
    out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1),
                 rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    if flip:
        mask = torch.rand(total, generator=g)[part] < 0.5
        out[mask] = out[mask].flip(-1)
    return out


def _micro_batches(n: int, k: int) -> list[slice]:
    size = n // k
    return [slice(j * size, (j + 1) * size) for j in range(k)]


def _accuracy(model: nn.Module, split, device: str, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(split), batch):
            x, y = split.batch(torch.arange(i, min(i + batch, len(split))))
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / max(1, len(split))


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_net(spec, data, out: str | Path, cfg: TrainConfig, *, weights: dict | None = None, progress: bool = True,
              stop_after: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train ``spec`` (at the data set's geometry) in ``out``; continue a run found there."""
    import dataclasses

    from search_space import build

    from .data import batch_positions, search_splits, test_split
    from .devices import autocast
    from .distributed import current, wrap

    world = current()
    log = log or (lambda s: print(s, file=sys.stderr))
    if not world.main:
        progress, log = False, (lambda s: None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    spec = dataclasses.replace(spec, resolution=cfg.resolution, in_channels=data.in_channels,
                               num_classes=data.num_classes)
    train, val = search_splits(data, resolution=cfg.resolution, val_size=cfg.val_size, split_seed=cfg.split_seed)
    per_epoch = len(train) // cfg.batch_size
    if per_epoch < 1:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(train)} training images")
    total = cfg.epochs * per_epoch
    if cfg.batch_size % (world.size * cfg.accumulate):
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of {world.size} process(es) x "
                        f"{cfg.accumulate} micro-batch(es)")
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        model = build(spec, seed=cfg.seed)
        if weights is not None:
            from search_space import load_torchvision_state_dict

            load_torchvision_state_dict(model, weights)  # names and shapes checked: one line if they differ
        model.to(cfg.device)
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(cfg.ema_decay), use_buffers=True)
        decay = [p for p in model.parameters() if p.dim() > 1]
        rest = [p for p in model.parameters() if p.dim() <= 1]
        opt = torch.optim.RMSprop([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=cfg.peak_lr, alpha=0.9, momentum=0.9, eps=0.0316)
        meta = {"format": FORMAT, "spec": spec.to_dict(), "config": cfg.to_dict(),
                "data": {"name": data.name, "train_images": int(len(data.train_y))}}
        step, history, best = 0, [], -1.0
        last = out / "last.pt"
        if last.exists():
            try:
                ck = torch.load(last, map_location="cpu", weights_only=True)
                _check_resume(ck["meta"], meta, out)
                model.load_state_dict(ck["model"])
                ema.load_state_dict(ck["ema"])
                opt.load_state_dict(ck["optimizer"])
                step, history, best = int(ck["step"]), list(ck["history"]), float(ck["best"])
            except UserError:
                raise
            except Exception as exc:  # a damaged or foreign file
                raise UserError(f"{last}: corrupt or foreign training checkpoint ({exc.__class__.__name__}); "
                                "remove it or use another --out") from None
            log(f"resuming training in {out} at step {step} of {total} (epoch {step // per_epoch + 1})")
        out.mkdir(parents=True, exist_ok=True)

        def save(path: Path) -> None:
            if not world.main:  # one writer; the other processes hold the same weights
                return
            _atomic_save({"meta": meta, "model": {k: v.cpu() for k, v in model.state_dict().items()},
                          "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
                          "optimizer": opt.state_dict(), "step": step, "history": history, "best": best}, path)

        crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        # BN statistics come from each process's share; its running averages from rank 0's (broadcast)
        parallel = wrap(model, world, cfg.device)
        run_loss, run_n, t_save, started = 0.0, 0, time.monotonic(), step
        t_loop = time.perf_counter()
        with Bar(progress, total, step, f"train {spec.name}", ("loss", "val")) as bar:
            while step < total:
                if stop_after is not None and step - started >= stop_after:
                    save(last)
                    wall = time.perf_counter() - t_loop
                    return {"stopped": step, "images_per_second": (step - started) * cfg.batch_size / max(wall, 1e-9)}
                model.train()
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step, per_epoch)
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                positions = batch_positions(len(train), cfg.batch_size, cfg.seed, step)
                mine = world.share(positions)
                x, y = train.batch(positions[mine])
                x = _augment(x, g, cfg.flip, mine, cfg.batch_size).to(cfg.device)
                y = y.to(cfg.device)
                opt.zero_grad(set_to_none=True)
                value = 0.0
                for j, part in enumerate(_micro_batches(len(x), cfg.accumulate)):
                    # micro-batch m of the global batch draws the same dropout however the work is split
                    torch.manual_seed(cfg.seed * 7_919 + step + 104_729 * (world.rank * cfg.accumulate + j))
                    sync = j == cfg.accumulate - 1 or not world.parallel
                    with contextlib.nullcontext() if sync else parallel.no_sync():
                        with autocast(cfg.device):
                            loss = crit(parallel(x[part]), y[part]) / cfg.accumulate
                        loss.backward()
                    value += float(loss.detach())
                value = world.mean(value)  # every process stops on a divergence together
                if not math.isfinite(value):
                    raise UserError(f"training diverged at step {step} (loss {value}); lower --lr")
                opt.step()
                if world.main:
                    ema.update_parameters(model)
                step += 1
                run_loss, run_n = run_loss + value, run_n + 1
                if step % per_epoch == 0 and world.main:
                    acc = _accuracy(ema.module, val, cfg.device)
                    history.append({"epoch": step // per_epoch, "step": step, "train_loss": run_loss / run_n,
                                    "val_acc_ema": acc, "lr": lr_at(cfg, step - 1, per_epoch)})
                    run_loss, run_n = 0.0, 0
                    if acc > best:
                        best = acc
                        save(out / "best.pt")
                    save(last)
                    t_save = time.monotonic()
                    bar.log(f"epoch {history[-1]['epoch']}: loss {history[-1]['train_loss']:.3f}, "
                            f"held-out accuracy (EMA) {acc:.4f}")
                elif step % per_epoch and time.monotonic() - t_save >= cfg.checkpoint_minutes * 60:
                    save(last)
                    t_save = time.monotonic()
                bar.update(step, loss=f"{value:.3f}", val=f"{best:.4f}" if best >= 0 else "-")
        if not world.main:
            return {"spec": spec.name, "rank": world.rank, "steps": step}
        _write_curves(out, history)
        # the test set, once, with the best epoch's EMA weights
        ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        ema.load_state_dict(ck["ema"])
        test_acc = _accuracy(ema.module, test_split(data, resolution=cfg.resolution), cfg.device)
        final = {"spec": spec.name, "epochs": cfg.epochs, "best_val_acc_ema": best, "test_acc_ema": test_acc,
                 "best_epoch": max(history, key=lambda h: h["val_acc_ema"])["epoch"], "steps": step}
        (out / "result.json").write_text(json.dumps(final, indent=1) + "\n")
        spec.save(out / "spec.json")
        torch.save({k: v.cpu() for k, v in ema.module.state_dict().items()}, out / "weights.pt")
        return final
    finally:
        torch.set_num_threads(before)


def _check_resume(was: dict, now: dict, out: Path) -> None:
    if was.get("format") != FORMAT:
        raise UserError(f"{out}/last.pt: not a `nas train` checkpoint")
    if was["spec"]["rows"] != now["spec"]["rows"]:
        raise UserError(f"{out}: holds the training of another net ({was['spec']['name']}); use another --out")
    a = {k: v for k, v in was["config"].items() if k not in TrainConfig.EXEMPT}
    b = {k: v for k, v in now["config"].items() if k not in TrainConfig.EXEMPT}
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            raise UserError(f"{out}: was trained with {k}={a.get(k)!r}, not {b.get(k)!r}; use the same settings")
    if was["data"] != now["data"]:
        raise UserError(f"{out}: was trained on {was['data']['name']}; use another --out")


def _write_curves(out: Path, history: list[dict]) -> None:
    if not history:
        return
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [h["train_loss"] for h in history], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    b.plot(ep, [100 * h["val_acc_ema"] for h in history], marker="o")
    b.set_xlabel("epoch")
    b.set_ylabel("held-out accuracy, EMA weights (%)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


__all__ = ["TrainConfig", "train_net", "lr_at"]
