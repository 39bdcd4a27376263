"""The pieces of ``benchmarks/gpu_check.py`` that run in seconds on a CPU, so that the script, which runs
only where a GPU is lent, keeps up with the code it calls.  The whole script's CPU dry run is
``python -m benchmarks.gpu_check --device cpu`` (docs/benchmarks.md, "GPU check")."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


def test_the_similarity_piece_writes_the_same_rows_through_the_device_path_and_the_cpu_path(tmp_path):
    assert gpu_check.similarity_path("cpu", str(tmp_path)) == dict(similarity_max_abs_difference=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu", "device"]


def test_the_worker_piece_needs_a_database_and_says_so(monkeypatch):
    monkeypatch.delenv("DJ_HOST", raising=False)
    assert gpu_check.worker_path("cpu") == dict(worker="skipped: no database configured (DJ_HOST)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run on it")
def test_without_a_gpu_the_check_refuses_cuda_in_one_line_and_names_the_dry_run():
    with pytest.raises(SystemExit, match=r"^cuda:0 is not available here; `--device cpu` checks the script itself$"):
        gpu_check.main(["--device", "cuda:0"])
