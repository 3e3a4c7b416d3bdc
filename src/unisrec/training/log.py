"""The one way training reports: messages, progress bars and the per-epoch JSONL log.

Only the main process of a multi-process run writes; messages go through ``tqdm.write`` so they
never tear a progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG_NAME = "training_log.jsonl"


class RunLog:
    def __init__(self, output: Path, is_main: bool = True, progress: bool = True):
        self.path = Path(output) / LOG_NAME
        self.is_main = is_main
        self.progress = progress and is_main

    def say(self, message: str) -> None:
        if self.is_main:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def bar(self, total: int, initial: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not self.progress, leave=False, unit="step", dynamic_ncols=True)

    def append(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def start(self, resumed_after_step: int | None) -> None:
        """A fresh run starts a fresh log; a resumed one drops records past its saved state."""
        if not self.is_main:
            return
        if resumed_after_step is None:
            self.path.unlink(missing_ok=True)
            return
        kept = [r for r in self.records() if r.get("step", 0) <= resumed_after_step]
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
