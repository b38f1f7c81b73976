"""The one place where exceptions become messages and exit codes (DESIGN §1)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from prunecli.errors import PrunecliError
from prunecli.io.inputs import path_refusal

F = TypeVar("F", bound=Callable[..., Any])

INTERNAL_ERROR = 70


def _say(message: str) -> None:
    print(f"prunecli: error: {message}", file=sys.stderr)


def handle_errors(command: F) -> F:
    """Run ``command``; map domain errors to their exit code and anything else to 70."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except PrunecliError as exc:
            if os.environ.get("PRUNECLI_DEBUG") == "1":
                traceback.print_exc()
            _say(exc.message)
            if exc.hint:
                print(f"  hint: {exc.hint}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted; nothing was written")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(1) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            if os.environ.get("PRUNECLI_DEBUG") == "1":
                traceback.print_exc()
            refused = path_refusal(exc)  # a path no file can have (too long, a symlink loop)
            if refused is not None:
                _say(refused.message)
                raise typer.Exit(refused.exit_code) from None
            _say(f"internal error: {type(exc).__name__}: {exc}")
            print(
                "  hint: rerun with PRUNECLI_DEBUG=1 for a traceback and report it", file=sys.stderr
            )
            raise typer.Exit(INTERNAL_ERROR) from None

    return run  # type: ignore[return-value]
