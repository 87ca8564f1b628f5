"""`rt3d bench` and `rt3d tune` end to end, as a user runs them after the README setup."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from rt3d_iree.compiler import kgs_options
from rt3d_iree.targets import TARGETS

from .test_runners import rt3d

pytestmark = pytest.mark.slow


def read_results(out):
    rows = json.loads((out / "bench.json").read_text())["rows"]
    with open(out / "bench.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(rows)
    assert (out / "bench.md").read_text().startswith("| model |")
    return rows


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_bench_builtin(tmp_path, target):
    proc = rt3d("bench", "--target", target, "--repetitions", "2", "--rounds", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = read_results(tmp_path)
    assert [r["variant"].split()[0] for r in rows] == ["dense", "KGS"]
    for r in rows:
        assert r["max_rel_error"] <= 1e-4
        assert r["median_ms"] > 0 and len(r["times_ms"]) == 2 * 2  # every run of both interleaved rounds
    if target == "host":  # what a Python user sees, timed in the same rounds as the tool
        assert all(r["python_call_ms"] > 0 and r["python_call_time_ratio"] > 0 for r in rows)
    if target == "aarch64":
        assert all(r["python_call_ms"] == "n/a" for r in rows)
        assert all(r["runner"] == "qemu" and r["timing"].startswith("emulated") for r in rows)
        assert "say nothing about a phone" in proc.stdout
    else:
        assert all(r["runner"] == "local" and r["timing"] == "measured" for r in rows)


@pytest.fixture(scope="module")
def saved_conv(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("m") / "conv.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 4, 3, 6, 6),)), str(path))
    return path


def test_bench_vmfb_with_inputs(tmp_path, saved_conv):
    vmfb = tmp_path / "conv.vmfb"
    assert rt3d("compile", str(saved_conv), "-o", str(vmfb)).returncode == 0
    proc = rt3d("bench", str(vmfb), "--input", "1x4x3x6x6xf32=0.5", "--repetitions", "3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (row,) = read_results(tmp_path)
    assert row["max_rel_error"] == "n/a" and row["median_ms"] > 0
    missing = rt3d("bench", str(vmfb), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "needs its inputs" in missing.stderr


def test_bench_pt2_on_aarch64_checks_numerics(tmp_path, saved_conv):
    proc = rt3d("bench", str(saved_conv), "--target", "aarch64", "--repetitions", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (row,) = read_results(tmp_path)
    assert row["max_rel_error"] <= 1e-4 and row["runner"] == "qemu"


def test_tune_host_records_best_and_auto_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RT3D_CACHE", str(tmp_path / "cache"))
    proc = rt3d("tune", "--quick", "--candidates", "4x4,8x4", "--repetitions", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "tune.json").read_text())
    times = {tuple(t["group_size"]): t["total_ms"] for t in res["timings"]}
    assert set(times) == {(4, 4), (8, 4)} and all(v > 0 for v in times.values())
    best = min(times, key=times.get)
    recorded = json.loads((tmp_path / "cache" / "tuning.json").read_text())["host"]
    assert tuple(recorded["group_size"]) == best
    opts = kgs_options("auto", TARGETS["host"])
    assert (opts.group_m, opts.group_n) == best


def test_tune_aarch64_cannot_time_under_qemu_but_can_be_set(tmp_path, monkeypatch):
    monkeypatch.setenv("RT3D_CACHE", str(tmp_path))
    proc = rt3d("tune", "--target", "aarch64")
    assert proc.returncode == 2 and "cannot time" in proc.stderr and "--set" in proc.stderr
    assert rt3d("tune", "--target", "aarch64", "--set", "4x4").returncode == 0
    opts = kgs_options("auto", TARGETS["aarch64"])
    assert (opts.group_m, opts.group_n) == (4, 4)
    (tmp_path / "tuning.json").write_text("{corrupt")
    bad = rt3d("compile", "x.pt2", "-o", str(tmp_path / "y.vmfb"), "--group-size", "auto")
    assert bad.returncode == 2 and "tuning file" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_vulkan_reports_no_cpu_thread_count(tmp_path):
    proc = rt3d("bench", "--target", "vulkan", "--repetitions", "1", "--rounds", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = read_results(tmp_path)
    assert all(r["threads"] == "n/a (GPU)" and r["python_call_ms"] == "n/a" for r in rows)
    assert all(r["max_rel_error"] <= 1e-4 for r in rows)
