"""The findings the demo and the report quote come from the experiments' results files, named beside them."""

from __future__ import annotations

import json

from populate.api import findings


def _interval(mean: float, low: float, high: float, excludes_zero: bool = False) -> dict:
    """A :func:`populate.api.comparison.analyse` interval over five seeds."""
    return dict(mean=mean, low=low, high=high, n=5, excludes_zero=excludes_zero, trustworthy=True, min=low, max=high)


def _write(folder, name: str, record: dict) -> None:
    (folder / name).write_text(json.dumps(record))


def test_each_finding_names_the_command_that_writes_its_absent_results_file(tmp_path):
    assert findings.CORES_FILE in findings.cores(tmp_path) and findings.CORES_COMMAND in findings.cores(tmp_path)
    quote = findings.cell_types(tmp_path)
    assert findings.CELL_TYPES_COMMAND in quote and findings.TYPE_COUNT_COMMAND in quote
    assert findings.ROBUSTNESS_COMMAND in findings.robustness(tmp_path)
    assert findings.RESULTS == findings.REPO / "benchmarks" / "results"


def test_cores_and_cell_types_quote_the_numbers_of_their_files(tmp_path):
    _write(
        tmp_path,
        findings.CORES_FILE,
        dict(
            preset="demo",
            feature_maps=48,
            features=6,
            seeds=[0, 1, 2],
            iterations=1000,
            rotation_test_correlation_mean=0.7631,
            rotation_test_correlation_sd=0.0081,
            cnn_test_correlation_mean=0.7372,
            cnn_test_correlation_sd=0.0064,
            rotation_beats_cnn_seeds="2/3",
        ),
    )
    quote = findings.cores(tmp_path)
    for text in (
        "48 feature maps",
        "3 seeds",
        "0.763 +/- 0.008",
        "0.737 +/- 0.006",
        "2/3 seeds",
        "experiment_cores.json",
    ):
        assert text in quote, quote

    _write(
        tmp_path,
        findings.CELL_TYPES_FILE,
        dict(
            features=6,
            feature_maps=48,
            seeds=list(range(4)),
            rotation_ari_clusters_mean=0.614,
            rotation_ari_clusters_sd=0.091,
            rotation_ensemble_ari_clusters=0.871,
        ),
    )
    quote = findings.cell_types(tmp_path)
    for text in ("6 features x 8 orientations", "ARI 0.61 +/- 0.09", "ARI 0.87 at k = 6", findings.CELL_TYPES_FILE):
        assert text in quote, quote
    assert findings.TYPE_COUNT_COMMAND in quote, "the second file is still absent"
    ensembles = {"celltypes-a": dict(models=10, k=9, ari=0.861), "celltypes-b": dict(models=10, k=8, ari=0.779)}
    _write(tmp_path, findings.TYPE_COUNT_FILE, dict(standard=dict(ensembles=ensembles)))
    quote = findings.cell_types(tmp_path)
    for text in ("2 ensembles of 10 choose 9, 8 types", "ARI 0.86, 0.78", findings.TYPE_COUNT_FILE):
        assert text in quote, quote
    assert "writes it" not in quote


def test_robustness_quotes_the_paired_differences_of_its_file(tmp_path):
    neural_none = dict(
        clean=_interval(-0.098, -0.121, -0.071, excludes_zero=True),
        noise=dict(gaussian={"0": _interval(-0.1, -0.12, -0.07), "0.3": _interval(0.026, -0.0004, 0.052)}),
        median=dict(l2=_interval(-0.03, -0.25, 0.26)),
    )
    neural_shuffled = dict(
        clean=_interval(0.01, -0.02, 0.03), noise=dict(gaussian={}), median=dict(l2=_interval(0.2, 0.1, 0.3, True))
    )
    summary = dict(
        arms=dict.fromkeys(("none", "neural", "shuffled", "lowpass"), {}),
        differences={"neural - none": neural_none, "neural - shuffled": neural_shuffled},
        settings=dict(
            seeds=[0, 1, 2, 3, 4],
            classifier=dict(width=8, patience=3),
            evaluation=dict(attack_images=100, l2_attack="cw"),
        ),
    )
    _write(tmp_path, findings.ROBUSTNESS_FILE, dict(summary=summary, data={}))
    quote = findings.robustness(tmp_path)
    for text in (
        "4 arms x 5 seeds",
        "width 8",
        "100 common images",
        "clean accuracy -0.098 [-0.121, -0.071]",
        "Gaussian 0.3 +0.026 [-0.000, +0.052]",
        "median L2 (cw) -0.03 [-0.25, +0.26]",
        "neural - baseline clean accuracy, neural - shuffled median l2",
        findings.ROBUSTNESS_FILE,
    ):
        assert text in quote, quote
