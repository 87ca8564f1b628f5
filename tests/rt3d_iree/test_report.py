"""`rt3d report` on small models: every engine, every model, checked against PyTorch, files written."""

from __future__ import annotations

import json

import pytest

from rt3d_iree.cli import main
from rt3d_iree.errors import Rt3dError
from rt3d_iree.report import ENGINES, ReportConfig, clip, markdown, quick_config, run_report, summarize


@pytest.mark.slow
def test_quick_report_covers_every_engine_and_model(tmp_path, capsys):
    code = main(["report", "--quick", "--rates", "1,2,4", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "report.json").read_text())
    assert set(results["models"]) == {"c3d", "r2plus1d", "s3d"}
    for name, info in results["models"].items():
        engines = {r["engine"] for r in results["rows"] if r["model"] == name}
        assert engines == set(ENGINES)
        # the masks reach the paper's whole-model rate (selection may overshoot by 1%)
        assert info["rate_target"] * 0.99 <= info["rate"] <= info["rate_target"] * 1.05
    for row in results["rows"]:
        assert row["median_ms"] > 0
        assert row["max_rel_error"] <= 1e-4, row  # every compiled path checked against PyTorch
    # the sweep: PyTorch, ORT and rt3d KGS at every rate on C3D
    swept = {(r["engine"], r["rate_target"]) for r in results["rows"] if r["model"] == "c3d"}
    for rate in (2.0, 4.0):
        assert {("PyTorch eager", rate), ("ONNX Runtime", rate), ("rt3d KGS", rate)} <= swept
    assert (tmp_path / "report_c3d_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (tmp_path / "report.csv").read_text().splitlines()
    assert len(csv_lines) == len(results["rows"]) + 1
    md = (tmp_path / "report.md").read_text()
    assert "| C3D (" in md and "| R(2+1)D-18 (" in md and "| S3D (" in md and "## Goals" in md
    assert "report.md" in capsys.readouterr().out


def test_summary_bars_follow_the_measurements():
    rows = [
        {"model": "c3d", "engine": e, "rate_target": t, "flops_rate": t, "median_ms": ms, "max_rel_error": 0.0,
         "compile_s": cs, "note": ""}
        for e, t, ms, cs in [("PyTorch eager", 1.0, 800.0, None), ("ONNX Runtime", 1.0, 600.0, None),
                             ("stock IREE", 1.0, 20000.0, 5.0), ("rt3d dense", 1.0, 500.0, 60.0),
                             ("rt3d KGS", 3.6, 250.0, 130.0)]
    ]
    results = {"rows": rows, "models": {"c3d": {"macs": 38_500_000_000, "rate_target": 3.6, "rate": 3.6,
                                                 "input": [1, 3, 16, 112, 112]}},
               "config": {"frames": 16, "size": 112, "width": 1.0, "threads": 2, "reps": 5}}
    s = summarize(results)["c3d"]
    assert s["sparse_speedup"] == pytest.approx(2.0)
    assert s["bars"]["rt3d dense no slower than ONNX Runtime"]
    assert s["bars"]["rt3d KGS >= 3x faster than ONNX Runtime dense"] is False  # 600 / 250 = 2.4
    assert s["bars"]["rt3d KGS >= 4x faster than PyTorch eager"] is False  # 3.2
    assert s["bars"]["sparse speedup >= 0.85 x FLOPs rate"] is False  # 2.0 / 3.6
    assert s["bars"]["import + pass + compile <= 120 s"] is False  # 130 s
    results["summary"] = {"c3d": s}
    assert ": no" in markdown(results)


def test_x3d_runs_at_its_published_clip_with_its_own_bars():
    assert "x3d-s" in ReportConfig().models and "x3d-s" not in quick_config().models
    assert clip(ReportConfig(), "x3d-s") == (13, 160) and clip(ReportConfig(), "c3d") == (16, 112)
    assert clip(quick_config(models=("x3d-s",)), "x3d-s") == (16, 32)  # --quick: the small clip
    rows = [
        {"model": "x3d-s", "engine": e, "rate_target": t, "flops_rate": t, "median_ms": ms, "max_rel_error": 0.0,
         "compile_s": 40.0, "note": ""}
        for e, t, ms in [("PyTorch eager", 1.0, 60.0), ("ONNX Runtime", 1.0, 65.0), ("rt3d dense", 1.0, 29.0),
                         ("rt3d KGS", 2.0, 19.0)]
    ]
    results = {"rows": rows, "models": {"x3d-s": {"macs": 1_960_000_000, "rate_target": 2.0, "rate": 2.0,
                                                   "input": [1, 3, 13, 160, 160]}},
               "config": {"frames": 16, "size": 112, "width": 1.0, "threads": 2, "reps": 5}}
    s = summarize(results)["x3d-s"]
    assert s["bars"]["rt3d dense takes <= 0.5x PyTorch eager's time"]  # 29 <= 30
    assert s["bars"]["rt3d dense no slower than ONNX Runtime"]
    assert s["bars"]["sparse speedup >= 0.75 x FLOPs rate"]  # 29 / 19 / 2 = 0.76
    results["summary"] = {"x3d-s": s}
    assert "| X3D-S 13x160x160 (2.00x) |" in markdown(results)


def test_bad_settings_are_refused():
    with pytest.raises(Rt3dError, match="at least 5"):
        ReportConfig(reps=3)
    with pytest.raises(Rt3dError, match="unknown model"):
        quick_config(models=("resnet",))
    with pytest.raises(Rt3dError, match="FLOPs rates"):
        quick_config(sweep_rates=(0.5, 2.0))
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before any work
        main(["report", "--rates", "1,x"])
    assert exit_info.value.code == 2


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(Rt3dError, match="ONNX Runtime is not installed") as info:
        run_report(quick_config(models=("c3d",)))
    assert "rt3d-iree[onnx]" in str(info.value) and "--no-onnx" in str(info.value)
