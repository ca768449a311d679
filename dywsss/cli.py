"""The one error convention of every entry point (top-level scripts and ``scripts/*.py``).

A :class:`dywsss.errors.UserError` (and a permission problem on a file) exits
with status 2 and one line ``error: <message>``; ``--debug`` on the command line
or ``DYWSSS_DEBUG=1`` in the environment shows the traceback as well. Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from .errors import UserError

USER_ERROR_STATUS = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "DYWSSS_DEBUG"


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _strip_debug_flag() -> None:
    while DEBUG_FLAG in sys.argv:
        sys.argv.remove(DEBUG_FLAG)


def user_error_line(exc: BaseException) -> str:
    """One line: the message, with newlines folded."""
    return "error: " + " ".join(str(exc).split())


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` under the error convention."""
    debug = debug_requested()
    _strip_debug_flag()
    try:
        status = main()
    except (UserError, PermissionError) as exc:
        if debug:
            raise
        print(user_error_line(exc), file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
