"""``python -m populate.report.notebook``: the getting-started notebook, run against the database and
rendered to ``docs/getting_started.md`` with its figures as files beside it, so that a reader on a
code host sees every output.

The notebook itself stays committed without outputs.  The rendered page starts with a comment
holding :func:`source_hash` of the notebook it was made from; ``tests/populate/test_notebook_render.py``
recomputes it, so an edited notebook whose page was not rendered again fails the tests.

Run it after the demo (``python -m populate demo``, or ``--quick`` for toy sizes), with the same
``PIPELINE_PREFIX`` and store; ``--source`` says in the page which database the outputs came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "getting_started.ipynb"
RENDERED = REPO / "docs" / "getting_started.md"
HASH_LINE = re.compile(r"<!-- notebook source sha256: ([0-9a-f]{64}) -->")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as the page and messages show it)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def source_hash(notebook: Path = NOTEBOOK) -> str:
    """sha256 of the notebook's cells (kind and source, in order): what the page must be current with.
    Outputs and metadata are left out, so running the notebook does not change it."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    sources = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in cells]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode()).hexdigest()


def rendered_hash(page: Path = RENDERED) -> str | None:
    """The notebook hash a rendered page records, or None when it records none."""
    match = HASH_LINE.search(page.read_text(encoding="utf-8")) if page.exists() else None
    return match.group(1) if match else None


def machine_paths() -> dict[str, str]:
    """This machine's folders that outputs may print (repository, Python environment, object store,
    home), longest first, each with the placeholder the committed page shows instead."""
    store = os.environ.get("PIPELINE_STORE_DIR")
    paths = {str(REPO): ".", sys.prefix: "<python-env>", str(Path.home()): "~"}
    if store:
        paths[str(Path(store).resolve())] = "<store>"
        paths[store] = "<store>"
    return dict(sorted(paths.items(), key=lambda item: -len(item[0])))


def scrub_paths(text: str) -> str:
    """``text`` with :func:`machine_paths` replaced by their placeholders."""
    for path, placeholder in machine_paths().items():
        text = text.replace(path, placeholder)
    return text


def _execute(notebook: Path, timeout: int):
    """The notebook run top to bottom in a fresh kernel, from the repository root."""
    import nbclient
    import nbformat

    document = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        document, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return document


def render(notebook: Path = NOTEBOOK, page: Path = RENDERED, source: str = "", timeout: int = 600) -> Path:
    """Run ``notebook`` and write it as markdown to ``page``, its figures into ``<page stem>_files/``."""
    from nbconvert import MarkdownExporter

    figures = page.parent / f"{page.stem}_files"
    document = _execute(notebook, timeout)
    body, resources = MarkdownExporter().from_notebook_node(
        document, resources={"output_files_dir": figures.name, "unique_key": page.stem}
    )
    body = scrub_paths(body)
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)
    for name, data in resources["outputs"].items():
        (page.parent / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    header = (
        f"<!-- notebook source sha256: {source_hash(notebook)} -->\n"
        f"<!-- rendered from {_shown(notebook)} by `python -m populate.report.notebook`; "
        "do not edit: edit the notebook and render it again -->\n\n"
        f"*The notebook `{_shown(notebook)}` run top to bottom"
        f"{' against ' + source if source else ''}. Its source is the notebook; this page shows its outputs.*\n\n"
    )
    page.write_text(header + body, encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m populate.report.notebook", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        default="the database of `python -m populate demo`",
        help="which database the outputs come from, as the page should say it",
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    page = render(source=args.source, timeout=args.timeout)
    print(f"rendered {_shown(NOTEBOOK)} to {_shown(page)} and {page.stem}_files/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
