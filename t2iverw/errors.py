"""The one exception type for problems a user can fix.

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class T2IError(Exception):
    """A user-fixable problem: bad input, a missing file, an unreachable server."""
