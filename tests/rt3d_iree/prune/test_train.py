"""Pruning runs end to end on tiny synthetic data: every algorithm and scheme, resume after
SIGKILL, DDP over gloo with torchrun, and the errors a user meets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rt3d_iree.errors import Rt3dError
from rt3d_iree.prune import PruneConfig, Structure, check_structure, load_checkpoint, model_from_checkpoint, prune

TINY = dict(width=0.125, frames=16, size=16, train_clips=64, val_clips=32, dense_epochs=1, reg_epochs=2,
            retrain_epochs=1, rounds=2, batch_size=16)
CLI = [sys.executable, "-m", "rt3d_iree.cli"]
TINY_ARGS = ["--width", "0.125", "--size", "16", "--train-clips", "96", "--val-clips", "32", "--batch-size", "16",
             "--dense-epochs", "2", "--reg-epochs", "3", "--retrain-epochs", "2", "--rounds", "3", "--quiet"]


@pytest.mark.parametrize("algorithm", ["heuristic", "fixed", "reweighted"])
@pytest.mark.parametrize("scheme", ["filter", "vanilla", "kgs"])
def test_every_algorithm_reaches_the_rate_with_exact_structure(tmp_path, algorithm, scheme):
    cfg = PruneConfig(scheme=scheme, algorithm=algorithm, rate=2.0, **TINY)
    res = prune(cfg, tmp_path / "p.pt", progress=False)
    assert 2.0 <= res.rate <= 2.02  # the 1% window of every scheme and algorithm
    state = load_checkpoint(tmp_path / "p.pt")
    model, _ = model_from_checkpoint(state)
    assert check_structure(model, Structure(scheme, (8, 4)), state["masks"]) == []
    rep = state["report"]
    assert [h["phase"] for h in state["history"]][0] == "dense"
    assert rep["macs_pruned"] * 2.0 <= rep["macs_dense"] and rep["params_pruned"] < rep["params_dense"]
    convs = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv3d)}
    assert {r["layer"] for r in rep["layers"]} == convs
    # each layer's rate came out of the algorithm: not all equal
    assert len({round(r["rate"], 2) for r in rep["layers"]}) > 1


def test_distillation_and_starting_from_a_dense_checkpoint(tmp_path):
    dense = PruneConfig(**TINY)
    from rt3d_iree.prune import train_dense

    d = train_dense(dense, tmp_path / "dense.pt", progress=False)
    cfg = PruneConfig(**{**TINY, "from_dense": str(tmp_path / "dense.pt"), "distill": 0.5})
    res = prune(cfg, tmp_path / "kd.pt", progress=False)
    assert res.dense_accuracy == d.accuracy
    hist = load_checkpoint(tmp_path / "kd.pt")["history"]
    assert [h["phase"] for h in hist] == ["regularize", "regularize", "retrain"]  # no dense phase again


def _wait_for_epoch(path: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "pruning process exited early"
        if path.is_file():
            try:
                if load_checkpoint(path)["epoch"] >= epoch:
                    return
            except Rt3dError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} never checkpointed")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_with_identical_masks_and_optimizer(tmp_path):
    """A real kill -9 in the middle of a regularization epoch; the resumed run ends exactly
    where an uninterrupted run ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Epochs of a second or two (time to kill inside one); one reweighting round of three epochs,
    # so the kill lands mid-phase and resume must restore that phase's optimizer and scheduler.
    args = [*TINY_ARGS, "--train-clips", "320", "--rounds", "1"]
    whole = tmp_path / "whole.pt"
    subprocess.run([*CLI, "prune", *args, "-o", str(whole)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed.pt"
    work = tmp_path / "killed.pt.work"
    proc = subprocess.Popen([*CLI, "prune", *args, "-o", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_epoch(work / "last.pt", 3, proc)  # dense x2 and the first regularization epoch done
        t0 = time.time()
        snapshot = load_checkpoint(work / "last.pt")
        time.sleep(0.3 * snapshot["history"][-1]["seconds"])  # about a third into epoch 4 (regularization 2/3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        elapsed = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.exists()  # no half-written final file
    last = load_checkpoint(work / "last.pt")  # the per-epoch checkpoint is intact
    assert last["epoch"] == snapshot["epoch"] == 3, f"the kill came {elapsed:.2f}s later, not mid-epoch"
    assert last["masks"] is None and last["pruner"]["rounds"] == 1
    assert last["optimizer"]["state"] and last["scheduler"]["last_epoch"] > 0  # mid-phase state to restore

    subprocess.run([*CLI, "prune", *args, "-o", str(killed), "--resume"], check=True, env=env,
                   capture_output=True)
    a, b = load_checkpoint(whole), load_checkpoint(killed)
    assert a["masks"].keys() == b["masks"].keys()
    for n in a["masks"]:
        assert torch.equal(a["masks"][n], b["masks"][n]), n
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for p in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[p][k], sb[p][k]), (p, k)
    assert [h["accuracy"] for h in a["history"]] == [h["accuracy"] for h in b["history"]]


@pytest.mark.slow
def test_ddp_with_torchrun_two_processes_on_gloo(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "rt3d_iree.cli", "prune", *TINY_ARGS,
         "--rate", "2.0", "-o", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    state = load_checkpoint(out)
    assert state["world_size"] == 2 and state["report"]["world_size"] == 2
    model, _ = model_from_checkpoint(state)
    assert check_structure(model, Structure("kgs", (8, 4)), state["masks"]) == []
    assert state["report"]["rate"] >= 2.0
    assert run.stdout.count("whole-model FLOPs") == 1  # rank 0 reports, once


def test_resume_errors_are_clear(tmp_path):
    cfg = PruneConfig(**TINY)
    with pytest.raises(Rt3dError, match="nothing to resume"):
        prune(cfg, tmp_path / "x.pt", resume=True, progress=False)
    prune(cfg, tmp_path / "x.pt", progress=False)
    other = PruneConfig(**{**TINY, "rate": 3.0})
    with pytest.raises(Rt3dError, match=r"different settings \(rate\)"):
        prune(other, tmp_path / "x.pt", resume=True, progress=False)
