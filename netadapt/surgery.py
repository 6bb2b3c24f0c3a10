"""Weight surgery: carry a trained net's weights into a narrower spec.

For every channel space that shrinks (see `netadapt.channels`), the channels kept are those
whose producing filters have the largest L2 norm (NetAdapt's ChooseWhichFilters); for a
space made by several convs (a residual group: the conv that opens it and every block's
projection) the per-channel norms of all of them are summed. Every tensor indexing that
space is then cut the same way: conv outputs and inputs, depthwise convs, BatchNorm weights
and running statistics, squeeze-excite fc1/fc2, the next layer's input channels, the
classifier's input. Kept channels stay in their original order, so a shrink that removes
nothing is the identity.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from search_space import build
from search_space.spec import ArchSpec

from .channels import ChannelPlan, channel_plan


class SurgeryError(ValueError):
    """Two specs whose channel structure differs (a proposal may only change widths)."""


def check_compatible(old: ChannelPlan, new: ChannelPlan) -> None:
    """Raise SurgeryError unless `new` differs from `old` only in (not larger) widths."""
    if old.dims.keys() != new.dims.keys():
        extra = sorted(set(old.dims) ^ set(new.dims))
        raise SurgeryError(f"{old.spec.name} -> {new.spec.name}: different layers ({extra[0]} ...)")
    if old.partition() != new.partition():
        raise SurgeryError(f"{old.spec.name} -> {new.spec.name}: residual or expansion structure changes")
    for space, width in new.sizes.items():
        if width > old.sizes[space]:
            raise SurgeryError(f"space {space} grows from {old.sizes[space]} to {width}")
        if width < old.sizes[space] and old.fixed(space):
            raise SurgeryError(f"space {space} ({'/'.join(old.members[space])}) cannot shrink")


def channel_importance(state: Mapping[str, torch.Tensor], plan: ChannelPlan, space: str) -> torch.Tensor:
    """Per-channel L2 norm of the filters producing `space`, summed over its producers."""
    keys = plan.producers.get(space, [])
    if not keys:
        raise SurgeryError(f"space {space} has no producing layer to rank its channels by")
    total = torch.zeros(plan.sizes[space], dtype=torch.float64)
    for key in keys:
        w = state[key].detach().to(torch.float64)
        total += w.reshape(w.shape[0], -1).norm(dim=1).cpu()
    return total


def kept_channels(state: Mapping[str, torch.Tensor], old: ChannelPlan, new: ChannelPlan) -> dict[str, torch.Tensor]:
    """For every space: the sorted indices of the channels kept (all of them if it keeps its width)."""
    check_compatible(old, new)
    keep: dict[str, torch.Tensor] = {}
    for space, width in old.sizes.items():
        target = new.sizes[space]
        if target == width:
            keep[space] = torch.arange(width)
            continue
        score = channel_importance(state, old, space)
        # stable: among equal norms the earlier channel wins, so the choice is reproducible
        order = torch.argsort(-score, stable=True)[:target]
        keep[space] = torch.sort(order).values
    return keep


def cut_state(state: Mapping[str, torch.Tensor], old: ChannelPlan, new: ChannelPlan,
              keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict of `new`'s model: every tensor of `state` cut to the kept channels."""
    keep = kept_channels(state, old, new) if keep is None else keep
    out: dict[str, torch.Tensor] = {}
    for key, dims in old.dims.items():
        t = state[key]
        for d, space in enumerate(dims):
            if space is not None and len(keep[space]) != t.shape[d]:
                t = t.index_select(d, keep[space].to(t.device))
        out[key] = t  # load_state_dict copies: no clone needed
    return out


def shrink(model: nn.Module, spec: ArchSpec, new_spec: ArchSpec, seed: int | None = 0) -> nn.Module:
    """A model of `new_spec` holding `model`'s weights (a model of `spec`), cut by L2 norm.

    The new model is in the mode `model` was in. `spec` and `new_spec` may differ only in
    channel widths (exp sizes, #out); anything else raises SurgeryError.
    """
    old_plan, new_plan = channel_plan(spec), channel_plan(new_spec)
    state = model.state_dict()
    missing = [k for k in old_plan.dims if k not in state]
    unknown = [k for k in state if k not in old_plan.dims]
    if missing or unknown:
        raise SurgeryError(f"model does not match spec {spec.name}: "
                           f"{'missing ' + missing[0] if missing else 'unexpected ' + unknown[0]}")
    new_state = cut_state(state, old_plan, new_plan)
    new_model = build(new_spec, seed=seed)
    own = new_model.state_dict()
    for key, value in new_state.items():
        if tuple(own[key].shape) != tuple(value.shape):  # a plan that disagrees with the builder
            raise SurgeryError(f"{key}: cut to {tuple(value.shape)}, {new_spec.name} needs {tuple(own[key].shape)}")
    new_model.load_state_dict(new_state, strict=True)
    device = next(model.parameters()).device
    new_model.to(device)
    new_model.train(model.training)
    return new_model


@torch.no_grad()
def zero_channels(model: nn.Module, spec: ArchSpec, space: str, channels) -> None:
    """Zero every weight, bias and BN statistic touching `channels` of `space` (a raw or
    merged space name), so those channels carry exact zeros and feed nothing. For tests and
    demonstrations: removing them afterwards must leave the outputs unchanged."""
    plan = channel_plan(spec)
    space = plan.space(space) if space in plan.root else space
    idx = torch.as_tensor(list(channels), dtype=torch.long)
    state = model.state_dict()
    for key, dims in plan.dims.items():
        for d, s in enumerate(dims):
            if s == space:
                state[key].index_fill_(d, idx.to(state[key].device), 0.0)
