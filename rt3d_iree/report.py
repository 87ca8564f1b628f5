"""`rt3d report`: whole models on every engine a user would pick, shaped like the paper's Table 2.

Why: the paper's promise is that KGS sparsity turns into speedup close to the FLOPs pruning
rate. That is only worth something against the engines people actually use, so every model
is timed on PyTorch eager, ONNX Runtime (optional extra), stock IREE, rt3d dense and rt3d
KGS, on the same inputs, in one run, with every compiled output checked against PyTorch.
Latency needs masks of the right structure and rate, not trained weights, so the sparse
models get one-shot magnitude KGS masks at the paper's whole-model rates from the pruning
package's selection code (a trained checkpoint of the same rate runs the same kernels).

Outputs (in ``out_dir``): report.md (tables and bars), report.json, report.csv and
report_c3d_rates.png (latency against FLOPs pruning rate per engine).
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import api
from .bench import format_table, torch_times
from .errors import Rt3dError
from .files import atomic_write
from .group_size import DEFAULT_GROUP_SIZE
from .harness import ROUNDS, Variant, check_against, check_rounds, medians, time_interleaved
from .models import build_model, count_macs, fold_batchnorm
from .models_x3d import X3D_INPUTS
from .prune.structure import ModelUnits, Structure
from .sparsity import apply_kgs_magnitude

logger = logging.getLogger(__name__)

PAPER_RATES = {"c3d": 3.6, "r2plus1d": 3.2, "s3d": 2.1}  # RT3D Table 2
RATES = {**PAPER_RATES, "x3d-s": 2.0}  # X3D-S: KGS at 2x (issue 18), at its published clip
LABELS = {"c3d": "C3D", "r2plus1d": "R(2+1)D-18", "s3d": "S3D", "x3d-s": "X3D-S"}
ENGINES = ("PyTorch eager", "ONNX Runtime", "stock IREE", "rt3d dense", "rt3d KGS")
COMPILE_BUDGET_S = 120.0


@dataclass
class ReportConfig:
    """What `rt3d report` measures. Defaults are the issue's: full-size models, 16 frames."""

    models: tuple[str, ...] = ("c3d", "r2plus1d", "s3d", "x3d-s")
    width: float = 1.0
    frames: int = 16
    size: int = 112
    num_classes: int = 101
    reps: int = 5
    rounds: int = ROUNDS
    threads: int = 2
    group_size: tuple[int, int] = DEFAULT_GROUP_SIZE
    sweep_model: str = "c3d"
    sweep_rates: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0)
    onnx: bool = True
    stock: bool = True
    seed: int = 0
    rates: dict[str, float] = field(default_factory=lambda: dict(RATES))
    native_inputs: bool = True  # X3D at its published clip (13x160x160), not frames x size

    def __post_init__(self) -> None:
        if self.reps < 5:
            raise Rt3dError(f"reps must be at least 5 (got {self.reps})", "medians need 5 or more runs")
        check_rounds(self.rounds)
        for m in self.models:
            if m not in RATES:
                raise Rt3dError(f"unknown model {m!r}", f"choose from: {', '.join(RATES)}")
        if any(r < 1 for r in self.sweep_rates):
            raise Rt3dError(f"FLOPs rates must be >= 1 (got {self.sweep_rates})", "for example 1,2,3,4,6")


def quick_config(**overrides) -> ReportConfig:
    """Small models for CI: the whole pipeline and every engine, in about two minutes."""
    return ReportConfig(**{"width": 0.125, "frames": 16, "size": 32, "native_inputs": False,
                           "models": ("c3d", "r2plus1d", "s3d"), **overrides})


