"""Getting recordings into and out of the database: the simulator, Sensorium import and export."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_SCAN_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def parse_scan(text: str) -> dict[str, int]:
    """``"11521-7-2"`` -> ``{"animal_id": 11521, "session": 7, "scan_idx": 2}``."""
    match = _SCAN_NAME.match(text.strip())
    if not match:
        raise ValueError(f"scan {text!r} is not written animal-session-scan, e.g. 11521-7-2")
    return dict(zip(("animal_id", "session", "scan_idx"), map(int, match.groups())))


def scan_name(key) -> str:
    return f"{key['animal_id']}-{key['session']}-{key['scan_idx']}"


def simulate(preset: str, seed: int, scan: str | None = None) -> tuple[dict, bool]:
    """Simulate a scan and insert it; returns (scan key, inserted).  Already present -> not inserted."""
    from pipeline.data.simulate import simulate as run_simulation

    from schemas import recordings

    if scan is not None and recordings.scan_exists(parse_scan(scan)):
        return parse_scan(scan), False
    recording = run_simulation(preset, seed=seed)
    if scan is not None:
        key = parse_scan(scan)
        recording.animal_id, recording.session, recording.scan_idx = key["animal_id"], key["session"], key["scan_idx"]
    recording.source = f"simulated: preset={preset} seed={seed}"
    if recordings.scan_exists(recording.scan_key):
        return recording.scan_key, False
    return recordings.insert_recording(recording), True


def import_sensorium(path: str | Path) -> tuple[dict, bool]:
    """Import one Sensorium folder or .zip; returns (scan key, inserted)."""
    from pipeline.data.sensorium import IMAGE_ID_NAMES, read_sensorium

    from schemas import recordings

    recording = read_sensorium(path)
    recording.source = recording.source or Path(path).name
    if recordings.scan_exists(recording.scan_key):
        return recording.scan_key, False
    image_id_name = next((n for n in IMAGE_ID_NAMES if n in recording.extra_trial_arrays), IMAGE_ID_NAMES[0])
    return recordings.insert_recording(recording, image_id_name=image_id_name), True


def export_sensorium(scan: str, out: str | Path) -> Path:
    """Write a stored scan back in the Sensorium layout."""
    from pipeline.data.sensorium import write_sensorium

    from schemas import recordings

    key = parse_scan(scan)
    if not recordings.scan_exists(key):
        raise LookupError(f"scan {scan} is not in the database")
    return write_sensorium(recordings.fetch_recording(key), out)


def import_cifar10(path: str | Path, name: str = "cifar10") -> tuple[dict, bool]:
    """Import a ``cifar-10-batches-py`` folder as grayscale; returns (key, inserted)."""
    from pipeline.data.cifar import read_cifar10

    from schemas.classifiers import ClassificationSet

    return ClassificationSet.add(name, read_cifar10(path))


def photo_classes(n_train_per_class: int, n_test_per_class: int, seed: int = 0, name: str = "photos"):
    """Insert the embedded photograph classification set; returns (key, inserted)."""
    from pipeline.data.photo_classes import photo_classification_set

    from schemas.classifiers import ClassificationSet

    if ClassificationSet & dict(classification_set=name):
        return dict(classification_set=name), False
    return ClassificationSet.add(name, photo_classification_set(n_train_per_class, n_test_per_class, seed))
