"""Shared behaviour of the command-line scripts."""
from __future__ import annotations

import sys
from typing import Callable


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's ``main``; bad input (ValueError, missing file) exits 1 with ``error: ...``, no traceback."""
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
