"""Domain errors. Each carries the exit code of DESIGN §1; the CLI maps them in one place."""

from __future__ import annotations


class PrunecliError(Exception):
    """An error the user can act on: a one-line message, optionally a hint naming the fix."""

    exit_code = 70

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class CheckFailed(PrunecliError):
    """A gate or verification did not pass (exit 1)."""

    exit_code = 1


class BadInput(PrunecliError):
    """Bad usage or bad input: unreadable file, malformed option, impossible request (exit 2)."""

    exit_code = 2


class Unsupported(PrunecliError):
    """The model or operation is not supported, e.g. a graph method on a weights-only file (exit 3)."""

    exit_code = 3
