"""Per-conv rate summaries of Table 1's cells (rt3d_iree/prune/layer_rates.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rt3d_iree.prune.layer_rates import format_layer_rates, layer_rows, spearman, summarize_layers


def test_spearman_matches_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert spearman([1, 2], [1, 2]) is None  # too few points
    assert spearman([1, 2, 3], [5, 5, 5]) is None  # a constant side has no ranking


@given(st.lists(st.integers(-1000, 1000), min_size=3, max_size=12, unique=True))
def test_spearman_is_invariant_to_monotone_maps(xs):
    ys = [x ** 3 + 7 for x in xs]  # strictly increasing (exact in integers)
    assert spearman(xs, ys) == pytest.approx(1.0)
    assert spearman(xs, [-y for y in ys]) == pytest.approx(-1.0)


def _report(kept: list[int], units: int = 100) -> dict:
    macs = [400, 300, 200, 100]
    return {"layers": [{"layer": f"conv{i}", "macs": m, "units": units, "kept_units": k,
                        "rate": units / max(k, 1)} for i, (m, k) in enumerate(zip(macs, kept, strict=True))]}


def test_rows_and_summary_count_floors_and_follow_flops():
    rows = layer_rows(_report([10, 20, 40, 80]))
    assert [r["flops_share"] for r in rows] == [0.4, 0.3, 0.2, 0.1]
    assert [r["kept_fraction"] for r in rows] == [0.1, 0.2, 0.4, 0.8]
    runs = [{"model": "m", "seed": s, "scheme": "kgs", "rate_target": 2.6, "algorithm": "reweighted",
             "layers": layer_rows(_report(kept))} for s, kept in enumerate(([10, 20, 40, 80], [3, 50, 50, 3]))]
    runs.append({"model": "m", "seed": 0, "scheme": "dense", "rate_target": 1.0, "algorithm": "-",
                 "layers": layer_rows(_report([100] * 4))})
    (entry,) = summarize_layers(runs)  # the dense run is not a pruning cell
    assert entry["correlations"][0] == pytest.approx(1.0)  # dearest conv cut most
    assert entry["at_floor"] == [0, 2]  # seed 1 cut conv0 and conv3 to 3 of 100 units
    text = format_layer_rates(runs)
    assert "| m | kgs 2.6x reweighted |" in text and "0, 2 of 4" in text and "10 5 2.5 1.25" in text


def test_runs_without_layers_give_no_section():
    assert format_layer_rates([{"model": "m", "scheme": "kgs", "rate_target": 2.6, "algorithm": "fixed"}]) == ""
