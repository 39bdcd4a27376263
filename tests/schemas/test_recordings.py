"""Recordings in the database: Sensorium import/export round trips, bad input, re-import, MariaDB fix."""

from __future__ import annotations

import numpy as np
import pytest

from populate.cli.main import main
from tests.sensorium_fixtures import npy_bytes, read_npy_tree, write_fake_sensorium

STATISTICS = "meta/statistics/"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_same_files(original: dict, exported: dict) -> None:
    data = {k for k in original if not k.startswith(STATISTICS)}
    assert data <= set(exported), f"missing in export: {sorted(data - set(exported))[:5]}"
    for rel in sorted(data):
        a, b = original[rel], exported[rel]
        assert a.dtype == b.dtype, f"{rel}: dtype {a.dtype} exported as {b.dtype}"
        assert np.array_equal(a, b), f"{rel}: values differ after export"
    # statistics are derived and recomputed; they must still be there and agree with the data
    assert {k for k in original if k.startswith(STATISTICS)} <= set(exported)


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_import_export_reproduces_every_array(db, tmp_path, capsys, as_zip):
    scan = (31, 2, 5 if as_zip else 4)
    source = write_fake_sensorium(
        tmp_path / "src",
        n_trials=60,
        n_units=9,
        seed=3,
        scan=scan,
        zip=as_zip,
        name=f"static{scan[0]}-{scan[1]}-{scan[2]}-GrayImageNet-abc",
    )
    code, out, err = run_cli(capsys, "import", "sensorium", str(source))
    assert code == 0, err
    name = "-".join(map(str, scan))
    assert f"imported scan {name}" in out

    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, "export", "sensorium", name, str(out_dir))
    assert code == 0, err

    reference = write_fake_sensorium(tmp_path / "ref", n_trials=60, n_units=9, seed=3, scan=scan, name="reference")
    assert_same_files(read_npy_tree(reference), read_npy_tree(out_dir))


def test_reimport_is_a_no_op(db, tmp_path, capsys, row_counts):
    source = write_fake_sensorium(tmp_path, seed=4, scan=(32, 1, 1), name="static32-1-1-GrayImageNet-x")
    assert run_cli(capsys, "import", "sensorium", str(source))[0] == 0
    before = row_counts()
    code, out, err = run_cli(capsys, "import", "sensorium", str(source))
    assert code == 0
    assert "already in the database; nothing inserted" in out
    assert row_counts() == before


