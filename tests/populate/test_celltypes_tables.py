"""The issue-33 tables judge each ensemble by the pre-registered criterion, from the results file alone."""

from __future__ import annotations

from benchmarks import celltypes_tables


def _ensemble(k: int, ari: float, homogeneity: float) -> dict:
    curve = [dict(k=kk, ari=0.5 + 0.05 * kk) for kk in range(2, 12)]
    return dict(models=10, k=k, ari=ari, true_k=6, k_curve=curve, homogeneity=homogeneity, completeness=0.8)


def _split(p: float) -> dict:
    return dict(type="complex", units=[20, 12], first_half_p=p, first_half_odds_ratio=9.5)


def test_each_ensemble_gets_the_verdict_of_the_registration():
    record = dict(
        standard=dict(
            ensembles={
                "celltypes-a": _ensemble(k=7, ari=0.86, homogeneity=0.9),
                "celltypes-b": _ensemble(k=9, ari=0.79, homogeneity=0.93),
                "celltypes-c": _ensemble(k=9, ari=0.85, homogeneity=0.85),
            }
        ),
        criteria={
            "celltypes-a": dict(
                splits=dict(k_past_truth=8, before=[_split(0.001)], after=[], after_chosen_k=dict(k=7, types=[]))
            )
        },
    )
    text = celltypes_tables.markdown(record)
    assert "| celltypes-a | 10 | 7 | 0.86 | 0.80 | 0.90 / 0.80 | met | met |" in text, text
    assert "| celltypes-b | 10 | 9 | 0.79 | 0.80 | 0.93 / 0.80 | **not met** | k differs from 6 by more than 1" in text
    assert "| celltypes-c | 10 | 9 | 0.85 | 0.80 | 0.85 / 0.80 | met | **not met** |" in text
    assert "k = 8: complex (20+12): p 0.001, OR 9.5 **p <= 0.05**" in text
    assert "k = 8: no type split | k = 7: no type split |" in text
