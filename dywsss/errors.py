"""Error classes that separate a user's mistake from a bug.

A :class:`UserError` means the input (a config key, a file, a value) is wrong;
every entry point prints its one-line message and exits with status 2, with
the traceback only under ``--debug`` or ``DYWSSS_DEBUG=1``. Anything else is an
internal error and keeps its traceback. The subclasses also derive from the
matching built-in exception, so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names the file, key or value and what to do."""

    def __str__(self) -> str:  # KeyError-derived subclasses would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigError(UserError, ValueError):
    """A config key has a bad value, or the config contradicts a checkpoint."""


class InputError(UserError, ValueError):
    """An input file (list, labels, image, mask, CSV, map file) is malformed or out of range."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or folder does not exist."""


class StaleError(UserError, RuntimeError):
    """An input changed since an output was made from it: redo the named stage."""


class SessionError(UserError, RuntimeError):
    """A session is busy (locked) or would be overwritten without being asked to."""
