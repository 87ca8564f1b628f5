"""The microkernel's sources (plugins/ukernel): the tile generator, and the ABI kept in one place.

Why: passes/kgs/ukernel_abi.py is the ABI's one source; the C gets it as the generated
rt3d_kgs_abi.h. These tests fail when the kernel as compiled (its entry points' parameters),
the pass's planning (the order of its constants) or the built bitcode (a stale header) drift
from it, or when the C spells an ABI value itself.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rt3d_iree.passes.kgs import ukernel_abi as abi
from rt3d_iree.passes.kgs.ukernel_ir import _decl
from rt3d_iree.passes.kgs.ukernel_plan import pad_call, plan_call, pool_call
from rt3d_iree.passes.kgs_conv3d import ConvGeometry, plan_kgs

from rt3d_iree.ukernels import BUILD_COMMAND, build_dir

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "ukernel"
CLANG = next((shutil.which(c) for c in ("clang-14", "clang-15", "clang-16", "clang-17", "clang-18", "clang")
              if shutil.which(c)), None)
# name -> (triple, ISA flags), as CMakeLists.txt builds them
ISAS = {m[1]: (m[2], m[3].split(",")) for m in re.finditer(r'"(\w+)\|([^|"]+)\|([^|"]+)"',
                                                           (PLUGIN / "CMakeLists.txt").read_text())}


def _gen_kernel():
    """plugins/ukernel/gen_kernel.py (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("rt3d_gen_kernel", PLUGIN / "gen_kernel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _macros(header: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"^#define (\w+) (.+?)(?:  //.*)?$", header, re.M)}


def test_template_repeats_lines_and_evaluates_expressions():
    gen = _gen_kernel()
    lines = ["$for a in range(1, 3):", "$for b in range(a):", "t${a}x${b} = ${a * 16 + b};", "$endfor", "$endfor",
             "$// template comment", "plain ${N}"]
    assert gen.expand(lines, {"N": 7}) == ["t1x0 = 16;", "t2x0 = 32;", "t2x1 = 33;", "plain 7"]
    with pytest.raises(ValueError, match="without"):
        gen.expand(["$for a in range(2):", "x"], {})
    with pytest.raises(ValueError, match="unknown directive"):
        gen.expand(["$if a:"], {})


def test_tiles_cover_every_shape_an_isa_may_use():
    gen = _gen_kernel()
    text = gen.tiles_header()
    shapes = [(m, v) for m in range(1, gen.TILE_MR + 1) for v in range(1, gen.TILE_NV + 1)]
    assert re.findall(r"^KINLINE void tile_(\d)x(\d)\(", text, re.M) == [(str(m), str(v)) for m, v in shapes]
    assert re.findall(r"case (\d+): tile_", text) == [str(m * 16 + v) for m, v in shapes]
    assert "$" not in text


def test_abi_header_states_the_python_values():
    macros = _macros(abi.c_header())
    assert {k: int(macros[k]) for k in ("RT3D_ACCUMULATE", "RT3D_RELU", "RT3D_STREAM", "RT3D_MAX_LANES")} == {
        "RT3D_ACCUMULATE": abi.ACCUMULATE, "RT3D_RELU": abi.RELU, "RT3D_STREAM": abi.STREAM,
        "RT3D_MAX_LANES": abi._MAX_LANES}
    for name in ("POOL_ROW_MAX", "POOL_PAD_MAX", "POOL_SMALL_TAPS", "POOL_SMALL_MAX", "POOL_SCRATCH"):
        assert int(macros[name]) == getattr(abi, name)
    assert [macros[f"RT3D_{k}_SYMBOL"] for k in ("KERNEL", "POOL", "PAD")] == [
        abi.KERNEL_SYMBOL, abi.POOL_SYMBOL, abi.PAD_SYMBOL]


def test_c_sources_take_abi_values_from_the_header():
    """A value the C spells itself would be a second source (an equal #define compiles silently)."""
    names = set(_macros(abi.c_header()))
    sources = [p for p in (PLUGIN / "src").iterdir() if p.suffix in (".c", ".h", ".in")]
    assert sources
    for path in sources:
        defined = set(re.findall(r"^\s*#\s*define\s+(\w+)", path.read_text(), re.M))
        assert not defined & names, f"{path.name} defines {sorted(defined & names)}: take them from rt3d_kgs_abi.h"
        assert not re.search(r"\brt3d_\w+_workgroup\b", path.read_text()), f"{path.name}: use the RT3D_*_SYMBOL macros"


def _calls():
    """One planned call per kernel, as the pass makes them."""
    geom = ConvGeometry(1, 4, 6, 10, 10, 8, 3, 3, 3, (1, 1, 1), (1, 1, 1), 4, 8, 8)
    conv = plan_call("conv0", geom, plan_kgs(np.ones((8, 4, 3, 3, 3), np.float32), geom, 8, 4), relu=True, tied=False)
    pool = pool_call("pool0", (1, 8, 4, 8, 8), (1, 8, 2, 4, 4), (2, 2, 2), (2, 2, 2))
    pad = pad_call("pad0", (1, 64, 16, 64, 64), (0, 0, 1, 1, 1), (0, 0, 1, 1, 1))
    return {abi.KERNEL_SYMBOL: (conv, abi._CONSTANTS), abi.POOL_SYMBOL: (pool, abi._POOL_CONSTANTS),
            abi.PAD_SYMBOL: (pad, abi._PAD_CONSTANTS)}


def test_planned_constants_follow_the_abi_order():
    for symbol, (call, names) in _calls().items():
        assert call is not None and call.symbol == symbol
        assert tuple(call.constants) == names


_PARAM_TYPES = [(r"(?:const )?float\* restrict \w+", "memref<f32>"),
                (r"(?:const )?int32_t\* restrict \w+", "memref<i32>"),
                (r"size_t \w+", "index"), (r"int32_t \w+", "i32")]


def _mlir_type(param: str) -> str:
    return next(t for pattern, t in _PARAM_TYPES if re.fullmatch(pattern, param))


@pytest.mark.skipif(CLANG is None, reason="needs clang (scripts/setup.sh installs it)")
@pytest.mark.parametrize("isa", sorted(ISAS))
def test_entry_points_as_compiled_match_the_pass(isa, tmp_path):
    """The kernel's entry points, preprocessed for each ISA, take what the pass's MLIR
    declaration passes (pointer + offset per buffer, the i32 constants in the ABI's order,
    three ids); and the sources compile with the build's warnings as errors."""
    assert _gen_kernel().main(["gen_kernel.py", str(tmp_path)]) == 0
    triple, isa_flags = ISAS[isa]
    cc = [CLANG, "-target", triple, *isa_flags, "-std=gnu11", "-ffreestanding", "-Wall", "-Werror", "-Wno-psabi",
          f"-I{tmp_path}", str(PLUGIN / "src" / "kgs_conv3d.c")]
    subprocess.run([*cc, "-fsyntax-only"], check=True, capture_output=True)
    text = subprocess.run([*cc, "-E", "-P"], check=True, capture_output=True, text=True).stdout
    exported = re.findall(r'visibility\("default"\)\)\)\s*void (\w+)\(', text)
    assert sorted(exported) == sorted(_calls())
    for symbol, (call, names) in _calls().items():
        params = [p.strip() for p in re.search(rf"void {symbol}\(([^)]*)\)", text)[1].split(",")]
        assert ", ".join(_mlir_type(p) for p in params) == _decl(call)
        assert tuple(p.split()[-1] for p in params if p.startswith("int32_t ")) == tuple(call.constants) == names


def test_built_kernel_was_built_from_this_abi_and_template():
    """The bitcode the tests load (plugins/ukernel/build) came from today's ABI and tiles."""
    built = build_dir()
    assert (built / "rt3d_kgs_abi.h").is_file(), f"no generated headers in {built}: build them with {BUILD_COMMAND}"
    stale = f"rebuild the microkernel: {BUILD_COMMAND}"
    assert (built / "rt3d_kgs_abi.h").read_text() == abi.c_header(), stale
    assert (built / "kgs_tiles.h").read_text() == _gen_kernel().tiles_header(), stale
