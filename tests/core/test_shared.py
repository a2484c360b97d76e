"""SharedConceptClustering: equal to scikit-learn's DBSCAN in the one-point-per-participant case,
participant counting, post-expansion, eps sweep, and clear errors."""

import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.datasets import make_blobs
from sklearn.linear_model import Ridge

from napari_brain_concepts.core.concepts.shared import SharedConceptClustering, default_expand_eps
from napari_brain_concepts.core.errors import InputError


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps,min_participants", [(0.02, 2), (0.05, 4), (0.1, 3)])
def test_equals_sklearn_dbscan_with_one_point_per_participant(seed, eps, min_participants):
    points, _ = make_blobs(300, n_features=4, centers=6, cluster_std=1.5, random_state=seed)
    points = _unit(points)
    ref = DBSCAN(eps=eps, min_samples=min_participants + 1, metric="cosine").fit(points)
    ours = SharedConceptClustering(eps=eps, min_participants=min_participants, expand_eps=0).fit(
        points, groups=np.arange(len(points)))
    np.testing.assert_array_equal(ours.core_sample_indices_, np.sort(ref.core_sample_indices_))
    # same partition up to label order (here even the same numbering, as both scan points in order)
    pairs = {(a, b) for a, b in zip(ours.labels_, ref.labels_)}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert ((ours.labels_ == -1) == (ref.labels_ == -1)).all()
    assert ours.n_clusters_ == len(set(ref.labels_) - {-1}) > 0


def test_random_cases_include_border_points():
    """The equivalence above is not vacuous: the cases have several clusters and border points."""
    points = _unit(make_blobs(300, n_features=4, centers=6, cluster_std=1.5, random_state=0)[0])
    ref = DBSCAN(eps=0.02, min_samples=3, metric="cosine").fit(points)
    border = (ref.labels_ >= 0).sum() - len(ref.core_sample_indices_)
    assert border > 5 and len(set(ref.labels_)) > 5


def _planted(n_subjects=5, n_voxels=120, d=64, seed=0):
    """Voxel columns per subject: a shared direction in subjects 0..3, a private one in the last subject."""
    rng = np.random.default_rng(seed)
    shared, private = _unit(rng.normal(size=d)), _unit(rng.normal(size=d))
    weights, truth = {}, {}
    for s in range(n_subjects):
        cols = rng.normal(size=(n_voxels, d))
        where = np.zeros(n_voxels, bool)
        if s < 4:
            where[10 + s: 30 + s] = True
            cols[where] = shared * 10 + rng.normal(scale=0.5, size=(where.sum(), d))
        private_where = np.zeros(n_voxels, bool)
        if s == n_subjects - 1:
            private_where[60:100] = True
            cols[private_where] = private * 10 + rng.normal(scale=0.5, size=(40, d))
        weights[f"s{s}"] = cols.T  # decoder layout: (n_targets, n_voxels)
        truth[f"s{s}"] = (where, private_where)
    return weights, truth, shared, private


def test_finds_the_shared_direction_and_not_the_private_one():
    weights, truth, shared, _ = _planted()
    model = SharedConceptClustering(eps=0.3, min_participants=3).fit(weights)
    assert model.n_clusters_ == 1
    assert model.subjects_ == [f"s{s}" for s in range(5)]
    assert float(model.centroids_[0] @ shared) > 0.98
    assert np.allclose(np.linalg.norm(model.centroids_, axis=1), 1, atol=1e-5)
    for s, (where, private_where) in truth.items():
        np.testing.assert_array_equal(model.memberships_[s][0], where)
        assert not model.memberships_[s][0][private_where].any()
    np.testing.assert_array_equal(model.n_participants_, [4])
    summary = model.summary()
    assert summary.loc[0, "participants"] == "s0,s1,s2,s3"
    assert summary.loc[0, "voxels_s4"] == 0 and summary.loc[0, "n_voxels"] == 80


def test_own_participant_neighbours_do_not_count():
    """A direction carried by 3 participants has only 2 *other* participants: not core at min 3."""
    weights, _, _, _ = _planted()
    three = {k: weights[k] for k in ("s0", "s1", "s2", "s4")}
    assert SharedConceptClustering(eps=0.3, min_participants=3).fit(three).n_clusters_ == 0
    assert SharedConceptClustering(eps=0.3, min_participants=2).fit(three).n_clusters_ == 1


