"""The documentation stays true: the options reference is the schema's (regenerated, not hand-kept), and every
relative link and image in README.md and docs/ points at a file that exists."""

import re
from pathlib import Path

import pytest
from conftest import REPO

from lits.core.config.reference import options_markdown

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_options_reference_is_the_schemas():
    committed = (REPO / "docs/reference/options.md").read_text()
    assert committed == options_markdown() + "\n", "stale: run python scripts/config_reference.py and commit"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_and_image_resolves(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # commands in code blocks are not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # web addresses and anchors in the page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def test_the_readme_is_a_short_hub():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    linked = {t.split("#")[0] for t in LINK.findall(readme) if t.startswith("docs/") and t.endswith(".md")}
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")}
    assert not pages - linked - _linked_from_docs(), f"docs pages nobody links to: {sorted(pages - linked)}"


def _linked_from_docs() -> set[str]:
    found = set()
    for page in (REPO / "docs").rglob("*.md"):
        for target in LINK.findall(page.read_text()):
            if target.endswith(".md") and not re.match(r"^[a-z]+:", target):
                found.add(str((page.parent / target).resolve().relative_to(REPO)))
    return found
