"""Data-parallel training on torch.distributed, launched by ``torchrun`` (no launcher of our own).

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT ...] --no-python nas train ...``
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; `session` then joins the process
group (gloo on CPU, nccl on GPUs, each process on GPU ``LOCAL_RANK``). Outside torchrun nothing
changes: one process, world size 1.

The global batch of a step is the same as a one-process run's (``--batch-size`` is global): every
process draws the same batch positions and augmentation numbers from (seed, step) and keeps its
contiguous share, so the data each process reads is its shard, and a run's result does not
depend on how many processes ran it, up to BatchNorm, whose batch statistics are per process
(SyncBatchNorm is GPU-only in torch).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from search_space.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The process that logs, evaluates and writes files."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def share(self, positions: torch.Tensor) -> slice:
        """This process's contiguous part of a global batch of ``len(positions)``."""
        n = len(positions)
        if n % self.size:
            raise UserError(f"--batch-size {n}: must be a multiple of the {self.size} processes")
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def mean(self, value: float) -> float:
        """The mean of a number over all processes (every process gets the same answer)."""
        if not self.parallel:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t[0]) / self.size


def current() -> World:
    """The world this process is part of (size 1 unless `session` joined a torchrun group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def device_for(device: str) -> str:
    """The device of this process: under torchrun each process takes GPU ``LOCAL_RANK``."""
    if launched() and device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local}: torch sees {torch.cuda.device_count()} GPU(s) on this machine; "
                            "use --nproc-per-node <= the GPU count")
        return f"cuda:{local}"
    return device


@contextlib.contextmanager
def session(device: str):
    """Join the torchrun process group for the duration of a command (a no-op outside torchrun)."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        yield current()
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(device.split(":", 1)[1]) if ":" in device else 0)
    dist.init_process_group(backend)
    try:
        yield current()
        dist.barrier()  # rank 0 may still be scoring or writing; nobody leaves before it is done
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: str, *, find_unused: bool = False,
         sync_buffers: bool = True) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several processes train it, else ``model`` itself."""
    if not world.parallel:
        return model
    ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused,
                                                     forward_sync_buffers=sync_buffers)


__all__ = ["World", "current", "launched", "device_for", "session", "wrap"]
