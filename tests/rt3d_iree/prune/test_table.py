"""`rt3d prune-table`: the Table 1 pipeline end to end at CI size (accuracy is not meaningful at
this size; the full table is `rt3d prune-table`), plus the summaries computed from per-seed runs."""

from __future__ import annotations

import csv
import json

import pytest

from rt3d_iree.errors import Rt3dError
from rt3d_iree.prune.layer_rates import format_layer_rates
from rt3d_iree.prune.stats import mcnemar_exact
from rt3d_iree.prune.table import (
    DEFAULT_GRID,
    FULL_GRID,
    ORDERINGS,
    SAME_BUDGET,
    TableSettings,
    format_table,
    summarize,
)

from ..test_runners import rt3d

# Whole-model FLOPs rates reached, relative to the target: never below it, at most 1% above
# (select_to_rate's repair step), for every scheme and algorithm.
RATE_SLACK = 0.01


def _run(model: str, seed: int, cell: tuple, correct: str) -> dict:
    scheme, rate, algorithm = cell
    acc = correct.count("1") / len(correct)
    return {"model": model, "seed": seed, "scheme": scheme, "rate_target": rate, "algorithm": algorithm,
            "rate": rate, "accuracy": acc, "reported_accuracy": acc, "dense_accuracy": 0.9, "structure_ok": True,
            "macs": 1, "checkpoint": "x.pt", "correct": correct}


def _fake_runs() -> list[dict]:
    """Two seeds of the default grid on 20 clips: the better cell of every ordering gets more clips right."""
    quality = {("kgs", 3.6, "reweighted"): 18, ("kgs", 3.6, "fixed"): 14, ("kgs", 3.6, "heuristic"): 12,
               ("kgs", 2.6, "reweighted"): 19, ("vanilla", 2.6, "reweighted"): 17, ("filter", 2.6, "reweighted"): 8,
               ("dense", 1.0, "-"): 19, SAME_BUDGET: 20}
    runs = []
    for seed in (0, 1):
        for cell, right in quality.items():
            right -= seed  # seed 1 is one clip worse everywhere: sd > 0 nowhere differs between cells
            runs.append(_run("c3d", seed, cell, "1" * right + "0" * (20 - right)))
    return runs


def test_summary_aggregates_over_seeds_and_tests_every_ordering():
    s = summarize(_fake_runs())
    agg = {(a["scheme"], a["rate_target"], a["algorithm"]): a for a in s["aggregates"]}
    assert len(agg) == 2 + len(DEFAULT_GRID)
    a = agg["kgs", 3.6, "reweighted"]
    assert a["seeds"] == 2 and a["accuracy_mean"] == pytest.approx(87.5)
    assert a["accuracy_sd"] == pytest.approx(3.5355, 1e-4)
    assert a["drop_from_dense"] == pytest.approx(5.0)
    assert a["drop_from_dense_same_budget"] == pytest.approx(10.0)  # the fair reference is the stricter one
    assert [(o["better"], o["worse"]) for o in s["orderings"]] == [
        ("kgs 3.6x reweighted", "kgs 3.6x fixed"), ("kgs 3.6x fixed", "kgs 3.6x heuristic"),
        ("kgs 2.6x reweighted", "vanilla 2.6x reweighted"), ("vanilla 2.6x reweighted", "filter 2.6x reweighted")]
    first = s["orderings"][0]  # nested correct clips: only A right on 4 clips per seed, never only B
    assert (first["b"], first["c"], first["clips"]) == (8, 0, 40)
    assert first["p"] == pytest.approx(mcnemar_exact(8, 0)) and first["verdict"] == "holds"
    assert first["mean_diff"] == pytest.approx(20.0)


def test_markdown_has_table1_shape_dashes_for_cells_not_run_and_the_orderings():
    md = format_table(_fake_runs())
    rows = [line for line in md.splitlines() if line.startswith("| c3d |")]
    table1, orderings = rows[:4], rows[4:]
    assert [r.split(" | ")[3:5] for r in table1] == [["filter", "2.6x"], ["vanilla", "2.6x"], ["kgs", "2.6x"],
                                                      ["kgs", "3.6x"]]
    assert table1[0].split(" | ")[5:7] == ["-", "-"]  # filter 2.6x: heuristic and fixed not in the default grid
    assert "87.5 ± 3.5" in table1[3]
    assert "| claim (A >= B) |" in md and "exact McNemar p" in md and len(orderings) == len(ORDERINGS)
    assert "c3d: kgs 3.6x reweighted drops 5.0 points from dense (mean of seeds; negative = above" in md
    assert "drops 10.0 points from the dense model trained as many epochs more, unpruned" in md
    assert md.rstrip().endswith("NOT within the claimed 1.5.")


def test_cells_at_chance_level_say_so():
    runs = [{**r, "correct": "1" * 2 + "0" * 14, "accuracy": 2 / 16} for r in _fake_runs()]
    md = format_table(runs)
    assert f"{2 + len(DEFAULT_GRID)} of {2 + len(DEFAULT_GRID)} cells are at chance level (12.5%" in md
    assert "chance level" not in format_table(_fake_runs())


def test_one_seed_shows_means_without_sd():
    md = format_table([r for r in _fake_runs() if r["seed"] == 0])
    assert "±" not in md.split("\n\n")[1] and "| 90.0 |" in md


