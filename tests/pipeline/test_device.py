"""One device for every make, and torch threads from the CPUs a process may use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.device import configure_threads, cpu_limit, resolve_device
from tests.conftest import SCAN_KEY

REPO = Path(__file__).resolve().parents[2]

# A GPU node as torch sees it, on a machine without one: `torch.cuda.is_available()` says True, so a
# make that chose its own device would pick CUDA and fail ("Torch not compiled with CUDA enabled").
FAKE_GPU_NODE = "import torch\ntorch.cuda.is_available = lambda: True\n"

COMPUTED = (
    "TrainedModel",
    "PredictedResponses",
    "Similarity",
    "TrainedClassifier",
    "NoiseEvaluation",
    "AdversarialEvaluation",
)


def _env(extra_path: Path | None = None, **variables) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_DEVICE", "PIPELINE_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, REPO) if p)
    env.update(variables)
    return env


def _python(code: str, env: dict, prefix: tuple[str, ...] = ()) -> str:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_resolve_device_reads_the_worker_setting(monkeypatch):
    monkeypatch.setenv("PIPELINE_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("PIPELINE_DEVICE", "auto")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("PIPELINE_DEVICE", "cuda:0")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device()


def test_only_the_device_module_chooses_a_device():
    """No other module of pipeline/, schemas/ or populate/ asks torch whether CUDA is there."""
    offenders = []
    for folder in ("pipeline", "schemas", "populate"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            if "cuda.is_available" in text and path != REPO / "pipeline" / "device.py":
                lines = [i + 1 for i, line in enumerate(text.splitlines()) if "cuda.is_available" in line]
                offenders.append(f"{path.relative_to(REPO)}:{lines}")
    assert offenders == []


def test_cpu_limit_reads_cgroup_quotas(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_limit(tmp_path) == affinity


def test_threads_follow_the_affinity_mask_and_the_setting():
    code = "from pipeline.device import configure_threads; print(configure_threads())"
    assert _python(code, _env(), prefix=("taskset", "-c", "0")) == "1"
    assert _python(code, _env(PIPELINE_THREADS="3")) == "3"
    with pytest.raises(ValueError, match="PIPELINE_THREADS"):
        os.environ["PIPELINE_THREADS"] = "many"
        try:
            configure_threads()
        finally:
            del os.environ["PIPELINE_THREADS"]


def test_worker_sets_its_threads_from_the_cpus_it_may_use(db):
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "populate",
            "worker",
            "--tables",
            "Reliability",
            "--idle-exit",
            "0",
            "--poll",
            "0.2",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 threads" in out.stderr


def test_worker_device_cpu_is_obeyed_by_every_make(trained_models, tmp_path):
    """On a node where torch reports a GPU, `worker --device cpu` computes every stage on the CPU."""
    from populate import ingest
    from schemas.classifiers import ClassifierTask, ComparisonGroup, EvaluationConfig
    from schemas.models import Ensemble, TrainedModel, TrainingTask
    from schemas.similarity import ImageSet, SimilarityTask
    from tests.conftest import QUICK_TRAINER, SCAN, tiny_model

    (tmp_path / "sitecustomize.py").write_text(FAKE_GPU_NODE)
    fake = _env(tmp_path)
    assert _python("from pipeline.device import resolve_device; print(resolve_device())", fake) == "cuda"

    def worker(*tables: str) -> None:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "populate",
                "worker",
                "--device",
                "cpu",
                "--idle-exit",
                "2",
                "--poll",
                "0.3",
                "--tables",
                *tables,
            ],
            cwd=REPO,
            env=fake,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0 and " 0 failed" in out.stdout, out.stdout + out.stderr[-3000:]

    # each stage's tasks need the stage before computed, so the worker runs stage by stage
    task = TrainingTask.add(
        model=tiny_model("cnn"),
        dataset=dict(scan=SCAN, image_shape=(18, 32)),
        trainer=QUICK_TRAINER,
        seeds=(7,),
        name="device-test",
    )[0]
    worker("TrainedModel")
    Ensemble.create("device", [task])
    ImageSet.from_scans("device", [SCAN_KEY])
    SimilarityTask.add(
        "device-neural", dict(method="model", block_rows=64, dtype="float32"), image_set="device", ensembles=["device"]
    )
    worker("PredictedResponses", "Similarity")
    ingest.shapes_classes(12, 4, 4, name="shapes-device")
    classifier = ClassifierTask.add(
        dict(width=4, epochs=1, max_steps_per_epoch=3, batch_size=16, pair_batch=4, alpha=5.0),
        "shapes-device",
        neural="device-neural",
        seeds=(0,),
    )[0]
    ComparisonGroup.create("device", [classifier])
    EvaluationConfig.add(
        dict(
            noise_images=20,
            gaussian=(0.0, 0.1),
            salt_pepper=(),
            attack_images=2,
            attack_schedule=(2,),
            invariance_std=(0.1,),
            invariance_images=20,
            invariance_pairs=50,
        ),
        name="device",
    )
    worker("TrainedClassifier", "NoiseEvaluation", "CommonImages", "AdversarialEvaluation")

    from populate.work.jobs import select_tables

    keys = {
        "TrainedModel": task,
        "PredictedResponses": dict(ensemble_name="device"),
        "Similarity": dict(similarity_name="device-neural"),
        "TrainedClassifier": classifier,
        "NoiseEvaluation": classifier,
        "AdversarialEvaluation": classifier,
    }
    for table in select_tables(list(COMPUTED)):
        name = table.__name__
        devices = set((table & keys[name]).to_arrays("device"))
        assert devices == {"cpu"}, (name, devices)
    assert len(TrainedModel & task) == 1