def clip(cfg: ReportConfig, name: str) -> tuple[int, int]:
    """(frames, size) ``name`` runs at: X3D's published clip with ``native_inputs``, else the config's."""
    return X3D_INPUTS[name] if cfg.native_inputs and name in X3D_INPUTS else (cfg.frames, cfg.size)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _ort_session(model: nn.Module, x: torch.Tensor, threads: int):
    """Export with torch.onnx (TorchScript exporter: needs no onnxscript) and open an ORT session."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def ort_times(session, x: np.ndarray, reps: int) -> list[float]:
    """Wall-clock ms of each of ``reps`` calls of ``session.run``, after two warm-up calls."""
    for _ in range(2):
        session.run(None, {"x": x})
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - start) * 1e3)
    return times


def prune_to(model: nn.Module, x: torch.Tensor, rate: float, group_size: tuple[int, int]) -> tuple[nn.Module, float]:
    """A copy of ``model`` with magnitude KGS masks at a whole-model FLOPs rate; the rate reached."""
    sparse = copy.deepcopy(model)
    if rate > 1.0:
        apply_kgs_magnitude(sparse, x, rate, group_size)
    units = ModelUnits(sparse, x, Structure("kgs", group_size))
    return sparse, float(units.rate(units.masks_of()))


class _Run:
    """One model's measurements. Every output is checked against PyTorch before anything is
    timed; the engines are then timed in interleaved rounds (harness.time_interleaved), all
    but stock IREE, which is timed once on its own (tens of seconds a run on C3D)."""

    def __init__(self, cfg: ReportConfig, name: str, progress: tqdm) -> None:
        self.cfg, self.name, self.progress = cfg, name, progress
        self.rows: list[dict] = []
        self.variants: dict[int, Variant] = {}  # row index -> what times it

    def add(self, engine: str, rate_target: float, rate: float, ms: float | None, err: float | None,
            compile_s: float | None = None, note: str = "") -> int:
        self.rows.append({"model": self.name, "engine": engine, "rate_target": rate_target, "flops_rate": rate,
                          "median_ms": ms, "max_rel_error": err, "compile_s": compile_s, "note": note})
        return len(self.rows) - 1

    def timed(self, row: int, timer: Callable[[], list[float]]) -> None:
        """Time ``row``'s engine with the others (names are unique per row: one engine runs at several rates)."""
        self.variants[row] = Variant(f"{row}: {self.rows[row]['engine']} {self.rows[row]['rate_target']:g}x", timer)

    def step(self, text: str) -> None:
        self.progress.set_postfix_str(f"{self.name}: {text}")

    def compiled(self, engine: str, model: nn.Module, x: torch.Tensor, ref: torch.Tensor, rate_target: float,
                 rate: float, kgs: bool = True) -> None:
        cfg = self.cfg
        self.step(f"compile {engine} {rate_target:g}x")
        start = time.perf_counter()
        module = api.compile(model, (x,), kgs=kgs, group_size=cfg.group_size)
        compile_s = time.perf_counter() - start
        self.progress.update()
        err = check_against(ref, module(x), name=f"{engine} on {self.name}")
        kernels = sorted({c.kernel for c in (module.report.convs if module.report else []) if c.kernel})
        row = self.add(engine, rate_target, rate, None, err, compile_s, "+".join(kernels))
        variant = Variant.module(engine, module, (x.numpy(),), threads=cfg.threads, repetitions=cfg.reps)
        if kgs:
            self.timed(row, variant.timer)
        else:
            self.step(f"time {engine} {rate_target:g}x")
            self.rows[row]["median_ms"] = medians(time_interleaved([variant], 1))[engine]
            self.progress.update()

    def reference_engines(self, model: nn.Module, x: torch.Tensor, ref: torch.Tensor, rate_target: float,
                          rate: float) -> None:
        cfg = self.cfg
        row = self.add("PyTorch eager", rate_target, rate, None, 0.0)
        self.timed(row, lambda: torch_times(model, (x,), cfg.reps, cfg.threads))
        if cfg.onnx:
            self.step(f"ONNX Runtime {rate_target:g}x")
            session = _ort_session(model, x, cfg.threads)
            out = session.run(None, {"x": x.numpy()})[0]
            err = check_against(ref, out, name=f"ONNX Runtime on {self.name}", hint="check the export")
            row = self.add("ONNX Runtime", rate_target, rate, None, err)
            self.timed(row, lambda: ort_times(session, x.numpy(), cfg.reps))

    def time_all(self) -> None:
        """Time every registered engine, in turn, ``cfg.rounds`` times; fill in the medians."""
        self.step(f"time {len(self.variants)} engines in turn, {self.cfg.rounds} rounds")
        ms = medians(time_interleaved(list(self.variants.values()), self.cfg.rounds, on_round=self.progress.update))
        for row, variant in self.variants.items():
            self.rows[row]["median_ms"] = ms[variant.name]
        self.variants.clear()


