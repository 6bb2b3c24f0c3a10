"""Evaluators: how a search scores a net. Spec in; score, cost and optional weights out.

- `ProxyEvaluator`: train the net from scratch for a few hundred steps (`nas.proxy`).
- `SupernetEvaluator`: take the net's slice of a trained weight-sharing supernet
  (`search_space.supernet`), recalibrate its BatchNorm statistics on a few training
  batches, score it on the held-out split. Seconds instead of half a minute.

Both score on the same held-out split (``val_size``, ``split_seed``), so their numbers are
comparable, and both return the scored model so a search can keep the best net's weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from search_space import ArchSpec
from search_space.errors import UserError

EVALUATORS = ("proxy", "supernet")
# defaults chosen with experiments/supernet_eval_noise.py: see the README
# Fashion-MNIST squeezes the differences between nets (std ~0.2 points): smaller subsets ranked
# nets by their image subset more than by the nets (rank tau 0.06-0.29 between subsets of <= 2,500
# validation images, 0.70 with 2,048 recalibration images and all 10,000)
DEFAULT_RECALIB_IMAGES = 2048
DEFAULT_VAL_IMAGES = None  # all held-out images
RECALIB_BATCH = 128


@dataclass
class Evaluation:
    accuracy: float
    diverged: bool
    train_seconds: float = 0.0  # the evaluator's cost for this net
    extra: dict = field(default_factory=dict)
    model: Any = None  # the scored torch model, when the evaluator has one (best weights are saved)


class Evaluator(Protocol):
    name: str

    def __call__(self, spec: ArchSpec) -> Evaluation: ...

    def settings(self) -> dict:
        """What the study records (a resumed search must use the same evaluator settings)."""
        ...


class ProxyEvaluator:
    """Short proxy training (`nas.proxy.train_proxy`) of a net with fixed initial weights."""

    name = "proxy"

    def __init__(self, data, cfg, init_seed: int = 0) -> None:
        self.data, self.cfg, self.init_seed = data, cfg, init_seed

    def __call__(self, spec: ArchSpec) -> Evaluation:
        from search_space import build

        from .proxy import train_proxy

        model = build(spec, seed=self.init_seed)
        res = train_proxy(model, self.data, self.cfg)
        return Evaluation(float(res.val_accuracy), bool(res.diverged), float(res.seconds),
                          {"train_loss": _num(res.train_loss), "steps": res.steps,
                           "images_per_second": round(float(res.images_per_second), 1)},
                          model=None if res.diverged else model)

    def settings(self) -> dict:
        return {"evaluator": "proxy",
                **{k: v for k, v in self.cfg.to_dict().items() if k not in ("threads", "device")}}


class SupernetEvaluator:
    """A net's inherited weights from a trained supernet, BN recalibrated, scored on held-out data."""

    name = "supernet"

    def __init__(self, net, meta: dict, folder: Path, data, *, recalib_images: int = DEFAULT_RECALIB_IMAGES,
                 val_images: int | None = DEFAULT_VAL_IMAGES, threads: int | None = 1, device: str = "cpu",
                 finetune_steps: int = 0) -> None:
        if not isinstance(recalib_images, int) or recalib_images < 1:
            raise UserError(f"--recalib-images {recalib_images!r}: must be a positive integer")
        if val_images is not None and (not isinstance(val_images, int) or val_images < 1):
            raise UserError(f"--val-images {val_images!r}: must be a positive integer")
        self.net, self.meta, self.folder, self.data = net, meta, Path(folder), data
        self.space = net.space
        self.recalib_images, self.val_images = recalib_images, val_images
        self.threads, self.device = threads, device
        if not isinstance(finetune_steps, int) or finetune_steps < 0:
            raise UserError(f"--finetune-steps {finetune_steps!r}: must be an integer >= 0")
        # a few SGD steps on the inherited weights before scoring (then all held-out images are scored)
        self.finetune_steps = finetune_steps
        cfg = meta["config"]
        self.resolution, self.val_size, self.split_seed = meta["resolution"], cfg["val_size"], cfg["split_seed"]

    @classmethod
    def open(cls, folder: str | Path, data, *, space=None, resolution: int | None = None, **kw) -> "SupernetEvaluator":
        from .supernet import open_supernet

        net, meta = open_supernet(folder, space=space, data=data, resolution=resolution)
        return cls(net, meta, Path(folder), data, **kw)

    def __call__(self, spec: ArchSpec) -> Evaluation:
        t0 = time.perf_counter()
        params = self.space.encode(spec)
        extra: dict = {}
        if params is None:  # a zoo reference outside the space: its nearest point stands in
            params = self.space.nearest(spec)
            extra["scored_as"] = f"nearest point {self.space.code(params)}"
        with _threads(self.threads):
            _, model = self.net.extract(params, name=spec.name)
            if self.finetune_steps:
                acc = self._finetuned(model)
                finite = math.isfinite(acc)
                return Evaluation(acc if finite else math.nan, not finite, time.perf_counter() - t0, extra,
                                  model=model)
            acc = score_model(model, self.data, resolution=self.resolution, val_size=self.val_size,
                              split_seed=self.split_seed, recalib_images=self.recalib_images,
                              val_images=self.val_images, device=self.device)
        finite = math.isfinite(acc)
        return Evaluation(acc if finite else math.nan, not finite, time.perf_counter() - t0, extra, model=model)

    def _finetuned(self, model) -> float:
        from .proxy import ProxyConfig, fine_tune

        cfg = ProxyConfig(steps=self.finetune_steps, lr=0.02, schedule="constant", resolution=self.resolution,
                          val_size=self.val_size, split_seed=self.split_seed, threads=None, device=self.device,
                          bn_recalib_batches=max(1, self.recalib_images // 128))
        res = fine_tune(model, self.data, self.finetune_steps, cfg)
        return math.nan if res.diverged else float(res.val_accuracy)

    def settings(self) -> dict:
        import hashlib
        import json

        from .supernet import SupernetConfig

        config = SupernetConfig.identity_of(self.meta["config"])
        ident = json.dumps({"space": self.meta["space_fingerprint"], "data": self.meta["data"],
                            "resolution": self.meta["resolution"], "config": config}, sort_keys=True, default=str)
        return {"evaluator": "supernet", "supernet_id": hashlib.sha1(ident.encode()).hexdigest()[:16],
                "supernet_space": self.meta["space"], "supernet_fingerprint": self.meta["space_fingerprint"],
                "supernet_steps": self.meta.get("step"), "resolution": self.resolution,
                "val_size": self.val_size, "split_seed": self.split_seed,
                "recalib_images": self.recalib_images, "val_images": self.val_images,
                **({"finetune_steps": self.finetune_steps} if self.finetune_steps else {})}


def score_active(net, data, **kw) -> float:
    """The supernet's active net, extracted and scored like `SupernetEvaluator` scores it."""
    _, model = net.extract()
    return score_model(model, data, **kw)


def score_model(model, data, *, resolution: int, val_size, split_seed: int, recalib_images: int,
                val_images: int | None, device: str = "cpu", channels_last: bool = True,
                recalib_seed: int = 0, val_seed: int = 0) -> float:
    """Recalibrate BN on ``recalib_images`` training images, then accuracy on ``val_images``
    held-out images (None: all). The image subsets are fixed by the seeds, so every net is
    scored on the same images."""
    import torch

    from .data import search_splits
    from .proxy import recalibrate_bn

    train, val = search_splits(data, resolution=resolution, val_size=val_size, split_seed=split_seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def prep(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    g = torch.Generator().manual_seed(split_seed + 1 + 7_777 * recalib_seed)
    order = torch.randperm(len(train), generator=g)[:recalib_images]
    recalibrate_bn(model, (prep(train.batch(order[i:i + RECALIB_BATCH])[0])
                           for i in range(0, len(order), RECALIB_BATCH)), device)
    n = len(val) if val_images is None else min(val_images, len(val))
    g = torch.Generator().manual_seed(split_seed + 7_777 * val_seed)
    vorder = torch.randperm(len(val), generator=g)[:n] if n < len(val) else torch.arange(len(val))
    correct = 0
    finite = True
    scorer = fused_copy(model)  # BN folded into the convs: 10-35% faster, same logits to ~1e-5
    with torch.inference_mode():
        for i in range(0, n, 1000):
            x, y = val.batch(vorder[i:i + 1000])
            logits = scorer(prep(x))
            finite &= bool(torch.isfinite(logits).all())
            correct += int((logits.argmax(1).cpu() == y).sum())
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return correct / max(n, 1) if finite else math.nan


def fused_copy(model):
    """An eval-mode copy of ``model`` with each conv's BatchNorm folded into the conv."""
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from search_space.modules import ConvBNAct

    fused = copy.deepcopy(model).eval()
    for mod in fused.modules():
        if isinstance(mod, ConvBNAct) and len(mod) > 1 and isinstance(mod[1], torch.nn.BatchNorm2d):
            mod[0] = fuse_conv_bn_eval(mod[0], mod[1])
            mod[1] = torch.nn.Identity()
    return fused


class _threads:
    def __init__(self, n: int | None) -> None:
        self.n, self.before = n, None

    def __enter__(self):
        import torch

        if self.n:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "ProxyEvaluator", "SupernetEvaluator", "score_model",
           "score_active"]
