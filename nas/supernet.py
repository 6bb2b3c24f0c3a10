"""Training a weight-sharing supernet (`search_space.supernet.Supernet`) on the proxy task.

Each step trains several subnets on one batch and takes one optimizer step on the summed
gradients. Rules (``SupernetConfig.rule``):

- ``sandwich`` (default; Universally Slimmable Networks, BigNAS, AttentiveNAS): the largest
  net on the labels, ``num_random`` random nets and the smallest net with in-place
  distillation (KL to the largest net's detached soft predictions) when ``distill`` is on;
- ``uniform``: ``num_random`` random nets on the labels (single-path one-shot, SPOS/TuNAS
  style sharing without a teacher).

- ``progressive`` (once-for-all's progressive shrinking): the sandwich rule over a space that
  grows: the first quarter of the steps trains the largest net alone, the second opens the
  kernel sizes, the third the depths, the last every choice (expansions, widths, SE, ...);
  choices not yet opened stay at the largest net's value.

``warmup_largest``: for that fraction of the steps a random net is replaced by the largest
net with a probability falling linearly from 1 to 0 (TuNAS's filter/op warm-up).

The held-out split the search scores on is never trained on: training batches come from
the search's train split (`nas.data.search_splits` with the same ``val_size`` and
``split_seed`` as the proxy).

Resume: a checkpoint (weights, optimizer, step, curves) is written atomically every
``checkpoint_minutes`` and at the end. Batch order, sampled subnets and dropout are pure
functions of (seed, step), so a run killed at any step and started again reaches, on CPU,
the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from search_space.errors import UserError

from .data import batch_positions
from .progress import Bar

RULES = ("sandwich", "uniform", "progressive")
# progressive shrinking (once-for-all): the dimensions opened in each quarter of the steps, by the
# suffix of a choice's name; ``None`` opens every choice (SE, nonlinearity, widths, custom ones)
PROGRESSIVE_PHASES: tuple[tuple[str, ...] | None, ...] = ((), ("kernel",), ("kernel", "layers"), None)
CHECKPOINT = "supernet.pt"
META = "supernet.json"
FORMAT = "mnv3-nas/supernet"
FORMAT_VERSION = 1


@dataclass
class SupernetConfig:
    """Settings of one supernet training run (`nas supernet train` flags map one to one)."""

    space: str = "small"
    steps: int = 1200            # ~35 min for small on one core here (sandwich: 4 nets a step)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    warmup: float = 0.05          # fraction of steps of linear LR warm-up, then cosine to 0
    rule: str = "sandwich"
    num_random: int = 2           # random nets per step besides the largest and smallest
    distill: bool = True          # in-place distillation from the largest net (sandwich)
    warmup_largest: float = 0.0   # TuNAS-style: random nets replaced by the largest early on
    kernel_sharing: str = "nested"  # nested (centre crops of the largest kernel), transform (OFA) or separate (TuNAS)
    grad_clip: float | None = 5.0
    resolution: int = 32
    val_size: int | float = 10000
    split_seed: int = 0
    seed: int = 0
    threads: int | None = 1
    channels_last: bool = True
    checkpoint_minutes: float = 2.0
    eval_every: int = 0           # steps between curve evaluations (0: 10 per run)
    device: str = "cpu"
    accumulate: int = 1           # micro-batches per step and process (BN statistics per micro-batch)

    def __post_init__(self) -> None:
        def bad(name: str, why: str):
            raise UserError(f"supernet setting {name}={getattr(self, name)!r} {why}")

        for name in ("steps", "batch_size", "resolution", "accumulate"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be a positive integer")
        if not isinstance(self.num_random, int) or self.num_random < 0:
            bad("num_random", "must be an integer >= 0")
        from search_space.supernet import KERNEL_SHARING

        if self.kernel_sharing not in KERNEL_SHARING:
            bad("kernel_sharing", f"must be one of {', '.join(KERNEL_SHARING)}")
        if self.rule not in RULES:
            bad("rule", f"must be one of {', '.join(RULES)}")
        if self.rule == "uniform" and self.num_random < 1:
            bad("num_random", "must be >= 1 with the uniform rule")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if not 0 <= self.warmup < 1:
            bad("warmup", "must be a fraction in [0, 1)")
        if not 0 <= self.warmup_largest <= 1:
            bad("warmup_largest", "must be a fraction in [0, 1]")
        if not self.checkpoint_minutes > 0:
            bad("checkpoint_minutes", "must be > 0")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # settings that change the weights a run reaches (others may change on a resume)
    # how the work is spread (processes, micro-batches) may change on a resume, like the threads
    IDENTITY_EXEMPT = ("threads", "checkpoint_minutes", "device", "eval_every", "accumulate")

    def identity(self) -> dict:
        return self.identity_of(self.to_dict())

    @classmethod
    def identity_of(cls, config: dict) -> dict:
        """The settings of a saved config that change the weights; a setting added after the
        checkpoint was written takes its default (the behaviour the checkpoint was trained with)."""
        return {k: v for k, v in {**cls().to_dict(), **config}.items() if k not in cls.IDENTITY_EXEMPT}


@dataclass
class TrainOutcome:
    out: Path
    steps: int
    resumed_from: int
    seconds: float
    images_per_second: float
    curves: list[dict] = field(default_factory=list)


def data_fingerprint(data) -> dict:
    return {"name": data.name, "num_classes": int(data.num_classes), "in_channels": int(data.in_channels),
            "train_images": int(len(data.train_y)), "test_images": int(len(data.test_y))}


def space_fingerprint(space) -> str:
    """A digest of the space's definition (a custom space under a built-in name is not that space)."""
    d = space.to_dict()
    for k in ("resolution", "in_channels", "num_classes", "description", "known"):
        d.pop(k, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---- the schedule: everything a step does is a function of (seed, step) --------------------------
def lr_at(cfg: SupernetConfig, step: int) -> float:
    warm = round(cfg.warmup * cfg.steps)
    if step < warm:
        return cfg.lr * (step + 1) / (warm + 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.steps - warm)))