def test_post_expansion_adds_near_voxels_of_the_same_participant():
    rng = np.random.default_rng(3)
    d = 16
    direction = _unit(rng.normal(size=d))
    weights = {}
    for s in range(4):
        cols = rng.normal(size=(50, d))
        cols[:10] = direction + rng.normal(scale=0.02, size=(10, d))
        # voxel 10: cosine distance ~0.2 from the concept, beyond eps=0.1 but within expand_eps=0.3
        other = rng.normal(size=d)
        orthogonal = _unit(other - (other @ direction) * direction)
        cols[10] = 0.8 * direction + 0.6 * orthogonal
        weights[s] = cols.T
    plain = SharedConceptClustering(eps=0.1, min_participants=3, expand_eps=0).fit(weights)
    grown = SharedConceptClustering(eps=0.1, min_participants=3, expand_eps=0.3).fit(weights)
    assert plain.n_clusters_ == grown.n_clusters_ == 1
    for s in plain.subjects_:
        assert not plain.memberships_[s][0][10] and grown.memberships_[s][0][10]
        np.testing.assert_array_equal(plain.memberships_[s][0], plain.subject_labels_[s] == 0)
    np.testing.assert_array_equal(grown.labels_, plain.labels_)
    assert default_expand_eps(0.6) == 0.65 and default_expand_eps(0.7) == 0.65
    assert default_expand_eps(0.5) == pytest.approx(0.55)


def test_eps_sweep_matches_fit_and_grows_with_eps():
    weights, _, _, _ = _planted()
    model = SharedConceptClustering(eps=0.3, min_participants=3).fit(weights)
    sweep = model.eps_sweep([0.1, 0.2, 0.3, 0.5])
    assert list(sweep["eps"]) == [0.1, 0.2, 0.3, 0.5]
    assert (np.diff(sweep["n_core"]) >= 0).all()
    row = sweep[sweep["eps"] == 0.3].iloc[0]
    assert row["n_clusters"] == model.n_clusters_
    assert row["n_core"] == model.core_sample_mask_.sum()
    assert row["n_clustered"] == (model.labels_ >= 0).sum()
    assert model.eps == 0.3 and model.n_clusters_ == 1  # the sweep leaves the fit alone


def test_accepts_fitted_decoders_and_similarity():
    rng = np.random.default_rng(0)
    decoders = {}
    for s in range(4):
        x = rng.normal(size=(60, 30))
        y = x[:, :5] @ rng.normal(size=(5, 8)) + x[:, 5:10] @ np.eye(5, 8)
        decoders[f"p{s}"] = Ridge(alpha=1.0).fit(x, y)
    from_models = SharedConceptClustering(eps=0.5, min_participants=2).fit(decoders)
    from_arrays = SharedConceptClustering(eps=0.5, min_participants=2).fit(
        {k: m.coef_ for k, m in decoders.items()})
    np.testing.assert_array_equal(from_models.labels_, from_arrays.labels_)
    sim = from_models.similarity("p1")
    assert sim.shape == (from_models.n_clusters_, 30)
    assert np.all(np.abs(sim) <= 1 + 1e-5)


def test_zero_columns_are_never_clustered():
    weights, _, _, _ = _planted()
    weights = {k: v.copy() for k, v in weights.items()}
    for v in weights.values():
        v[:, 0] = 0.0
    model = SharedConceptClustering(eps=1.5, min_participants=3).fit(weights)
    for s in model.subjects_:
        assert model.subject_labels_[s][0] == -1 and not model.memberships_[s][:, 0].any()


@pytest.mark.parametrize("eps", [0.0, -0.1, 2.01, 3.0])
def test_eps_outside_0_2_is_an_error(eps):
    weights, _, _, _ = _planted()
    with pytest.raises(InputError, match=r"parameter eps: .* is outside \(0\.0, 2\.0\]"):
        SharedConceptClustering(eps=eps).fit(weights)


def test_eps_of_2_is_allowed():
    weights, _, _, _ = _planted()
    model = SharedConceptClustering(eps=2.0, min_participants=3).fit(weights)
    assert model.n_clusters_ == 1 and (model.labels_ == 0).all()


def test_decoders_of_different_embedding_dimension_are_an_error():
    weights, _, _, _ = _planted()
    weights["s2"] = weights["s2"][:10]
    with pytest.raises(InputError, match="different embedding dimensions .*s2: 10"):
        SharedConceptClustering().fit(weights)


def test_other_bad_input():
    weights, _, _, _ = _planted()
    with pytest.raises(InputError, match=r"min_participants: 5 other participants must share a voxel's concept, but "
                       r"5 participants are given \(4 others\)\. Fix: lower it to at most 4 "
                       r"\(--param shared\.min_participants=4\)"):
        SharedConceptClustering(min_participants=5).fit(weights)
    with pytest.raises(InputError, match="shared concepts: need at least 2 participants, and 1 is given"):
        SharedConceptClustering(min_participants=1).fit({"s1": weights["s1"]})
    with pytest.raises(InputError, match="min_participants"):
        SharedConceptClustering(min_participants=0).fit(weights)
    with pytest.raises(InputError, match="groups"):
        SharedConceptClustering().fit(np.ones((5, 3)))
    bad = dict(weights, s1=np.full((64, 120), np.nan))
    with pytest.raises(InputError, match="participant s1: .*NaN"):
        SharedConceptClustering().fit(bad)
    with pytest.raises(InputError, match="not fitted"):
        SharedConceptClustering().summary()


