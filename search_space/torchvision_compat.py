"""Load torchvision MobileNetV3 weights into a built spec.

Built models use torchvision's module names, so the state dict loads by name. The checks
here turn a mismatch into a message a person can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .errors import UserError


def load_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | str | Path) -> nn.Module:
    """Copy a torchvision `mobilenet_v3_large`/`_small` (or LR-ASPP) state dict into `model`.

    Every tensor of the state dict must be used and every tensor of the model filled; shapes
    must agree. Accepts a mapping or the path of a `.pth` file.
    """
    if isinstance(state_dict, (str, Path)):
        state_dict = read_state_dict(state_dict)
    if not isinstance(state_dict, Mapping):
        raise UserError("weights: expected a state dict (a mapping of names to tensors)")
    own = model.state_dict()
    mismatch = key_mismatch(own, state_dict)
    if mismatch:
        raise UserError("state dict does not fit this spec: " + mismatch)
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(
                f"state dict does not fit this spec: {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def key_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading into a model whose state dict is `own`, or None."""
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} model tensors missing (first: {missing[0]})")
    if unused:
        parts.append(f"{len(unused)} state-dict tensors unused (first: {unused[0]})")
    return "; ".join(parts) or None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise UserError(f"{path}: not a torch state dict ({exc.__class__.__name__})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "weights"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict (names to tensors)")
    return dict(obj)
