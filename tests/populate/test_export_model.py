"""``export model``: a trained model leaves the database as a bundle (config JSON, weights, loader)
that a process without DataJoint or database access loads to exactly the same predictions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from populate.cli.main import main
from tests.conftest import REPO

BATCH = 7


def _inputs(image_shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 1, h, w), behaviour (B, 3) and pupil centre (B, 2) in model units, fixed by a seed."""
    generator = torch.Generator().manual_seed(3)
    return (
        torch.randn(BATCH, 1, *image_shape, generator=generator),
        torch.randn(BATCH, 3, generator=generator),
        torch.randn(BATCH, 2, generator=generator),
    )


PROBE = """
import json, sys
import numpy as np, torch
sys.modules["datajoint"] = None  # any import of DataJoint (schemas, populate) fails here
import runpy
bundle = runpy.run_path(sys.argv[1])["load"]()
inputs = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    rates = bundle.model(*inputs)
np.save(sys.argv[3], rates.numpy())
database = [m for m, v in sys.modules.items() if v and m.split(".")[0] in ("datajoint", "schemas", "populate")]
print(json.dumps(dict(summary=bundle.summary(), units=bundle.unit_ids.tolist(), dj=database)))
"""


def test_exported_bundle_predicts_exactly_like_the_database_model(trained_models, tmp_path, capsys):
    from populate import api
    from schemas.models import DatasetConfig, ModelConfig, TrainedModel
    from schemas.recordings import Scan

    key = trained_models["rotation"]
    out = tmp_path / "bundle"
    full = {name: key[name] for name in ("model_hash", "dataset_hash", "trainer_hash", "seed")}
    assert main(["export", "model", json.dumps(full), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "load.py", "weights.pt"]
    assert len((out / "load.py").read_text().splitlines()) < 25
    assert all(isinstance(v, torch.Tensor) for v in torch.load(out / "weights.pt", weights_only=True).values())
    config = json.loads((out / "config.json").read_text())
    assert config["model_hash"] == key["model_hash"] == ModelConfig.load(key).hash
    assert config["source"]["code_version"] == (TrainedModel & key).fetch1("code_version")

    reference = api.load_predictor(key, device="cpu")
    inputs = _inputs(tuple(config["image_shape"]))
    with torch.no_grad():
        expected = reference(*inputs).numpy()
    torch.save(inputs, tmp_path / "inputs.pt")

    # a fresh process that sees only a copy of pipeline/ and cannot reach any database
    alone = tmp_path / "alone"
    shutil.copytree(REPO / "pipeline", alone / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "PIPELINE_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(alone), DJ_HOST="unreachable.invalid", DJ_PORT="1")
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out / "load.py"), str(tmp_path / "inputs.pt"), str(tmp_path / "rates.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=alone,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["dj"] == []
    assert report["units"] == (Scan.Unit & (DatasetConfig & key)).to_arrays("unit_id", order_by="unit_index").tolist()
    assert "rotation encoder" in report["summary"]
    rates = np.load(tmp_path / "rates.npy")
    assert rates.shape == expected.shape and np.array_equal(rates, expected)


def test_export_names_one_model_or_refuses(trained_models, tmp_path, capsys):
    from schemas.models import TrainedModel

    key = trained_models["cnn"]
    full = {name: key[name] for name in ("model_hash", "dataset_hash", "trainer_hash", "seed")}
    prefix = key["model_hash"][:8]
    # other tests of the run may train the same tiny config on other scans: a hash prefix names one
    # model only where one model has it
    sharing = len(TrainedModel & f"model_hash LIKE '{prefix}%'")
    assert main(["export", "model", json.dumps(full), str(tmp_path / "full")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "full" / "config.json").read_text())["source"]["key"] == full
    capsys.readouterr()
    assert main(["export", "model", prefix, str(tmp_path / "prefix")]) == (0 if sharing == 1 else 1)
    if sharing > 1:
        assert f"{sharing} trained models match" in capsys.readouterr().err
        assert not (tmp_path / "prefix").exists()
    capsys.readouterr()
    for text, message in (
        ("no-such-model", "0 trained models match"),
        ("test-cnn:9", "0 trained models match"),
        ("x' OR 1=1 --", "expected MODEL, MODEL:SEED or a JSON key"),
        ("{not json", "not JSON"),
    ):
        assert main(["export", "model", text, str(tmp_path / "refused")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "refused").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["export", "model", json.dumps(full), str(busy)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_a_bundle_of_another_format_is_refused(tmp_path):
    from pipeline.models.bundle import load_bundle

    (tmp_path / "config.json").write_text(json.dumps(dict(format="something-else/9")))
    with pytest.raises(ValueError, match="format 'something-else/9'"):
        load_bundle(tmp_path)
