"""Errors that the command line turns into one line on stderr and exit code 2.

Anything a user can fix (a bad config value, a missing or corrupt file, a checkpoint of another
architecture) raises `UserError` with a message that says what is wrong and how to fix it. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable


class GanforgeError(Exception):
    """Base class for ganforge's own errors."""


class UserError(GanforgeError):
    """Bad input from the user: printed as one line, exit code 2, no traceback (unless --debug)."""


class TrainingDiverged(GanforgeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class DistributedFailure(GanforgeError):
    """Another process of a distributed job died or stopped answering: this one cannot go on alone."""


def warn(message: str, log: Callable[[str], None] | None = None) -> None:
    """The one warning path: one line `ganforge: warning: ...` on stderr, and into a run's train.log
    when `log` is given (RunDir.log_text)."""
    import sys

    if log is not None:
        log("WARNING " + message)
    print(f"ganforge: warning: {message}", file=sys.stderr)
