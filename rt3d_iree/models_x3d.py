"""X3D (Feichtenhofer, CVPR 2020), written here from the published configuration.

Why here and not a download: no weights or hubs can be fetched; the architecture is what
matters for compiling and pruning. Layout and channel rounding follow pytorchvideo's
``create_x3d`` (stem 1x3x3 conv then a depthwise 5x1x1 temporal conv; bottlenecks 1x1x1 ->
depthwise 3x3x3 -> SE on every other block -> swish -> 1x1x1; a 1x1x1 head conv, global
average pool, a 2048-wide 1x1x1 projection and the classifier), with expansion 2.25, width
factor 2.0 and depth factor 2.2. X3D-XS, -S and -M are this same network; they differ only in
the clip they run on (``X3D_INPUTS``), which is where their published GFLOPs differ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Published (frames, size) and GFLOPs (multiply-adds, one 1-crop view, 400 classes): Table 3 of
# the X3D paper. Parameters: 3.76 M for all three.
X3D_INPUTS: dict[str, tuple[int, int]] = {"x3d-xs": (4, 160), "x3d-s": (13, 160), "x3d-m": (16, 224)}
X3D_GFLOPS: dict[str, float] = {"x3d-xs": 0.60, "x3d-s": 1.96, "x3d-m": 4.73}
X3D_PARAMS_M = 3.76

STAGE_DEPTHS = (1, 2, 5, 3)  # before the depth factor 2.2
STEM_WIDTH = 12  # before the width factor 2.0
EXPANSION = 2.25
SE_RATIO = 0.0625
HEAD_WIDTH = 2048


def round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """Channels scaled and rounded to a multiple of 8 (never under 90% of the exact value)."""
    width *= multiplier
    out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * width else out


def _bn_act(channels: int, act: nn.Module | None) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)] + ([act] if act is not None else [])


class SqueezeExcite(nn.Module):
    """Channel gates from the global average (1x1x1 convs, as pytorchvideo writes them)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = round_width(channels, SE_RATIO)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class X3DBlock(nn.Module):
    """Bottleneck: 1x1x1 expand, depthwise 3x3x3 (spatial stride), SE, swish, 1x1x1 project."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(nn.Conv3d(cin, inner, 1, bias=False), *_bn_act(inner, nn.ReLU()))
        self.conv_b = nn.Sequential(nn.Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False),
                                    *_bn_act(inner, None))
        self.se = SqueezeExcite(inner) if se else nn.Identity()
        self.act = nn.SiLU()
        self.conv_c = nn.Sequential(nn.Conv3d(inner, cout, 1, bias=False), *_bn_act(cout, None))
        self.shortcut = (nn.Sequential(nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False), *_bn_act(cout, None))
                         if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_c(self.act(self.se(self.conv_b(self.conv_a(x)))))
        return torch.relu(y + self.shortcut(x))


class X3D(nn.Module):
    """X3D-XS/S/M (one network); ``width`` scales every channel count (1.0 = published)."""

    def __init__(self, num_classes: int = 400, width: float = 1.0, frames: int = 13, size: int = 160) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(1, round(c * width))

        stem = w(round_width(STEM_WIDTH, 2.0))
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
            nn.Conv3d(stem, stem, (5, 1, 1), 1, (2, 0, 0), groups=stem, bias=False),
            *_bn_act(stem, nn.ReLU()),
        )
        blocks, cin = [], stem
        for i, depth in enumerate(STAGE_DEPTHS):
            cout = w(round_width(STEM_WIDTH, 2.0) * 2 ** i)
            inner = w(int(EXPANSION * round_width(STEM_WIDTH, 2.0) * 2 ** i))
            for j in range(math.ceil(2.2 * depth)):
                blocks.append(X3DBlock(cin, inner, cout, 2 if j == 0 else 1, se=(j + 1) % 2 == 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        head = w(int(EXPANSION * round_width(STEM_WIDTH, 2.0) * 8))
        self.head = nn.Sequential(nn.Conv3d(cin, head, 1, bias=False), *_bn_act(head, nn.ReLU()))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.proj = nn.Sequential(nn.Conv3d(head, w(HEAD_WIDTH), 1, bias=False), nn.ReLU())
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(w(HEAD_WIDTH), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.pool(self.head(self.blocks(self.stem(x)))))
        return self.fc(self.dropout(x.flatten(1)))
