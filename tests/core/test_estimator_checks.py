"""scikit-learn's own estimator checks (``check_estimator``) on the project's regressors."""

from __future__ import annotations

import pytest
import sklearn
from sklearn.utils.estimator_checks import check_estimator

from napari_brain_concepts.core.alignment.encoding import EncodingModel
from napari_brain_concepts.core.decoding.contrastive import ContrastiveDecoder
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

# check_estimator(on_fail=None), which reports every check instead of stopping at the first: scikit-learn >= 1.6
pytestmark = pytest.mark.skipif(tuple(int(p) for p in sklearn.__version__.split(".")[:2]) < (1, 6),
                                reason="check_estimator(on_fail=None) needs scikit-learn >= 1.6")


def _failed(estimator) -> dict[str, str]:
    results = check_estimator(estimator, on_fail=None)
    return {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("estimator", [RidgeDecoder(alphas=[0.1, 1.0, 10.0], cv=3, device="cpu"),
                                       EncodingModel(alphas=[0.1, 1.0, 10.0], cv=3, device="cpu")],
                         ids=lambda e: type(e).__name__)
def test_ridge_estimators_pass_every_check(estimator):
    """Every check passes: errors for empty, one-sample, complex, object, 1-D and missing input carry the phrases
    scikit-learn's validation uses (in this package's ``WHERE: PROBLEM. Fix: HOW`` form), predictions keep a
    float64 input's precision, and ``score(X, y)`` takes ``y`` by name."""
    assert _failed(estimator) == {}


@pytest.mark.filterwarnings("ignore")
def test_contrastive_decoder_fails_only_where_a_check_fits_one_target():
    """The contrastive decoder compares directions and refuses a single target column, which most of
    scikit-learn's checks fit; every failing check fails on that refusal, and the others pass."""
    failed = _failed(ContrastiveDecoder(max_iter=20, n_reruns=2, eval_every=5, batch_size=16, device="cpu"))
    assert failed
    # (scikit-learn's positive-only check words the refusal its own way: it names the error's type)
    own = {name: msg for name, msg in failed.items()
           if "has a single column" not in msg and not (name.startswith("check_positive_only") and "InputError" in msg)}
    assert own == {}, own
