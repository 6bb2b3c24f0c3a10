"""Starting points: weights for the seed's training model.

- a state dict saved for exactly this training spec (e.g. by `nas search`): used as is;
- a state dict of the same net with another input channel count or class count (a
  torchvision MobileNetV3 ImageNet checkpoint: 3 channels, 1000 classes): the stem's filters
  are summed over RGB (or spread over the channels), the final classifier layer is left
  freshly initialised, and the seed is proxy-trained before NetAdapt starts;
- no weights: the seed is proxy-trained from scratch.
"""

from __future__ import annotations

from typing import Mapping

import torch

from search_space import build
from search_space.errors import UserError
from search_space.spec import ArchSpec
from search_space.torchvision_compat import key_mismatch, read_state_dict

from .channels import channel_plan

__all__ = ["adapt_state_dict", "read_state_dict"]


def adapt_state_dict(state: Mapping[str, torch.Tensor], train_spec: ArchSpec, seed: int = 0,
                     source: str = "weights") -> tuple[dict[str, torch.Tensor], bool, str]:
    """(state dict for `build(train_spec)`, whether it needs training first, a note).

    Only the first conv's input channels and the last classifier layer may differ.
    """
    model = build(train_spec, seed=seed)
    own = model.state_dict()
    mismatch = key_mismatch(own, state)
    if mismatch:
        raise UserError(f"{source} do not fit {train_spec.name}: {mismatch}")
    plan = channel_plan(train_spec)
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    retrain = False
    for key, mine in own.items():
        theirs = state[key]
        if tuple(theirs.shape) == tuple(mine.shape):
            out[key] = theirs.clone().to(mine.dtype)
            continue
        dims = plan.dims[key]
        diff = [d for d in range(mine.dim()) if theirs.dim() != mine.dim() or theirs.shape[d] != mine.shape[d]]
        if theirs.dim() == mine.dim() and len(diff) == 1 and dims[diff[0]] == "in":
            c_src, c_dst = theirs.shape[1], mine.shape[1]
            if c_dst == 1:
                out[key] = theirs.sum(1, keepdim=True).to(mine.dtype)
                notes.append(f"stem filters summed over {c_src} input channels")
            elif c_src == 1:
                out[key] = (theirs.repeat(1, c_dst, 1, 1) / c_dst).to(mine.dtype)
                notes.append(f"stem filters spread over {c_dst} input channels")
            else:
                raise UserError(f"{source}: {key} takes {c_src} input channels, the data has {c_dst}")
            retrain = True
        elif "k" in dims and theirs.dim() == mine.dim() and all(
                theirs.shape[d] == mine.shape[d] for d in range(mine.dim()) if dims[d] != "k"):
            out[key] = mine.clone()
            if "classifier" not in " ".join(notes):
                notes.append(f"classifier re-initialised for {train_spec.num_classes} classes "
                             f"(was {theirs.shape[0]})")
            retrain = True
        else:
            raise UserError(f"{source} do not fit {train_spec.name}: {key} has shape {tuple(theirs.shape)}, "
                            f"the model expects {tuple(mine.shape)}")
    return out, retrain, "; ".join(notes)
