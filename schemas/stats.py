"""Response statistics of each scan: per-unit reliability and the normalisation the models use."""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline import stats
from pipeline.stats import finite_or
from schemas.binding import StageSchema
from schemas.readiness import require
from schemas.recordings import Scan, fetch_recording

schema = StageSchema("stats")


def _scan_test_responses(key) -> tuple[np.ndarray, np.ndarray]:
    """Responses (n_test_trials, n_units) and image ids of the non-withheld test trials of one scan."""
    rows, image_ids = (Scan.Trial & key & "tier = 'test'" & dict(withheld=False)).to_arrays(
        "response_row", "image_id", order_by="trial"
    )
    matrix = (Scan.Responses & key).fetch1("matrix").load(mmap_mode="r")
    return np.asarray(matrix[rows.astype(np.int64)]), image_ids.astype(np.int64)


@schema
class Reliability(dj.Computed):
    definition = """
    # trial-to-trial reliability of each unit, from the repeated test images
    -> Scan
    ---
    n_repeated_images: int32            # test images shown at least twice
    mean_repeats: float32               # mean number of repeats of those images
    mean_oracle: float64                # mean over units of the oracle correlation
    mean_explainable_variance: float64  # mean over units of the fraction of explainable variance
    """

    class Unit(dj.Part):
        definition = """
        -> master
        -> Scan.Unit
        ---
        oracle: float64                 # leave-one-out oracle correlation
        explainable_variance: float64   # fraction of variance that is stimulus-driven
        snr: float64                    # std of repeat means / std of trial-to-trial noise
        """

    def make(self, key):
        responses, image_ids = _scan_test_responses(key)
        groups = stats.repeat_groups(image_ids)
        if groups.n_groups < 2:
            raise ValueError(f"scan {key}: fewer than two test images are repeated; reliability is undefined")
        oracle = stats.oracle_correlation(responses, image_ids)
        fev = stats.explainable_variance(responses, image_ids)
        snr = stats.signal_to_noise(responses, image_ids)
        unit_ids = (Scan.Unit & key).to_arrays("unit_id", order_by="unit_index")
        self.insert1(
            dict(
                key,
                n_repeated_images=groups.n_groups,
                mean_repeats=float(groups.counts.mean()),
                mean_oracle=float(np.nanmean(oracle)),
                mean_explainable_variance=float(np.nanmean(fev)),
            )
        )
        # A unit silent on every test trial has no defined correlation; store 0, the no-information value.
        self.Unit.insert(
            dict(
                key,
                unit_id=int(u),
                oracle=finite_or(o, 0.0),
                explainable_variance=finite_or(f, 0.0),
                snr=finite_or(s, 0.0),
            )
            for u, o, f, s in zip(unit_ids, oracle, fev, snr)
        )


@schema
class Normalization(dj.Computed):
    definition = """
    # constants mapping a scan's data to model units, from its training trials
    -> Scan
    ---
    image_mean: float64                 # grey levels
    image_std: float64                  # grey levels
    response_mean: <blob>               # (n_units,) by unit_index
    response_std: <blob>                # (n_units,) by unit_index, floored at 1 percent of the mean std
    behavior_mean: <blob>               # (3,) pupil size, its change, running speed
    behavior_std: <blob>                # (3,)
    pupil_center_mean: <blob>           # (2,)
    pupil_center_std: <blob>            # (2,)
    """

    def make(self, key):
        result = stats.normalization_stats(fetch_recording(key))
        self.insert1(dict(key, **{k: getattr(result, k) for k in result.to_dict()}))

    @classmethod
    def load(cls, key) -> stats.NormalizationStats:
        row = require(cls(), key).fetch1()
        return stats.NormalizationStats(**{k: row[k] for k in stats.NormalizationStats.__dataclass_fields__})
