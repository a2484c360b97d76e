"""The package's error types: InputError survives pickling (parallel workers send it back that way), and an
estimator used before fit raises an error that is both an InputError and scikit-learn's NotFittedError."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from napari_brain_concepts.core.errors import InputError, NotFitted, not_fitted


def test_input_error_survives_a_pickle_round_trip():
    err = InputError("parameter cv", "30 folds for only 20 samples.", "use cv <= 20 or give more samples")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is InputError
    assert str(back) == str(err) == "parameter cv: 30 folds for only 20 samples. Fix: use cv <= 20 or give more samples."
    assert (back.where, back.problem, back.fix) == (err.where, err.problem, err.fix)


def test_not_fitted_is_both_errors_and_survives_pickling():
    class Model:
        pass

    err = not_fitted(Model(), "call fit(Y, Y_hat) first")
    assert isinstance(err, NotFitted) and isinstance(err, InputError) and isinstance(err, NotFittedError)
    assert str(err) == "Model: is not fitted yet. Fix: call fit(Y, Y_hat) first."
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NotFitted and str(back) == str(err)


def test_a_parallel_cross_validation_shows_the_real_message():
    """joblib workers pickle the error of a failed fold back to the caller (before: BrokenProcessPool)."""
    from sklearn.model_selection import cross_val_score

    from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 10)), rng.normal(size=(40, 3))
    with pytest.raises(InputError, match="parameter cv: 30 folds for only 20 samples"):
        cross_val_score(RidgeDecoder(cv=30, device="cpu"), X, Y, cv=2, n_jobs=2, error_score="raise")


def test_importing_the_errors_does_not_import_scikit_learn():
    """The command line imports core.errors at start-up; NotFitted (a NotFittedError) is made on first use."""
    code = ("import sys; import napari_brain_concepts.core.errors as e; assert 'sklearn' not in sys.modules; "
            "e.NotFitted; assert 'sklearn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
