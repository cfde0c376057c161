"""torchvision's MobileNetV2 feature trunk, written out for rebuilding saved models.

Importing any torchvision model runs ``torchvision/__init__``, which imports
``torchvision.ops`` and through it ``torch._dynamo`` -- about a second of CPU, a third of
analysing one photo with the packaged ``affectlab-base`` (a ``torchvision:mobilenet_v2``
model). A model file holds every weight, so rebuilding it needs only the architecture:
:func:`affectlab.features.backbones.create_backbone` builds ``torchvision:mobilenet_v2``
from this copy while :func:`affectlab.features.backbones.rebuilding` is active (as
:func:`affectlab.runtime.hub.build_method` does), and from torchvision itself otherwise
(training, fine-tuning, ImageNet weights).

The copy is torchvision's (0.29) ``mobilenet_v2(weights=None).features`` (width 1.0):
same modules, same parameter and buffer names, same operations in the same order, and it
returns what ``create_feature_extractor(model, {"features": "map"})`` returns, so a
state dict of either fits the other and the outputs are equal (``tests/test_mobilenet.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from affectlab.errors import ConfigError

#: (expansion t, channels c, repeats n, first stride s) of torchvision's MobileNetV2
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
LAST_CHANNEL = 1280


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6, padded to keep the size: torchvision's
    ``Conv2dNormActivation`` as MobileNetV2 uses it."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1 conv + batch norm), with the skip
    connection when the shape is kept.

    ``conv`` is a ModuleList where torchvision has a Sequential (same names). The
    Predictor folds each Conv2d + BatchNorm2d pair of a Sequential into one convolution;
    the torch.fx extractor affectlab builds from torchvision's model exposes this block's
    ``conv`` as a plain module, so its projection pair has never been folded. Keeping it
    so keeps every analysis output of a rebuilt model equal to the bit to those of the
    traced one.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden = int(round(cin * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if expand_ratio == 1 else [ConvBNReLU6(cin, hidden, kernel_size=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.ModuleList(layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.conv:
            y = layer(y)
        return x + y if self.use_res_connect else y


def _cut_blocks(cut: str | None) -> int:
    """Number of ``features`` blocks kept for the cut ``features.K`` (``None`` / ``features``: all 19)."""
    total = 2 + sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)
    if cut is None or cut == "features":
        return total
    head, _, k = str(cut).partition(".")
    if head != "features" or not k.isdigit() or int(k) >= total:
        raise ConfigError(
            f"torchvision:mobilenet_v2 has no module {cut!r} to cut at (map_node); "
            f"e.g. {', '.join(f'features.{i}' for i in range(total))}"
        )
    return int(k) + 1


class MobileNetV2Trunk(nn.Module):
    """``features`` of torchvision's MobileNetV2 (1280 x S/32 x S/32); ``forward`` returns
    ``{"map": features(x)}`` like the torch.fx extractor cut at ``features``. ``cut="features.K"``
    keeps blocks 0..K, as the extractor cut at that module (``map_node`` of the backbone).

    Initialised as torchvision initialises the trunk (Kaiming-normal fan-out convolutions,
    unit batch norms), though a rebuilt model overwrites every weight.
    """

    def __init__(self, cut: str | None = None):
        super().__init__()
        keep = _cut_blocks(cut)
        cin = 32
        blocks: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, expand_ratio=t))
                cin = c
        blocks.append(ConvBNReLU6(cin, LAST_CHANNEL, kernel_size=1))
        self.features = nn.Sequential(*blocks[:keep])
        #: channels of the returned map
        self.out_channels = blocks[keep - 1].out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"map": self.features(x)}
