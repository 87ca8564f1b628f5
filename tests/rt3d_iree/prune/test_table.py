"""`rt3d prune-table --quick`: the Table 1 pipeline end to end at CI size (accuracy is not
meaningful at this size; the full table is `rt3d prune-table`)."""

from __future__ import annotations

import csv
import json

import pytest

from ..test_runners import rt3d


@pytest.mark.slow
def test_quick_table_has_every_cell_and_resumes(tmp_path):
    proc = rt3d("prune-table", "--quick", "--quiet", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "prune_table.json").read_text())
    rows = doc["results"]
    assert len(rows) == 2 * (1 + 12)  # two models: dense + 4 (scheme, rate) rows x 3 algorithms
    for r in rows:
        assert r["structure_ok"], r
        if r["scheme"] != "dense":
            assert r["rate"] >= r["rate_target"] and r["rate"] <= 1.2 * r["rate_target"], r
    md = (tmp_path / "prune_table.md").read_text()
    assert md.startswith("| model | dense top-1 | scheme | FLOPs rate | heuristic | fixed reg. | reweighted")
    assert md.count("\n") == 2 + 8
    assert (tmp_path / "prune_table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(csv.DictReader((tmp_path / "prune_table.csv").open()))) == len(rows)
    # A second run finds every cell finished and only rewrites the table.
    again = rt3d("prune-table", "--quick", "--quiet", "--out", str(tmp_path), "--models", "c3d")
    assert again.returncode == 0 and again.stdout.count("| c3d |") == 4
