"""``python -m populate report --out FILE.html``: one self-contained HTML page of every stage's results.

The page is rendered from ``populate/report/templates/report.html`` by Jinja2 with autoescaping on, so
captions, error messages, the server's host and every other value reach the HTML escaped; only the
tables pandas has already escaped are inserted as markup.

Figures are embedded as base64 PNG, so the file can be mailed or attached as it is.  Every stage has
a ``<section>`` with a stable ``id`` (:data:`SECTION_IDS`), a ``data-status`` (``computed``,
``not-computed`` or ``error``) and a ``data-figures`` count.  A stage whose schema is not declared,
or whose tables are still empty, shows a "not computed yet" panel saying what to run; an unexpected
failure while drawing one stage shows an error panel and leaves the other stages intact.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from pathlib import Path
from typing import Callable

import jinja2

import pipeline
from populate import api
from populate.report import provenance
from populate.report.celltypes import cell_types
from populate.report.sections import (
    NotComputed,
    Panel,
    classifiers,
    neural_similarity,
    pipeline_progress,
    predictive_models,
    recordings,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Section:
    id: str
    title: str
    build: Callable[[Panel], None]


SECTIONS = (
    Section("recordings", "Recordings", recordings),
    Section("predictive-models", "Predictive models", predictive_models),
    Section("cell-types", "Cell types", cell_types),
    Section("neural-similarity", "Neural similarity", neural_similarity),
    Section("classifiers", "Classifiers & robustness", classifiers),
    Section("progress", "Pipeline progress", pipeline_progress),
)
SECTION_IDS = tuple(s.id for s in SECTIONS)

VERSIONS_NOTE = (
    "Trained models and classifiers show the code version (package version and git commit) that trained "
    "them, in their tables' code_version column; cell types show their model's. The other tables record "
    "no code version: their rows were computed by some version of the pipeline, not necessarily this one."
)


# --------------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("populate.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _section(section: Section) -> dict:
    """One section for the template: id, title, status, figure count, and its blocks or message."""
    panel = Panel()
    try:
        section.build(panel)
        status, message = "computed", ""
    except (NotComputed, api.StageNotComputed) as reason:
        status, message = "not-computed", str(reason)
    except Exception as err:  # one broken stage must not hide the others
        log.exception("report section %s failed", section.id)
        status, message = "error", f"{type(err).__name__}: {' '.join(str(err).split()) or type(err).__name__}"
    return dict(
        id=section.id,
        title=section.title,
        status=status,
        message=message,
        blocks=panel.blocks,
        figures=panel.figures if status == "computed" else 0,
    )


def render_report() -> str:
    """The report as one HTML document (a string)."""
    from schemas import db

    try:
        where = api.connect()
    except Exception as err:
        raise RuntimeError(f"report: cannot connect to the database ({' '.join(str(err).split())})") from err
    return _TEMPLATES.get_template("report.html").render(
        backend=where["backend"],
        host=where["host"],
        prefix=db.prefix(),
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        code_version=pipeline.code_version(),
        versions_note=VERSIONS_NOTE,
        toy_rule=provenance.RULE,
        sections=[_section(section) for section in SECTIONS],
    )


def write_report(path: str | Path, force: bool = True) -> Path:
    """Write the report to ``path`` (folders created as needed); returns the resolved path.

    ``force`` False (the ``report`` command without ``--force``) refuses an existing file or symbolic
    link with :class:`FileExistsError` naming it.  Otherwise the page goes to a new file renamed over
    ``path``, so a link there is replaced itself, never its target.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path {str(path)!r} should end in .html")
    if not force and (path.is_symlink() or path.exists()):
        kind = "a symbolic link" if path.is_symlink() else "an existing file"
        raise FileExistsError(f"report path {str(path)!r} is {kind}; choose a new path or pass --force to replace it")
    document = render_report()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not force:
        with open(path, "x", encoding="utf-8") as out:  # O_EXCL: refuses a file or link made meanwhile
            out.write(document)
        return path.resolve()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as out:
            out.write(document)
        os.replace(temporary, path)  # replaces a link itself, not its target
    finally:
        temporary.unlink(missing_ok=True)
    return path.resolve()
