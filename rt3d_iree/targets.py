"""Compile targets by name, with the exact iree-compile flags and runtime driver each implies."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Rt3dError


@dataclass(frozen=True)
class Target:
    """A named compile target.

    Attributes:
        name: what users type (``target="host"``, ``--target host``).
        flags: iree-compile flags this target implies; users' extra flags come after them,
            so a user flag overrides a target flag.
        driver: IREE runtime driver that runs the module.
        config_name: key of the KGS pass's kernel configuration table (kernel_config.CONFIGS).
    """

    name: str
    flags: tuple[str, ...]
    driver: str
    config_name: str
    description: str
    runner: str = "local"


# How the KGS pass computes convs: the hand-written microkernel where the target has one
# (llvm-cpu x86-64 with AVX-512 / AVX2, aarch64), IREE code generation otherwise.
KERNELS = ("auto", "microkernel", "codegen")

# Data tiling (off by default in IREE 3.13) packs matmul weights into the tiles the CPU
# kernels stream: C3D's FC head, memory-bound matvecs over 200 MB of weights, 5.4 -> 2.7 ms.
_LLVM_CPU = ("--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
             "--iree-opt-data-tiling=true")

TARGETS: dict[str, Target] = {
    "host": Target(
        name="host",
        flags=(*_LLVM_CPU, "--iree-llvmcpu-target-cpu=host"),
        driver="local-task",
        config_name="cpu",
        description="llvm-cpu for the CPU of this machine",
    ),
    "aarch64": Target(
        name="aarch64",
        flags=(*_LLVM_CPU, "--iree-llvmcpu-target-triple=aarch64-linux-android34",
               "--iree-llvmcpu-target-cpu=cortex-a78"),
        driver="local-task",
        config_name="neon",
        description="llvm-cpu for Android phones (aarch64, Cortex-A78 class: NEON + dotprod)",
        runner="qemu",
    ),
    "aarch64-linux": Target(
        name="aarch64-linux",
        flags=(*_LLVM_CPU, "--iree-llvmcpu-target-triple=aarch64-unknown-linux-gnu",
               "--iree-llvmcpu-target-cpu-features=+neon"),
        driver="local-task",
        config_name="neon",
        description="llvm-cpu for aarch64 Linux (boards, servers; baseline NEON)",
        runner="qemu",
    ),
    "vulkan-adreno": Target(
        name="vulkan-adreno",
        flags=(
            "--iree-hal-target-device=vulkan",
            "--iree-vulkan-target=adreno",
        ),
        driver="vulkan",
        config_name="adreno",
        description="Vulkan SPIR-V for Qualcomm Adreno GPUs (64-lane subgroups; our conv kernels use no "
        "subgroup operations and also run exactly on Mesa lavapipe, IREE's own FC kernels do not)",
        runner="local",
    ),
    "vulkan": Target(
        name="vulkan",
        flags=(
            "--iree-hal-target-device=vulkan",
            "--iree-vulkan-target=vp_android_baseline_2022",
        ),
        driver="vulkan",
        config_name="adreno",
        description="Vulkan SPIR-V for any Android-baseline GPU (no subgroup operations, so it also runs "
        "correctly on drivers whose subgroup size differs from the target's, such as Mesa lavapipe)",
        runner="local",
    ),
}

# Vulkan devices whose subgroup is narrower than Adreno's 64 lanes. IREE's own kernels for
# vulkan-adreno (matvec and reductions, not our conv kernels) use 64-wide subgroup
# operations and silently compute wrong results on them (measured on lavapipe: 0.5-0.9
# relative error on a Linear layer, our conv kernels exact).
NARROW_SUBGROUP_DEVICES = ("llvmpipe",)


def get_target(name: str) -> Target:
    """Look up a target by name, or explain which names exist."""
    try:
        return TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(TARGETS))
        raise Rt3dError(f"unknown target {name!r}", f"choose one of: {known}") from None


def resolve_target(target: str | Target) -> Target:
    """A ``Target`` as given (for example with its driver replaced), or one looked up by name.

    Why: callers that adjust a target (``rt3d bench --device``) pass the object itself, so
    the compiled module carries it; every other caller names one.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return get_target(target)
    raise Rt3dError(
        f"target must be a target name (str) or an rt3d_iree.targets.Target, got {type(target).__name__}",
        f"pass one of: {', '.join(sorted(TARGETS))}, or rt3d_iree.get_target(name)",
    )
