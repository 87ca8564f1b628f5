"""Shared fixtures: a fixed seed for every test, so failures reproduce."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def seed() -> int:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-scale", type=int, default=1,
        help="multiply the differential fuzzing example counts (nightly: 10 or more)",
    )


@pytest.fixture
def fuzz_scale(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--fuzz-scale"))
