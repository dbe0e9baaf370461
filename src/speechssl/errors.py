"""Errors that a user can fix.

The library raises :class:`UserError` for bad input (a missing file, a malformed CSV, a
checkpoint of the wrong kind); the CLI turns it into one line on stderr and exit code 2.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, explained in the message."""
