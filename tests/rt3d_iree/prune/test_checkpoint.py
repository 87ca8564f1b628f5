"""Pruned checkpoints go straight into the compiler; broken ones and bad runs get clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rt3d_iree
from rt3d_iree.bench import TOLERANCE, max_rel_error
from rt3d_iree.errors import Rt3dError
from rt3d_iree.prune import PruneConfig, load_checkpoint, model_from_checkpoint, prune

from ..test_runners import rt3d

# Size 32: IREE 3.13 fails to compile C3D's padded pool5 when its input is 1x1 (sizes 16 and 24),
# with or without our pass (see the issue notes).
TINY = dict(width=0.125, frames=16, size=32, train_clips=64, val_clips=32, dense_epochs=1, reg_epochs=1,
            retrain_epochs=1, rounds=1, batch_size=16)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c3d_kgs.pt"
    prune(PruneConfig(scheme="kgs", group_size=(4, 4), rate=2.6, **TINY), path, progress=False)
    return path


def test_checkpoint_compiles_with_its_own_group_size_and_matches_pytorch(pruned, tmp_path):
    state = load_checkpoint(pruned)
    model, example = model_from_checkpoint(state)
    x = torch.randn(example.shape)
    compiled = rt3d_iree.compile(pruned)  # a path is enough: model, input shape and group size come with it
    assert compiled.report.rewritten == 8 and not compiled.report.skipped  # padded max pools are not convs
    assert max_rel_error(compiled(x), model(x)) <= TOLERANCE
    proc = rt3d("compile", str(pruned), "-o", str(tmp_path / "m.vmfb"))
    assert proc.returncode == 0, proc.stderr
    assert "8 of 8 conv3d rewritten" in proc.stdout and "left to IREE" not in proc.stdout
    assert (tmp_path / "m.vmfb").stat().st_size > 0


@pytest.mark.slow
def test_bench_times_dense_and_pruned_from_one_checkpoint(pruned, tmp_path):
    proc = rt3d("bench", str(pruned), "--repetitions", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert rows[0]["variant"] == "dense (before pruning)"
    variant = rows[1]["variant"]  # the rate reached: within 1% above the 2.6x target, never below
    assert variant.startswith("kgs reweighted ") and variant.endswith("x FLOPs"), variant
    assert 2.6 <= float(variant.split()[2].rstrip("x")) <= 2.6 * 1.01 + 0.005, variant
    for r in rows:
        assert r["max_rel_error"] <= TOLERANCE and r["median_ms"] > 0


@pytest.mark.slow
def test_bench_of_a_filter_checkpoint_shows_what_dropping_dead_channels_buys(tmp_path):
    path = tmp_path / "c3d_filter.pt"
    prune(PruneConfig(scheme="filter", rate=2.6, **TINY), path, progress=False)
    proc = rt3d("bench", str(path), "--repetitions", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["variant"].split()[0] for r in rows] == ["dense", "filter", "filter"]
    assert rows[2]["variant"].endswith(", dead channels kept")
    for r in rows:
        assert r["max_rel_error"] <= TOLERANCE and r["median_ms"] > 0


def test_corrupt_truncated_and_foreign_checkpoints(pruned, tmp_path):
    data = pruned.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save(torch.nn.Conv3d(1, 1, 1), tmp_path / "pickled.pt")  # torch.save(model)
    for name, msg in [("pickled.pt", "holds a pickled Python object (as torch.save(model) writes)"),
                      ("trunc.pt", "truncated or corrupt"), ("noise.pt", "truncated or corrupt"),
                      ("foreign.pt", "not an rt3d pruning checkpoint"), ("missing.pt", "no such checkpoint")]:
        proc = rt3d("compile", str(tmp_path / name), "-o", str(tmp_path / "x.vmfb"))
        assert proc.returncode == 2 and msg in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr and "what to do:" in proc.stderr
        if name == "trunc.pt":  # the hint names what rt3d prune really keeps
            assert "last.pt in OUTPUT.work/" in proc.stderr and "--resume" in proc.stderr
        assert not (tmp_path / "x.vmfb").exists()


def test_prune_cli_bad_inputs(tmp_path):
    base = ["prune", "-o", str(tmp_path / "p.pt"), "--size", "16", "--quiet"]
    cases = [
        (["--rate", "100"], "a 100x whole-model FLOPs reduction cannot be reached"),
        (["--rate", "0.5"], "argument --rate: expected a FLOPs reduction rate >= 1"),
        (["--scheme", "block"], "unknown sparsity scheme 'block'"),
        (["--algorithm", "admm"], "unknown pruning algorithm 'admm'"),
        (["--model", "resnet"], "unknown model"),
        (["--group-size", "0x4"], "bad group size 0x4"),
        (["--data", "ucf101:" + str(tmp_path / "nope")], "does not exist"),
        (["--data", "kinetics:/x"], "unknown data set"),
        (["--frames", "8"], "c3d needs clips of at least 16 frames"),
        (["--distill", "2"], "expected a distillation weight in [0, 1], got 2"),
        (["--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got 0"),
        (["--dense-epochs", "0"], "pruning needs a trained dense model"),
        (["--train-clips", "8"], "make no full batch of 32"),
        (["--from-dense", str(tmp_path / "none.pt")], "no such checkpoint"),
    ]
    for extra, msg in cases:
        proc = rt3d(*base, *extra)
        assert proc.returncode == 2 and msg in proc.stderr, (extra, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "p.pt").exists()


def test_missing_split_file_is_named(tmp_path):
    root = tmp_path / "UCF-101"
    (root / "ucfTrainTestlist").mkdir(parents=True)
    proc = rt3d("prune", "-o", str(tmp_path / "p.pt"), "--data", f"ucf101:{root}", "--quiet")
    assert proc.returncode == 2 and "classInd.txt" in proc.stderr, proc.stderr


def test_group_size_larger_than_a_layer_is_handled(tmp_path):
    res = prune(PruneConfig(group_size=(16, 8), rate=2.0, **TINY), tmp_path / "big.pt", progress=False)
    assert res.rate >= 2.0 and res.report["structure_problems"] == []
    with pytest.raises(Rt3dError, match="rate must be >= 1"):
        PruneConfig(rate=0.9)


@pytest.mark.parametrize("fields, message", [
    (dict(algorithm="admm"), "unknown pruning algorithm 'admm'"),
    (dict(width=8), r"width must be in \(0, 4\]"),
    (dict(data="kinetics:/x"), "unknown data set"),
    (dict(frames=8), "c3d needs clips of at least 16 frames"),
    (dict(model="resnet"), "unknown model 'resnet'"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
    (dict(threads=1.5), "threads must be a whole number"),
    (dict(min_keep=0), "bad min_keep=0"),
    (dict(rounds=0), "rounds must be a whole number >= 1"),
])
def test_python_config_is_checked_before_any_work(fields, message):
    """The Python path has no argparse in front: PruneConfig refuses what the CLI would."""
    with pytest.raises(Rt3dError, match=message):
        PruneConfig(**fields)


def test_prune_refuses_unwritable_paths_before_training(tmp_path):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(Rt3dError, match="is a folder"):
        prune(PruneConfig(**TINY), tmp_path, progress=False)
    with pytest.raises(Rt3dError, match="work folder .* is a file"):
        prune(PruneConfig(**TINY), tmp_path / "p.pt", workdir=tmp_path / "file", progress=False)
    assert (tmp_path / "file").read_text() == "keep me" and not (tmp_path / "p.pt").exists()
