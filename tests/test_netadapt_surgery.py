"""NetAdapt weight surgery: coupled channels, residual groups, squeeze-excite, BN, classifier."""

import dataclasses

import pytest
import torch

from netadapt.channels import channel_plan
from netadapt.proposals import apply, same_structure, units
from netadapt.start import adapt_state_dict
from netadapt.surgery import SurgeryError, kept_channels, shrink, zero_channels
from search_space import build, zoo
from search_space.spec import make_divisible
from netadapt_helpers import one_thread  # noqa: F401  (autouse fixture)


def train_spec(name, resolution=32):
    return dataclasses.replace(zoo(name), resolution=resolution, in_channels=1, num_classes=10)


def trained_like(spec, seed=1):
    """A model with non-trivial BN statistics and affine parameters, in eval mode."""
    model = build(spec, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


def unit(spec, label):
    return next(u for u in units(spec) if u.label == label)


X = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["mnv3-large", "mnv3-small", "mnasnet-a1"])
def test_noop_shrink_reproduces_outputs_exactly(name):
    spec = train_spec(name)
    model = trained_like(spec)
    with torch.no_grad():
        y = model(X)
        y2 = shrink(model, spec, spec)(X)
    assert torch.equal(y, y2)


def test_units_of_mnv3_large_follow_the_residual_groups():
    spec = zoo("mnv3-large")
    got = [(u.kind, u.rows, u.width) for u in units(spec)]
    # stem + block 1 (16->16 residual, no expansion conv) are one width; its depthwise follows
    assert got[0] == ("width", (0, 1), 16)
    assert unit(spec, "#out rows 0-1").exp_rows == (1,)
    assert ("width", (2, 3), 24) in got and ("width", (7, 8, 9, 10), 80) in got
    assert ("width", (13, 14, 15), 160) in got
    assert ("exp", (14,), 960) in got and ("exp", (2,), 64) in got
    # block 1 has no expansion layer; the last 1x1 conv (960) is not pruned by default
    assert not any(k == "exp" and r == (1,) for k, r, _ in got)
    assert not any(16 in r for _, r, _ in got)
    assert any(16 in u.rows for u in units(spec, include_last=True))
    assert len(got) == 6 + 14


def _zero_and_remove(spec, new_spec, removed):
    """Zero `removed[space] = channel indices` everywhere, then shrink: outputs must not move."""
    model = trained_like(spec)
    for space, idx in removed.items():
        zero_channels(model, spec, space, idx)
    old, new = channel_plan(spec), channel_plan(new_spec)
    keep = kept_channels(model.state_dict(), old, new)
    for space, idx in removed.items():
        sp = old.space(space)
        assert set(keep[sp].tolist()).isdisjoint(idx), f"{space}: zeroed channels were kept"
    with torch.no_grad():
        y = model(X)
        small = shrink(model, spec, new_spec)
        y2 = small(X)
    assert torch.allclose(y, y2, atol=1e-6, rtol=0), (y - y2).abs().max()
    assert not torch.equal(y, torch.zeros_like(y))
    return small


def test_removing_zero_filters_of_an_expansion_layer_with_se_keeps_outputs():
    spec = train_spec("mnv3-large")
    u = unit(spec, "exp row 5")  # 120 wide, SE 32
    # 120 -> 112 keeps the SE width (make_divisible(28) == 32): only expansion channels go
    assert make_divisible(112 / 4) == make_divisible(120 / 4)
    new = apply(spec, u, 112)
    small = _zero_and_remove(spec, new, {"m5": [3, 50, 77, 90, 100, 101, 110, 119]})
    assert small.features[5].block[0][0].out_channels == 112
    assert small.features[5].block[2].fc1.in_channels == 112
    assert small.features[5].block[3][0].in_channels == 112
    # 120 -> 96 also shrinks the SE bottleneck 32 -> 24: zero those SE filters too
    new = apply(spec, u, 96)
    assert channel_plan(new).sizes["s5"] == 24
    small = _zero_and_remove(spec, new, {"m5": list(range(0, 120, 5)), "s5": [1, 7, 8, 20, 30, 31, 2, 5]})
    assert small.features[5].block[2].fc1.out_channels == 24


def test_removing_zero_filters_of_a_residual_group_keeps_outputs():
    spec = train_spec("mnv3-large")
    # rows 4-6: 40 wide, blocks 5 and 6 residual; block 7 (40 -> 80) consumes it
    new = apply(spec, unit(spec, "#out rows 4-6"), 32)
    small = _zero_and_remove(spec, new, {"a4": [0, 9, 10, 17, 22, 30, 38, 39]})
    assert [small.features[i].block[-1][0].out_channels for i in (4, 5, 6)] == [32, 32, 32]
    assert small.features[5].block[0][0].in_channels == 32  # expansion inputs
    assert small.features[7].block[0][0].in_channels == 32  # the next block's input
    # the stem group: stem out, block 1's depthwise + SE-free projection, block 2's input
    new = apply(spec, unit(spec, "#out rows 0-1"), 8)
    small = _zero_and_remove(spec, new, {"a0": [1, 2, 5, 7, 8, 11, 12, 15]})
    assert small.features[1].block[0][0].groups == 8
    assert small.features[2].block[0][0].in_channels == 8