def _zero_classifier_bias(model: nn.Module) -> None:
    """Zero the last layer's bias. Freshly initialised models output almost only that bias (the
    features are tiny), and the check against PyTorch must compare what the convs computed."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d))][-1]
    if last.bias is not None:
        with torch.no_grad():
            last.bias.zero_()


def _steps(cfg: ReportConfig) -> int:
    # build, stock (compile, time), dense compile, KGS masks, KGS compile, timing rounds
    per_model = 1 + (2 if cfg.stock else 0) + 1 + 2 + cfg.rounds
    sweep = [r for r in cfg.sweep_rates if r > 1.0]
    extra = len(sweep) * 2 if cfg.sweep_model in cfg.models else 0
    return per_model * len(cfg.models) + extra


def _check_reachable(cfg: ReportConfig) -> None:
    """Every model's target and sweep rates, masked once up front (seconds), so an unreachable
    rate fails before minutes of compiling and timing the models before it."""
    for name in cfg.models:
        frames, size = clip(cfg, name)
        model = build_model(name, cfg.num_classes, cfg.width, frames, size).eval()
        x = torch.zeros(1, 3, frames, size, size)
        sweep = cfg.sweep_rates if name == cfg.sweep_model else ()
        for r in sorted({cfg.rates[name], *sweep}):
            if r > 1.0:
                prune_to(model, x, r, cfg.group_size)


def run_report(cfg: ReportConfig) -> dict:
    """Measure every model on every engine; return the results (rows, ratios, bars)."""
    if cfg.onnx and not onnx_available():
        raise Rt3dError("ONNX Runtime is not installed",
                        "pip install 'rt3d-iree[onnx]' (or run with --no-onnx to leave it out)")
    _check_reachable(cfg)
    torch.manual_seed(cfg.seed)
    results: dict = {"config": asdict(cfg), "models": {}, "rows": []}
    progress = tqdm(total=_steps(cfg), desc="rt3d report", unit="step")
    for name in cfg.models:
        run = _Run(cfg, name, progress)
        run.step("build")
        torch.manual_seed(cfg.seed)
        frames, size = clip(cfg, name)
        model = fold_batchnorm(build_model(name, cfg.num_classes, cfg.width, frames, size).eval())
        _zero_classifier_bias(model)
        x = torch.randn(1, 3, frames, size, size)
        macs = count_macs(model, x)
        with torch.no_grad():
            ref = model(x)
        progress.update()
        run.reference_engines(model, x, ref, 1.0, 1.0)
        if cfg.stock:
            run.compiled("stock IREE", model, x, ref, 1.0, 1.0, kgs=False)
        run.compiled("rt3d dense", model, x, ref, 1.0, 1.0)
        target = cfg.rates[name]
        run.step(f"KGS masks {target:g}x")
        sparse, rate = prune_to(model, x, target, cfg.group_size)
        with torch.no_grad():
            sref = sparse(x)
        progress.update()
        run.compiled("rt3d KGS", sparse, x, sref, target, rate)
        if name == cfg.sweep_model:
            for r in cfg.sweep_rates:
                if r <= 1.0:
                    continue
                swept, reached = prune_to(model, x, r, cfg.group_size)
                with torch.no_grad():
                    sw_ref = swept(x)
                run.reference_engines(swept, x, sw_ref, r, reached)
                run.compiled("rt3d KGS", swept, x, sw_ref, r, reached)
                progress.update()
        run.time_all()
        results["models"][name] = {"macs": int(sum(macs.values())), "rate_target": target, "rate": rate,
                                   "input": [1, 3, frames, size, size]}
        results["rows"] += run.rows
    progress.close()
    results["summary"] = summarize(results)
    return results


def _ms(rows: list[dict], model: str, engine: str, rate_target: float) -> float | None:
    for r in rows:
        if r["model"] == model and r["engine"] == engine and r["rate_target"] == rate_target:
            return r["median_ms"]
    return None


def summarize(results: dict) -> dict:
    """Per-model ratios and the issue's bars (None where an engine was left out)."""
    rows, out = results["rows"], {}
    for name, info in results["models"].items():
        t = info["rate_target"]
        py, ort = _ms(rows, name, "PyTorch eager", 1.0), _ms(rows, name, "ONNX Runtime", 1.0)
        dense, kgs = _ms(rows, name, "rt3d dense", 1.0), _ms(rows, name, "rt3d KGS", t)
        compile_s = max(r["compile_s"] or 0 for r in rows if r["model"] == name and r["engine"].startswith("rt3d"))
        s = {
            "sparse_speedup": dense / kgs,
            "speedup_over_rate": dense / kgs / info["rate"],
            "kgs_vs_pytorch": py / kgs,
            "kgs_vs_ort": ort / kgs if ort else None,
            "dense_vs_ort": ort / dense if ort else None,
            "max_compile_s": compile_s,
        }
        share = 0.75 if name == "x3d-s" else 0.85  # the issues' bars: 18 for X3D-S, 20 for the rest
        bars = {f"sparse speedup >= {share} x FLOPs rate": s["speedup_over_rate"] >= share,
                f"import + pass + compile <= {COMPILE_BUDGET_S:g} s": compile_s <= COMPILE_BUDGET_S}
        if name == "c3d":
            if ort:
                bars["rt3d dense no slower than ONNX Runtime"] = dense <= ort
                bars["rt3d KGS >= 3x faster than ONNX Runtime dense"] = ort / kgs >= 3
            bars["rt3d KGS >= 4x faster than PyTorch eager"] = py / kgs >= 4
        if name == "x3d-s":
            bars["rt3d dense takes <= 0.5x PyTorch eager's time"] = dense <= 0.5 * py
            if ort:
                bars["rt3d dense no slower than ONNX Runtime"] = dense <= ort
        s["bars"] = bars
        out[name] = s
    return out


