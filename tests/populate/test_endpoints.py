"""The registered endpoints of a collected comparison: paired t on relative accuracy, Holm within a question,
the verdict, seeds one arm lacks counted as excluded, the positive control's invariance condition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from populate.api import endpoints

STRENGTHS = [0.0, 0.1, 0.2]


def _arm(seeds, clean, at_01, at_02, distances=None) -> dict:
    """A collected arm (populate.api.comparison.collect) with Gaussian noise and, optionally, l2 distances."""
    accuracy = [[c, a, b] for c, a, b in zip(clean, at_01, at_02)]
    arm = dict(seeds=list(seeds), noise=dict(gaussian=dict(strengths=STRENGTHS, accuracy=accuracy)), distances={})
    if distances is not None:
        arm["distances"]["l2"] = dict(images=[3, 7, 9], distance=distances)
        arm["distances"]["linf"] = dict(images=[], distance=[[] for _ in seeds])
    arm["layer_weights"] = [dict(layer3=0.5 + 0.1 * s, layer4=0.5 - 0.1 * s) for s in seeds]
    return arm


def _arms() -> dict:
    seeds = range(4)
    none = _arm(seeds, [0.9, 0.8, 0.9, 0.8], [0.45, 0.48, 0.54, 0.4], [0.3, 0.2, 0.3, 0.2], [[1.0, 2.0, 3.0]] * 4)
    teacher = _arm(seeds, [0.9, 0.8, 0.9, 0.8], [0.63, 0.56, 0.72, 0.6], [0.3, 0.4, 0.5, 0.3], [[2.0, 2.0, np.inf]] * 4)
    neural = _arm([0, 1, 2], [0.9, 0.8, 0.9], [0.45, 0.4, 0.45], [0.2, 0.2, 0.2])
    return dict(none=none, teacher=teacher, neural=neural)


def test_the_primary_endpoint_is_a_paired_t_test_of_relative_accuracy_with_its_verdict():
    result = endpoints.endpoints(dict(arms=_arms(), targets={}))
    primary = result["questions"]["positive control"]["primary"]
    teacher, none = np.array([0.7, 0.7, 0.8, 0.75]), np.array([0.5, 0.6, 0.6, 0.5])
    expected = stats.ttest_rel(teacher, none)
    assert primary["mean"] == pytest.approx(0.1875) and primary["p"] == pytest.approx(expected.pvalue)
    assert primary["n"] == 4 and primary["excluded"] == 0 and primary["verdict"] == "positive"
    sd = np.std(teacher - none, ddof=1)
    assert primary["detectable"] == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * sd / 2)


def test_secondary_endpoints_are_holm_corrected_within_the_question_and_missing_data_is_named():
    secondary = endpoints.endpoints(dict(arms=_arms(), targets={}))["questions"]["positive control"]["secondary"]
    tested = {name: entry for name, entry in secondary.items() if "p" in entry}
    assert set(tested) == {"relative accuracy, gaussian 0.2", "median minimal l2 perturbation"}
    low, high = sorted(tested.values(), key=lambda e: e["p"])
    assert low["p_holm"] == pytest.approx(min(1, 2 * low["p"])) and low["family"] == 2
    assert high["p_holm"] == pytest.approx(max(low["p_holm"], high["p"]))
    # per image teacher - none is (1, 0, inf): the median per seed is 1, every seed alike
    assert tested["median minimal l2 perturbation"]["mean"] == 1.0
    assert (
        "salt_pepper noise at 0.05 and 0: not both evaluated"
        in secondary["relative accuracy, salt_pepper 0.05"]["untestable"]
    )
    linf = secondary["median minimal linf perturbation"]["untestable"]
    assert linf == "linf attack: no common images (no test image every member classifies correctly)"


def test_a_seed_one_arm_lacks_is_excluded_and_counted_and_a_missing_arm_is_untestable():
    result = endpoints.endpoints(dict(arms=_arms(), targets={}))
    neural = result["questions"]["neural"]
    assert neural["primary"]["n"] == 3 and neural["primary"]["excluded"] == 1
    assert neural["secondary"]["neural - shuffled, relative accuracy, gaussian 0.1"] == dict(
        untestable="no shuffled arm", n=0
    )
    arms = _arms()
    del arms["teacher"]
    assert (
        endpoints.endpoints(dict(arms=arms, targets={}))["questions"]["positive control"]["untestable"]
        == "no teacher arm"
    )
    assert result["upper_bound"] is None
    assert result["layer_weights"]["neural"] == pytest.approx(dict(layer3=0.6, layer4=0.4))


def test_the_positive_control_transfers_only_with_a_more_invariant_target():
    arms = _arms()
    arms["none"]["invariance"] = dict(noise_std=[0.1, 0.2], correlation=[[0.99, 0.94], [0.98, 0.92]] + [[1, 0.93]] * 2)
    for target, transfers in ((0.98, True), (0.9, False)):
        data = dict(arms=arms, targets={"teacher-target": {"0.1": 0.99, "0.2": target}})
        control = endpoints.endpoints(data, teacher_target="teacher-target")["questions"]["positive control"]
        assert control["invariance"]["baseline_network"] == pytest.approx(0.93)
        assert control["invariance"]["more_invariant"] is transfers and control["transfers"] is transfers
    control = endpoints.endpoints(dict(arms=arms, targets={}), teacher_target="absent")["questions"]["positive control"]
    assert control["invariance"] is None and control["transfers"] is False
