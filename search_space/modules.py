"""Torch modules for spec rows.

Module and parameter names follow torchvision's MobileNetV3 (`features.N.block.M`,
`fc1`/`fc2` in squeeze-excite, `classifier.0`/`classifier.3`), so a torchvision state dict
loads into a built MobileNetV3-Large/Small with no renaming, and NetAdapt's weight surgery
works on one structure for every net.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation(nl: str) -> nn.Module | None:
    if nl == "relu":
        return nn.ReLU(inplace=True)
    if nl == "relu6":
        return nn.ReLU6(inplace=True)
    if nl == "hswish":
        return nn.Hardswish(inplace=True)
    if nl == "swish":
        return nn.SiLU(inplace=True)
    if nl == "none":
        return None
    raise ValueError(f"unknown nonlinearity {nl!r}")


class ConvBNAct(nn.Sequential):
    """conv -> BN -> act as children 0, 1, 2 (torchvision's Conv2dNormActivation layout)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        nl: str = "relu",
        bn: bool = True,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=not bn)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum))
        act = activation(nl)
        if act is not None:
            layers.append(act)
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite with torchvision's names (fc1, fc2, activation, scale_activation)."""

    def __init__(self, channels: int, squeeze: int, gate: str = "hsigmoid", inner_nl: str = "relu") -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation(inner_nl) or nn.Identity()
        self.scale_activation = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class Block(nn.Module):
    """A row made of a conv sequence in `self.block`, with an optional residual add."""

    def __init__(self, layers: list[nn.Module], residual: bool, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)
        self.use_res_connect = residual
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class LRASPPHead(nn.Module):
    """Lite R-ASPP (MobileNetV3 Sec. 6.4) with torchvision's names and its global pool."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.low_classifier(low) + self.high_classifier(x)
        if out_size is not None:
            out = F.interpolate(out, size=out_size, mode="bilinear", align_corners=False)
        return out


class ClassifierNet(nn.Module):
    """features -> global pool -> classifier (torchvision's MobileNetV3 layout)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class SegmentationNet(nn.Module):
    """Backbone + LR-ASPP head; returns logits at the input resolution."""

    def __init__(self, backbone: nn.Sequential, head: LRASPPHead, low_index: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = head
        self.low_index = low_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low = None
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == self.low_index:
                low = x
        assert low is not None
        return self.classifier(low, x, out_size=(int(size[0]), int(size[1])))


class Head(nn.Module):
    """The pooled head alone (pool + classifier), as a latency op."""

    def __init__(self, classifier: nn.Sequential) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV3 initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
