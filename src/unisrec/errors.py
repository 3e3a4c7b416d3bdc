"""The one exception type a user sees as a clean message (no traceback) from the CLI."""


class UserError(Exception):
    """Bad input or a bad request: the message names the file, line/record and problem."""
