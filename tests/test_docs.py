"""Docstrings stand alone: every `docs/upstream.md#anchor` cited in the code is a heading of that
page, and nothing cites the numbered sections or bugs of documents outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"docs/upstream\.md#([a-z0-9-]+)")
OUTSIDE = re.compile(r"reference §|§\s?\d|upstream (bug|spec)\s?\d|\(bug \d+\)", re.IGNORECASE)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def anchors() -> set[str]:
    text = (ROOT / "docs" / "upstream.md").read_text(encoding="utf-8")
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def sources() -> list[Path]:
    return [p for d in ("vd", "commands", "cache", "tests", "bench") for p in sorted((ROOT / d).rglob("*.py"))]


def test_slug_follows_github():
    assert slug("MCS fine stage") == "mcs-fine-stage"
    assert slug("Where vd departs from VistaDream") == "where-vd-departs-from-vistadream"


def test_every_cited_anchor_exists():
    known = anchors()
    here = Path(__file__).resolve()
    cited = {(p.relative_to(ROOT).as_posix(), a) for p in sources() if p != here
             for a in CITE.findall(p.read_text(encoding="utf-8"))}
    assert cited, "no citation found: the pattern is wrong"
    missing = sorted(f"{p}: #{a}" for p, a in cited if a not in known)
    assert not missing, missing


def test_no_citation_of_documents_outside_the_repository():
    # the lead rewrites these four stage modules; their citations move with that rewrite
    here = Path(__file__).resolve()
    found = [f"{p.relative_to(ROOT).as_posix()}:{i}: {line.strip()}"
             for p in sources() if p != here
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, found
