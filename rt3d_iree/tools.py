"""Where the external tools each target needs live, and clear errors when one is missing.

Targets other than the host need things outside Python: qemu-user and the aarch64 IREE
tools to run phone code here, a Vulkan driver for the GPU target, adb for a real phone.
Each lookup either returns a usable path or raises an ``Rt3dError`` naming what to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from . import process
from .errors import Rt3dError

logger = logging.getLogger(__name__)

IREE_RUNTIME_VERSION = "3.13.0"
AARCH64_PLATFORM = "manylinux_2_28_aarch64"
AARCH64_TOOLS = ("iree-run-module", "iree-benchmark-module")
_APT_AARCH64 = (
    "as root: dpkg --add-architecture arm64 && apt-get update && "
    "apt-get install qemu-user libc6:arm64 libstdc++6:arm64 (or run scripts/setup.sh)"
)


def cache_dir() -> Path:
    """rt3d's cache folder: $RT3D_CACHE, else ~/.cache/rt3d-iree."""
    env = os.environ.get("RT3D_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rt3d-iree"


def aarch64_tools_dir() -> Path:
    """Folder holding the aarch64 iree-run-module / iree-benchmark-module binaries."""
    env = os.environ.get("RT3D_AARCH64_TOOLS")
    return Path(env) if env else cache_dir() / f"iree-runtime-{IREE_RUNTIME_VERSION}-aarch64"


def aarch64_tool(name: str) -> Path:
    """Path of an aarch64 IREE tool, or an error saying how to fetch them."""
    path = aarch64_tools_dir() / name
    if not path.is_file():
        raise Rt3dError(
            f"the aarch64 IREE tool {name} is not installed (looked in {path.parent})",
            "run `rt3d fetch-tools` (downloads the manylinux aarch64 iree-base-runtime "
            f"{IREE_RUNTIME_VERSION} wheel), or set RT3D_AARCH64_TOOLS to a folder holding it",
        )
    return path


def qemu_aarch64() -> tuple[str, list[str]]:
    """The qemu-user binary for aarch64 and its arguments, or an error naming what to install."""
    exe = os.environ.get("RT3D_QEMU") or shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if not exe or not Path(exe).is_file():
        raise Rt3dError("qemu-aarch64 (qemu-user) is not installed, so aarch64 code cannot run here", _APT_AARCH64)
    prefix = os.environ.get("QEMU_LD_PREFIX", "/")
    loader = Path(prefix) / "lib" / "ld-linux-aarch64.so.1"
    if not loader.exists():
        raise Rt3dError(
            f"the aarch64 C library is not installed ({loader} is missing), so aarch64 programs cannot start",
            _APT_AARCH64,
        )
    return exe, ["-L", prefix]


def fetch_aarch64_tools(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Download the manylinux aarch64 iree-base-runtime wheel and unpack its tools.

    The wheel is the official build of the same runtime version as the host's, so aarch64
    results are comparable. Only the command-line tools are kept; idempotent.
    """
    dest = dest or aarch64_tools_dir()
    if all((dest / t).is_file() for t in AARCH64_TOOLS):
        return dest
    with tempfile.TemporaryDirectory(prefix="rt3d-wheel-") as tmp:
        if wheel is None:
            cmd = [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--platform", AARCH64_PLATFORM, f"iree-base-runtime=={IREE_RUNTIME_VERSION}", "-d", tmp,
            ]
            logger.info("running: %s", " ".join(cmd))
            proc = process.run(cmd, "pip download", "download")
            wheels = list(Path(tmp).glob("iree_base_runtime-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise Rt3dError(
                    f"could not download the aarch64 iree-base-runtime wheel: {proc.stderr.strip()[-500:]}",
                    "check that PyPI is reachable, or download the wheel yourself and pass it: "
                    "rt3d fetch-tools --wheel FILE.whl",
                )
            wheel = wheels[0]
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_ensure(dest.parent)))
        try:
            with zipfile.ZipFile(wheel) as zf:
                for tool in AARCH64_TOOLS:
                    member = f"iree/_runtime_libs/{tool}"
                    try:
                        data = zf.read(member)
                    except KeyError:
                        raise Rt3dError(f"{wheel} has no {member}", "pass an iree-base-runtime aarch64 wheel") from None
                    out = staging / tool
                    out.write_bytes(data)
                    out.chmod(out.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)  # all tools appear at once, or none
        except zipfile.BadZipFile:
            raise Rt3dError(f"{wheel} is not a valid wheel", "download it again") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return dest


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_vulkan() -> str:
    """Name of the first Vulkan device IREE sees, or an error saying what to install."""
    import iree.runtime as rt

    try:
        devices = rt.get_driver("vulkan").query_available_devices()
    except (RuntimeError, ValueError) as exc:
        raise Rt3dError(
            f"no usable Vulkan driver: {str(exc).splitlines()[0][:300]}",
            "install a Vulkan driver: your GPU vendor's, or Mesa's software driver "
            "(as root: apt-get install mesa-vulkan-drivers libvulkan1)",
        ) from None
    if not devices:
        raise Rt3dError(
            "the Vulkan loader found no device",
            "install a Vulkan driver (as root: apt-get install mesa-vulkan-drivers libvulkan1)",
        )
    return str(devices[0].get("name", "vulkan device"))


def adb() -> str:
    """The adb binary, or an error naming what to install."""
    exe = os.environ.get("RT3D_ADB") or shutil.which("adb")
    if not exe:
        raise Rt3dError(
            "adb is not installed, so no phone can be reached",
            "install Android platform-tools (apt-get install adb) and connect the phone with USB debugging on",
        )
    return exe
