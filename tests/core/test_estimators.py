"""Every estimator of the package follows scikit-learn's conventions: parameters stored as given, so that
``get_params``/``set_params``/``clone`` work, and a clone refits to the same result."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

from napari_brain_concepts.core.alignment.captions import CaptionReconstructor
from napari_brain_concepts.core.alignment.encoding import EncodingModel
from napari_brain_concepts.core.alignment.image_networks import ImageToTextNetwork
from napari_brain_concepts.core.concepts.basis import ConceptBasis
from napari_brain_concepts.core.concepts.masks import VoxelMaskOptimizer
from napari_brain_concepts.core.concepts.shared import SharedConceptClustering
from napari_brain_concepts.core.decoding.contrastive import ContrastiveDecoder
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

# one non-default value per estimator, so a constructor that converts or drops it is caught
ESTIMATORS = [
    (RidgeDecoder, {"alphas": (1.0, 10.0), "cv": 3}),
    (ContrastiveDecoder, {"temperature": 0.05, "n_reruns": 2}),
    (ConceptBasis, {"n_components": 6, "temperature": 0.5, "prune": False}),
    (VoxelMaskOptimizer, {"sparsity": 12.0, "n_steps": 40}),
    (SharedConceptClustering, {"eps": 0.2, "centre": True}),
    (ImageToTextNetwork, {"channels": (8, 16), "epochs": 2}),
    (EncodingModel, {"alphas": (1.0, 100.0), "target_batch_size": 64}),
    (CaptionReconstructor, {"decoder": RidgeDecoder(alphas=(10.0,)), "top_k": 3}),
]


@pytest.mark.parametrize("cls, params", ESTIMATORS, ids=[c.__name__ for c, _ in ESTIMATORS])
def test_params_round_trip_through_clone_and_set_params(cls, params):
    est = cls(**params)
    assert isinstance(est, BaseEstimator)
    got = est.get_params(deep=False)
    for name, value in params.items():
        assert got[name] is value
    twin = clone(est)  # raises if a constructor does not store its arguments as given
    assert type(twin) is cls and twin is not est
    for name, value in params.items():
        if isinstance(value, BaseEstimator):
            assert twin.get_params(deep=False)[name].get_params() == value.get_params()
        else:
            assert twin.get_params(deep=False)[name] == value
    name = next(iter(params))
    assert est.set_params(**{name: params[name]}) is est
    assert cls.__name__ in repr(est)
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(no_such_parameter=1)


def test_a_clone_of_a_fitted_basis_is_unfitted_and_refits_to_the_same_components():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((120, 12)).astype(np.float32)
    Y_hat = (Y + 0.5 * rng.standard_normal(Y.shape)).astype(np.float32)
    basis = ConceptBasis(4, n_iter=30, batch_size=60, prune=False, device="cpu", random_state=3).fit(Y, Y_hat)
    twin = clone(basis)
    assert not hasattr(twin, "components_")
    twin.fit(Y, Y_hat)
    np.testing.assert_array_equal(twin.components_, basis.components_)


# every estimator with a method that needs a fit, and a call of it
UNFITTED_CALLS = [
    (RidgeDecoder, lambda est: est.predict(np.zeros((2, 3)))),
    (ContrastiveDecoder, lambda est: est.predict(np.zeros((2, 3)))),
    (EncodingModel, lambda est: est.predict(np.zeros((2, 3)))),
    (CaptionReconstructor, lambda est: est.predict(np.zeros((2, 3)))),
    (ConceptBasis, lambda est: est.transform(np.zeros((2, 3)))),
    (SharedConceptClustering, lambda est: est.summary()),
]


@pytest.mark.parametrize("cls, call", UNFITTED_CALLS, ids=[c.__name__ for c, _ in UNFITTED_CALLS])
def test_use_before_fit_is_both_our_input_error_and_sklearns_not_fitted_error(cls, call):
    from sklearn.exceptions import NotFittedError

    from napari_brain_concepts.core.errors import InputError

    with pytest.raises(NotFittedError) as err:
        call(cls())
    assert isinstance(err.value, InputError)
    assert str(err.value).startswith(f"{cls.__name__}: is not fitted yet. Fix: call fit(")


REGRESSORS = [(RidgeDecoder, True), (ContrastiveDecoder, False), (EncodingModel, True),
              (CaptionReconstructor, False)]


@pytest.mark.parametrize("cls, single_output", REGRESSORS, ids=[c.__name__ for c, _ in REGRESSORS])
def test_regressors_say_so_in_their_tags(cls, single_output):
    from sklearn.base import is_regressor
    from sklearn.utils import get_tags

    est = cls()
    assert is_regressor(est)
    tags = get_tags(est).target_tags
    assert tags.multi_output and tags.single_output is single_output


def test_caption_reconstructor_scores_like_the_contrastive_decoder():
    """R² of the unit-length decoded embeddings against the unit-length targets."""
    from sklearn.metrics import r2_score
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(60, 5))
    X = Y @ rng.normal(size=(5, 30)) + 0.3 * rng.normal(size=(60, 30))
    rec = CaptionReconstructor(decoder=RidgeDecoder(alphas=(1.0, 10.0), cv=3, device="cpu")).fit(X[:40], Y[:40])
    unit = Y[40:] / np.linalg.norm(Y[40:], axis=1, keepdims=True)
    assert rec.score(X[40:], Y[40:]) == pytest.approx(r2_score(unit, rec.predict(X[40:])), rel=1e-5)
    assert cross_val_score(clone(rec), X, Y, cv=3).mean() > 0.5
