"""group_size.py: one default and one resolver for the KGS group size (precedence and validation)."""

from __future__ import annotations

import numpy as np
import pytest
from rt3d_iree.passes import KgsConv3dOptions

from rt3d_iree import Rt3dError
from rt3d_iree.compiler import kgs_options
from rt3d_iree.group_size import DEFAULT_GROUP_SIZE, resolve_group_size
from rt3d_iree.prune.checkpoint import save_checkpoint
from rt3d_iree.targets import TARGETS
from rt3d_iree.tuning_store import DEFAULT_GROUP_SIZE as STORE_DEFAULT
from rt3d_iree.tuning_store import record


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private tuning store (the resolver reads $RT3D_CACHE/tuning.json for "auto")."""
    monkeypatch.setenv("RT3D_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def checkpoint(cache):
    """An `rt3d prune` checkpoint pruned with 4x8 groups (only its structure is read)."""
    state = {"structure": {"scheme": "kgs", "group_size": [4, 8]}}
    return save_checkpoint(cache / "pruned.pt", state), state


def test_one_default_everywhere():
    assert DEFAULT_GROUP_SIZE == (8, 4)
    assert STORE_DEFAULT is DEFAULT_GROUP_SIZE  # re-exported, not a second spelling
    opts = KgsConv3dOptions()
    assert (opts.group_m, opts.group_n) == DEFAULT_GROUP_SIZE


def test_precedence_explicit_auto_checkpoint_default(cache, checkpoint):
    path, state = checkpoint
    record("host", (16, 4), "test")
    # explicit beats everything
    assert resolve_group_size((2, 2), model=path, target="host") == (2, 2)
    # "auto" beats the checkpoint: what `rt3d tune` recorded for the target
    assert resolve_group_size("auto", model=path, target="host") == (16, 4)
    assert resolve_group_size("auto", target=TARGETS["host"]) == (16, 4)  # a Target works too
    assert resolve_group_size("auto", target="aarch64") == DEFAULT_GROUP_SIZE  # nothing recorded there
    # nothing given: the checkpoint's own size (path or loaded dict), else the default
    assert resolve_group_size(None, model=path, target="host") == (4, 8)
    assert resolve_group_size(None, model=str(path)) == (4, 8)
    assert resolve_group_size(None, model=state) == (4, 8)
    assert resolve_group_size(None, model=cache / "model.pt2") == DEFAULT_GROUP_SIZE
    assert resolve_group_size() == DEFAULT_GROUP_SIZE


def test_dense_checkpoint_falls_back_to_default(cache):
    path = save_checkpoint(cache / "dense.pt", {"structure": {"scheme": "filter"}})
    assert resolve_group_size(None, model=path) == DEFAULT_GROUP_SIZE


def test_integers_of_any_kind_pass_and_come_back_as_int():
    gm, gn = resolve_group_size((np.int64(4), 8.0))
    assert (gm, gn) == (4, 8) and type(gm) is int and type(gn) is int
    assert resolve_group_size([8, 4]) == (8, 4)


@pytest.mark.parametrize("bad", [(8.5, 4), (8, 4.25), ("8", 4), (True, 4), (8,), (8, 4, 2), 8, object()])
def test_non_integral_or_malformed_sizes_are_refused(bad):
    with pytest.raises(Rt3dError, match="group size must be two integers") as err:
        resolve_group_size(bad)
    assert "8x4" in err.value.hint  # the hint shows the default as an example


def test_eight_and_a_half_is_not_truncated():
    """(8.5, 4) used to become 8x4 silently; the error names the value given."""
    with pytest.raises(Rt3dError, match=r"got \(8\.5, 4\)"):
        resolve_group_size((8.5, 4))
    with pytest.raises(Rt3dError, match="two integers"):
        kgs_options((8.5, 4), TARGETS["host"])


@pytest.mark.parametrize("bad", [(0, 4), (8, -1)])
def test_non_positive_sizes_are_refused(bad):
    with pytest.raises(Rt3dError, match=f"bad group size {bad[0]}x{bad[1]}"):
        resolve_group_size(bad)


def test_strings_other_than_auto_and_auto_without_target():
    with pytest.raises(Rt3dError, match="or 'auto', got 'big'"):
        resolve_group_size("big")
    with pytest.raises(Rt3dError, match="'auto' needs a target"):
        resolve_group_size("auto")


def test_kgs_options_resolves_auto_for_its_target(cache):
    record("host", (4, 4), "test")
    opts = kgs_options("auto", TARGETS["host"])
    assert (opts.group_m, opts.group_n) == (4, 4)
    opts = kgs_options(None, TARGETS["host"])
    assert (opts.group_m, opts.group_n) == DEFAULT_GROUP_SIZE


def test_a_size_other_than_the_checkpoints_is_warned_about(checkpoint, caplog):
    path, _ = checkpoint
    with caplog.at_level("WARNING", logger="rt3d_iree.group_size"):
        assert resolve_group_size((16, 16), model=path) == (16, 16)
    assert "pruned with 4x8 groups but is compiled for 16x16 ones" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rt3d_iree.group_size"):
        assert resolve_group_size((4, 8), model=path) == (4, 8)
    assert caplog.text == ""
