"""User-facing errors: each names the problem and what to do about it."""

from __future__ import annotations


class Rt3dError(Exception):
    """An error a user can act on. ``hint`` says what to do; the CLI prints both, no traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  what to do: {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple:
        # Why: errors raised in worker processes (prune-table --jobs) are pickled back; the
        # default reduce passes only the message and would lose the hint.
        return (type(self), (self.message, self.hint))


class CompileError(Rt3dError):
    """iree-compile failed; ``reproducer`` is the folder holding the MLIR and the command."""

    def __init__(self, message: str, hint: str, reproducer: str, command: str) -> None:
        super().__init__(message, hint)
        self.reproducer = reproducer
        self.command = command

    def __reduce__(self) -> tuple:
        return (type(self), (self.message, self.hint, self.reproducer, self.command))
