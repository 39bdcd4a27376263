"""The demo's time that README.md and docs/results.md state is the one `make demo` measured and
recorded (benchmarks/results/demo.json, written by `python -m populate demo --record`): whole minutes
of its wall time, on its number of CPU cores."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone

import pipeline
from populate.cli import demo
from tests.conftest import REPO

# the one sentence of each document that states the time, e.g. "`make demo` took **19 minutes** on 2 CPU cores"
STATED = re.compile(r"`make demo` took \**(\d+) minutes\** on (\d+) CPU cores")
DOCUMENTS = ("README.md", "docs/results.md")


def stated(text: str) -> list[tuple[int, int]]:
    """(minutes, CPU cores) of every sentence of ``text`` that states the demo's time."""
    return [(int(minutes), int(cores)) for minutes, cores in STATED.findall(text)]


def expected(record: dict) -> tuple[int, int]:
    """What the documents must state for ``record``: its wall time in whole minutes, its CPUs."""
    return round(record["wall_seconds"] / 60), record["cpus"]


def test_the_docs_state_the_recorded_demo_time():
    path = REPO / demo.RECORD_FILE
    assert path.is_file(), f"{demo.RECORD_FILE} is missing: `make demo` from an empty database writes it"
    record = json.loads(path.read_text())
    assert record["command"] == "python -m populate demo", f"{demo.RECORD_FILE}: command {record['command']!r}"
    for document in DOCUMENTS:
        found = stated((REPO / document).read_text())
        assert found == [expected(record)], (
            f"{document}: states {found} (minutes, CPU cores); {demo.RECORD_FILE} recorded {expected(record)}"
        )


def test_the_check_reads_the_sentence_and_a_written_record(tmp_path):
    assert stated("so `make demo` took **19 minutes** on 2 CPU cores after") == [(19, 2)]
    assert stated("`make demo` took 7 minutes on 16 CPU cores") == [(7, 16)]
    assert stated("`make demo` takes about 16 minutes on 2 idle CPU cores") == []  # an estimate is no record

    path = tmp_path / "demo.json"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    returned = demo.record_run(path, 1170.04, 0.5, {"TrainedModel": 4}, "postgresql")
    after = datetime.now(timezone.utc)
    record = json.loads(path.read_text())
    assert record == returned
    assert record["wall_seconds"] == 1170.0 and record["wall_minutes"] == 19.5
    assert expected(record) == (20, record["cpus"])
    assert record["code_version"] == pipeline.code_version()  # the package version and git commit
    assert record["cpus"] == len(os.sched_getaffinity(0)) and record["populated"] == {"TrainedModel": 4}
    assert before <= datetime.fromisoformat(record["date"]) <= after
