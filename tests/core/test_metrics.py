"""Retrieval metrics against hand-computed values and their chance levels."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from napari_brain_concepts.core.decoding.metrics import (
    decoding_scores,
    mindeye_retrieval,
    pairwise_accuracy,
    pearson_per_dimension,
    topk_retrieval,
)
from napari_brain_concepts.core.errors import InputError


def test_topk_by_hand():
    C = np.eye(4)
    pred = np.array([[1, 0, 0, 0], [0.9, 0.5, 0, 0], [0, 0.1, 0.05, 1.0]], float)
    truth = np.array([0, 1, 2])  # ranks 0, 1, 2
    scores = {s.metric: s for s in topk_retrieval(pred, C, truth, ks=(1, 2, 3))}
    assert scores["top1"].value == pytest.approx(1 / 3)
    assert scores["top2"].value == pytest.approx(2 / 3)
    assert scores["top3"].value == pytest.approx(1.0)
    assert scores["top1"].chance == pytest.approx(0.25) and scores["top3"].chance == pytest.approx(0.75)


def test_random_predictions_sit_at_chance():
    rng = np.random.default_rng(0)
    T = rng.standard_normal((400, 16))
    P = rng.standard_normal((400, 16))
    top = topk_retrieval(P, T, np.arange(400), ks=(10,))[0]
    assert abs(top.value - top.chance) < 0.04
    pw = pairwise_accuracy(P, T)
    assert abs(pw.value - 0.5) < 0.03 and pw.chance == 0.5


def test_mindeye_protocol():
    rng = np.random.default_rng(1)
    T = rng.standard_normal((500, 32))
    fwd, bwd = mindeye_retrieval(T + 0.01 * rng.standard_normal(T.shape), T, n_draws=5)
    assert fwd.value == 1.0 and bwd.value == 1.0 and fwd.chance == pytest.approx(1 / 300)
    assert "5 draws of 300" in fwd.detail
    small = mindeye_retrieval(T[:50] + 3 * rng.standard_normal((50, 32)), T[:50])
    assert small[0].chance == pytest.approx(1 / 50) and "fewer than" in small[0].detail
    assert small[0].value < 1.0


def test_pairwise_by_hand_and_repeats_excluded():
    T = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    P = np.array([[1, 0.2, 0], [0, 1, 0.3], [1, 0, 0.2]], float)  # third decodes like the first
    value = pairwise_accuracy(P, T).value
    # pairs (0,1) right; (0,2): r(p0,t0)+r(p2,t2) vs r(p0,t2)+r(p2,t0)
    r = lambda a, b: pearsonr(a, b)[0]  # noqa: E731
    expect = [True, r(P[0], T[0]) + r(P[2], T[2]) > r(P[0], T[2]) + r(P[2], T[0]),
              r(P[1], T[1]) + r(P[2], T[2]) > r(P[1], T[2]) + r(P[2], T[1])]
    assert value == pytest.approx(np.mean(expect))
    with pytest.raises(InputError):
        pairwise_accuracy(P, T, stimulus=np.array([1, 1, 1]))


def test_pearson_per_dimension_and_all_scores():
    rng = np.random.default_rng(2)
    T = rng.standard_normal((60, 5))
    P = T + rng.standard_normal((60, 5))
    r = pearson_per_dimension(P, T)
    np.testing.assert_allclose(r, [pearsonr(P[:, j], T[:, j])[0] for j in range(5)], rtol=1e-5)
    stim = np.repeat(np.arange(20), 3)
    scores = decoding_scores(P, stim, T[:20] * 0 + rng.standard_normal((20, 5)))
    names = [s.metric for s in scores]
    assert names == ["top1", "top5", "top10", "mindeye_brain_to_stimulus", "mindeye_stimulus_to_brain",
                     "pairwise", "pearson_mean"]
    assert all(np.isfinite(s.value) and 0 <= s.chance <= 1 for s in scores)


def test_bad_input():
    with pytest.raises(InputError):
        topk_retrieval(np.ones((3, 4)), np.ones((5, 3)), np.arange(3))
    with pytest.raises(InputError):
        topk_retrieval(np.ones((3, 4)), np.ones((5, 4)), np.array([0, 1, 7]))
    with pytest.raises(InputError):
        mindeye_retrieval(np.full((3, 4), np.nan), np.ones((3, 4)))
