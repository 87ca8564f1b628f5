"""Where the microkernel bitcode goes (CMake's install rule, the wheel) and where
rt3d_iree/ukernels.py looks for it: the two must agree, or a wheel silently loses the kernel.

Why fast and without a wheel build: the wheel itself is checked by scripts/check_wheel.sh (CI);
these tests catch the drift (a renamed folder, an ISA built but never looked up, the lookup
order) in seconds. The lookup runs on fake bitcode files in tmp_path.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from rt3d_iree.passes.kgs.ukernel_abi import FORMATS

from rt3d_iree import ukernels
from rt3d_iree.errors import Rt3dError
from rt3d_iree.targets import get_target

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "ukernel"
MAGIC = b"BC\xc0\xde"  # LLVM bitcode; what Microkernel checks
NEON = get_target("aarch64")  # takes the NEON kernel on any build machine (host_isa() varies)


def _cmake(path: Path) -> str:
    return re.sub(r"#.*", "", path.read_text())  # without comments


def _install_rules() -> list[tuple[str, str]]:
    """(what, DESTINATION) of every install() in the CMake build."""
    text = _cmake(ROOT / "CMakeLists.txt") + _cmake(PLUGIN / "CMakeLists.txt")
    return re.findall(r"install\(\s*FILES\s+(.+?)\s+DESTINATION\s+(\S+?)\s*\)", text, re.S)


def test_install_destination_is_where_ukernels_looks():
    assert _install_rules() == [("${OUTPUTS}", f"rt3d_iree/{ukernels.PACKAGE_DATA}")]
    # The destination is relative to the wheel's root, i.e. to the folder holding rt3d_iree.
    package = Path(ukernels.__file__).resolve().parent
    assert ukernels.package_data_dir().relative_to(package.parent) == Path(_install_rules()[0][1])


def test_installed_files_are_the_ones_looked_up():
    """OUTPUTS are kgs_conv3d_<isa>.bc for the CMake ISA list: the names bitcode_name() builds,
    for exactly the ISAs Microkernel knows."""
    text = _cmake(PLUGIN / "CMakeLists.txt")
    isas = re.findall(r'"(\w+)\|[^|"]+\|[^|"]+"', text)
    assert sorted(isas) == sorted(FORMATS)
    out = re.search(r"set\(out \$\{CMAKE_CURRENT_BINARY_DIR\}/(\S+)\)", text)[1]
    assert [out.replace("${name}", isa) for isa in isas] == [ukernels.bitcode_name(isa) for isa in isas]
    assert re.search(r"list\(APPEND OUTPUTS \$\{out\}\)", text)


def test_wheel_ships_the_package_and_editable_installs_keep_no_copy():
    """The install DESTINATION's package is one the wheel ships from rt3d_iree/; editable
    installs run no CMake, so package data cannot shadow a rebuilt plugins/ukernel/build."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    skbuild = config["tool"]["scikit-build"]
    assert config["build-system"]["build-backend"] == "scikit_build_core.build"
    assert skbuild["wheel"]["packages"] == {"rt3d_iree": "rt3d_iree", "rt3d_iree/passes": "passes"}
    editable = [o for o in skbuild["overrides"] if o["if"] == {"state": "editable"}]
    assert [o["wheel"] for o in editable] == [{"cmake": False}]
    # The source build folder the fallback reads is the one the top-level CMake build writes.
    assert "plugins/ukernel ${CMAKE_CURRENT_SOURCE_DIR}/plugins/ukernel/build" in _cmake(ROOT / "CMakeLists.txt")
    assert ukernels.PLUGIN_DIR == PLUGIN


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Fake env, package-data and source-build folders; ukernels pointed at them."""
    env, site, plugin = tmp_path / "env", tmp_path / "site-packages", tmp_path / "checkout" / "plugins" / "ukernel"
    monkeypatch.setattr(ukernels, "__file__", str(site / "rt3d_iree" / "ukernels.py"))
    monkeypatch.setattr(ukernels, "PLUGIN_DIR", plugin)
    monkeypatch.setenv(ukernels.BUILD_DIR_ENV, str(env))
    dirs = {"env": env, "package": site / "rt3d_iree" / ukernels.PACKAGE_DATA, "source": plugin / "build"}
    for d in dirs.values():
        d.mkdir(parents=True)
    (plugin / "CMakeLists.txt").write_text("# a checkout\n")
    return dirs


def _put(folder: Path, isa: str, tag: str) -> None:
    (folder / ukernels.bitcode_name(isa)).write_bytes(MAGIC + tag.encode())


def test_search_order_is_env_then_package_data_then_source_build(places, monkeypatch):
    assert ukernels.search_dirs() == [places["env"], places["package"], places["source"]]
    for where in places:
        _put(places[where], "neon", where)
    for where in ("env", "package", "source"):
        assert ukernels.bitcode_path("neon") == places[where] / "kgs_conv3d_neon.bc"
        assert ukernels.build_dir() == places[where]
        assert ukernels.microkernel_for(NEON).bitcode == MAGIC + where.encode()
        (places[where] / "kgs_conv3d_neon.bc").unlink()
    monkeypatch.delenv(ukernels.BUILD_DIR_ENV)
    assert ukernels.search_dirs() == [places["package"], places["source"]]


def test_each_isa_takes_the_first_folder_that_has_it(places):
    _put(places["env"], "avx2", "env")
    _put(places["package"], "neon", "package")
    _put(places["source"], "neon", "source")
    assert ukernels.microkernel_for(NEON).bitcode == MAGIC + b"package"
    assert ukernels.bitcode_path("avx2") == places["env"] / "kgs_conv3d_avx2.bc"
    assert ukernels.bitcode_path("avx512") is None


def test_missing_bitcode_says_where_it_looked_and_how_to_build(places, monkeypatch, caplog):
    assert ukernels.microkernel_for(NEON) is None
    assert ukernels.BUILD_COMMAND in caplog.text and str(places["package"]) in caplog.text
    with pytest.raises(Rt3dError) as err:
        ukernels.microkernel_for(NEON, required=True)
    assert all(str(d) in err.value.message for d in places.values())
    assert ukernels.BUILD_COMMAND in err.value.hint
    assert ukernels.build_dir() == places["env"]  # where one would build it: $RT3D_UKERNEL_DIR
    monkeypatch.delenv(ukernels.BUILD_DIR_ENV)
    assert ukernels.build_dir() == places["source"]  # else plugins/ukernel/build
    # An installed rt3d_iree (no checkout next to it): reinstall, not cmake in a folder that is not there.
    (ukernels.PLUGIN_DIR / "CMakeLists.txt").unlink()
    with pytest.raises(Rt3dError, match="pip install ."):
        ukernels.microkernel_for(NEON, required=True)


def test_a_file_that_is_not_bitcode_is_an_error_not_a_fallback(places):
    (places["env"] / "kgs_conv3d_neon.bc").write_bytes(b"not bitcode")
    _put(places["source"], "neon", "source")
    with pytest.raises(Rt3dError, match="not LLVM bitcode") as err:
        ukernels.microkernel_for(NEON)
    assert err.value.hint.startswith("rebuild it with:")
