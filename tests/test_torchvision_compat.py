"""torchvision MobileNetV3 weights load into built specs and give the same logits.

torchvision itself cannot be installed here (no CPU build), so `tv_reference.py` mirrors its
architecture with its exact module names; its param counts are checked against the numbers
torchvision publishes.
"""

import pytest
import torch

import search_space as ss
from search_space import UserError

import tv_reference as tv


@pytest.mark.parametrize("name, factory, params", [
    ("mnv3-large", tv.mobilenet_v3_large, 5_483_032),
    ("mnv3-small", tv.mobilenet_v3_small, 2_542_856),
])
def test_same_logits(name, factory, params, tmp_path):
    torch.manual_seed(1)
    ref = factory().eval()
    assert sum(p.numel() for p in ref.parameters()) == params
    # make BN statistics non-trivial so a mis-mapped tensor would show
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    model = ss.build(ss.zoo(name)).eval()
    ss.load_torchvision_state_dict(model, path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5, rtol=0)


def test_lraspp_same_output():
    torch.manual_seed(2)
    ref = tv.lraspp_mobilenet_v3_large(21).eval()
    model = ss.build(ss.zoo("lraspp-mnv3-large")).eval()
    ss.load_torchvision_state_dict(model, ref.state_dict())
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x)["out"], atol=1e-5, rtol=0)


def test_mismatched_state_dict_is_a_clear_error(tmp_path):
    model = ss.build(ss.zoo("mnv3-small"))
    with pytest.raises(UserError, match="does not fit"):
        ss.load_torchvision_state_dict(model, tv.mobilenet_v3_large().state_dict())
    sd = tv.mobilenet_v3_small().state_dict()
    sd["classifier.3.weight"] = torch.zeros(10, 1024)
    with pytest.raises(UserError, match="classifier.3.weight has shape"):
        ss.load_torchvision_state_dict(model, sd)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a torch state dict"):
        ss.load_torchvision_state_dict(model, junk)
