"""Process-group facts outside torchrun: one process, sums are the values themselves (the
two-process case runs under torchrun in test_train.py)."""

from __future__ import annotations

from rt3d_iree.prune.dist import Dist


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    d = Dist()
    assert (d.world, d.rank, d.main) == (1, 0, True)
    assert d.sum(3, 4.5) == [3.0, 4.5]
    d.barrier()  # a no-op, not a hang