def _anisotropic(seed=0, n_subjects=4, n_voxels=400, d=48):
    """Noise columns concentrated on 3 axes of a 48-d space (sentence and CLIP embedding spaces are
    this anisotropic), a concept direction off those axes in 10 voxels of every participant, and a
    participant-specific offset shared by all of a participant's voxels."""
    rng = np.random.default_rng(seed)
    scales = np.full(d, 0.1)
    scales[:3] = 3.0
    concept = np.zeros(d)
    concept[3:] = rng.normal(size=d - 3)
    concept = _unit(concept)
    weights, where = {}, {}
    for s in range(n_subjects):
        cols = rng.normal(size=(n_voxels, d)) * scales
        w = np.zeros(n_voxels, bool)
        w[100:110] = True
        cols[w] = 0.2 * cols[w] + concept
        cols += 0.5 * rng.normal(size=d)
        weights[f"s{s}"], where[f"s{s}"] = cols.T, w
    return weights, where, concept


def test_whitening_separates_a_concept_that_anisotropy_hides():
    weights, where, concept = _anisotropic()
    plain = SharedConceptClustering(eps=0.3).fit(weights)
    # without whitening the few dominant axes put every voxel near every other: one cluster of everything
    assert plain.n_clusters_ == 1 and (plain.labels_ >= 0).mean() > 0.9
    assert not all(np.array_equal(plain.memberships_[s][0], where[s]) for s in where)
    white = SharedConceptClustering(eps=0.3, whiten=True).fit(weights)
    found = [k for k in range(white.n_clusters_)
             if all(np.array_equal(white.memberships_[s][k], where[s]) for s in where)]
    assert len(found) == 1
    k = found[0]
    assert white.directions_.shape == (white.n_clusters_, 48)
    assert float(white.directions_[k] @ concept) > 0.95
    assert white.points_.shape[1] == 48 and white.whitening_.shape == (48, 48)
    np.testing.assert_allclose(plain.directions_, plain.centroids_)


def test_whitened_clustering_ignores_linear_changes_of_the_embedding_space():
    weights, _, _ = _anisotropic(seed=1)
    rng = np.random.default_rng(5)
    mix = rng.normal(size=(48, 48)) @ np.diag(np.exp(rng.normal(size=48)))  # invertible, anisotropic
    a = SharedConceptClustering(eps=0.3, whiten=True).fit(weights)
    b = SharedConceptClustering(eps=0.3, whiten=True).fit({s: mix @ w for s, w in weights.items()})
    c = SharedConceptClustering(eps=0.3).fit({s: mix @ w for s, w in weights.items()})
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.n_clusters_ > 0
    assert not np.array_equal(c.labels_, a.labels_)  # plain cosine does depend on it


def test_a_border_voxel_between_two_clusters_is_a_member_of_both():
    angles = np.array([0.0, 0.01, 0.02, 0.03, 0.115, 0.2, 0.21, 0.22, 0.23])
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    model = SharedConceptClustering(eps=0.004, min_participants=3, expand_eps=0).fit(
        points, groups=np.arange(len(points)))
    ref = DBSCAN(eps=0.004, min_samples=4, metric="cosine").fit(points)
    np.testing.assert_array_equal(model.labels_, ref.labels_)
    assert model.labels_[4] == 0 and not model.core_sample_mask_[4]
    middle = model.subjects_[4]
    assert model.memberships_[middle][:, 0].tolist() == [True, True]  # both masks hold it
    np.testing.assert_array_equal(model.n_participants_, [5, 5])


def test_centre_removes_what_all_of_a_participants_voxels_share():
    """A participant-wide offset (as a global signal gives every voxel's pattern), different in each
    participant, pulls all of a participant's columns together and away from the others': nothing is shared.
    Centring each participant's columns (most of them voxels without signal, as in a brain) recovers the two
    planted directions in every participant and leaves the voxels without signal out."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 64))
    weights = {}
    for s in range(4):
        offset = 4 * rng.standard_normal(64)
        cols = np.concatenate([a + 0.1 * rng.standard_normal((20, 64)), b + 0.1 * rng.standard_normal((20, 64)),
                               0.3 * rng.standard_normal((400, 64))])
        weights[f"sub-{s}"] = (cols + offset).T
    plain = SharedConceptClustering(eps=0.15, min_participants=3).fit(weights)
    centred = SharedConceptClustering(eps=0.15, min_participants=3, centre=True).fit(weights)
    assert centred.n_clusters_ == 2
    for s in weights:
        labels = centred.subject_labels_[s]
        assert len(set(labels[:20])) == 1 and len(set(labels[20:40])) == 1 and labels[0] != labels[20] >= 0
    assert plain.n_clusters_ == 0
