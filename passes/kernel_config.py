"""Lowering configurations for the KGS implicit-GEMM kernels, per target.

IREE's default heuristics treat our gather-GEMM ``linalg.generic`` as an arbitrary
reduction and pick poor tiles (about 3x slower, see DESIGN.md). We attach an explicit
``#iree_codegen.compilation_info`` instead. The numbers here are the register-tile shape
of the outer-product micro-kernel: ``vector_f`` filters x ``vector_q`` output positions
accumulated over one gathered column per step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes for one conv kernel.

    Attributes:
        distribution_q: output positions per workgroup (the unit of work a thread takes).
        vector_f: filters per register tile (<= gM).
        vector_q: output positions per register tile (a multiple of the SIMD width).
        pipeline: IREE CPU codegen pipeline name.
    """

    distribution_q: int = 128
    vector_f: int = 16
    vector_q: int = 8
    pipeline: str = "DoubleTilingExpert"


# Measured on the x86-64 host (1x64x8x28x28 -> 128, 3x3x3): up to 16 filters x 8 positions
# (16 ymm accumulators). 16 positions (zmm) with 8-16 filters spills and runs 10x slower;
# 64 or 256 positions per workgroup were slower than 128.
HOST_X86 = KernelConfig()

CONFIGS: dict[str, KernelConfig | None] = {
    "cpu": HOST_X86,
    # No lowering config: let the backend choose (used for non-CPU targets until tuned).
    "none": None,
}


def compilation_info(
    distribution: list[int], vector: list[int], reduction: list[int], pipeline: str
) -> str:
    """Render an ``#iree_codegen.compilation_info`` attribute for an llvm-cpu dispatch."""

    def fmt(xs: list[int]) -> str:
        return "[" + ", ".join(str(x) for x in xs) + "]"

    return (
        "#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<"
        f"distribution = {fmt(distribution)}, vector_common_parallel = {fmt(vector)}, "
        f"vector_reduction = {fmt(reduction)}>, translation_info = "
        f"#iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<{pipeline}>>>"
    )