def test_full_grid_fills_every_algorithm_column_and_tests_the_same_orderings():
    runs = [_run("c3d", seed, cell, "1" * (10 + seed) + "0" * (10 - seed))
            for seed in (0, 1) for cell in (("dense", 1.0, "-"), SAME_BUDGET, *FULL_GRID)]
    s = summarize(runs)
    assert len(s["aggregates"]) == 2 + 12 and len(s["orderings"]) == len(ORDERINGS)
    table1 = [line for line in format_table(runs).splitlines() if line.startswith("| c3d |")][:4]
    assert all(" - |" not in line and line.count("52.5 ± 3.5") == 5 for line in table1)  # 2 dense + 3 algorithms


def test_grids_and_settings_validation():
    assert len(FULL_GRID) == 12 and set(DEFAULT_GRID) <= set(FULL_GRID) and len(DEFAULT_GRID) == 6
    assert TableSettings().grid == DEFAULT_GRID and TableSettings(full_grid=True).grid == FULL_GRID
    assert TableSettings().seeds == (0, 1) and TableSettings.quick().models == ("c3d",)
    for bad in ({"models": ("c3d", "resnet")}, {"models": ()}, {"seeds": ()}, {"seeds": (0, 0)},
                {"reg_epochs": 0}, {"size": 4}):
        with pytest.raises(Rt3dError):
            TableSettings(**bad)


@pytest.mark.parametrize("args,text", [(["--seeds", ""], "no seed"), (["--models", "c3d,nope"], "unknown model"),
                                       (["--jobs", "0"], "argument --jobs: expected a whole number >= 1, got 0")])
def test_cli_rejects_bad_input_before_training(tmp_path, args, text):
    proc = rt3d("prune-table", "--quick", "--quiet", "--out", str(tmp_path), *args)
    assert proc.returncode != 0 and text in proc.stderr
    assert not (tmp_path / "prune-table").exists()


@pytest.mark.slow
def test_quick_table_has_every_cell_per_seed_and_resumes(tmp_path):
    # Two worker processes train the seeds' chains; the sequential run below accepts their runs.
    proc = rt3d("prune-table", "--quick", "--quiet", "--jobs", "2", "--seeds", "0,1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "prune_table.json").read_text())
    runs = doc["runs"]
    assert [tuple(c) for c in doc["settings"]["grid"]] == list(DEFAULT_GRID)
    assert len(runs) == 2 * (2 + len(DEFAULT_GRID))  # C3D, two seeds: dense, dense same budget, 6 cells each
    assert {r["seed"] for r in runs} == {0, 1} and {r["model"] for r in runs} == {"c3d"}
    for r in runs:
        assert r["structure_ok"], r
        assert r["rate_target"] <= r["rate"] <= (1 + RATE_SLACK) * r["rate_target"], r
        assert len(r["correct"]) == doc["settings"]["val_clips"]
        # The per-clip evaluation reproduces the accuracy the training run measured (to one clip).
        assert abs(r["accuracy"] - r["reported_accuracy"]) <= 1 / len(r["correct"]) + 1e-9, r
    # The seeds are different runs: their dense models differ (own weights, own data).
    dense = [r for r in runs if r["scheme"] == "dense" and r["algorithm"] == "-"]
    assert dense[0]["checkpoint"] != dense[1]["checkpoint"]
    same = [r for r in runs if (r["scheme"], r["rate_target"], r["algorithm"]) == SAME_BUDGET]
    assert len(same) == 2 and all(r["rate"] == 1.0 for r in same)  # trained on, nothing pruned
    assert all(a["seeds"] == 2 and a["accuracy_sd"] is not None for a in doc["aggregates"])
    assert len(doc["orderings"]) == len(ORDERINGS)
    for o in doc["orderings"]:
        assert o["b"] + o["c"] <= o["clips"] == 2 * doc["settings"]["val_clips"]
        assert o["p"] == pytest.approx(mcnemar_exact(o["b"], o["c"])) and o["verdict"]
    # The table is recomputable from the JSON's per-seed runs alone.
    assert format_table(runs) == doc["table"]
    assert (tmp_path / "prune_table.md").read_text() == f"{doc['table']}\n\n{format_layer_rates(runs)}\n"
    # Every pruned run records its per-conv rates (8 convs in C3D), summarised per cell.
    assert all(len(r["layers"]) == 8 for r in runs if r["scheme"] != "dense")
    assert len(doc["layer_rates"]) == len(DEFAULT_GRID) and "Per-conv rates" in doc["layer_table"]
    assert (tmp_path / "prune_table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "prune_table.csv").open()))
    assert len(rows) == len(runs) and "correct" not in rows[0]
    # A second run, in one process, finds every cell finished (no checkpoint rewritten) and only
    # rewrites the table.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "prune-table").rglob("*.pt")}
    again = rt3d("prune-table", "--quick", "--quiet", "--seeds", "0,1", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert doc["table"] in again.stdout


def test_claim_at_exactly_the_threshold_is_within_despite_float_rounding():
    # Seed gaps of 10 and 20 clips of 1000 make 1.5 points exactly; in floating point the
    # mean is 1.5000000000000013, which a plain <= called "NOT within".
    def bits(right: int) -> str:
        return "1" * right + "0" * (1000 - right)

    claim = ("kgs", 3.6, "reweighted")
    runs = []
    for seed, (same, pruned) in enumerate(((932, 922), (929, 909))):
        runs += [_run("c3d", seed, ("dense", 1.0, "-"), bits(900)), _run("c3d", seed, SAME_BUDGET, bits(same)),
                 _run("c3d", seed, claim, bits(pruned))]
    md = format_table(runs)
    assert "drops 1.5 points from the dense model trained as many epochs more, unpruned (the fair reference): " \
           "within the claimed 1.5." in md
