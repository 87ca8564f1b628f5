"""A compiled module stays loaded: one session per module, reloadable from its vmfb, safe from
several threads, and flat in memory over a thousand calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree.errors import Rt3dError
from rt3d_iree.harness import TOLERANCE, max_rel_error


@pytest.fixture(scope="module")
def small():
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 4, 8, 8)
    return model, x, rt3d_iree.compile(model, (x,))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_calls_reuse_one_loaded_module(small):
    model, x, compiled = small
    first = compiled(x)
    session = compiled._session
    assert session is not None
    for _ in range(3):
        y = torch.randn_like(x)
        assert max_rel_error(compiled(y), model(y)) <= TOLERANCE
    assert compiled._session is session
    assert max_rel_error(first, model(x)) <= TOLERANCE


def test_a_saved_module_reloads_as_a_callable(small, tmp_path):
    model, x, compiled = small
    path = compiled.save(tmp_path / "m.vmfb")
    again = rt3d_iree.load_module(path)
    assert again.function == "forward" and [s.shape for s in again.inputs] == [tuple(x.shape)]
    assert max_rel_error(again(x), model(x)) <= TOLERANCE
    with pytest.raises(Rt3dError, match="input 0 has shape 1x3x4x8x9"):
        again(torch.randn(1, 3, 4, 8, 9))
    (tmp_path / "bad.vmfb").write_bytes(b"not a module")
    with pytest.raises(Rt3dError, match="is not a loadable IREE module"):
        rt3d_iree.load_module(tmp_path / "bad.vmfb")
    with pytest.raises(Rt3dError, match="no such compiled module"):
        rt3d_iree.load_module(tmp_path / "missing.vmfb")
    with pytest.raises(Rt3dError, match="is a folder, not a compiled module"):
        rt3d_iree.load_module(tmp_path)
    with pytest.raises(Rt3dError, match="runner must be an rt3d_iree.runners.Runner"):
        rt3d_iree.load_module(path, runner="local")  # type: ignore[arg-type]  (refused now, not at the first call)


def test_two_threads_calling_one_module_get_their_own_results(small):
    model, x, compiled = small
    inputs = [torch.randn_like(x) for _ in range(2)]
    refs = [model(i) for i in inputs]
    errors: list[float] = []

    def work(k: int) -> None:
        for _ in range(25):
            errors.append(max_rel_error(compiled(inputs[k]), refs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 50 and max(errors) <= TOLERANCE


def test_a_thousand_calls_hold_memory_flat(small):
    _, x, compiled = small
    arr = x.numpy()
    for _ in range(100):  # warm-up: allocator pools and caches settle
        compiled(arr)
    before = _rss_kib()
    for _ in range(1000):
        out = compiled(arr)
    after = _rss_kib()
    assert isinstance(out, np.ndarray)
    assert after <= before * 1.05, f"resident memory grew from {before} to {after} KiB over 1000 calls"
