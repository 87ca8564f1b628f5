"""`rt3d calibrate --quick`: the benchmark's calibration end to end at CI size (the bars on
accuracy are measured at full size, `rt3d calibrate`; at this size only the estimator bar
is meaningful)."""

from __future__ import annotations

import json

import pytest

from ..test_runners import rt3d


@pytest.mark.slow
def test_quick_calibration_reports_the_three_checks_and_reuses_the_table_dense_model(tmp_path):
    proc = rt3d("calibrate", "--quick", "--quiet", "--seeds", "0", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "calibration.json").read_text())
    assert [c["check"].split()[0] for c in doc["checks"]] == ["parameter-free", "dense", "C3D"]
    assert doc["checks"][0]["holds"], doc["estimators"]  # near chance even on tiny clips
    assert set(doc["dense_accuracy"]) == {"0.125", "0.0625"}
    assert doc["conv_macs"]["0.125"] > 3 * doc["conv_macs"]["0.0625"]  # about 4x fewer conv MACs
    md = (tmp_path / "calibration.md").read_text()
    assert "| check | measured | holds |" in md and md.count("| dense C3D width") == 2
    # The table-width model is the table's own dense model, so prune-table does not train it again.
    assert (tmp_path / "prune-table" / "c3d" / "seed0" / "dense.pt").is_file()
    again = rt3d("calibrate", "--quick", "--quiet", "--seeds", "0", "--out", str(tmp_path))
    assert again.returncode == 0 and "dense C3D width 0.125" in again.stdout


def test_bad_seeds_fail_before_any_training(tmp_path):
    proc = rt3d("calibrate", "--seeds", "a,b", "--out", str(tmp_path))
    assert proc.returncode != 0 and "bad --seeds" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "calibration.json").exists()