def markdown(results: dict) -> str:
    """Table 2's shape (one row per model at its paper rate), the bars, and every measurement."""
    rows, cfg = results["rows"], results["config"]
    lines = [f"# rt3d report: batch 1, {cfg['frames']}x{cfg['size']}x{cfg['size']} clips, width {cfg['width']:g}, "
             f"{cfg['threads']} threads, median of {cfg['reps'] * cfg.get('rounds', 1)} runs "
             f"({cfg.get('rounds', 1)} interleaved rounds of {cfg['reps']}; stock IREE: {cfg['reps']}) (ms)", ""]
    head = ["model (KGS rate)", "GMAC", "PyTorch", "ONNX Runtime", "stock IREE", "rt3d dense", "rt3d KGS",
            "KGS speedup vs dense", "speedup / FLOPs rate", "KGS speedup vs ORT", "KGS speedup vs PyTorch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    for name, info in results["models"].items():
        s = results["summary"][name]
        t = info["rate_target"]
        shape = "" if info["input"][2:4] == [cfg["frames"], cfg["size"]] else " {}x{}x{}".format(*info["input"][2:])
        cells = [f"{LABELS[name]}{shape} ({info['rate']:.2f}x)", f"{info['macs'] / 1e9:.2f}",
                 f(_ms(rows, name, "PyTorch eager", 1.0)), f(_ms(rows, name, "ONNX Runtime", 1.0)),
                 f(_ms(rows, name, "stock IREE", 1.0)), f(_ms(rows, name, "rt3d dense", 1.0)),
                 f(_ms(rows, name, "rt3d KGS", t)), f(s["sparse_speedup"], "{:.2f}x"),
                 f(s["speedup_over_rate"], "{:.2f}"), f(s["kgs_vs_ort"], "{:.2f}x"), f(s["kgs_vs_pytorch"], "{:.2f}x")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Goals", ""]
    for name, s in results["summary"].items():
        for bar, ok in s["bars"].items():
            lines.append(f"- {LABELS[name]}: {bar}: {'yes' if ok else 'no'}")
    lines += ["", "## Every measurement", ""]
    table_rows = [{**r, "note": r["note"] or ""} for r in rows]
    lines.append(format_table(table_rows, ["model", "engine", "rate_target", "flops_rate", "median_ms",
                                           "max_rel_error", "compile_s", "note"]))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path | None:
    """Latency against FLOPs pruning rate, one line per engine, for the sweep model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = results["config"]["sweep_model"]
    rows = [r for r in results["rows"] if r["model"] == name]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine in ENGINES:
        # The KGS line starts at rt3d dense (1x is the dense model).
        same = ("rt3d KGS", "rt3d dense") if engine == "rt3d KGS" else (engine,)
        if engine == "rt3d dense":
            continue
        pts = sorted((r["flops_rate"], r["median_ms"]) for r in rows if r["engine"] in same and r["median_ms"])
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        if len(pts) == 1:  # measured dense only (stock IREE): a dense engine, drawn flat
            ax.axhline(ys[0], linestyle="--", color="gray", label=f"{engine} (dense, measured at 1x)")
        else:
            ax.plot(xs, ys, marker="o", label=engine)
    ax.set_yscale("log")
    ax.set_xlabel("whole-model FLOPs pruning rate (KGS)")
    ax.set_ylabel("latency, ms (median)")
    cfg = results["config"]
    ax.set_title(f"{LABELS[name]} {cfg['frames']}x{cfg['size']}x{cfg['size']}, batch 1, {cfg['threads']} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """report.md, report.json, report.csv and the PNG, each written atomically."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "report.json", out / "report.csv"]
    atomic_write(paths[0], markdown(results))
    atomic_write(paths[1], json.dumps(results, indent=2, default=float))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(results["rows"][0]))
    writer.writeheader()
    writer.writerows(results["rows"])
    atomic_write(paths[2], buf.getvalue())
    png = plot(results, out / f"report_{results['config']['sweep_model']}_rates.png")
    return paths + ([png] if png else [])


def report(cfg: ReportConfig, out_dir: str | Path = "rt3d-out/report") -> tuple[dict, list[Path]]:
    results = run_report(cfg)
    return results, write_report(results, out_dir)
