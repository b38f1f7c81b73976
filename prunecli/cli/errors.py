"""The one place where exceptions become messages and exit codes (DESIGN §1)."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from prunecli.cli.text import printable
from prunecli.errors import PrunecliError
from prunecli.io.atomic import silence_stdout
from prunecli.io.inputs import path_refusal

F = TypeVar("F", bound=Callable[..., Any])

INTERNAL_ERROR = 70


BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, what a shell reports for `yes | head -1`'s yes


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Python is, so every atomic output cleans up as it does
    for Ctrl-C (KeyboardInterrupt); the exit code is the shell's 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C instead of killing the process mid-write."""

    def stop(signum: int, frame: object) -> None:
        for number in (signal.SIGTERM, signal.SIGHUP):  # once: let the cleanup finish
            signal.signal(number, signal.SIG_IGN)
        raise Terminated(signum)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop)


def interrupted(exc: BaseException) -> str:
    if isinstance(exc, Terminated):
        return f"terminated by {signal.Signals(exc.signum).name}"
    return "interrupted"


def interrupt_code(exc: BaseException) -> int:
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


def flush_stdout() -> None:
    """Write out what the report left in stdout's buffer now, while an error can still say so
    (``--json > /dev/full``), rather than at exit as "Exception ignored"."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(BROKEN_PIPE) from None
    except OSError as exc:
        silence_stdout()
        _say(f"could not write standard output: {exc.strerror or exc}")
        raise typer.Exit(2) from None


def _say(message: str, hint: str | None = None) -> None:
    """The error line (and its hint line): one line each, whatever paths or names they quote."""
    print(f"prunecli: error: {printable(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {printable(hint)}", file=sys.stderr)


def handle_errors(command: F) -> F:
    """Run ``command``; map domain errors to their exit code and anything else to 70."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = command(*args, **kwargs)
            flush_stdout()
            return result
        except typer.Exit:
            flush_stdout()
            raise
        except PrunecliError as exc:
            flush_stdout()  # a gate's report (exit 1) is printed before its exit code
            if os.environ.get("PRUNECLI_DEBUG") == "1":
                traceback.print_exc()
            _say(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            _say(f"{interrupted(exc)}; nothing was written")
            raise typer.Exit(interrupt_code(exc)) from None
        except BrokenPipeError:  # the reader went away (`| head`): the shell's code for SIGPIPE
            silence_stdout()
            raise typer.Exit(BROKEN_PIPE) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            if os.environ.get("PRUNECLI_DEBUG") == "1":
                traceback.print_exc()
            refused = path_refusal(exc)  # a path no file can have (too long, a symlink loop)
            if refused is not None:
                _say(refused.message)
                raise typer.Exit(refused.exit_code) from None
            _say(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with PRUNECLI_DEBUG=1 for a traceback and report it",
            )
            raise typer.Exit(INTERNAL_ERROR) from None

    return run  # type: ignore[return-value]
