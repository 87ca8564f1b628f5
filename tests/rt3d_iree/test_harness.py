"""harness.py: numerics checks naming the variant, and interleaved timing rounds (bench and tune too)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rt3d_iree import Rt3dError, driver, tune
from rt3d_iree.harness import TOLERANCE, Variant, check_against, max_rel_error, medians, time_interleaved
from rt3d_iree.runners import BenchResult, LocalRunner
from rt3d_iree.targets import TARGETS


def _recording(calls: list[str], name: str, times: list[list[float]] | None = None) -> Variant:
    runs = iter(times or [[1.0]] * 100)

    def timer() -> list[float]:
        calls.append(name)
        return next(runs)

    return Variant(name, timer)


def test_rounds_time_every_variant_once_in_the_same_order():
    calls: list[str] = []
    variants = [_recording(calls, n) for n in "abc"]
    done = []
    times = time_interleaved(variants, 4, on_round=lambda: done.append(list(calls)))
    assert calls == list("abc") * 4
    assert done[0] == list("abc") and len(done) == 4  # a round ends after every variant ran once
    assert times == {n: [[1.0]] * 4 for n in "abc"}


def test_medians_are_over_every_run_of_every_round():
    calls: list[str] = []
    variants = [_recording(calls, "a", [[1.0, 2.0], [9.0, 9.0], [3.0, 3.0]]),
                _recording(calls, "b", [[5.0], [4.0], [6.0]])]
    times = time_interleaved(variants, 3)
    assert times["a"] == [[1.0, 2.0], [9.0, 9.0], [3.0, 3.0]]  # per round
    assert medians(times) == {"a": 3.0, "b": 5.0}


def test_bad_rounds_and_duplicate_names():
    with pytest.raises(Rt3dError, match="rounds must be at least 1"):
        time_interleaved([], 0)
    with pytest.raises(ValueError, match="must differ"):
        time_interleaved([Variant("a", list), Variant("a", list)], 1)
    with pytest.raises(Rt3dError, match="rounds must be at least 1"):
        driver.BenchConfig(rounds=0)  # refused before anything compiles
    with pytest.raises(Rt3dError, match="rounds must be at least 1"):
        tune.tune(rounds=0)


def _result(times: list[float], device: str = "host CPU") -> BenchResult:
    return BenchResult("local", device, "local-task", 2, len(times), float(np.median(times)), times)


def test_benchmarked_variant_merges_what_each_round_reported():
    reported = iter([_result([3.0, 1.0]), _result([2.0, 8.0]), _result([4.0, 5.0])])
    variant = Variant.benchmarked("kgs", lambda: next(reported))
    times = time_interleaved([variant], 3)
    assert times["kgs"] == [[3.0, 1.0], [2.0, 8.0], [4.0, 5.0]]
    merged = variant.result()
    assert merged.times_ms == [3.0, 1.0, 2.0, 8.0, 4.0, 5.0] and merged.median_ms == 3.5
    assert merged.device == "host CPU" and merged.threads == 2
    one = Variant.benchmarked("once", lambda: _result([7.0]))
    time_interleaved([one], 1)
    assert one.result() == _result([7.0])  # one round: exactly what iree-benchmark-module said


def test_check_against_names_the_variant_and_its_error():
    ref = torch.ones(2, 3)
    assert check_against(ref, ref.numpy(), name="rt3d dense") == 0.0
    assert check_against(ref, ref + TOLERANCE / 2, name="close") <= TOLERANCE
    with pytest.raises(Rt3dError, match=r"rt3d KGS on host differs from PyTorch: max rel error 0\.5 "
                       r"\(tolerance 0\.0001\)") as err:
        check_against(ref, ref * 1.5, name="rt3d KGS on host")
    assert "compiler bug" in err.value.hint
    with pytest.raises(Rt3dError, match="ONNX Runtime differs") as err:
        check_against(ref, ref * 2, name="ONNX Runtime", hint="check the export")
    assert err.value.hint == "check the export"


def test_check_against_refuses_nan_and_compares_tuples_pairwise():
    ref = torch.ones(3)
    nan = np.full(3, np.nan, dtype=np.float32)
    assert math.isnan(max_rel_error(nan, ref))
    with pytest.raises(Rt3dError, match="nan differs from PyTorch"):
        check_against(ref, nan, name="nan")
    with pytest.raises(Rt3dError, match="second output"):
        check_against((ref, ref), (ref, ref * 3), name="second output")
    assert check_against(ref, (ref, ref * 3), name="head only") == 0.0  # one reference: the first output


class _FakeModule:
    """What api.compile returns, without compiling: runs the model, logs its timing calls."""

    def __init__(self, model: nn.Module, log: list[str], name: str) -> None:
        self.model, self.log, self.name = model, log, name

    def __call__(self, *args):
        with torch.no_grad():
            return self.model(*args)

    def benchmark(self, *args, threads: int = 2, repetitions: int = 5) -> BenchResult:
        self.log.append(self.name)
        return _result([1.0] * repetitions)


def test_bench_checks_then_interleaves_its_variants(monkeypatch):
    log: list[str] = []
    names = iter(["dense", "kgs"])

    def fake_compile(model, args=(), **kw):
        assert isinstance(kw["runner"], LocalRunner) and kw["target"].name == "host"  # given, not patched later
        return _FakeModule(model, log, next(names))

    monkeypatch.setattr(driver.api, "compile", fake_compile)
    cfg = driver.BenchConfig(repetitions=2, rounds=3)
    x = torch.randn(1, 2, 3, 4, 4)
    variants = [("dense", nn.Conv3d(2, 4, 3)), ("kgs", nn.Conv3d(2, 4, 3))]
    rows = driver._bench_variants("m", variants, x, cfg, (8, 4), TARGETS["host"], LocalRunner())
    assert log == ["dense", "kgs"] * 3
    assert [len(r["times_ms"]) for r in rows] == [6, 6] and rows[0]["max_rel_error"] == 0.0


def test_bench_refuses_a_variant_that_differs(monkeypatch):
    class Wrong(_FakeModule):
        def __call__(self, *args):
            return super().__call__(*args) * 2

    monkeypatch.setattr(driver.api, "compile", lambda model, args=(), **kw: Wrong(model, [], "x"))
    with pytest.raises(Rt3dError, match="KGS 8x4 on host differs from PyTorch"):
        driver._bench_variants("m", [("KGS 8x4", nn.Conv3d(2, 4, 3))], torch.randn(1, 2, 3, 4, 4),
                               driver.BenchConfig(), (8, 4), TARGETS["host"], LocalRunner())


def test_tune_interleaves_candidates_and_layers(monkeypatch, tmp_path):
    log: list[str] = []

    def fake_compile(model, args=(), group_size=None, **kw):
        return _FakeModule(model, log, f"{group_size[0]}x{group_size[1]}:{model.in_channels}")

    monkeypatch.setattr(tune.api, "compile", fake_compile)
    layers = (tune.SynthLayer(4, 8, 2, 4), tune.SynthLayer(8, 8, 2, 4))
    res = tune.tune(candidates=((4, 4), (8, 4), (4, 4)), layers=layers, repetitions=1, rounds=2,
                    path=tmp_path / "tuning.json")
    assert log == ["4x4:4", "4x4:8", "8x4:4", "8x4:8"] * 2
    assert [t["group_size"] for t in res["timings"]] == [[4, 4], [8, 4]]
    assert all(t["per_layer_ms"] == [1.0, 1.0] and t["total_ms"] == 2.0 for t in res["timings"])


def test_a_quick_tune_never_replaces_a_recorded_choice(monkeypatch, tmp_path):
    def fake_compile(model, args=(), group_size=None, **kw):
        return _FakeModule(model, [], f"{group_size[0]}x{group_size[1]}")

    monkeypatch.setattr(tune.api, "compile", fake_compile)
    path = tmp_path / "tuning.json"
    tune.record("host", (16, 4), "measured with the local runner on 4 layer(s)", path=path)
    res = tune.tune(candidates=((4, 4),), layers=tune.QUICK_LAYERS, repetitions=1, rounds=1, path=path)
    assert not res["recorded"] and tune.tuned_group_size("host", path) == (16, 4)
    assert "not recorded" in tune.tune_table(res) and "without --quick" in tune.tune_table(res)
    res = tune.tune(candidates=((4, 4),), layers=tune.QUICK_LAYERS, repetitions=1, rounds=1,
                    path=tmp_path / "empty.json")  # nothing recorded yet: a quick choice is better than none
    assert res["recorded"] and tune.tuned_group_size("host", tmp_path / "empty.json") == (4, 4)
