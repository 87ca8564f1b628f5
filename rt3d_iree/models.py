"""3D CNNs written from their published specs (no torchvision here), with a width multiplier."""

from __future__ import annotations

import torch
from torch import nn

C3D_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class C3D(nn.Module):
    """C3D (Tran et al. 2015): 8 conv3d 3x3x3 layers, 5 pools, fc 4096-4096-classes.

    At width 1.0, 16x112x112 input: 38.5 GMAC, 78.4M parameters (see DESIGN.md).
    ``width`` scales every conv and fc width so small variants run on a CPU.
    """

    def __init__(self, num_classes: int = 101, width: float = 1.0, frames: int = 16, size: int = 112) -> None:
        super().__init__()
        ch = [_w(c, width) for c in C3D_CHANNELS]
        fc = _w(4096, width)

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            conv(3, ch[0]), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
            conv(ch[0], ch[1]), nn.MaxPool3d(2, 2),
            conv(ch[1], ch[2]), conv(ch[2], ch[3]), nn.MaxPool3d(2, 2),
            conv(ch[3], ch[4]), conv(ch[4], ch[5]), nn.MaxPool3d(2, 2),
            conv(ch[5], ch[6]), conv(ch[6], ch[7]), nn.MaxPool3d(2, 2, padding=(0, 1, 1)),
        )
        d, h = frames, size
        d, h = d, h // 2  # pool1
        for _ in range(3):
            d, h = d // 2, h // 2
        d, h = d // 2, (h + 2) // 2  # pool5 with padding (0, 1, 1)
        flat = ch[7] * max(d, 1) * h * h
        self.classifier = nn.Sequential(
            nn.Linear(flat, fc), nn.ReLU(inplace=True),
            nn.Linear(fc, fc), nn.ReLU(inplace=True),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per Conv3d / Linear layer (nonzero weights counted as dense)."""
    macs: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv3d):
            def hook(m, inp, out, name=name):
                kvol = m.kernel_size[0] * m.kernel_size[1] * m.kernel_size[2]
                macs[name] = out.numel() * (m.in_channels // m.groups) * kvol
            hooks.append(mod.register_forward_hook(hook))
        elif isinstance(mod, nn.Linear):
            def lhook(m, inp, out, name=name):
                macs[name] = out.numel() * m.in_features
            hooks.append(mod.register_forward_hook(lhook))
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    return macs