def step_nets(space, cfg: SupernetConfig, step: int) -> list[tuple[str, dict]]:
    """The (role, point) pairs trained at ``step``."""
    from search_space.supernet import largest_point, smallest_point

    rng = random.Random(f"supernet:{cfg.seed}:{step}")
    p_large = 0.0
    if cfg.warmup_largest > 0:
        p_large = max(0.0, 1.0 - step / max(1.0, cfg.warmup_largest * cfg.steps))
    largest = largest_point(space)
    opened = progressive_phase(cfg, step) if cfg.rule == "progressive" else None
    if opened == ():
        return [("largest", largest)]

    def restrict(point: dict) -> dict:
        if opened is None:
            return point
        return {k: v if k.rsplit("_", 1)[-1] in opened else largest[k] for k, v in point.items()}

    randoms = []
    for _ in range(cfg.num_random):
        point = restrict(space.sample_params(rng))
        if p_large and rng.random() < p_large:
            point = largest
        randoms.append(("random", point))
    if cfg.rule == "uniform":
        return randoms
    return [("largest", largest), *randoms, ("smallest", restrict(smallest_point(space)))]


def progressive_phase(cfg: SupernetConfig, step: int) -> tuple[str, ...] | None:
    """The choice suffixes progressive shrinking has opened at ``step`` (``None``: all of them)."""
    return PROGRESSIVE_PHASES[min(len(PROGRESSIVE_PHASES) - 1, step * len(PROGRESSIVE_PHASES) // cfg.steps)]


# ---- checkpoints ----------------------------------------------------------------------------------
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_meta(out: Path, meta: dict) -> None:
    tmp = out / f".{META}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / META)


def load_checkpoint(folder: str | Path) -> dict:
    """The checkpoint of a supernet folder; UserError if missing or unreadable."""
    folder = Path(folder)
    path = folder / CHECKPOINT if folder.is_dir() else folder
    if not path.exists():
        raise UserError(f"{folder}: no supernet checkpoint ({CHECKPOINT}); train one with `nas supernet train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"{path}: corrupt supernet checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a supernet checkpoint of this project")
    if ckpt.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: supernet checkpoint version {ckpt.get('version')!r}; this build reads {FORMAT_VERSION}")
    return ckpt


def open_supernet(folder: str | Path, *, space=None, data=None, resolution: int | None = None):
    """(supernet in eval mode, checkpoint meta). With ``space``/``data``/``resolution`` given,
    a supernet trained for another space, data set or geometry is refused (UserError)."""
    from search_space import get_space
    from search_space.supernet import Supernet

    ckpt = load_checkpoint(folder)
    meta = {**ckpt["meta"], "step": int(ckpt["step"])}
    sp = get_space(space if space is not None else _space_from_meta(meta))
    if space is not None:
        if sp.name != meta["space"] or space_fingerprint(sp) != meta["space_fingerprint"]:
            raise UserError(f"{folder}: supernet was trained for space {meta['space']!r}, not {sp.name!r}")
    if data is not None and data_fingerprint(data) != meta["data"]:
        raise UserError(f"{folder}: supernet was trained on data set {meta['data']['name']!r} "
                        f"({meta['data']['train_images']} train images), not {data.name!r} ({len(data.train_y)})")
    if resolution is not None and int(resolution) != int(meta["resolution"]):
        raise UserError(f"{folder}: supernet was trained at resolution {meta['resolution']}, not {resolution}")
    net = Supernet(sp, meta["data"]["in_channels"], meta["data"]["num_classes"], meta["resolution"],
                   meta["config"].get("kernel_sharing", "nested"))
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(f"{folder}: supernet checkpoint does not fit space {sp.name!r} (its weights differ in shape)") from None
    net.eval()
    return net, meta


def _space_from_meta(meta: dict):
    from search_space import SearchSpace

    return SearchSpace.from_dict(meta["space_def"], source="supernet checkpoint")


# ---- training -------------------------------------------------------------------------------------
def _optimizer(net: nn.Module, cfg: SupernetConfig) -> torch.optim.Optimizer:
    # kernel transforms start at identity: decay would pull them toward zero, not toward the crop
    decay = [p for n, p in net.named_parameters() if p.dim() > 1 and ".transform_" not in n]
    rest = [p for n, p in net.named_parameters() if p.dim() <= 1 or ".transform_" in n]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def _as_input(x: torch.Tensor, cfg: SupernetConfig) -> torch.Tensor:
    x = x.to(cfg.device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def train_supernet(cfg: SupernetConfig, out: str | Path, data, *, progress: bool = True,
                   stop_after: int | None = None, log: Callable[[str], None] | None = None) -> TrainOutcome:
    """Train (or continue training) the supernet of ``cfg.space`` in ``out``.

    ``stop_after``: return after that many steps of this call (tests use it to kill a run
    half-way; the checkpoint is written first).
    """
    from nas.data import search_splits
    from search_space import get_space
    from search_space.supernet import Supernet

    from .distributed import current, wrap

    world = current()
    log = log or (lambda s: print(s, file=sys.stderr))
    if not world.main:
        progress, log = False, (lambda s: None)
    out = Path(out)
    space = get_space(cfg.space)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: torch sees no CUDA GPU on this machine")
    train, _ = search_splits(data, resolution=cfg.resolution, val_size=cfg.val_size, split_seed=cfg.split_seed)
    if len(train) < cfg.batch_size:
        raise UserError(f"batch size {cfg.batch_size} exceeds the {len(train)} training images")
    if cfg.batch_size % (world.size * cfg.accumulate):
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of {world.size} process(es) x "
                        f"{cfg.accumulate} micro-batch(es)")
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "space": space.name, "space_fingerprint": space_fingerprint(space),
        "space_def": space.to_dict(), "data": data_fingerprint(data), "resolution": cfg.resolution,
        "config": cfg.to_dict(),
    }
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = Supernet(space, data.in_channels, data.num_classes, cfg.resolution, cfg.kernel_sharing)
        net.to(cfg.device)
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        opt = _optimizer(net, cfg)
        start, curves, seconds_before, ema_before = 0, [], 0.0, None
        ckpt_path = out / CHECKPOINT
        if ckpt_path.exists():
            ckpt = load_checkpoint(out)
            _check_resume(ckpt["meta"], meta, out)
            try:
                net.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError):
                raise UserError(f"{ckpt_path}: checkpoint does not fit this supernet; use another --out") from None
            start, curves = int(ckpt["step"]), list(ckpt.get("curves", []))
            seconds_before = float(ckpt.get("seconds", 0.0))
            ema_before = ckpt.get("ema")
            if start < cfg.steps:
                log(f"resuming supernet training in {out} at step {start} of {cfg.steps}")
        out.mkdir(parents=True, exist_ok=True)
        # phase: "forward" while a step's passes run (they move BN running statistics), "update"
        # while the optimizer applies it; an interrupt saves the last finished step either way
        state = {"step": start, "seconds": seconds_before, "phase": "idle", "buffers": None,
                 "ema": ema_before}

        def save() -> None:
            if not world.main:  # one writer; the other processes hold the same weights
                return
            model_sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            _atomic_save({"format": FORMAT, "version": FORMAT_VERSION, "meta": meta, "model": model_sd,
                          "optimizer": opt.state_dict(), "step": state["step"], "curves": curves,
                          "seconds": state["seconds"], "ema": state.get("ema")}, ckpt_path)
            _write_meta(out, {**meta, "step": state["step"], "seconds": round(state["seconds"], 1),
                              "complete": state["step"] >= cfg.steps, "curves": curves[-1:] if curves else []})

        eval_every = cfg.eval_every or max(1, cfg.steps // 10)
        # each net of a step touches other weights: DDP must look for the unused ones; BN running
        # statistics stay per process (rank 0's are saved; scoring recalibrates them anyway)
        parallel = wrap(net, world, cfg.device, find_unused=True, sync_buffers=False)
        images = 0
        t_run = time.perf_counter()
        last_save = time.monotonic()
        with Bar(progress, cfg.steps, start, f"supernet {space.name} ({cfg.rule})", ("loss",)) as bar, \
                _save_on_interrupt(save, state, net):
            step = start
            ema = state.get("ema")
            while step < cfg.steps:
                if stop_after is not None and step - start >= stop_after:
                    break
                t0 = time.perf_counter()
                state["buffers"] = {k: b.clone() for k, b in net.named_buffers()}
                state["phase"] = "forward"
                loss_big = _train_step(net, opt, space, cfg, train, step, parallel, world)
                # the update and the step count change together: an interrupt saves both or neither
                state["phase"] = "update"
                opt.step()
                step += 1
                state["step"] = step
                state["phase"] = "idle"
                images += cfg.batch_size
                state["seconds"] += time.perf_counter() - t0
                ema = loss_big if ema is None else 0.95 * ema + 0.05 * loss_big
                state["ema"] = ema
                if world.main and (step % eval_every == 0 or step == cfg.steps):
                    curves.append(_curve_point(net, space, cfg, data, step, ema, state["seconds"]))
                    bar.log(_curve_text(curves[-1]))
                bar.update(step, loss=f"{ema:.3f}")
                if time.monotonic() - last_save >= cfg.checkpoint_minutes * 60:
                    save()
                    last_save = time.monotonic()
            if step > start or not ckpt_path.exists():  # a finished run started again changes nothing
                save()
        wall = time.perf_counter() - t_run
        if world.main:
            _plot_curves(curves, out / "curves.png", space.name)
        return TrainOutcome(out, state["step"], start, state["seconds"], images / wall if wall > 0 else 0.0, curves)
    finally:
        torch.set_num_threads(threads_before)


class _save_on_interrupt:
    """Ctrl-C (or SIGTERM, which the CLI turns into one) saves the last finished step first."""

    def __init__(self, save: Callable[[], None], state: dict, net: nn.Module) -> None:
        self.save, self.state, self.net = save, state, net

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is KeyboardInterrupt and self.state["phase"] != "update":
            if self.state["phase"] == "forward":  # undo the half step's BN statistics
                own = dict(self.net.named_buffers())
                for k, b in self.state["buffers"].items():
                    own[k].copy_(b)
            self.save()
        return False


def _check_resume(was: dict, now: dict, out: Path) -> None:
    if was["space"] != now["space"] or was["space_fingerprint"] != now["space_fingerprint"]:
        raise UserError(f"{out}: holds a supernet of space {was['space']!r}; use another --out for {now['space']!r}")
    if was["data"] != now["data"]:
        raise UserError(f"{out}: holds a supernet trained on {was['data']['name']!r}; use another --out")
    a, b = SupernetConfig.identity_of(was["config"]), SupernetConfig.identity_of(now["config"])
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            raise UserError(f"{out}: was trained with {k}={a.get(k)!r}, not {b.get(k)!r}; "
                            "continue with the same settings or use another --out")


def _train_step(net, opt, space, cfg: SupernetConfig, train, step: int, parallel=None, world=None) -> float:
    """The gradients of one step over the step's nets (the caller applies them); returns the first net's loss.

    ``parallel``: ``net`` in DistributedDataParallel; this process then trains on its share of
    the step's batch, and the gradients of all the step's nets are averaged over the processes
    once, with the last net's backward pass.
    """
    import contextlib

    from .devices import autocast
    from .distributed import World

    parallel = parallel if parallel is not None else net
    world = world or World()
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, step)
    positions = batch_positions(len(train), cfg.batch_size, cfg.seed, step)
    x_all, y_all = train.batch(positions[world.share(positions)])
    x_all, y_all = _as_input(x_all, cfg), y_all.to(cfg.device)
    net.train()
    opt.zero_grad(set_to_none=True)
    first_loss = float("nan")
    nets = step_nets(space, cfg, step)
    size = len(x_all) // cfg.accumulate
    for j in range(cfg.accumulate):
        x, y = x_all[j * size:(j + 1) * size], y_all[j * size:(j + 1) * size]
        # dropout: a function of (seed, step, micro-batch of the global batch), however the work is split
        torch.manual_seed(cfg.seed * 7_919 + step + 104_729 * (world.rank * cfg.accumulate + j))
        teacher = None
        for k, (role, point) in enumerate(nets):
            net.activate(point)
            last = k == len(nets) - 1 and j == cfg.accumulate - 1
            # forward and backward inside no_sync: the gradients reach the other processes once, summed
            with contextlib.nullcontext() if last or not world.parallel else parallel.no_sync():
                with autocast(cfg.device):
                    logits = parallel(x).float()  # losses and the teacher in full precision
                if teacher is not None and cfg.distill:
                    loss = F.kl_div(F.log_softmax(logits, 1), teacher, reduction="batchmean")
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if role == "largest":
                    teacher = F.softmax(logits.detach(), 1)
                value = world.mean(float(loss.detach()))  # all processes see a divergence together
                if not math.isfinite(value):  # before any of it reaches the weights
                    raise UserError(f"supernet training diverged at step {step} ({role} net loss {value}); "
                                    "lower --lr")
                (loss / cfg.accumulate if cfg.accumulate > 1 else loss).backward()
            if k == 0:
                first_loss = value if j == 0 else first_loss + (value - first_loss) / (j + 1)
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    return first_loss


def _curve_point(net, space, cfg: SupernetConfig, data, step: int, loss: float, seconds: float) -> dict:
    """Held-out accuracy of the largest and smallest nets (BN recalibrated) on 1,000 images."""
    from search_space.supernet import largest_point, smallest_point

    from .evaluators import score_active

    point = {"step": step, "train_loss": round(float(loss), 4), "seconds": round(seconds, 1)}
    with torch.random.fork_rng(devices=[]):
        for role, p in (("largest", largest_point(space)), ("smallest", smallest_point(space))):
            net.activate(p)
            acc = score_active(net, data, resolution=cfg.resolution, val_size=cfg.val_size,
                               split_seed=cfg.split_seed, recalib_images=512, val_images=1000,
                               device=cfg.device, channels_last=cfg.channels_last)
            point[f"{role}_val_acc"] = round(acc, 4)
    net.train()
    return point


def _curve_text(c: dict) -> str:
    return (f"step {c['step']}: loss {c['train_loss']:.3f}, held-out acc largest {c['largest_val_acc']:.4f} "
            f"smallest {c['smallest_val_acc']:.4f}")


def _plot_curves(curves: list[dict], path: Path, name: str) -> None:
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curves]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(steps, [c["train_loss"] for c in curves], marker="o")
    a.set_xlabel("step")
    a.set_ylabel("training loss (largest net, EMA)")
    for role in ("largest", "smallest"):
        b.plot(steps, [100 * c[f"{role}_val_acc"] for c in curves], marker="o", label=role)
    b.set_xlabel("step")
    b.set_ylabel("held-out accuracy (%)")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(f"supernet {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["SupernetConfig", "TrainOutcome", "train_supernet", "open_supernet", "load_checkpoint", "RULES",
           "lr_at", "step_nets", "batch_positions"]
