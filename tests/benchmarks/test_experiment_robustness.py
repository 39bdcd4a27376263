"""The robustness experiment's three parts at toy sizes on the database: each writes its results file,
and compare trains its arms at the alphas the sweep's results file names."""

from __future__ import annotations

import json

import pytest

# three parts of populate jobs (denoisers, about 20 classifiers, noise and attacks): minutes
pytestmark = pytest.mark.slow


def _read(folder, part: str) -> dict:
    return json.loads((folder / f"robustness-{part}-quick.json").read_text())


def test_the_parts_write_their_results_and_compare_reads_the_sweeps_alphas(db, tmp_path):
    from benchmarks import experiment_robustness as experiment
    from schemas.classifiers import ClassifierConfig, ComparisonGroup

    common = ["--quick", "--results", str(tmp_path), "--workers", "2"]
    experiment.main(["--part", "task", *common])
    task = _read(tmp_path, "task")["results"]
    assert [r["seed"] for r in task["baseline"]] == [0] and len(task["convergence"][0]["last"]) == 3
    assert set(task["baselines"]) == {"histogram", "linear_pixels"}
    assert set(task["noise"]) == {"gaussian", "salt_pepper", "uniform"} and task["chance"] == 0.1
    assert {"clean_accuracy", "baseline_margin", "convergence"} <= set(task["criteria"])
    assert (tmp_path / "robustness-task-quick.png").is_file()

    experiment.main(["--part", "sweep", *common])
    sweep = _read(tmp_path, "sweep")
    rows = {(r["arm"], r["alpha"]) for r in sweep["results"]["rows"]}
    assert rows == {("none", 0.0)} | {(arm, a) for arm in ("neural", "teacher") for a in (1.0, 5.0)}
    assert all(sweep["results"]["chosen"][arm] in (None, 1.0, 5.0) for arm in ("neural", "teacher"))
    assert "0.2" in sweep["results"]["invariance"]["target robustness-quick-teacher"]
    assert sweep["task_checks"] == task["criteria"]
    for figure in ("dose", "tradeoff"):
        assert (tmp_path / f"robustness-sweep-quick-{figure}.png").is_file()

    # whatever the sweep chose, compare must train at the alphas its results file names
    sweep["results"]["chosen"] = dict(neural=5.0, teacher=1.0)
    (tmp_path / "robustness-sweep-quick.json").write_text(json.dumps(sweep))
    experiment.main(["--part", "compare", *common])
    compare = _read(tmp_path, "compare")["results"]
    assert compare["alphas"] == dict(neural=5.0, teacher=1.0)
    members = ComparisonGroup.Member * ClassifierConfig & dict(comparison="robustness-quick")
    alphas = {(c, a) for c, a in zip(*members.to_arrays("control", "alpha"))}
    assert alphas == {("none", 0.0), ("neural", 5.0), ("shuffled", 5.0), ("teacher", 1.0)}
    assert set(compare["data"]["arms"]) == {"none", "augmented", "neural", "shuffled", "teacher"}
    questions = compare["endpoints"]["questions"]
    for name, n_secondary in (("positive control", 5), ("neural", 6)):
        primary, secondary = questions[name]["primary"], questions[name]["secondary"]
        assert primary["n"] + primary["excluded"] == 2 and primary["verdict"] in (
            "positive", "negative", "no effect detected", "underpowered"
        )  # fmt: skip
        assert len(secondary) == n_secondary
        assert all("p_holm" in s or "untestable" in s for s in secondary.values())
    assert set(compare["endpoints"]["layer_weights"]) == set(compare["data"]["arms"])
    assert (tmp_path / "robustness-compare-quick.md").read_text().startswith("Alphas from the sweep")
