"""Lowering configurations for the KGS implicit-GEMM kernels, per target.

IREE's default heuristics treat our gather-GEMM ``linalg.generic`` as an arbitrary
reduction and pick poor tiles (about 3x slower: docs/design.md, "4.2 Code-generation tiles").
We attach an explicit ``#iree_codegen.compilation_info`` instead. The numbers here are the
register-tile shape of the outer-product micro-kernel: ``vector_f`` filters x ``vector_q``
output positions accumulated over one gathered column per step.
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

@dataclass(frozen=True)
class SpirvKernelConfig:
    """Tiling for GPUs through IREE's SPIR-V backend (Vulkan).

    One workgroup is one subgroup of ``workgroup_q`` invocations over consecutive output
    positions, so neighbouring lanes load neighbouring input elements (coalesced) while the
    weights they read are the same for the whole subgroup (uniform, cached). Each invocation
    keeps ``thread_q`` positions x every filter of its group in registers, which reuses each
    gathered input element gM times.

    Attributes:
        workgroup_q: output positions per workgroup (= invocations x thread_q).
        thread_q: output positions per invocation.
        pipeline: IREE SPIR-V pipeline name.
    """

    workgroup_q: int = 64
    thread_q: int = 1
    pipeline: str = "BaseDistribute"


# Adreno: subgroup (wave) size 64 in IREE's adreno target description.
ADRENO = SpirvKernelConfig(workgroup_q=64, thread_q=1)


# aarch64 NEON: 128-bit vectors (4 f32) and 32 registers. 8 filters x 8 positions is 16
# accumulator registers, leaving room for the loaded row and broadcast weights.
NEON = KernelConfig(distribution_q=128, vector_f=8, vector_q=8)

CONFIGS: dict[str, KernelConfig | SpirvKernelConfig | None] = {
    "cpu": HOST_X86,
    "neon": NEON,
    "adreno": ADRENO,
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


def spirv_compilation_info(tile_levels: list[list[int]], workgroup_size: list[int], pipeline: str) -> str:
    """Render an ``#iree_codegen.compilation_info`` attribute for a SPIR-V dispatch."""
    levels = ", ".join("[" + ", ".join(str(x) for x in lvl) + "]" for lvl in tile_levels)
    wg = ", ".join(str(x) for x in workgroup_size)
    return (
        f"#iree_codegen.compilation_info<lowering_config = #iree_codegen.lowering_config<tile_sizes = [{levels}]>, "
        f"translation_info = #iree_codegen.translation_info<pipeline = #iree_gpu.spirv_pipeline<{pipeline}> "
        f"workgroup_size = [{wg}]>>"
    )
