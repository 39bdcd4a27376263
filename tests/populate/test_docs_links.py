"""The documentation holds together: every relative link of README.md and docs/ resolves (files and
#anchors), and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = _FENCE.sub("", path.read_text())
    result = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        result.add(slug)
    return result


def links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [a or b for a, b in _LINK.findall(text)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(document):
    broken = []
    for target in links(document):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked here
            continue
        file, _, anchor = target.partition("#")
        resolved = (document.parent / file).resolve() if file else document
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{document.relative_to(REPO)}: {broken}"


def test_the_link_check_finds_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) `[code](x.md)`\n")
    assert links(page) == ["#title", "#nope", "missing.md"]
    assert anchors(page) == {"title"}


def test_readme_is_short_and_links_each_reader_onwards():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 12 * 1024
    for doc in ("docs/results.md", "docs/benchmarks.md", "docs/design.md", "docs/running_at_scale.md", "docs/api.md"):
        assert f"]({doc})" in readme, doc


def _extras(text: str, where: str) -> set[str]:
    found = re.findall(r"-e '\.\[([a-z0-9_,]+)\]'", text)
    assert found, f"{where}: no `pip install -e '.[...]'` found"
    return set(found[0].split(","))


def test_the_readme_installs_what_the_makefile_installs():
    """The README's install line names the Makefile's extras, and each is an extra of pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    readme = _extras((REPO / "README.md").read_text(), "README.md")
    makefile = _extras((REPO / "Makefile").read_text(), "Makefile")
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert readme == makefile and readme <= declared, (readme, makefile, declared)


def test_the_schema_names_the_docs_give_are_the_code_s():
    """docs/integrity.md and docs/api.md name schemas as `schemas.db.schema_name` makes them."""
    from schemas import db

    assert db.schema_name("recordings", of="v1") == "v1__recordings"
    assert "`{prefix}__{stage}` (`v1__recordings`" in (REPO / "docs" / "integrity.md").read_text()
    assert "`{prefix}__<stage>`" in (REPO / "docs" / "api.md").read_text()
    assert db.is_prefix_schema("v1__recordings", of="v1") and not db.is_prefix_schema("v1_test__recordings", of="v1")
