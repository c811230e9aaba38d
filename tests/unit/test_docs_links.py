"""The product's docs stand alone: no tracked file refers outside the repository (to the design
folder beside the checkout), and every relative link of README.md and
docs/*.md names a file of the repository (and, for a ``#fragment``, one of its headings)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from services.settings import REPO_ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#+\s+(.*)$", re.MULTILINE)
OUTSIDE = "../" + "shared"  # spelt in two parts, so that this file does not match itself


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [REPO_ROOT / line for line in out.splitlines()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_no_tracked_file_refers_outside_the_repository() -> None:
    offenders = []
    for path in tracked():
        if not path.is_file() or path.suffix in {".gz", ".png", ".ico"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if OUTSIDE in text:
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert not offenders, offenders


def test_doc_links_stay_inside_the_repository_and_resolve() -> None:
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL (none should point at a sibling checkout; the grep above holds)
            file, _, fragment = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(REPO_ROOT)} → {target}"
            if not dest.is_relative_to(REPO_ROOT) or not dest.exists():
                broken.append(where)
            elif fragment and dest.suffix == ".md":
                if fragment not in {slug(h) for h in HEADING.findall(dest.read_text())}:
                    broken.append(where)
    assert not broken, broken
