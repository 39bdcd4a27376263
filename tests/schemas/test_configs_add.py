"""``ConfigTable.add``: content added under a second name gets the name as an alias; a description and
the account that added it are noted apart from the hash; every add (and ``TrainingTask.add``) inserts
all or nothing; ``python -m populate configs --unused`` lists what no task uses; a database set up
before the notes existed is still read."""

from __future__ import annotations

import json
import warnings

import pytest

from tests.conftest import PREFIX, QUICK_TRAINER, SCAN, tiny_model
from tests.populate.commands import child_env, cli, run_cli


def model(features: int) -> dict:
    """A CNN model config no other test adds (``features`` picks it)."""
    return dict(core=dict(kind="cnn", layers=2, kernel_sizes=(5, 3), features=features))


def test_the_same_content_under_a_new_name_is_an_alias(db, row_counts):
    from schemas.config_notes import ConfigNote
    from schemas.models import ModelConfig

    key = ModelConfig.add(model(11), name="alias-first")
    before = row_counts()
    assert ModelConfig.add(model(11), name="alias-second") == key
    assert ModelConfig.add(model(11), name="alias-first") == key  # a name added again: nothing new
    assert ModelConfig.names(key) == ["alias-first", "alias-second"]
    assert (ModelConfig & key).fetch1("config_name") == "alias-first"
    changed = {table: n - before[table] for table, n in row_counts().items() if n != before[table]}
    assert changed == {ConfigNote.full_table_name.replace('"', "").replace("`", ""): 1}


def test_a_description_and_owner_are_noted_apart_from_the_hash(db):
    import datajoint as dj

    from schemas.config_notes import ConfigNote
    from schemas.models import ModelConfig

    plain = ModelConfig.add(model(12))
    described = ModelConfig.add(model(12), name="described", description="twelve channels, for the notes test")
    assert described == plain  # the description never enters the hash
    note = (
        ConfigNote & dict(config_table="ModelConfig", config_hash=plain["model_hash"], config_name="described")
    ).fetch1()
    assert note["description"] == "twelve channels, for the notes test"
    assert note["added_by"] == dj.conn().get_user() and note["added_at"] is not None


def test_an_add_that_fails_leaves_nothing(db, row_counts):
    from populate import ingest
    from schemas.models import TrainingTask

    ingest.simulate("tiny", seed=1, scan=SCAN)  # the session's scan (as trained_models makes it)
    before = row_counts()
    dataset = dict(scan="9-9-9", image_shape=(18, 32))
    with pytest.raises(LookupError, match="9-9-9"):
        TrainingTask.add(model=model(13), dataset=dataset, trainer=QUICK_TRAINER, name="orphan", description="x")
    with pytest.raises(ValueError, match="description"):
        TrainingTask.add(model=model(13), dataset=dict(scan=SCAN, image_shape=(18, 32)), description="x" * 1001)
    with pytest.raises(ValueError, match="at most 64"):
        TrainingTask.add(model=model(13), dataset=dict(scan=SCAN, image_shape=(18, 32)), name="n" * 65)
    assert row_counts() == before


def test_configs_unused_lists_what_no_task_uses(db, capsys):
    from populate import ingest
    from schemas.models import ModelConfig, TrainingTask

    ingest.simulate("tiny", seed=1, scan=SCAN)
    lonely = ModelConfig.add(model(14), name="unused-lonely", description="never trained")
    task = TrainingTask.add(model=model(15), dataset=dict(scan=SCAN, image_shape=(18, 32)), name="unused-task")[0]
    try:
        code, out, err = run_cli(capsys, "configs", "--unused", "--json", "--table", "ModelConfig")
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        hashes = {row["hash"] for row in rows}
        assert lonely["model_hash"] in hashes and task["model_hash"] not in hashes
        row = next(row for row in rows if row["hash"] == lonely["model_hash"])
        assert row["names"] == "unused-lonely" and row["description"] == "never trained" and row["added_by"]
        code, out, _ = run_cli(capsys, "configs", "--table", "ModelConfig")
        assert code == 0 and task["model_hash"] in out and "unused-task" in out
        code, _, err = run_cli(capsys, "configs", "--table", "Nope")
        assert code == 1 and "ModelConfig" in err
    finally:
        (TrainingTask & task).delete_quick()


def test_a_database_set_up_before_the_notes_is_read(db):
    """An older database has every config table but no ConfigNote: configs are read and listed as
    before; adding one says to run setup, and inserts nothing.  (Its setup also shows that Seed's
    contents are inserted without DataJoint's positional-insert deprecation warning.)"""
    import datajoint as dj

    import schemas
    from schemas.config_notes import ConfigNote
    from schemas.models import ModelConfig

    older = f"{PREFIX}_older"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            schemas.declare_all(older)  # Seed's contents are inserted as dicts: no positional-insert warning
        assert not [w for w in caught if "Positional inserts" in str(w.message)]
        key = ModelConfig.add(tiny_model("cnn"), name="older")
        dj.FreeTable(dj.conn(), ConfigNote.full_table_name).drop_quick()
        schemas.activate(older)
        assert ModelConfig.load(key).core.kind == "cnn" and ModelConfig.names(key) == ["older"]
        out = cli("configs", "--table", "ModelConfig", env=child_env(PIPELINE_PREFIX=older))
        assert out.returncode == 0 and key["model_hash"] in out.stdout and "older" in out.stdout, out.stderr
        with pytest.raises(dj.DataJointError, match="populate setup"):
            ModelConfig.add(model(16), name="refused")
        assert len(ModelConfig()) == 1
    finally:
        schemas.drop_all(older)
        schemas.activate(PREFIX)
