"""A trained encoder outside the database: a folder a collaborator loads with torch and this
package's ``pipeline/`` alone (no DataJoint, no server, no object store).

The folder holds

- ``config.json``: the format, the model config (and its content hash), the number of units and
  their ids in output order, the input image size, the scan's normalisation (how images and
  responses map to model units) and where the model came from (its key, scan, code version);
- ``weights.pt``: the state dict, saved with ``torch.save`` (tensors only, so
  ``torch.load(..., weights_only=True)`` reads it without unpickling code);
- ``load.py``: a few lines that call :func:`load_bundle` on the folder it sits in.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.models.encoder import ModelConfig, build_encoder
from pipeline.stats import NormalizationStats

FORMAT = "v1pipeline-encoder-bundle/1"
CONFIG_FILE, WEIGHTS_FILE, LOADER_FILE = "config.json", "weights.pt", "load.py"

LOADER = '''"""Load this model without a database: needs torch and the v1pipeline's ``pipeline`` package
(installed, or its folder on PYTHONPATH).  ``python load.py`` prints what it is.  In Python:

    bundle = runpy.run_path("load.py")["load"]()
    rates = bundle.model(images, behavior, pupil_center)  # (B, 1, h, w), (B, 3), (B, 2) -> (B, n_units)

Inputs and rates are in model units (see ``bundle.normalization`` and pipeline/data/dataset.py).
"""

from pathlib import Path

from pipeline.models.bundle import load_bundle


def load(device="cpu"):
    return load_bundle(Path(__file__).resolve().parent, device=device)


if __name__ == "__main__":
    print(load().summary())
'''


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded bundle.

    model : the encoder in eval mode; images (B, 1, h, w), behavior (B, 3), pupil_center (B, 2),
        all in model units -> rates (B, n_units) in model units (times ``normalization.response_std``
        for the scan's units).
    config : the model config.
    unit_ids : (n_units,) the scan's unit ids, in the order of the model's outputs.
    image_shape : (h, w) input size, pixels.
    normalization : the scan's training statistics that define model units.
    source : where the model came from (database key, scan, code version, ...), as exported.
    """

    model: torch.nn.Module
    config: ModelConfig
    unit_ids: np.ndarray
    image_shape: tuple[int, int]
    normalization: NormalizationStats
    source: dict[str, Any]

    def summary(self) -> str:
        """One line: what the model is, its size and where it came from."""
        h, w = self.image_shape
        origin = ", ".join(f"{k}={v}" for k, v in self.source.items())
        return f"{self.config.core.kind} encoder of {len(self.unit_ids)} units, images {h}x{w}; {origin}"


def write_bundle(
    folder: str | Path,
    config: ModelConfig,
    weights: dict[str, np.ndarray],
    unit_ids: np.ndarray,
    image_shape: tuple[int, int],
    normalization: NormalizationStats,
    source: dict[str, Any],
) -> Path:
    """Write a bundle to ``folder`` (new, or an empty folder); nothing is left there on failure.

    weights : the state dict as numpy arrays (as ``TrainedModel.weights`` stores it).
    unit_ids : (n_units,) the units in output order.  source : JSON-able facts about the origin.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: exists and is not an empty folder; refusing to overwrite")
    model = build_encoder(config, len(unit_ids), image_shape)
    state = {name: torch.from_numpy(np.array(value)) for name, value in weights.items()}
    model.load_state_dict(state)  # refuses weights that do not fit the config before anything is written
    description = dict(
        format=FORMAT,
        model_config=config.to_dict(),
        model_hash=config.hash,
        n_units=len(unit_ids),
        unit_ids=[int(u) for u in unit_ids],
        image_shape=[int(image_shape[0]), int(image_shape[1])],
        normalization=normalization.to_dict(),
        source=source,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
        torch.save(state, staging / WEIGHTS_FILE)
        (staging / LOADER_FILE).write_text(LOADER)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_bundle(folder: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Read a bundle written by :func:`write_bundle`; the model is in eval mode on ``device``."""
    folder = Path(folder)
    description = json.loads((folder / CONFIG_FILE).read_text())
    if description.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG_FILE}: format {description.get('format')!r}, expected {FORMAT!r}")
    config = ModelConfig.from_dict(description["model_config"])
    if config.hash != description["model_hash"]:  # this pipeline/ reads the config differently
        raise ValueError(
            f"{folder / CONFIG_FILE}: model_config hashes to {config.hash} here, exported as "
            f"{description['model_hash']}; load it with the code version in 'source'"
        )
    image_shape = (int(description["image_shape"][0]), int(description["image_shape"][1]))
    unit_ids = np.asarray(description["unit_ids"], np.int64)
    model = build_encoder(config, len(unit_ids), image_shape)
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return Bundle(
        model=model.to(device).eval(),
        config=config,
        unit_ids=unit_ids,
        image_shape=image_shape,
        normalization=NormalizationStats.from_dict(description["normalization"]),
        source=dict(description["source"]),
    )
