"""The microkernel's ABI: what the pass and the hand-written kernel (plugins/ukernel) agree on.

Why a module of its own: this is the ABI's one source. Planning (``ukernel_plan``) and the MLIR
text (``ukernel_ir``) follow these values, and the kernel's C reads them from
``rt3d_kgs_abi.h``, which the build writes from ``c_header()`` (plugins/ukernel/gen_kernel.py
loads this file by path, so it must import nothing but the standard library). A change here is
a change of the kernel's interface: rebuild the bitcode.

Kernel ABI (plugins/ukernel/src): bindings x (flat padded input), w [G][n][gM],
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
POOL_ROW_MAX = 1024  # input columns a pooled row may span
POOL_PAD_MAX = 16  # padding before a pooled row, at most (whole vectors)
POOL_SMALL_TAPS = 8  # window rows and columns the small-plane pooling path takes, at most
POOL_SMALL_MAX = 2048  # floats of the input's frames the small-plane pooling path buffers
POOL_SCRATCH = 8192  # floats of the fused pool's stack buffer
ACCUMULATE, RELU, STREAM = 1, 2, 4  # flag bits: add to the output, ReLU, prefetch the input into L2 only
_MAX_LANES = 16  # the input is made readable up to a whole vector of the widest ISA
# The i32 constants of each kernel, in the order of its C parameters (names as in the C).
_CONSTANTS = ("n", "gm", "f", "od", "oh", "ow", "wp", "qt", "img", "seg", "flags", "gpw", "pd", "ph", "pw", "kdn")
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


def c_header() -> str:
    """``rt3d_kgs_abi.h``: this module's values as the C macros the kernel is written against."""
    macros = [
        ("RT3D_ACCUMULATE", ACCUMULATE, "flags bit: out += result (out holds the conv's init)"),
        ("RT3D_RELU", RELU, "flags bit: result = max(result, 0) after the bias / init"),
        ("RT3D_STREAM", STREAM, "flags bit: the input streams from memory; prefetch it into L2, not L1"),
        ("RT3D_MAX_LANES", _MAX_LANES, "the input is readable up to a whole vector of this many lanes"),
        ("POOL_ROW_MAX", POOL_ROW_MAX, "input columns a pooled row may span (the pass checks)"),
        ("POOL_PAD_MAX", POOL_PAD_MAX, "padding before a pooled row, at most (the pass checks)"),
        ("POOL_SMALL_TAPS", POOL_SMALL_TAPS, "kh, kw at most on the small-plane pooling path"),
        ("POOL_SMALL_MAX", POOL_SMALL_MAX, "d * h * w floats the small-plane pooling path buffers"),
        ("POOL_SCRATCH", POOL_SCRATCH, "floats of the fused pool's buffer: gm * qt * ph * ow at most"),
        ("RT3D_KERNEL_SYMBOL", KERNEL_SYMBOL, "entry points"),
        ("RT3D_POOL_SYMBOL", POOL_SYMBOL, ""),
        ("RT3D_PAD_SYMBOL", PAD_SYMBOL, ""),
        # The entry points declare their constants with these lists, so the order is this module's.
        ("RT3D_KERNEL_CONSTANTS", ", ".join(f"int32_t {c}" for c in _CONSTANTS), ""),
        ("RT3D_POOL_CONSTANTS", ", ".join(f"int32_t {c}" for c in _POOL_CONSTANTS), ""),
        ("RT3D_PAD_CONSTANTS", ", ".join(f"int32_t {c}" for c in _PAD_CONSTANTS), ""),
    ]
    lines = ["// GENERATED from passes/kgs/ukernel_abi.py (c_header) by plugins/ukernel/gen_kernel.py: do not edit.",
             "// The microkernel's ABI, shared with the pass: flag bits, limits, entry symbols, constant order.",
             "#ifndef RT3D_KGS_ABI_H", "#define RT3D_KGS_ABI_H"]
    lines += [f"#define {name} {value}" + (f"  // {why}" if why else "") for name, value, why in macros]
    lines.append("#endif  // RT3D_KGS_ABI_H")
    return "\n".join(lines) + "\n"
