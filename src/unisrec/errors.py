"""The one exception type a user sees as a clean message (no traceback) from the CLI."""


class UserError(Exception):
    """Bad input or a bad request: the message names the file, line/record and problem."""


class Stopped(Exception):
    """Training stopped on a signal (SIGTERM, Ctrl-C) after writing its resume state: not an error.

    The command exits with ``exit_code`` (128 + the signal's number, the shell's convention), and
    the same command with ``--resume`` (a benchmark cell: the next `unisrec benchmark run`) continues
    at the next step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
