"""NWB files a data archive accepts: the session's date, experimenter and subject come from the
scan's records or required options (never placeholders), nwbinspector with the DANDI archive's
configuration finds nothing at error, critical or best-practice-violation importance and prints no
traceback, and no empty pixel mask is written."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynwb")
pytest.importorskip("nwbinspector")

from pipeline.data.extraction import Footprints  # noqa: E402
from pipeline.data.nwb.writer import SessionInfo, write_nwb  # noqa: E402
from pipeline.data.recording import RecordingError  # noqa: E402
from pipeline.data.simulate import simulate  # noqa: E402

SESSION_OPTIONS = [
    "--session-start",
    "2024-03-01T09:30:00+01:00",
    "--experimenter",
    "Doe, Jane",
    "--experimenter",
    "Roe, Richard",
    "--age",
    "P90D",
    "--sex",
    "F",
    "--institution",
    "University of Tübingen",
]
"""The options every ``export nwb`` needs, as a user gives them."""

SESSION = dict(
    session_start="2024-03-01T09:30:00+01:00", experimenter=["Doe, Jane"], age="P90D", sex="F", institution="Lab"
)
"""The same for :func:`populate.ingest.export_nwb`."""

REFUSED = ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")


def archive_findings(path: Path, tmp_path: Path) -> list[str]:
    """nwbinspector's command line with the DANDI archive's configuration, as an archive runs it:
    the messages at an importance in :data:`REFUSED`, or an AssertionError when its output shows a
    traceback (nwbinspector reports a check that crashed and still exits 0)."""
    program = shutil.which("nwbinspector", path=str(Path(sys.executable).parent)) or shutil.which("nwbinspector")
    assert program, "nwbinspector's command line is not installed"
    report = tmp_path / f"{path.stem}-inspection.json"
    run = subprocess.run(
        [program, str(path), "--config", "dandi", "--json-file-path", str(report), "--detailed"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "Traceback" not in output and "Error:" not in output, output[-3000:]
    messages = json.loads(report.read_text())["messages"]
    refused = [m for m in messages if m["importance"] in REFUSED]
    return [f"{m['importance']} {m['check_function_name']}: {m['message']}" for m in refused]


def _session(**changes) -> SessionInfo:
    values = dict(
        session_start=datetime.datetime(2024, 3, 1, 9, 30, tzinfo=datetime.timezone.utc),
        experimenter=("Doe, Jane",),
        age="P90D",
        sex="F",
        species="Mus musculus",
    )
    return SessionInfo(**{**values, **changes})


def test_quick_demo_scan_exports_to_a_file_the_archive_accepts(db, tmp_path):
    import h5py
    from pynwb import NWBHDF5IO

    from populate import ingest
    from populate.cli import demo
    from populate.cli import main as cli

    ingest.simulate("tiny", seed=0, scan=demo.SCAN)  # the quick demo's scan, as `demo --quick` makes it
    out = tmp_path / "demo.nwb"
    assert cli.main(["export", "nwb", demo.SCAN, str(out), *SESSION_OPTIONS]) == 0
    assert archive_findings(out, tmp_path) == []
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        start = datetime.datetime(2024, 3, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
        assert nwb.session_start_time == start
        assert list(nwb.experimenter) == ["Doe, Jane", "Roe, Richard"]
        assert nwb.institution == "University of Tübingen"
        subject = nwb.subject
        assert (subject.age, subject.sex, subject.species, subject.subject_id) == ("P90D", "F", "Mus musculus", "1")
    with h5py.File(out, "r") as f:  # a scan without footprints: no empty pixel mask
        columns = set(f["processing/ophys/ImageSegmentation/PlaneSegmentation"].keys())
    assert "pixel_mask" not in columns and "image_mask" in columns


def test_export_without_the_session_options_is_refused_before_writing(db, tmp_path, capsys):
    from populate.cli import main as cli

    out = tmp_path / "scan.nwb"
    for missing in ("--session-start", "--experimenter", "--age", "--sex"):
        options = list(SESSION_OPTIONS)
        while missing in options:
            at = options.index(missing)
            del options[at : at + 2]
        with pytest.raises(SystemExit):
            cli.main(["export", "nwb", "1-1-1", str(out), *options])
        assert missing in capsys.readouterr().err
    assert cli.main(["export", "nwb", "1-1-1", str(out), *SESSION_OPTIONS[:-4], "--sex", "X"]) == 1
    assert "sex 'X': expected one of M, F, U, O" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(session_start=datetime.datetime(2024, 3, 1, 9, 30)), "give a time zone"),
        (dict(experimenter=()), "experimenter: give at least one name"),
        (dict(experimenter=(" ",)), "experimenter: give at least one name"),
        (dict(age="90 days"), "age '90 days': expected an ISO 8601 duration"),
        (dict(age="P"), "age 'P': expected an ISO 8601 duration"),
        (dict(sex="female"), "sex 'female'"),
        (dict(species=""), "species: empty"),
    ],
)
def test_session_fields_are_required_and_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        _session(**changes)


def test_session_fields_reach_the_file_and_age_ranges_are_accepted(tmp_path):
    from pynwb import NWBHDF5IO

    recording = simulate("tiny", seed=1)
    out = write_nwb(recording, tmp_path / "scan.nwb", _session(age="P8W/P12W", sex="U"))
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time.year == 2024 and list(nwb.experimenter) == ["Doe, Jane"]
        assert (nwb.subject.age, nwb.subject.sex) == ("P8W/P12W", "U")


def test_footprints_with_some_empty_masks_are_refused(tmp_path):
    recording = simulate("tiny", seed=1)
    n = recording.n_units
    pixels = [np.array([[r % 5, r // 5, 1.0]], np.float32) for r in range(n)]
    pixels[3] = np.zeros((0, 3), np.float32)
    footprints = Footprints(
        plane=np.zeros(n, np.int64),
        roi=np.arange(n),
        centre=np.zeros((n, 2)),
        pixels=pixels,
        iscell=np.ones(n),
    )
    out = tmp_path / "scan.nwb"
    with pytest.raises(RecordingError, match=rf"unit\(s\) \[{int(recording.unit_ids[3])}\] have no pixels"):
        write_nwb(recording, out, _session(), footprints=footprints)
    assert not out.exists()
