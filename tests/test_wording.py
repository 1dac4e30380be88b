"""Code, tests and benchmarks say what the product does, not the story of the work that made it."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

# Phrases that point at the project's tracker or its progress rather than at what the code does.
WORK_TALK = re.compile(
    "|".join(
        [r"\bissue \d+", r"\bissue's\b", r"\bthe issue\b", r"\(#\d+\)", r"\buntil the .{0,40}\blands?\b"]
        + [r"\bnot installed yet\b", r"\bthis change\b"]
    ),
    re.IGNORECASE,
)
FOLDERS = ("src", "tests", "benchmarks", "scripts")


def test_code_speaks_of_the_product_not_the_work() -> None:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if WORK_TALK.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
