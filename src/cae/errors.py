"""The one exception type for problems a user can fix (bad data, bad config, bad file)."""


class CaeError(Exception):
    """A user-facing error: the CLI prints it as one line and exits with code 2.

    The message names the problem and the fix; anything else raised is a bug.
    """
