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
