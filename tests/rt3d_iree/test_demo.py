"""The main job end to end on a small C3D: four engines, numerics checked, files written."""

from __future__ import annotations

import json

import pytest

from rt3d_iree.cli import main


@pytest.mark.slow
def test_demo_small(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--width", "0.125", "--frames", "16", "--size", "56", "--reps", "2"])
    assert code == 0
    data = json.loads((tmp_path / "demo.json").read_text())
    engines = [r["engine"] for r in data["rows"]]
    assert engines == ["PyTorch eager", "stock IREE", "rt3d dense", "rt3d KGS"]
    assert all(r["max_rel_error"] <= 1e-4 for r in data["rows"])
    assert data["ratios"]["kgs_flops_rate"] >= 3.5
    assert (tmp_path / "demo.png").stat().st_size > 1000
    assert "| rt3d KGS |" in capsys.readouterr().out
