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


def test_robustness_quotes_each_questions_primary_endpoint_of_its_file(tmp_path):
    primary = dict(n=8, mean=0.041, sd=0.02, low=0.024, high=0.058, t=5.8, p=0.0007, excluded=0, verdict="positive")
    questions = {
        "positive control": dict(arm="teacher", reference="none", primary=primary),
        "neural": dict(arm="neural", reference="none", untestable="no neural arm"),
    }
    record = dict(
        part="compare",
        settings=dict(compare_seeds=list(range(8)), classifier=dict(width=8, epochs=16)),
        results=dict(
            alphas=dict(neural=None, teacher=2.0),
            endpoints=dict(questions=questions),
            data=dict(arms=dict.fromkeys(("none", "augmented", "teacher"), {})),
        ),
    )
    _write(tmp_path, findings.ROBUSTNESS_FILE, record)
    quote = findings.robustness(tmp_path)
    for text in (
        "3 arms x 8 seeds",
        "width 8, 16 epochs for every arm",
        "alpha chosen on validation: neural none admissible, teacher 2",
        "positive control (teacher) - baseline: +0.041 [+0.024, +0.058], p = 0.0007 (n = 8), positive",
        "neural: not tested (no neural arm)",
        findings.ROBUSTNESS_FILE,
    ):
        assert text in quote, quote


def test_the_core_tables_are_written_from_the_same_results_file():
    from benchmarks import cores_tables

    per_seed = [
        dict(core=core, seed=seed, test_correlation=score, parameters=parameters, ari_clusters=ari)
        for seed, (rotation, cnn, ari) in enumerate([(0.76, 0.74, 0.5), (0.77, 0.73, 0.7), (0.75, 0.76, 0.6)])
        for core, score, parameters in (("rotation", rotation, 8940), ("cnn", cnn, 119328))
    ]
    record = dict(
        seeds=[0, 1, 2],
        per_seed=per_seed,
        rotation_test_correlation_mean=0.76,
        rotation_test_correlation_sd=0.01,
        cnn_test_correlation_mean=0.743,
        cnn_test_correlation_sd=0.015,
        rotation_feve_mean=0.754,
        rotation_feve_sd=0.014,
        cnn_feve_mean=0.7,
        cnn_feve_sd=0.02,
        rotation_ari_types_mean=0.49,
        rotation_ari_types_sd=0.1,
        rotation_ari_clusters_mean=0.6,
        rotation_ari_clusters_sd=0.1,
        rotation_orientation_error_deg_mean=11.04,
        rotation_orientation_error_deg_sd=3.7,
        rotation_ensemble_ari_clusters=0.864,
        rotation_consensus_by_size=[dict(models=2, subsets=3, mean=0.74, sd=0.07, min=0.59, max=0.85)],
    )
    text = cores_tables.markdown(record)
    # a file written before the fraction of oracle was recorded leaves its column blank
    assert "| CNN | 0.743 ± 0.015 (0.740, 0.730, 0.760) |  | 0.700 ± 0.020 | 119,328 | 1 / 3 |" in text, text
    record.update(
        rotation_fraction_oracle_mean=0.912,
        rotation_fraction_oracle_sd=0.02,
        cnn_fraction_oracle_mean=0.873,
        cnn_fraction_oracle_sd=0.031,
    )
    text = cores_tables.markdown(record)
    for row in (
        "| rotation-equivariant | **0.760 ± 0.010** (0.760, 0.770, 0.750) | **0.91 ± 0.02** | **0.754 ± 0.014** "
        "| 8,940 | 2 / 3 |",
        "| CNN | 0.743 ± 0.015 (0.740, 0.730, 0.760) | 0.87 ± 0.03 | 0.700 ± 0.020 | 119,328 | 1 / 3 |",
        "| one model, rotation-invariant clusters (`CellTypes`) | 0.60 ± 0.10 (0.50 to 0.70) |",
        "| consensus of 2 of the 3 models (all 3 subsets) | 0.74 ± 0.07 (0.59 to 0.85) |",
        "| **consensus of all 3 models** (co-association, `clustering.consensus_types`) | **0.86** |",
        "| median error of the preferred orientation, per model | 11.0 ± 3.7 degrees |",
    ):
        assert row in text, text
