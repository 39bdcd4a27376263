"""DataJoint's own tools work on the pipeline's tables: ``describe()`` and ``dj.Diagram`` of every schema.

Drawing needs Graphviz's ``dot`` program (pydot calls it); ``make test`` installs it with the same
helper that installs the database servers (``populate/deploy/ensure_program.sh dot graphviz``).
"""

from __future__ import annotations

import importlib
import shutil
import xml.etree.ElementTree as ElementTree

import pytest

import schemas


def _tables(module) -> list[type]:
    import datajoint as dj

    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, dj.Table) and value.__module__ == module.__name__
    ]


def test_describe_gives_each_tables_definition(db):
    from schemas.classifiers import ClassifierConfig
    from schemas.models import ModelConfig, TrainedModel

    text = ModelConfig().describe(printout=False)
    assert "model_hash" in text and "core_kind" in text
    assert "-> " in TrainedModel().describe(printout=False)
    assert "alpha" in ClassifierConfig().describe(printout=False)
    # the pipeline's own derived attributes keep working under their own name
    assert ModelConfig.config_attributes(ModelConfig.validated(dict(core=dict(kind="cnn", features=8)))) == dict(
        core_kind="cnn", feature_maps=8
    )


@pytest.mark.parametrize("stage", schemas.STAGES)
def test_diagram_of_every_schema_renders_to_svg(db, stage, tmp_path):
    import datajoint as dj

    if shutil.which("dot") is None:
        pytest.fail(
            "Graphviz's `dot` is missing: run `populate/deploy/ensure_program.sh dot graphviz` (make test does)"
        )
    module = importlib.import_module(f"schemas.{stage}")
    diagram = dj.Diagram(module.schema)
    path = tmp_path / f"{stage}.svg"
    diagram.save(str(path))
    svg = ElementTree.parse(path).getroot()
    assert svg.tag.endswith("svg")
    # a node is labelled with the class name, qualified by the module it is looked up in ("module.Scan")
    labels = {"".join(node.itertext()).strip().rsplit(".", 1)[-1] for node in svg.iter() if node.tag.endswith("text")}
    # every table and part table of the module is a node of the drawing (parts by their own name)
    names = set()
    for table in _tables(module):
        names.add(table.__name__)
        names.update(
            part.__name__ for part in vars(table).values() if isinstance(part, type) and issubclass(part, dj.Part)
        )
    assert names, stage
    assert not names - labels, f"{stage}: tables not drawn: {sorted(names - labels)}"
