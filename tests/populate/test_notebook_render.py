"""The rendered notebook (docs/getting_started.md, by `python -m populate.report.notebook`) is current
with notebooks/getting_started.ipynb, shows its figures, and carries no path of the machine it ran on."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from populate.report import notebook as render
from tests.conftest import REPO


def test_rendered_notebook_is_current_with_the_notebook():
    assert render.RENDERED.is_file(), "docs/getting_started.md is missing: run `python -m populate.report.notebook`"
    assert render.rendered_hash() == render.source_hash(), (
        "docs/getting_started.md was rendered from another version of notebooks/getting_started.ipynb: "
        "run `python -m populate demo --quick` (or the full demo), then `python -m populate.report.notebook`"
    )


def test_rendered_notebook_shows_its_outputs_and_figures():
    page = render.RENDERED.read_text(encoding="utf-8")
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert len([f for f in figures if f.endswith(".png")]) >= 7, figures
    for figure in figures:
        path = render.RENDERED.parent / figure
        assert path.is_file() and path.stat().st_size > 1000, figure
        assert path.read_bytes()[:4] in (b"\x89PNG", b"<?xm", b"<svg"), figure
    # every figure file is referenced: nothing stale is left beside the page
    folder = render.RENDERED.parent / f"{render.RENDERED.stem}_files"
    assert {f"{folder.name}/{p.name}" for p in folder.iterdir()} == set(figures)
    notebook = json.loads(render.NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert page.count("```python") == len(code)
    assert "Traceback (most recent call last)" not in page
    for path in (str(REPO), sys.prefix, str(Path.home())):
        assert path not in page, path


def test_source_hash_follows_the_cells_and_ignores_outputs(tmp_path):
    copy = tmp_path / "copy.ipynb"
    notebook = json.loads(render.NOTEBOOK.read_text(encoding="utf-8"))
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    cell["outputs"] = [dict(output_type="stream", name="stdout", text=["ran\n"])]
    cell["execution_count"] = 1
    copy.write_text(json.dumps(notebook))
    assert render.source_hash(copy) == render.source_hash()
    cell["source"] = ["print('edited')\n"]
    copy.write_text(json.dumps(notebook))
    assert render.source_hash(copy) != render.source_hash()


def test_render_writes_outputs_figures_and_hash_without_machine_paths(tmp_path, monkeypatch):
    """The command's own path, on a small notebook (no database): outputs, a figure, the hash."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbconvert")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    store = tmp_path / "store"
    monkeypatch.setenv("PIPELINE_STORE_DIR", str(store))
    small = nbformat.v4.new_notebook()
    small.cells = [
        nbformat.v4.new_markdown_cell("# Small"),
        nbformat.v4.new_code_cell(f"print({str(REPO)!r}, {str(store)!r})"),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n%matplotlib inline\nplt.plot([0, 1], [1, 0]);\nplt.show()"
        ),
    ]
    source = tmp_path / "small.ipynb"
    nbformat.write(small, source)
    page = render.render(source, tmp_path / "docs" / "small.md", source="a test", timeout=120)
    text = page.read_text()
    assert render.rendered_hash(page) == render.source_hash(source)
    assert "print(" in text and "\n    . <store>\n" in text and str(REPO) not in text and str(store) not in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) == 1 and (page.parent / figures[0]).read_bytes().startswith(b"\x89PNG")
    assert "run top to bottom against a test" in text
    shutil.rmtree(page.parent)


def test_the_notebooks_lab_table_is_the_tested_one():
    """The notebook's ``MyAnalysis`` is the class of tests/lab_analysis.py (run on every server by
    tests/schemas/test_lab_tables.py, and shown in docs/api.md) to the character."""
    notebook = json.loads(render.NOTEBOOK.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    (cell,) = [c for c in code if "class MyAnalysis(dj.Computed)" in c]
    shown = cell.split("@schema\n")[1].split("\n\n\nMyAnalysis.populate()")[0]
    tested = (REPO / "tests" / "lab_analysis.py").read_text().split("@schema\n")[1]
    assert shown.strip() == tested.strip()
