"""The definitions of the config tables, written by :func:`schemas.configs.config_definition`, are the
definitions the tables were declared with: the same text, hence the same columns and column comments."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "schemas.models.ModelConfig": """
    # an encoding model: core, readout, shifter, modulator
    model_hash: char(32)                # canonical hash of the full config
    ---
    config_name = '': varchar(64)       # optional label
    core_kind: varchar(16)              # 'cnn' or 'rotation'
    feature_maps: int32                 # channels per core layer (features x rotations)
    config: json
    """,
    "schemas.models.DatasetConfig": """
    # the data a model is fitted to
    dataset_hash: char(32)
    ---
    config_name = '': varchar(64)
    -> Scan
    config: json
    """,
    "schemas.models.TrainerConfig": """
    # optimisation settings (the seed comes from Seed)
    trainer_hash: char(32)
    ---
    config_name = '': varchar(64)
    config: json
    """,
    "schemas.similarity.SimilarityConfig": """
    similarity_hash: char(32)
    ---
    config_name = '': varchar(64)
    method: varchar(16)
    config: json
    """,
    "schemas.classifiers.ClassifierConfig": """
    # architecture, regularization and schedule of a classifier (the seed comes from Seed)
    classifier_hash: char(32)
    ---
    config_name = '': varchar(64)
    control: varchar(16)                # none, neural, shuffled, single_trial, pixel
    alpha: float64                      # weight of the similarity loss
    width: int32                        # channels of the first ResNet stage
    config: json
    """,
    "schemas.classifiers.EvaluationConfig": """
    evaluation_hash: char(32)
    ---
    config_name = '': varchar(64)
    config: json
    """,
    "schemas.recordings.ExtractionConfig": """
    # how trial responses are computed from imaging traces (signal, neuropil, cells, window)
    extraction_hash: char(32)           # canonical hash of the full config
    ---
    config_name = '': varchar(64)
    signal: varchar(16)                 # 'spikes' or 'dff'
    config: json
    """,
}


def table_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_config_table_definition_is_the_declared_text(path):
    table = table_class(path)
    assert table.definition == EXPECTED[path]
    assert f"\n    {table.hash_attribute}: char(32)" in table.definition
