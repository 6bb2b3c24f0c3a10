"""Which torch device a run uses: ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``."""

from __future__ import annotations

from search_space.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None) -> str:
    """'cpu' or 'cuda' (or 'cuda:N'); UserError for an unknown name or a GPU torch cannot see."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise UserError(f"--device {name!r}: expected cuda or cuda:N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise UserError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
        return name
    raise UserError(f"--device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")




def autocast(device: str):
    """Mixed precision where it is safe without loss scaling: bf16 autocast on a GPU that supports
    it (fp16 would need a GradScaler and overflows in softmax/SE without one); full precision on
    CPUs and older GPUs, so nothing changes there."""
    import contextlib

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["DEVICES", "resolve_device", "autocast"]
