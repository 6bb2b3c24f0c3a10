"""Proxy training on real Fashion-MNIST with a small CNN: accuracy, determinism, BN
recalibration, divergence, fine-tuning."""

import copy
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nas import data as nd
from nas.data import Dataset, load_dataset
from nas.proxy import ProxyConfig, build_seeded, evaluate, fine_tune, recalibrate_bn, train_proxy
from search_space.errors import UserError

# 16x16 and a 2000-image validation set keep every run to a few seconds on 2 cores
FAST = ProxyConfig(steps=60, batch_size=64, lr=0.1, resolution=16, val_size=2000,
                   max_train_images=20000, bn_recalib_batches=10)


class SmallCNN(nn.Module):
    """conv-BN-ReLU x3, pool, dropout, linear; BN as MobileNetV3 sets it (eps 1e-3, momentum 0.01)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, momentum: float = 0.01):
        super().__init__()
        layers, c = [], in_channels
        for out, stride in ((16, 1), (32, 2), (64, 2)):
            layers += [nn.Conv2d(c, out, 3, stride, 1, bias=False),
                       nn.BatchNorm2d(out, eps=1e-3, momentum=momentum), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def cba(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    return nn.Sequential(*layers, nn.Hardswish()) if act else nn.Sequential(*layers)


class Inverted(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int = 1, cout: int | None = None):
        super().__init__()
        cout = cout or cin
        self.body = nn.Sequential(cba(cin, mid), cba(mid, mid, 3, stride, mid), cba(mid, cout, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class TinyMobile(nn.Module):
    """MobileNetV3 in miniature (depthwise, h-swish, residuals, fan-out init, BN momentum
    0.01): small enough for a test, deep enough to show the unconverged-BN collapse."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(cba(in_channels, 16, 3, 2), Inverted(16, 48), Inverted(16, 64, 2, 24),
                                      Inverted(24, 72), cba(24, 96))
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(96, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    if not Path(nd.DEFAULT_PATH).is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    return load_dataset(None)


def cnn(seed: int = 0, **kw) -> nn.Module:
    return build_seeded(lambda: SmallCNN(**kw), seed)


def test_trains_above_chance_and_is_deterministic(fashion):
    calls = []
    a = train_proxy(cnn(), fashion, FAST, progress=lambda step, total, loss: calls.append((step, total, loss)))
    b = train_proxy(cnn(), fashion, FAST)
    assert not a.diverged and a.steps == 60 and a.val_images == 2000
    assert a.val_accuracy > 0.5, a
    assert 0 < a.train_loss < math.log(10)
    assert a.images_per_second > 0 and a.seconds > 0
    assert (a.val_accuracy, a.train_loss) == (b.val_accuracy, b.train_loss)
    assert [c[0] for c in calls] == list(range(1, 61)) and calls[-1][1:] == (60, a.train_loss)
    other = train_proxy(cnn(), fashion, replace(FAST, seed=1))
    assert other.train_loss != a.train_loss  # the seed changes the data order


def test_global_rng_and_threads_untouched(fashion):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    before = torch.get_num_threads()
    train_proxy(cnn(), fashion, replace(FAST, steps=5, threads=1, eval_batches=1))
    assert torch.rand(3).equal(expected)
    assert torch.get_num_threads() == before


def test_bn_recalibration_matters(fashion):
    model = build_seeded(TinyMobile, 0)
    no_recalib = train_proxy(model, fashion, replace(FAST, bn_recalib_batches=0))
    # momentum 0.01: after 60 steps the running statistics still mostly hold their initial
    # values (0.99**60 = 0.55), and through a dozen BN layers that is enough to lose everything
    assert no_recalib.val_accuracy < 0.3, no_recalib
    trained = copy.deepcopy(model)
    cfg = replace(FAST, steps=0)
    recalibrated = train_proxy(model, fashion, cfg)  # 0 steps: recalibrate and score only
    assert recalibrated.val_accuracy > 0.6 and recalibrated.val_accuracy - no_recalib.val_accuracy > 0.4
    # the public helper does the same, and restores each layer's momentum
    train, _ = nd.search_splits(fashion, resolution=16, val_size=2000)
    assert evaluate(trained, fashion, "val", cfg) == no_recalib.val_accuracy
    used = recalibrate_bn(trained, train.batches(64, limit=10))
    assert used == 10 and not trained.training
    assert all(m.momentum == 0.01 for m in trained.modules() if isinstance(m, nn.BatchNorm2d))
    assert evaluate(trained, fashion, "val", cfg) > 0.6


def test_divergence_is_a_result_not_an_exception(fashion):
    r = train_proxy(cnn(), fashion, replace(FAST, lr=1e6, schedule="constant", bn_recalib_batches=2))
    assert r.diverged and r.val_accuracy == 0.0 and math.isnan(r.train_loss)


def test_injected_nan_stops_training(fashion):
    model = cnn()
    seen = []

    def poison(module, args, output):
        seen.append(1)
        return output * float("nan") if len(seen) == 4 else output

    model.features[0].register_forward_hook(poison)
    r = train_proxy(model, fashion, FAST)
    assert r.diverged and r.steps == 3 and r.val_accuracy == 0.0


def test_fine_tune_and_evaluate(fashion):
    model = cnn()
    first = train_proxy(model, fashion, replace(FAST, steps=30))
    assert all(p.is_contiguous() for p in model.parameters())  # channels-last only inside the run
    tuned = fine_tune(model, fashion, 30, replace(FAST, lr=0.02))
    assert tuned.steps == 30 and not tuned.diverged
    assert tuned.val_accuracy > first.val_accuracy - 0.05
    assert evaluate(model, fashion, "val", FAST) == tuned.val_accuracy
    test_acc = evaluate(model, fashion, "test", FAST)
    assert 0.5 < test_acc <= 1.0
    with pytest.raises(UserError, match="'train'"):
        evaluate(model, fashion, "train", FAST)
    with pytest.raises(UserError, match="-1"):
        fine_tune(model, fashion, -1, FAST)


def test_model_data_mismatch(fashion):
    with pytest.raises(UserError, match="3 input channels"):
        train_proxy(SmallCNN(in_channels=3), fashion, FAST)
    with pytest.raises(UserError, match="7 classes|10 classes"):
        train_proxy(SmallCNN(num_classes=7), fashion, FAST)


@pytest.mark.parametrize("kw", [dict(steps=-1), dict(lr=0.0), dict(lr=float("nan")), dict(schedule="step"),
                                dict(batch_size=0), dict(label_smoothing=1.0), dict(threads=0)])
def test_bad_config(kw):
    name = next(iter(kw))
    with pytest.raises(UserError, match=name):
        ProxyConfig(**kw)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_train(fashion, schedule):
    r = train_proxy(cnn(), fashion, replace(FAST, steps=40, schedule=schedule, eval_batches=2))
    assert not r.diverged and r.val_accuracy > 0.4 and r.val_images == 1000
