"""Bad-record bookkeeping: fail with file + line + problem, or skip and count by reason.

Every record that a prepare run drops is counted under a reason in ``manifest["dropped"]`` (never a
silent drop). Bad input lines follow ``--on-bad-lines``: ``error`` (default) raises
:class:`InputError` at the first one; ``skip`` drops them and counts them as ``bad_line:<kind>``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from unisrec.errors import UserError

ON_BAD_LINES = ("error", "skip")


class InputError(UserError):
    """A raw input file that cannot be read as asked (names file, line/record and problem)."""


class BadRecords:
    """Collects dropped records by reason; raises on bad lines when the policy is ``error``."""

    def __init__(self, on_bad_lines: str = "error"):
        if on_bad_lines not in ON_BAD_LINES:
            raise UserError(f"--on-bad-lines must be one of {', '.join(ON_BAD_LINES)}, not {on_bad_lines!r}")
        self.on_bad_lines = on_bad_lines
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def bad(self, kind: str, where: str, problem: str, count: int = 1) -> None:
        """One or more bad input records of ``kind`` (first at ``where``: "file, line N")."""
        if count <= 0:
            return
        if self.on_bad_lines == "error":
            more = f" ({count - 1} more like it)" if count > 1 else ""
            raise InputError(f"{where}: {problem}{more}. Fix the input, or pass --on-bad-lines skip to drop and count such records")
        reason = f"bad_line:{kind}"
        self.dropped[reason] += count
        self.examples.setdefault(reason, f"{where}: {problem}")

    def drop(self, reason: str, count: int) -> None:
        """Records removed by the protocol (no_meta, kcore, duplicate, ...), always counted."""
        if count:
            self.dropped[reason] += int(count)

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.dropped.items())}


class LineMap:
    """Maps 0-based data-row numbers of a parsed table back to 1-based physical file lines.

    ``header`` lines come first; ``skipped`` holds the physical lines the parser dropped (bad lines),
    so row k is the (k+1)-th line after the header that was not skipped.
    """

    def __init__(self, header: int = 0, skipped: list[int] | None = None):
        self.header = header
        self.skipped = np.array(sorted(skipped or []), dtype=np.int64)

    def line(self, row: int) -> int:
        base = int(row) + 1 + self.header
        line = base
        while True:  # fixed point: line = base + #skipped lines at or before it
            nxt = base + int(np.searchsorted(self.skipped, line, side="right"))
            if nxt == line:
                return line
            line = nxt
