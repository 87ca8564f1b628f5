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
        kernel: key of the KGS pass's kernel configuration table.
    """

    name: str
    flags: tuple[str, ...]
    driver: str
    kernel: str
    description: str


TARGETS: dict[str, Target] = {
    "host": Target(
        name="host",
        flags=(
            "--iree-hal-target-device=local",
            "--iree-hal-local-target-device-backends=llvm-cpu",
            "--iree-llvmcpu-target-cpu=host",
        ),
        driver="local-task",
        kernel="cpu",
        description="llvm-cpu for the CPU of this machine",
    ),
}


def get_target(name: str) -> Target:
    """Look up a target by name, or explain which names exist."""
    try:
        return TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(TARGETS))
        raise Rt3dError(f"unknown target {name!r}", f"choose one of: {known}") from None
