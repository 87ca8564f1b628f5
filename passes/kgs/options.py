"""Options and reports of the ``rt3d-kgs-conv3d`` pass, and the plain facts it plans from.

Why a module of its own: these dataclasses are what callers (rt3d_iree.compiler, tests) and
every stage of the pass exchange, and none of them needs MLIR; keeping them apart lets the
numpy-only planning and the text emitters import them without the IR side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..kernel_config import CONFIGS, KernelConfig, SpirvKernelConfig
from .ukernel_abi import Microkernel

# The KGS group size (gM filters, gN channels) when nobody chose one: the paper's 8x4. The one
# place it is written; rt3d_iree.group_size resolves what a caller gave against it, and the
# pruning code, the benchmarks and the CLI import it from here (the lowest layer).
DEFAULT_GROUP_SIZE: tuple[int, int] = (8, 4)


@dataclass(frozen=True)
class KgsConv3dOptions:
    """Options of the pass.

    Attributes:
        group_m: filters per group (gM). The compacted matmul keeps one column set per group.
        group_n: channels per group (gN). Used only to check and report KGS structure; the
            kept columns are found per filter group regardless, so any zero pattern is correct.
        config_name: key into ``kernel_config.CONFIGS`` choosing lowering configurations
            ("cpu" for llvm-cpu, "none" to let the backend choose). Named for what it is, not
            "target" or "kernel": those words mean the compile target and the compute strategy
            (microkernel or codegen) everywhere else; see docs/design.md, "Words".
        config: explicit kernel configuration overriding the named one.
        max_padding_waste: when groups keep different numbers of columns, every group is
            padded to the largest; above this fraction of wasted MACs we still rewrite but log it.
        microkernel: llvm-cpu only: the hand-written kernel (passes/kgs_ukernel.py) for the
            target's ISA. Convs with stride 1 in H and W then call it; the others, and every
            conv when this is None, take the code generation path.
    """

    group_m: int = DEFAULT_GROUP_SIZE[0]
    group_n: int = DEFAULT_GROUP_SIZE[1]
    config_name: str = "cpu"
    config: KernelConfig | None = None
    max_padding_waste: float = 0.25
    microkernel: Microkernel | None = None

    def __post_init__(self) -> None:
        for name in ("group_m", "group_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value > 1024:
                raise ValueError(
                    f"{name} must be an integer between 1 and 1024 (got {value!r}); "
                    "the paper uses gM=4 or 8 filters and gN=4 channels"
                )
        if self.config_name not in CONFIGS:
            raise ValueError(
                f"unknown kernel configuration {self.config_name!r}; choose one of {sorted(CONFIGS)}"
            )

    def kernel_config(self) -> KernelConfig | SpirvKernelConfig | None:
        return self.config if self.config is not None else CONFIGS[self.config_name]


@dataclass(frozen=True)
class ConvGeometry:
    """Static shape facts of a conv3d in NCDHW / FCDHW layout (input already padded)."""

    n: int
    c: int
    d: int
    h: int
    w: int
    f: int
    kd: int
    kh: int
    kw: int
    strides: tuple[int, int, int]
    dilations: tuple[int, int, int]
    od: int
    oh: int
    ow: int

    @property
    def kernel_volume(self) -> int:
        return self.kd * self.kh * self.kw

    @property
    def dense_macs(self) -> int:
        return self.n * self.f * self.c * self.kernel_volume * self.od * self.oh * self.ow

    @property
    def rows_contiguous(self) -> bool:
        """Stride 1 in H and W (or a single output row / column, where the stride never
        applies): a flat run over (h, padded w) is contiguous in the input."""
        return (self.strides[1] == 1 or self.oh == 1) and (self.strides[2] == 1 or self.ow == 1)


@dataclass
class KgsPlan:
    """What the rewrite emits for one conv: compacted weights and the gather table."""

    weights: np.ndarray  # [G, gM, n] float32, zero rows/columns where padded
    offsets: np.ndarray  # [G, n] int32, flat input offset of each kept column
    kept_per_group: np.ndarray  # [G] number of columns really kept per group
    group_m: int
    kgs_conforming: bool  # zeros follow KGS structure for (gM, gN)
    kd_start: np.ndarray | None = None  # [G, KD+1] first column of each kernel frame (by_frame)

    @property
    def groups(self) -> int:
        return self.weights.shape[0]

    @property
    def columns(self) -> int:
        return self.weights.shape[2]


@dataclass
class ConvReport:
    """One conv the pass looked at, for logs and for users' reports."""

    location: str
    rewritten: bool
    reason: str = ""
    dense_macs: int = 0
    kept_macs: int = 0
    executed_macs: int = 0
    kgs_conforming: bool = False
    kernel: str = ""  # "microkernel", "codegen" or "" (not rewritten / fully pruned)
    epilogue: str = ""  # microkernel: what it applies as it stores ("bias", "accumulate", "+relu")


@dataclass
class PassReport:
    convs: list[ConvReport] = field(default_factory=list)
    pools: int = 0  # 3-D max pools given to the microkernel as dispatches of their own
    fused_pools: int = 0  # 3-D max pools computed by the conv dispatch before them
    pads: int = 0  # conv inputs zero-padded by the microkernel's pad dispatch
    unpadded_pools: int = 0  # pooling dispatches that read their -inf-padded input unpadded
    fused_residuals: int = 0  # residual additions (conv + bias + r, ReLU after) done by the conv's store
    subsampled: int = 0  # strided 1x1x1 convs whose input the pooling kernel subsamples (no phase planes)

    @property
    def rewritten(self) -> int:
        return sum(c.rewritten for c in self.convs)

    @property
    def skipped(self) -> list[ConvReport]:
        return [c for c in self.convs if not c.rewritten]


class NotHandled(Exception):
    """A conv the pass leaves to IREE; the message is the reason users see in the log."""


def ceil_div(a: int, b: int) -> int:
    """Ceiling of a / b for integers (grid and tile counts in both code paths)."""
    return -(-a // b)
