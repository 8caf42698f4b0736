"""The one exception type that entry points turn into a one-line message and exit code 2."""


class ObscuraError(ValueError):
    """Bad input from a user: the message names the file, field or value and what was expected."""
