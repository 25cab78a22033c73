"""Errors that the command line turns into one line on stderr and exit code 2.

Anything a user can fix (a bad config value, a missing or corrupt file, a checkpoint of another
architecture) raises `UserError` with a message that says what is wrong and how to fix it. Anything
else is a bug and keeps its traceback.
"""


class GanforgeError(Exception):
    """Base class for ganforge's own errors."""


class UserError(GanforgeError):
    """Bad input from the user: printed as one line, exit code 2, no traceback (unless --debug)."""


class TrainingDiverged(GanforgeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""