def test_removing_zero_filters_of_a_group_with_se_blocks_keeps_outputs():
    spec = train_spec("mnv3-small")
    # rows 9-11: 96 wide, SE in every block; the last 1x1 conv consumes it
    new = apply(spec, unit(spec, "#out rows 9-11"), 88)
    _zero_and_remove(spec, new, {"a9": [4, 40, 41, 60, 70, 80, 90, 95]})
    # Small's block 1 runs depthwise + SE at the stem's width (no expansion conv)
    new = apply(spec, unit(spec, "#out row 0"), 8)
    assert channel_plan(new).sizes["s1"] == 8
    _zero_and_remove(spec, new, {"a0": list(range(8))})


def test_classifier_input_follows_the_last_conv_width():
    spec = train_spec("mnv3-small")
    u = next(u for u in units(spec, include_last=True) if 12 in u.rows)
    new = apply(spec, u, 512)
    small = _zero_and_remove(spec, new, {"a12": list(range(0, 576, 9))})
    assert small.classifier[0].in_features == 512


def test_largest_norm_filters_are_kept_in_order():
    spec = train_spec("mnv3-small")
    model = trained_like(spec)
    w = model.features[4].block[0][0].weight  # expansion conv of row 4 (96 wide)
    big = [5, 17, 60, 2]
    with torch.no_grad():
        w.mul_(0.01)
        w[big] *= 1000
    new = apply(spec, unit(spec, "exp row 4"), 8)
    keep = kept_channels(model.state_dict(), channel_plan(spec), channel_plan(new))["m4"]
    assert keep.tolist() == sorted(keep.tolist())
    assert set(big) <= set(keep.tolist())
    small = shrink(model, spec, new)
    assert torch.equal(small.features[4].block[0][0].weight, w[keep])
    assert torch.equal(small.features[4].block[1][1].running_var, model.features[4].block[1][1].running_var[keep])


def _shrink_units(name, kinds):
    spec = train_spec(name, resolution=32)
    model = trained_like(spec)
    for u in units(spec, include_last=True):
        if u.kind not in kinds:
            continue
        new = apply(spec, u, 8)
        if not same_structure(spec, new):
            new = apply(spec, u, u.width - 8)
        small = shrink(model, spec, new)
        assert small.state_dict().keys() == model.state_dict().keys()
        with torch.no_grad():
            assert small(X[:2]).shape == (2, 10)


def test_every_unit_of_mnv3_small_shrinks_to_a_working_model():
    _shrink_units("mnv3-small", ("exp", "width"))


def test_every_residual_group_of_mnv3_large_shrinks_to_a_working_model():
    _shrink_units("mnv3-large", ("width",))


@pytest.mark.slow
def test_every_expansion_layer_of_mnv3_large_shrinks_to_a_working_model():
    _shrink_units("mnv3-large", ("exp",))


def test_structure_changes_are_refused():
    spec = train_spec("mnv3-small")
    # rows 7-8 are 48 wide after a 40-wide block: 40 would turn block 7 residual
    bad = apply(spec, unit(spec, "#out rows 7-8"), 40)
    assert not same_structure(spec, bad)
    with pytest.raises(SurgeryError):
        shrink(build(spec), spec, bad)
    # exp == in drops an expansion conv: also refused
    bad = apply(spec, unit(spec, "exp row 3"), 24)
    assert not same_structure(spec, bad)
    with pytest.raises(SurgeryError):
        shrink(build(spec), spec, dataclasses.replace(spec, rows=spec.rows[:6] + spec.rows[7:]))


def test_torchvision_style_weights_are_adapted_to_the_data():
    full = zoo("mnv3-small")  # 3 channels, 1000 classes: torchvision's layout
    state = trained_like(full).state_dict()
    tspec = train_spec("mnv3-small")
    out, retrain, note = adapt_state_dict(state, tspec)
    assert retrain and "summed" in note and "classifier" in note
    assert torch.equal(out["features.0.0.weight"], state["features.0.0.weight"].sum(1, keepdim=True))
    assert out["classifier.3.weight"].shape == (10, 1024)
    assert torch.equal(out["features.5.block.0.0.weight"], state["features.5.block.0.0.weight"])
    build(tspec).load_state_dict(out)
    same, retrain, _ = adapt_state_dict(build(tspec, seed=3).state_dict(), tspec)
    assert not retrain
