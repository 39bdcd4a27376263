"""Small synthetic Sensorium 2022 static datasets for tests.

:func:`write_fake_sensorium` writes a folder (or zip) with the file names, key names and dtypes of
the real data; :func:`fake_sensorium_files` gives the same content as a dict of arrays, so that a
test can compare what a reader returns with what was written, file by file.  ``edits`` replaces,
corrupts or deletes single files to produce bad inputs.

Trial structure (``n_trials >= 14``): 2 ``test`` images x 3 repeats, 2 ``final_test`` images x 3
repeats and the remaining trials on unique images, 80 % ``train`` and 20 % ``validation``; trial
files are in random order (``trial_idx`` holds the presentation order), as in the real data.
"""

from __future__ import annotations

import io
import shutil
import zipfile as zipfile_module
from pathlib import Path
from typing import Mapping

import numpy as np

DEFAULT_NAME = "static12345-6-7-GrayImageNet-0123456789abcdef"
STATISTICS = ("mean", "std", "min", "max", "median")


def fake_sensorium_files(
    n_trials: int = 40,
    n_units: int = 7,
    seed: int = 0,
    *,
    image_shape: tuple[int, int] = (18, 32),
    image_dtype: str = "float32",
    image_id_name: str = "frame_image_id",
    scan: tuple[int, int, int] = (12345, 6, 7),
    withhold_responses: tuple[str, ...] = ("final_test",),
    withhold_behavior: tuple[str, ...] = (),
    statistics: bool = True,
) -> dict[str, np.ndarray]:
    """Every file of a fake dataset: relative path (``data/images/0.npy``, ...) -> array.

    Parameters
    ----------
    image_shape : (H, W) of the images; files hold (1, H, W).
    image_dtype : dtype of the image files; values are whole grey levels 0-255 in any case.
    image_id_name : name of the per-trial image-id array in meta/trials.
    scan : (animal_id, session, scan_idx) written to meta/neurons.
    withhold_responses, withhold_behavior : tiers whose responses, resp. behaviour and pupil
        centre, are zeroed as in the competition scans.
    statistics : also write meta/statistics (computed over all non-zeroed trials).
    """
    if n_trials < 14:
        raise ValueError(f"n_trials must be >= 14 (12 repeated test trials + train), got {n_trials}")
    rng = np.random.default_rng(seed)
    n_unique = n_trials - 12
    n_images = n_unique + 4
    image_ids = rng.choice(100_000, size=n_images, replace=False).astype(np.int64)
    images = rng.integers(0, 256, size=(n_images, 1, *image_shape)).astype(image_dtype)

    n_validation = max(1, n_unique // 5)
    tiers = ["train"] * (n_unique - n_validation) + ["validation"] * n_validation + ["test"] * 6 + ["final_test"] * 6
    slots = list(range(n_unique)) + [n_unique + k // 3 for k in range(12)]  # 4 images x 3 repeats
    order = rng.permutation(n_trials)  # file i shows presentation order[i]
    tiers = np.array(tiers)[order]
    slots = np.array(slots)[order]

    responses = rng.gamma(0.5, 1.0, size=(n_trials, n_units)).astype(np.float32)
    behavior = np.column_stack(
        [rng.uniform(5, 30, n_trials), rng.normal(0, 0.5, n_trials), rng.exponential(3.0, n_trials)]
    ).astype(np.float32)
    pupil_center = rng.normal([320.0, 240.0], 10.0, size=(n_trials, 2)).astype(np.float32)
    for tier in withhold_responses:
        responses[tiers == tier] = 0
    for tier in withhold_behavior:
        behavior[tiers == tier] = 0
        pupil_center[tiers == tier] = 0

    files: dict[str, np.ndarray] = {}
    for i in range(n_trials):
        files[f"data/images/{i}.npy"] = images[slots[i]]
        files[f"data/responses/{i}.npy"] = responses[i]
        files[f"data/behavior/{i}.npy"] = behavior[i]
        files[f"data/pupil_center/{i}.npy"] = pupil_center[i]

    animal, session, scan_idx = scan
    files.update(
        {
            "meta/neurons/unit_ids.npy": np.sort(rng.choice(10 * n_units + 10, n_units, replace=False)).astype(np.int64)
            + 1,
            "meta/neurons/area.npy": np.array(["V1"] * n_units),
            "meta/neurons/layer.npy": np.array(["L2/3", "L4"])[rng.integers(0, 2, n_units)],
            "meta/neurons/animal_ids.npy": np.full(n_units, animal, np.int64),
            "meta/neurons/sessions.npy": np.full(n_units, session, np.int64),
            "meta/neurons/scan_idx.npy": np.full(n_units, scan_idx, np.int64),
            "meta/neurons/cell_motor_coordinates.npy": rng.uniform(-400, 400, size=(n_units, 3)).round(1),
            "meta/trials/tiers.npy": tiers,
            "meta/trials/trial_idx.npy": order.astype(np.int64),
            f"meta/trials/{image_id_name}.npy": image_ids[slots],
            "meta/trials/frame_image_class.npy": np.array(["imagenet"] * n_trials),
            "meta/trials/frame_trial_ts.npy": 1.6e9 + 0.5 * order.astype(np.float64),
        }
    )

    if statistics:
        responding = ~np.isin(tiers, withhold_responses)
        behaving = ~np.isin(tiers, withhold_behavior)
        stacks = {
            "images": images[slots].reshape(-1, 1),
            "responses": responses[responding],
            "behavior": behavior[behaving],
            "pupil_center": pupil_center[behaving],
        }
        for kind, values in stacks.items():
            for name in STATISTICS:
                value = getattr(np, name)(np.asarray(values, np.float64), axis=0)
                value = value[0] if kind == "images" else value
                for source in ("all", "stimulus_frame"):
                    files[f"meta/statistics/{kind}/{source}/{name}.npy"] = np.asarray(value)
    return files


def write_fake_sensorium(
    root: str | Path,
    n_trials: int = 40,
    n_units: int = 7,
    seed: int = 0,
    zip: bool = False,
    *,
    name: str = DEFAULT_NAME,
    nested: bool = True,
    edits: Mapping[str, "np.ndarray | bytes | None"] | None = None,
    **options,
) -> Path:
    """Write a fake dataset under ``root`` and return its folder, or its .zip when ``zip``.

    Parameters
    ----------
    root : parent folder (created if needed).
    name : dataset folder name (``static<animal>-<session>-<scan>-...`` in the real data).
    zip : write ``root/<name>.zip`` instead of a folder; ``nested`` puts the files under
        ``<name>/`` inside the zip as the real archives do, else at its top level.
    edits : relative path -> replacement: an array (saved with np.save, pickle allowed so that
        object arrays can be planted), raw bytes (written as they are), or None (file deleted).
    **options : passed to :func:`fake_sensorium_files`.
    """
    root = Path(root)
    files: dict[str, object] = dict(fake_sensorium_files(n_trials, n_units, seed, **options))
    for rel, value in (edits or {}).items():
        if value is None:
            files.pop(rel, None)
        else:
            files[rel] = value
    folder = root / name
    for rel, value in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value, allow_pickle=True)
    if not zip:
        return folder
    archive = root / f"{name}.zip"
    with zipfile_module.ZipFile(archive, "w", zipfile_module.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            arcname = path.relative_to(root if nested else folder).as_posix()
            out.write(path, arcname)  # folder entries too, as zip tools write them
    shutil.rmtree(folder)
    return archive


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy encoding of ``array`` (to build truncated or corrupt variants)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def read_npy_tree(folder: str | Path) -> dict[str, np.ndarray]:
    """Every .npy file under ``folder``: relative POSIX path -> array (loaded without pickle)."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): np.load(path, allow_pickle=False) for path in sorted(folder.rglob("*.npy"))
    }
