"""The project's pages name files of the repository (results pages, docs, configs, benchmark
scripts); every one they name must exist, so a reader never follows a dead reference."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "configs").rglob("*.yaml"))]
REFERENCE = re.compile(r"(?<![\w$/.])((?:results|docs|configs|benchmarks)/[\w./+-]+\.(?:md|json|png|py|yaml|sh|jsonl))")
PLACEHOLDERS = ("NAME", "MYHOST", "DATASET", "FILE_STEM")


def named_files(page: Path) -> set[str]:
    return {m.group(1) for m in REFERENCE.finditer(page.read_text(encoding="utf-8"))
            if not any(p in m.group(1) for p in PLACEHOLDERS)}


def test_the_pattern_finds_references():
    page = "see `results/table3/table3.md` and docs/protocol.md, not $UNISREC_DATA/x/docs/y.md"
    assert {m.group(1) for m in REFERENCE.finditer(page)} == {"results/table3/table3.md", "docs/protocol.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_page_names_exists(page):
    # a results page may name its neighbours relative to results/
    missing = [name for name in sorted(named_files(page))
               if not (ROOT / name).exists() and not (ROOT / "results" / name).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"
