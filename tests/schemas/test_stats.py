"""Stored response statistics against plain numpy and against the simulator's ground truth."""

from __future__ import annotations

import numpy as np

from tests.conftest import SCAN_KEY


def plain_oracle(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Leave-one-out oracle correlation written as loops: each repeat against the mean of the others."""
    trials, others = [], []
    for image in np.unique(image_ids):
        rows = np.flatnonzero(image_ids == image)
        if len(rows) < 2:
            continue
        for r in rows:
            trials.append(responses[r])
            others.append(responses[[o for o in rows if o != r]].mean(axis=0))
    trials, others = np.array(trials), np.array(others)
    return np.array([np.corrcoef(trials[:, u], others[:, u])[0, 1] for u in range(responses.shape[1])])


def test_stored_reliability_matches_numpy_and_ground_truth(trained_models):
    from schemas.recordings import GroundTruth, Scan, fetch_recording
    from schemas.stats import Normalization, Reliability

    recording = fetch_recording(SCAN_KEY)
    test = (recording.tiers == "test") & ~recording.withheld
    expected = plain_oracle(recording.responses[test].astype(np.float64), recording.trial_image_ids[test])
    stored = (Reliability.Unit * Scan.Unit & SCAN_KEY).to_arrays("oracle", order_by="unit_index").astype(float)
    assert np.allclose(stored, expected, atol=1e-6)

    truth = (GroundTruth.Unit * Scan.Unit & SCAN_KEY).to_arrays("reliability", order_by="unit_index")
    r = np.corrcoef(stored, truth.astype(float))[0, 1]
    print(f"oracle correlation vs simulated reliability across units: r = {r:.3f}")
    assert r > 0.7

    stats = Normalization.load(SCAN_KEY)
    train = (recording.tiers == "train") & ~recording.withheld
    std = np.clip(recording.responses[train].astype(np.float64), 0, None).std(axis=0)
    assert np.allclose(stats.response_std, np.maximum(std, 0.01 * std.mean()))
