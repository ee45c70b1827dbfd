"""Every relative link in the user's guide resolves: README.md, docs/ and results/.

A link to a file must name a file or folder of the repository; a link with an anchor must name a
heading of its page (GitHub's slugs). So a page moved, renamed or retitled breaks a test, not a
reader's click.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "results").rglob("*.md")]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _outside_fences(text: str) -> list[str]:
    """The lines of `text` outside fenced code blocks (a `#` there is no heading)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in _outside_fences(page.read_text()):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            n = counts.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            counts[base] = n + 1
    return found


def links(page: Path) -> list[str]:
    # Brackets in inline code are not links.
    prose = "\n".join(re.sub(r"`[^`]*`", "", line) for line in _outside_fences(page.read_text()))
    return [
        target
        for target in LINK.findall(prose)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_the_guide_has_its_pages() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    expected = ["serving", "optimization", "runtimes", "deploy", "benchmark", "design"]
    assert {"README.md", "results/README.md"} | {f"docs/{n}.md" for n in expected} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or ROOT not in (file, *file.parents):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_a_broken_link_and_a_wrong_anchor_are_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `b` title\n\n[ok](#a-b-title) [gone](missing.md) `[code](x.md)`\n")
    assert links(page) == ["#a-b-title", "missing.md"]
    assert anchors(page) == {"a-b-title"}
    assert slug("Scaling out: Ray & Triton (2×)") == "scaling-out-ray--triton-2"
