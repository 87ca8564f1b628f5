"""The model zoo: published sizes of C3D, R(2+1)D-18 and S3D, small variants, the registry and torch.export.

Full-size MAC and parameter counts are taken on the meta device: count_macs only needs output
shapes, and skipping real weights and real convolutions keeps this file fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from rt3d_iree import Rt3dError
from rt3d_iree.models import (
    C3D,
    MODELS,
    S3D,
    R2Plus1D18,
    build_model,
    count_macs,
    min_input,
)

SMALL = 0.125  # width of the CPU-sized variants


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Run these tiny models on one thread: on a busy 2-core box, intra-op thread hand-offs cost
    milliseconds per op and made this file 4x slower (28 s instead of 7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _meta_stats(cls: type[nn.Module], num_classes: int, frames: int, size: int) -> tuple[float, float]:
    """(GMAC, M params) of a full-width model, computed from shapes only."""
    with torch.device("meta"):
        model = cls(num_classes=num_classes, frames=frames, size=size).eval()
        macs = count_macs(model, torch.empty(1, 3, frames, size, size))
    params = sum(p.numel() for p in model.parameters())
    return sum(macs.values()) / 1e9, params / 1e6


def test_r2plus1d_matches_published_macs_and_params():
    gmac, mparams = _meta_stats(R2Plus1D18, 400, 16, 112)
    assert round(gmac, 1) == 40.5
    assert round(mparams, 1) == 31.5  # the published 31.5M is the Kinetics-400 head
    gmac, mparams = _meta_stats(R2Plus1D18, 101, 16, 112)
    assert round(gmac, 1) == 40.5
    assert round(mparams, 1) == 31.4


def test_r2plus1d_mid_widths_follow_torchvision():
    model = R2Plus1D18()
    # mid = cin*cout*27 // (9*cin + 3*cout), computed per block and shared by both convs.
    assert model.layer1[0].conv1[0][0].out_channels == 144
    assert model.layer1[0].conv2[0][0].out_channels == 144
    assert model.layer2[0].conv1[0][0].out_channels == 230
    assert model.layer2[0].conv2[0][0].out_channels == 230
    assert model.layer2[1].conv1[0][0].out_channels == 288
    assert model.layer2[0].downsample is not None and model.layer1[0].downsample is None


def test_c3d_still_matches_published_macs_and_params():
    gmac, mparams = _meta_stats(C3D, 101, 16, 112)
    assert round(gmac, 1) == 38.5
    assert round(mparams, 1) == 78.4


def test_s3d_size_is_in_the_published_range():
    gmac, mparams = _meta_stats(S3D, 400, 16, 112)
    assert round(gmac, 2) == 4.52
    assert 7.5 < mparams < 9.0  # the paper: S3D has 8.8M parameters with its Kinetics head
    gmac, _ = _meta_stats(S3D, 400, 64, 224)
    assert 60.0 < gmac < 80.0  # the paper: 66.4 GFLOPs at 64x224x224; this build counts 71.9 GMAC


@pytest.mark.parametrize("name", sorted(MODELS))
def test_count_macs_sees_every_conv_and_linear_once(name: str):
    model = build_model(name, 7, width=SMALL, frames=16, size=32).eval()
    macs = count_macs(model, torch.zeros(1, 3, 16, 32, 32))
    layers = {n for n, m in model.named_modules() if isinstance(m, nn.Conv3d | nn.Linear)}
    assert set(macs) == layers
    assert all(v > 0 for v in macs.values())


def _small_inputs() -> list[tuple[str, int, int]]:
    cases = []
    for name in sorted(MODELS):
        for frames, size in {(16, 32), min_input(name)}:
            cases.append((name, frames, size))
    return cases


@pytest.mark.parametrize(("name", "frames", "size"), _small_inputs())
def test_small_variants_run(name: str, frames: int, size: int):
    model = build_model(name, 7, width=SMALL, frames=frames, size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, frames, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["r2plus1d", "s3d"])
def test_padded_models_take_eight_frames(name: str):
    model = build_model(name, 5, width=SMALL, frames=8, size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)


def test_min_inputs():
    assert min_input("c3d") == (16, 16)
    assert min_input("r2plus1d") == (1, 1)
    assert min_input("S3D") == (1, 1)


def test_c3d_min_input_is_tight():
    """One frame or one pixel less than min_input really fails inside C3D, so the check is not over-strict."""
    frames, size = min_input("c3d")
    for f, s in ((frames - 1, size), (frames, size - 1)):
        model = C3D(num_classes=5, width=SMALL, frames=f, size=s).eval()
        with pytest.raises(RuntimeError), torch.no_grad():
            model(torch.zeros(1, 3, f, s, s))


def test_build_model_returns_the_registered_class():
    for name, cls in MODELS.items():
        assert type(build_model(name, 3, width=SMALL, frames=16, size=32)) is cls
    assert type(build_model("R2Plus1D", 3, width=SMALL)) is R2Plus1D18


def test_unknown_model_names_the_choices():
    for call in (lambda: build_model("i3d", 10), lambda: min_input("i3d")):
        with pytest.raises(Rt3dError, match="unknown model 'i3d'") as info:
            call()
        for name in MODELS:
            assert name in info.value.message
            assert name in info.value.hint


def test_too_small_input_is_a_clear_error():
    with pytest.raises(Rt3dError, match=r"8 frames x 112x112 is too small for c3d.*at least 16 frames x 16x16") as info:
        build_model("c3d", 10, frames=8)
    assert "frames >= 16" in info.value.hint
    with pytest.raises(Rt3dError, match="too small for c3d"):
        build_model("c3d", 10, frames=16, size=8)
    for name in ("r2plus1d", "s3d"):
        with pytest.raises(Rt3dError, match=f"too small for {name}"):
            build_model(name, 10, frames=0)
        with pytest.raises(Rt3dError, match=f"too small for {name}"):
            build_model(name, 10, size=0)


def test_bad_width_and_classes_are_clear_errors():
    with pytest.raises(Rt3dError, match="width must be > 0"):
        build_model("s3d", 10, width=0.0)
    with pytest.raises(Rt3dError, match="num_classes must be >= 1"):
        build_model("r2plus1d", 0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_variants_export(name: str):
    model = build_model(name, 7, width=SMALL, frames=16, size=32).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))
