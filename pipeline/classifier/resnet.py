"""ResNet18 for small single-channel images (grayscale CIFAR-10), with named intermediate features.

Architecture (He et al. 2016, CIFAR variant as in Li et al. 2019): 3x3 stride-1 stem convolution
with batch norm and ReLU and no max-pool, four stages of two BasicBlocks with widths
``w, 2w, 4w, 8w`` (the last three stages halve the resolution), global average pooling and a linear
classifier.  Inputs are images in [0, 1]; the network standardises them itself
(``(x - input_mean) / input_std``) so that callers, noise corruptions and attacks all work in the
valid pixel range.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.layout import standard_layout

FEATURE_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for (B, in_channels, H, W) images in [0, 1] (H = W = 32 in the paper).

    Parameters
    ----------
    width : channels of the first stage (paper: 64); stages have width, 2*width, 4*width, 8*width.
    n_classes : number of output logits.
    in_channels : image channels (1 for grayscale).
    input_mean, input_std : standardisation applied to the [0, 1] input inside the network.

    Attributes
    ----------
    feature_channels : dict layer name -> channels, for :data:`FEATURE_LAYERS`.
    """

    input_mean: torch.Tensor  # () buffer
    input_std: torch.Tensor  # () buffer

    def __init__(
        self,
        width: int = 64,
        n_classes: int = 10,
        in_channels: int = 1,
        input_mean: float = 0.5,
        input_std: float = 0.25,
    ):
        super().__init__()
        if width < 1 or n_classes < 1 or in_channels < 1:
            raise ValueError(f"width, n_classes, in_channels must be >= 1, got {width}, {n_classes}, {in_channels}")
        if not input_std > 0:
            raise ValueError(f"input_std must be > 0, got {input_std}")
        self.register_buffer("input_mean", torch.tensor(float(input_mean)))
        self.register_buffer("input_std", torch.tensor(float(input_std)))
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        widths = (width, 2 * width, 4 * width, 8 * width)
        stages, channels = [], width
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, w, stride), BasicBlock(w, w, 1)))
            channels = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, n_classes)
        self.feature_channels = dict(zip(FEATURE_LAYERS, (width, *widths)))
        self.in_channels = in_channels

    def forward(
        self, x: torch.Tensor, return_features: bool | Iterable[str] = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, n_classes); with ``return_features`` also a dict of feature maps.

        ``return_features=True`` returns all of :data:`FEATURE_LAYERS`; a sequence of names returns
        those.  Feature maps are (B, C, H', W') outputs of the stem (``conv1``, after ReLU) and of
        each stage.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if return_features is True:
            wanted = set(FEATURE_LAYERS)
        elif return_features is False:
            wanted = set()
        else:
            wanted = set(return_features)
            unknown = wanted - set(FEATURE_LAYERS)
            if unknown:
                raise ValueError(f"unknown feature layer(s) {sorted(unknown)}; valid: {list(FEATURE_LAYERS)}")
        features = {}
        h = (standard_layout(x) - self.input_mean) / self.input_std
        for name in FEATURE_LAYERS:
            h = getattr(self, name)(h)
            if name in wanted:
                features[name] = h
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
        if return_features is False:
            return logits
        return logits, features
