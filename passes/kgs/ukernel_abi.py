"""The microkernel's ABI: what the pass and the hand-written kernel (plugins/ukernel) agree on.

Why a module of its own: these values are fixed by plugins/ukernel/gen_kernel.py, not chosen by
the pass; planning (``ukernel_plan``) and the MLIR text (``ukernel_ir``) both follow them, and a
change here is a change of the kernel's interface.

Kernel ABI (plugins/ukernel/gen_kernel.py): bindings x (flat padded input), w [G][n][gM],
off [G][n] i32 followed by each group's kept count [G] (and, with frame ranges, the
frame tables of ``offset_table``), bias [F], out [N, F, OD, OH, OW]; sixteen i32 constants;
workgroups [position tiles, group blocks of gpw, N * OD] (the kernel's ids; the dispatch launches
them in the order ``UkernelCall.grid`` says and the shim maps the ids back). With a max
pool fused (its window equal to its stride, as C3D's), out is the pooled tensor and the
workgroups are [tiles of pooled rows, group blocks, N * pooled frames] (``pool_rows``).
Two more kernels share the executable: the max pools not fused into a conv (also the
subsampling of a strided 1x1x1 conv's input, as a 1x1x1 pool), and the zero pad of large conv
inputs (``pad_call``), with workgroups over output frames and planes (``FrameCall``).
"""

from __future__ import annotations

from dataclasses import dataclass

EXECUTABLE = "rt3d_kgs_ukernels"
KERNEL_SYMBOL = "rt3d_kgs_conv3d_workgroup"
POOL_SYMBOL = "rt3d_maxpool3d_workgroup"
PAD_SYMBOL = "rt3d_pad_workgroup"
POOL_ROW_MAX = 1024  # input columns a pooled row may span (gen_kernel.py)
POOL_PAD_MAX = 16  # padding before a pooled row, at most (gen_kernel.py)
POOL_SMALL_TAPS = 8  # window rows and columns the small-plane pooling path takes, at most (gen_kernel.py)
POOL_SMALL_MAX = 2048  # floats of the input's frames the small-plane pooling path buffers (gen_kernel.py)
ACCUMULATE, RELU, STREAM = 1, 2, 4  # flag bits, as in gen_kernel.py
_MAX_LANES = 16  # the input is made readable up to a whole vector of the widest ISA
_CONSTANTS = ("n", "gm", "f", "od", "oh", "ow", "wp", "qt", "img", "seg", "flags", "gpw", "pd", "ph", "pw", "kdn")
POOL_SCRATCH = 8192  # floats of the fused pool's stack buffer (gen_kernel.py)
_POOL_CONSTANTS = ("d", "h", "w", "od", "oh", "ow", "kd", "kh", "kw", "sd", "sh", "sw", "dl", "hl", "wl", "planes",
                   "ppw")
_PAD_CONSTANTS = ("c", "d", "h", "w", "cp", "dp", "hp", "wp", "dl", "hl", "wl", "fpw")

FORMATS = {"avx512": "embedded-elf-x86_64", "avx2": "embedded-elf-x86_64", "neon": "embedded-elf-arm_64"}


@dataclass(frozen=True)
class Microkernel:
    """The kernel for one instruction set: its name and LLVM bitcode.

    IREE does not re-target bitcode, so the bitcode must be built for the target's ISA
    (rt3d_iree/ukernels.py picks it).
    """

    isa: str
    bitcode: bytes

    def __post_init__(self) -> None:
        if self.isa not in FORMATS:
            raise ValueError(f"unknown microkernel ISA {self.isa!r}; choose one of {sorted(FORMATS)}")
        if not self.bitcode.startswith(b"BC\xc0\xde"):
            raise ValueError(f"the {self.isa} microkernel is not LLVM bitcode (rebuild plugins/ukernel)")

    @property
    def format(self) -> str:
        return FORMATS[self.isa]

    def __repr__(self) -> str:  # keep the bitcode out of logs
        return f"Microkernel(isa={self.isa!r}, {len(self.bitcode)} bytes)"
