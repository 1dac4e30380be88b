"""Code, tests and benchmarks say what the product does, not the story of the work that made it."""

from __future__ import annotations

import io
import re
import tokenize
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


def test_counts_are_worded_for_their_number() -> None:
    """A count reads as a person says it ("1 process, 1 step per epoch"), never "1 process(es), 1 steps" or
    "image file(s)": catdog.fsutil.counted words it. Only the text of strings is searched, not code like int(s)."""
    found = []
    for folder in ("src", "benchmarks", "scripts"):  # tests quote the old messages they guard against
        for path in sorted((REPO / folder).rglob("*.py")):
            with tokenize.open(path) as source:
                hits = bracketed_plurals(source.readline)
            found += [f"{path.relative_to(REPO)}:{line}: {text}" for line, text in hits]
    assert not found, "\n".join(found)


# Python 3.12 splits an f-string into FSTRING_START, FSTRING_MIDDLE (its text) and FSTRING_END tokens, no STRING:
# read as STRING alone, f"with {n} process(es)" (the very line this test was written for) went unseen there.
STRING_TEXT = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def bracketed_plurals(readline) -> list[tuple[int, str]]:
    """The line and text of each piece of string text in the source ``readline`` reads with a "(s)" or "(es)"."""
    bracketed = re.compile(r"[a-z]\((?:s|es)\)")
    return [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(readline)
        if token.type in STRING_TEXT and bracketed.search(token.string)
    ]


def test_the_plural_search_reads_f_strings_too() -> None:
    """On any Python: f-strings hold most of catdog's messages, counts included."""
    source = 'log(f"training with {n} process(es)")\nnote = f"{k} {kind}"\n'
    assert [line for line, _ in bracketed_plurals(io.StringIO(source).readline)] == [1]
