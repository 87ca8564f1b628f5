"""3D CNNs written from their published specs (no torchvision here), with a width multiplier."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import Rt3dError
from .models_x3d import X3D, X3D_INPUTS

C3D_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class C3D(nn.Module):
    """C3D (Tran et al. 2015): 8 conv3d 3x3x3 layers, 5 pools, fc 4096-4096-classes.

    At width 1.0, 16x112x112 input: 38.5 GMAC, 78.4M parameters (docs/design.md, "4.1 Model sizes").
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
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """He (Kaiming) initialization, zero biases, a small last layer.

        Why: C3D has no normalization layers, and PyTorch's default initialization shrinks a
        ReLU layer's output variance about 6x per layer; after 10 layers the logits depend on
        the input by 1e-5 of their value (measured at width 0.125), so training waits on luck
        to escape a constant output (it stayed at chance for 12 epochs on the built-in
        benchmark in several probes). He initialization keeps the signal's scale layer to layer.
        """
        for mod in self.modules():
            if isinstance(mod, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        last = self.classifier[-1]
        nn.init.normal_(last.weight, std=0.01)  # start from uniform predictions

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
    was_training = model.training
    model.eval()  # batch norm in training mode refuses a batch of one at 1x1 spatial size
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    for h in hooks:
        h.remove()
    return macs


# ---------------------------------------------------------------------------------------------
# R(2+1)D-18
# ---------------------------------------------------------------------------------------------

R2PLUS1D_CHANNELS = (64, 128, 256, 512)
R2PLUS1D_STEM_MID = 45


def _r2plus1d_mid(cin: int, cout: int) -> int:
    """Width of the 2D->1D hand-off so a (2+1)D conv has the parameters of the 3x3x3 conv it replaces."""
    return (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)


def _conv2plus1d(cin: int, mid: int, cout: int, stride: int) -> nn.Sequential:
    """(1,3,3) spatial conv, BN, ReLU, then (3,1,1) temporal conv; the caller adds the closing BN.

    The stride is split the same way: spatial stride on the first conv, temporal on the second.
    """
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class _R2Plus1DBlock(nn.Module):
    """torchvision's BasicBlock with (2+1)D convs: conv-BN-ReLU, conv-BN, add the shortcut, ReLU.

    As in torchvision, ``mid`` is computed once from the block's (cin, cout) and shared by both
    convs; computing it per conv (from cout, cout for the second) gives 33.4M parameters instead
    of the published 31.5M.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = _r2plus1d_mid(cin, cout)
        self.conv1 = nn.Sequential(_conv2plus1d(cin, mid, cout, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv2plus1d(cout, mid, cout, 1), nn.BatchNorm3d(cout))
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class R2Plus1D18(nn.Module):
    """R(2+1)D-18 (Tran et al. 2018), rebuilt from torchvision's ``r2plus1d_18`` spec.

    Every 3x3x3 conv of a ResNet-18-style 3D net is factored into a (1,3,3) spatial conv and a
    (3,1,1) temporal conv with a ReLU between them, which is what makes it a distinct workload for
    the compiler (many thin 1D/2D-shaped convs rather than few cubic ones).

    At width 1.0, 16x112x112 input: 40.5 GMAC (count_macs, same for any class count to 0.1 G).
    Parameters: 31.5M with num_classes=400 (Kinetics-400, 31,505,325: the published figure);
    num_classes=101 (UCF101) gives 31,351,938, i.e. 31.4M.

    All convs are padded and the network ends in a global average pool, so ``frames`` and
    ``size`` are accepted only for a uniform constructor signature: any input of at least
    1 frame x 1x1 runs. ``width`` scales every channel count (the 45-wide stem too), and the
    (2+1)D mid widths are computed from the scaled counts.
    """

    def __init__(self, num_classes: int = 101, width: float = 1.0, frames: int = 16, size: int = 112) -> None:
        super().__init__()
        stem_mid, c0 = _w(R2PLUS1D_STEM_MID, width), _w(R2PLUS1D_CHANNELS[0], width)
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem_mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(stem_mid, c0, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(c0),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        cin = c0
        for i, c in enumerate(R2PLUS1D_CHANNELS):
            cout = _w(c, width)
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_R2Plus1DBlock(cin, cout, stride), _R2Plus1DBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------------------------
# S3D
# ---------------------------------------------------------------------------------------------

# Inception-v1 (GoogLeNet) widths per mixed block:
# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj). As in I3D/S3D the "5x5" branch uses a 3x3 kernel.
S3D_MIXED = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _unit3d(cin: int, cout: int) -> nn.Sequential:
    """1x1x1 conv + BN + ReLU: a 1x1x1 kernel has nothing to separate."""
    return nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), nn.BatchNorm3d(cout, eps=1e-3), nn.ReLU(inplace=True))


def _sep_conv3d(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """S3D's separable kxkxk conv: (1,k,k) conv + BN + ReLU, then (k,1,1) conv + BN + ReLU.

    Padding k//2 on both keeps every layer "same"-sized (ceil(n/stride)), so tiny inputs work.
    """
    p = k // 2
    return nn.Sequential(
        nn.Conv3d(cin, cout, (1, k, k), stride=(1, stride, stride), padding=(0, p, p), bias=False),
        nn.BatchNorm3d(cout, eps=1e-3),
        nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, (k, 1, 1), stride=(stride, 1, 1), padding=(p, 0, 0), bias=False),
        nn.BatchNorm3d(cout, eps=1e-3),
        nn.ReLU(inplace=True),
    )


class _S3DMixed(nn.Module):
    """Inception block with separable 3x3x3 branches; the output concatenates the four branches."""

    def __init__(self, cin: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch0 = _unit3d(cin, b0)
        self.branch1 = nn.Sequential(_unit3d(cin, b1a), _sep_conv3d(b1a, b1b, 3))
        self.branch2 = nn.Sequential(_unit3d(cin, b2a), _sep_conv3d(b2a, b2b, 3))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), _unit3d(cin, b3))
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class S3D(nn.Module):
    """S3D (Xie et al. 2018, "Rethinking spatiotemporal feature learning"): I3D with every kxkxk
    conv (k > 1) made separable, (1,k,k) then (k,1,1), each followed by BN + ReLU (no gating: this
    is S3D, not S3D-G).

    Layout: SepConv 7x7x7/2 -> 64, maxpool (1,3,3)/(1,2,2), 1x1x1 64, SepConv 3x3x3 192,
    maxpool (1,3,3)/(1,2,2), Mixed_3b, 3c, maxpool 3x3x3/2, Mixed_4b..4f, maxpool 2x2x2/2,
    Mixed_5b, 5c, global average pool, dropout, Linear. Inception-v1 widths (``S3D_MIXED``).

    Pools are padded (the 3-wide ones by 1, the 2x2x2 one with ``ceil_mode``) to get TensorFlow
    "SAME" output sizes, ceil(n / stride), and the classifier follows a global average pool, so
    any input of at least 1 frame x 1x1 runs (8x32x32 included). The classifier is a Linear rather
    than the paper's 1x1x1 conv (the same arithmetic after a global pool) so that KGS pruning, which
    acts on every Conv3d, leaves the classifier alone as it does for C3D and R(2+1)D.

    Measured with count_macs at width 1.0 (conv + fc multiply-accumulates only):
    16x112x112: 4.52 GMAC; 64x224x224: 71.9 GMAC. The paper quotes 66.4 GFLOPs for S3D at
    64x224x224 without stating its counting convention; this build is ~8% above that, and well
    below I3D's ~108. Parameters: 8.32M with num_classes=400, 8.01M with num_classes=101.
    ``frames`` and ``size`` are accepted for a uniform constructor signature only.
    """

    def __init__(
        self,
        num_classes: int = 101,
        width: float = 1.0,
        frames: int = 16,
        size: int = 112,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        c64, c192 = _w(64, width), _w(192, width)
        layers: list[tuple[str, nn.Module]] = [
            ("conv_1a", _sep_conv3d(3, c64, 7, stride=2)),
            ("pool_2a", nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
            ("conv_2b", _unit3d(c64, c64)),
            ("conv_2c", _sep_conv3d(c64, c192, 3)),
            ("pool_3a", nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
        ]
        cin = c192
        for name, widths in S3D_MIXED.items():
            if name == "mixed_4b":
                layers.append(("pool_4a", nn.MaxPool3d(3, stride=2, padding=1)))
            elif name == "mixed_5b":
                layers.append(("pool_5a", nn.MaxPool3d(2, stride=2, ceil_mode=True)))
            block = _S3DMixed(cin, tuple(_w(c, width) for c in widths))
            layers.append((name, block))
            cin = block.out_channels
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.fc(self.dropout(x))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# X3D-XS, -S and -M are one network run on different clips (models_x3d.X3D_INPUTS).
MODELS: dict[str, type[nn.Module]] = {"c3d": C3D, "r2plus1d": R2Plus1D18, "s3d": S3D,
                                      "x3d-xs": X3D, "x3d-s": X3D, "x3d-m": X3D}

# Smallest (frames, size) each model runs on, in eval mode (measured, see tests/rt3d_iree/test_models.py).
# C3D: four temporal 2x pools and five spatial ones with no padding (but pool5's) need 16 frames and 16x16.
# R(2+1)D, S3D and X3D pad every conv and pool and end in a global average pool, so a single frame of 1x1 runs.
MIN_INPUTS: dict[str, tuple[int, int]] = {"c3d": (16, 16), "r2plus1d": (1, 1), "s3d": (1, 1),
                                          **{name: (1, 1) for name in X3D_INPUTS}}


def _lookup(name: str) -> str:
    key = name.lower()
    if key not in MODELS:
        choices = ", ".join(sorted(MODELS))
        raise Rt3dError(f"unknown model {name!r}; valid models are: {choices}", f"pick one of: {choices}")
    return key


def min_input(name: str) -> tuple[int, int]:
    """Smallest (frames, size) model ``name`` accepts, so callers can reject a clip before building it.

    Raises Rt3dError for an unknown name.
    """
    return MIN_INPUTS[_lookup(name)]


def check_clip(model: str, frames: int, size: int, synthetic: bool) -> None:
    """Refuse a clip ``model`` cannot run on (or the built-in benchmark cannot draw), up front.

    Why here: the CLI and PruneConfig both check before any data is generated or trained on.
    """
    min_frames, min_size = min_input(model)  # raises for an unknown model
    if synthetic:  # the built-in benchmark draws objects on at least 8x8 frames, moving over 2+ frames
        min_frames, min_size = max(min_frames, 2), max(min_size, 8)
    if frames < min_frames or size < min_size:
        raise Rt3dError(f"{model} needs clips of at least {min_frames} frames x {min_size}x{min_size} "
                        f"(got {frames} x {size}x{size})", "raise --frames / --size")


def build_model(name: str, num_classes: int, width: float = 1.0, frames: int = 16, size: int = 112) -> nn.Module:
    """Build a registered model by name, checking the input shape up front.

    A too-small clip would otherwise fail deep inside a pooling layer with a shape message that
    names no model and no remedy; here it is an Rt3dError saying the minimum.
    """
    key = _lookup(name)
    if num_classes < 1:
        raise Rt3dError(f"num_classes must be >= 1 (got {num_classes})", "for example 101 (UCF101) or 400 (Kinetics)")
    if not width > 0:
        raise Rt3dError(f"width must be > 0 (got {width})", "1.0 is the published model; 0.125 is a small CPU variant")
    min_frames, min_size = MIN_INPUTS[key]
    if frames < min_frames or size < min_size:
        raise Rt3dError(
            f"input {frames} frames x {size}x{size} is too small for {key}: "
            f"it needs at least {min_frames} frames x {min_size}x{min_size}",
            f"use frames >= {min_frames} and size >= {min_size}",
        )
    return MODELS[key](num_classes=num_classes, width=width, frames=frames, size=size)


def _last_conv(module: nn.Module) -> tuple[nn.Module, str] | None:
    """(parent, attribute name) of the Conv3d whose output ``module`` ends with, if any."""
    if isinstance(module, nn.Sequential) and len(module):
        last_name = list(module._modules)[-1]
        last = module._modules[last_name]
        if isinstance(last, nn.Conv3d):
            return module, last_name
        return _last_conv(last)
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm3d into the Conv3d that feeds it (in place; returns ``model``).

    Why: deployment engines fold BN into the conv weights (ONNX Runtime does it itself), so
    the compiled model computes conv + bias + ReLU per layer. A BN is folded where it follows
    a Conv3d (or a Sequential ending in one) inside the same Sequential; the BN becomes an
    Identity. The folded model matches the original in eval mode to float rounding.
    """
    if model.training:
        raise Rt3dError("fold_batchnorm needs a model in eval mode", "call model.eval() first")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, cur in zip(names, names[1:], strict=False):
            bn = seq._modules[cur]
            if not isinstance(bn, nn.BatchNorm3d):
                continue
            before = seq._modules[prev]
            found = (seq, prev) if isinstance(before, nn.Conv3d) else _last_conv(before)
            if found is None:
                continue
            parent, attr = found
            parent._modules[attr] = fuse_conv_bn_eval(parent._modules[attr], bn)
            seq._modules[cur] = nn.Identity()
    return model
