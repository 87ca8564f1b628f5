"""Samples run as users run them (at a small width)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.slow
def test_c3d_compile_stats_small():
    spec = importlib.util.spec_from_file_location("c3d_compile_stats", SAMPLES / "c3d_compile_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stats = mod.main(["--width", "0.125", "--size", "56", "--rate", "2.0"])
    assert stats["convs_rewritten"] == 8
    assert stats["total_s"] > 0 and stats["vmfb_mb"] > 0