def _bad_cases(n_trials=40, n_units=7):
    good = np.zeros(n_units, np.float32)
    return {
        "missing file": ({"data/responses/3.npy": None}, "data/responses"),
        "shape mismatch": ({"data/responses/5.npy": np.zeros(n_units + 2, np.float32)}, "data/responses/5.npy"),
        "NaN": ({"data/responses/2.npy": np.where(np.arange(n_units) == 1, np.nan, good)}, "data/responses/2.npy"),
        "infinite behaviour": (
            {"data/behavior/4.npy": np.array([1.0, np.inf, 2.0], np.float32)},
            "data/behavior/4.npy",
        ),
        "trial count mismatch": ({"meta/trials/trial_idx.npy": np.arange(n_trials - 3)}, "meta/trials/trial_idx.npy"),
        "unknown tier": (
            {"meta/trials/tiers.npy": np.array(["train"] * (n_trials - 1) + ["holdout"])},
            "meta/trials/tiers.npy",
        ),
        "non-numeric array": ({"data/pupil_center/1.npy": np.array(["a", "b"])}, "data/pupil_center/1.npy"),
        "truncated npy": (
            {"data/images/0.npy": npy_bytes(np.zeros((1, 18, 32), np.float32))[:100]},
            "data/images/0.npy",
        ),
        "duplicate unit ids": (
            {"meta/neurons/unit_ids.npy": np.array([1, 2, 3, 3, 4, 5, 6])},
            "meta/neurons/unit_ids.npy",
        ),
        "object array": (
            {"meta/neurons/area.npy": np.array([{"x": 1}] * n_units, dtype=object)},
            "meta/neurons/area.npy",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_is_refused_and_nothing_is_inserted(db, tmp_path, capsys, row_counts, case):
    edits, named_file = _bad_cases()[case]
    source = write_fake_sensorium(tmp_path, seed=5, scan=(33, 1, 1), name="static33-1-1-GrayImageNet-x", edits=edits)
    before = row_counts()
    code, out, err = run_cli(capsys, "import", "sensorium", str(source))
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert named_file in err, f"{case}: message does not name {named_file}: {err}"
    assert row_counts() == before


def test_distinct_messages_for_distinct_problems(db, tmp_path, capsys):
    messages = set()
    for case, (edits, _) in _bad_cases().items():
        source = write_fake_sensorium(
            tmp_path / case.replace(" ", "_"), seed=5, scan=(33, 1, 1), name="static33-1-1-GrayImageNet-x", edits=edits
        )
        messages.add(run_cli(capsys, "import", "sensorium", str(source))[2])
    assert len(messages) == len(_bad_cases())


def test_export_of_unknown_scan_fails_cleanly(db, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", "sensorium", "999-9-9", str(tmp_path / "x"))
    assert code != 0 and "999-9-9" in err and not (tmp_path / "x").exists()
    code, out, err = run_cli(capsys, "export", "sensorium", "not-a-scan", str(tmp_path / "x"))
    assert code != 0 and "animal-session-scan" in err


def test_response_matrix_excludes_withheld_trials(db, tmp_path, capsys):
    from schemas import recordings

    source = write_fake_sensorium(tmp_path, seed=6, scan=(34, 1, 1), name="static34-1-1-GrayImageNet-x")
    assert run_cli(capsys, "import", "sensorium", str(source))[0] == 0
    key = dict(animal_id=34, session=1, scan_idx=1)
    withheld = recordings.Scan.Trial & key & dict(withheld=True)
    assert len(withheld) == 6  # the fixture's zeroed final_test trials
    assert set(withheld.to_arrays("response_row")) == {None}
    matrix = (recordings.Scan & key).responses()
    assert matrix.shape == (40 - 6, 7)
    rows = (recordings.Scan.Trial & key & dict(withheld=False)).to_arrays("response_row", order_by="trial")
    assert np.array_equal(rows, np.arange(len(matrix)))


def test_mariadb_store_fix_is_needed_and_works(db):
    """On MariaDB, store-backed attributes fail without schemas.compat's fix (DataJoint #1451)."""
    import datajoint as dj

    from schemas import compat
    from schemas import db as settings

    if settings.backend() != "mariadb":
        pytest.skip("the fix only applies to MariaDB")

    def fresh_table():
        schema = dj.Schema(settings.schema_name("mariadbfix"), create_tables=True)

        class Probe(dj.Manual):
            definition = """
            probe_id: int32
            ---
            values: <blob@pipeline>
            """

        return schema, schema(Probe)

    compat.uninstall_mariadb_json_fix()
    try:
        schema, probe = fresh_table()
        with pytest.raises(Exception, match="dict can not be used as parameter"):
            probe.insert1(dict(probe_id=1, values=np.arange(3.0)))
        schema.drop(prompt=False)
    finally:
        compat.install_mariadb_json_fix()
    schema, probe = fresh_table()
    try:
        probe.insert1(dict(probe_id=1, values=np.arange(3.0)))
        assert np.array_equal((probe & "probe_id = 1").fetch1("values"), np.arange(3.0))
    finally:
        schema.drop(prompt=False)


def test_variant_ground_truth_round_trips(db):
    from pipeline.data.simulate import PRESETS, VARIANTS, simulate
    from schemas import recordings

    config = PRESETS["tiny"].replace(
        **VARIANTS["mixtures"][0], n_units=20, n_single_images=40, n_test_images=4, calibration_images=40, animal_id=35
    )
    recording = simulate(config, seed=0)
    recordings.insert_recording(recording)
    truth = recordings.fetch_recording(recording.scan_key).ground_truth
    np.testing.assert_array_equal(truth.unit_type, recording.ground_truth.unit_type)
    for name in ("variant", "mixture_type", "mixture_weight", "type_scale"):
        np.testing.assert_array_equal(truth.extra[name], recording.ground_truth.extra[name])
    assert "mixture_types" in str(truth.extra["variant"])
