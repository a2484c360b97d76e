"""RidgeDecoder against scikit-learn's Ridge and a brute-force loop over folds and alphas."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from napari_brain_concepts.core.decoding.ridge import (
    RidgeDecoder,
    _gram_rows,
    _KernelFactor,
    make_folds,
)
from napari_brain_concepts.core.errors import InputError

ALPHAS = np.logspace(-2, 4, 7)
NOISE = np.array([0.1, 1, 3, 10, 30, 100, 300])


def _data(n, p, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) + 3.0
    Y = 0.1 * X @ rng.standard_normal((p, len(NOISE))) + rng.standard_normal((n, len(NOISE))) * NOISE + 5.0
    return X, Y


def _brute_force_scores(X, Y, folds, loo):
    n, t = Y.shape
    scores = np.zeros((len(ALPHAS), t))
    for a, alpha in enumerate(ALPHAS):
        if loo:
            resid = np.empty_like(Y)
            for i in range(n):
                keep = np.delete(np.arange(n), i)
                resid[i] = Y[i] - Ridge(alpha=alpha).fit(X[keep], Y[keep]).predict(X[i:i + 1])[0]
            scores[a] = 1 - (resid ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
            continue
        for tr, va in folds:
            pred = Ridge(alpha=alpha).fit(X[tr], Y[tr]).predict(X[va])
            scores[a] += [r2_score(Y[va][:, j], pred[:, j]) for j in range(t)]
    return scores if loo else scores / len(folds)


@pytest.mark.parametrize("shape", [(40, 90), (90, 25)], ids=["kernel", "primal"])
@pytest.mark.parametrize("loo", [False, True], ids=["kfold", "loo"])
def test_equals_sklearn_and_brute_force(shape, loo):
    X, Y = _data(*shape)
    model = RidgeDecoder(alphas=ALPHAS, cv=5, loo=loo, dtype="float64", device="cpu", random_state=0).fit(X, Y)
    assert model.solver_ == ("kernel" if shape[0] < shape[1] else "primal")
    folds = make_folds(shape[0], 5, None, 0)
    brute = _brute_force_scores(X, Y, folds, loo)
    np.testing.assert_allclose(model.cv_scores_, brute, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[brute.argmax(0)])
    assert len(np.unique(model.best_alphas_)) > 2  # the test data really needs different alphas
    for j, alpha in enumerate(model.best_alphas_):
        ref = Ridge(alpha=alpha).fit(X, Y[:, j])
        np.testing.assert_allclose(model.coef_[j], ref.coef_, rtol=1e-4, atol=1e-10)
        np.testing.assert_allclose(model.intercept_[j], ref.intercept_, rtol=1e-4)
        np.testing.assert_allclose(model.predict(X)[:, j], ref.predict(X), rtol=1e-4)


def test_forced_solvers_agree_and_no_intercept():
    X, Y = _data(50, 60, seed=1)
    kern = RidgeDecoder(alphas=ALPHAS, solver="kernel", dtype="float64", device="cpu", fit_intercept=False).fit(X, Y)
    prim = RidgeDecoder(alphas=ALPHAS, solver="primal", dtype="float64", device="cpu", fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(kern.cv_scores_, prim.cv_scores_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(kern.coef_, prim.coef_, rtol=1e-5, atol=1e-10)
    assert np.all(kern.intercept_ == 0)
    ref = Ridge(alpha=kern.best_alphas_[0], fit_intercept=False).fit(X, Y[:, 0])
    np.testing.assert_allclose(kern.coef_[0], ref.coef_, rtol=1e-4)


def test_groups_keep_repeats_in_one_fold_and_batches_change_nothing():
    X, Y = _data(60, 80, seed=2)
    groups = np.repeat(np.arange(20), 3)
    one = RidgeDecoder(alphas=ALPHAS, dtype="float64", device="cpu").fit(X, Y, groups=groups)
    for tr, va in make_folds(60, 5, groups):
        assert not set(groups[tr]) & set(groups[va])
    many = RidgeDecoder(alphas=ALPHAS, dtype="float64", device="cpu", target_batch_size=2).fit(X, Y, groups=groups)
    np.testing.assert_allclose(one.cv_scores_, many.cv_scores_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one.coef_, many.coef_, rtol=1e-10, atol=1e-12)


def test_float32_matches_float64():
    X, Y = _data(80, 200, seed=3)
    X = (X - X.mean(0)) / X.std(0)
    m64 = RidgeDecoder(alphas=ALPHAS, dtype="float64", device="cpu").fit(X, Y)
    m32 = RidgeDecoder(alphas=ALPHAS, dtype="float32", device="cpu").fit(X, Y)
    assert m32.coef_.dtype == np.float32
    np.testing.assert_array_equal(m32.best_alphas_, m64.best_alphas_)
    np.testing.assert_allclose(m32.predict(X), m64.predict(X), rtol=1e-3, atol=1e-3 * np.abs(Y).max())


def test_torch_forward_is_differentiable_and_matches_predict():
    X, Y = _data(30, 40, seed=4)
    model = RidgeDecoder(alphas=ALPHAS, device="cpu").fit(X, Y)
    Xt = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    out = model.torch_forward(Xt)
    np.testing.assert_allclose(out.detach().numpy(), model.predict(X), rtol=1e-4, atol=1e-3)
    out.sum().backward()
    np.testing.assert_allclose(Xt.grad.numpy()[0], model.coef_.sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.to_torch_module()(Xt).detach().numpy(), out.detach().numpy(), rtol=1e-6)
    assert model.score(X, Y) == pytest.approx(r2_score(Y, model.predict(X)))


def test_fit_iter_reports_progress_and_closes():
    X, Y = _data(30, 40, seed=5)
    model = RidgeDecoder(alphas=ALPHAS, device="cpu")
    gen = model.fit_iter(X, Y)
    first = next(gen)
    assert first.step == "ridge" and first.total > 0
    gen.close()
    assert not hasattr(model, "coef_")


@pytest.mark.parametrize("centre", [True, False], ids=["centred", "uncentred"])
def test_kernel_factorisation_equals_the_explicit_resolvent(centre):
    """U (S + α)⁻¹ Uᵀ = C (C K C + α)⁻¹ C, and its diagonal (leave-one-out) too."""
    X, Y = _data(30, 70, seed=7)
    n = X.shape[0]
    K = _gram_rows(torch.as_tensor(X - X.mean(0) if centre else X))
    C = np.eye(n) - (np.ones((n, n)) / n if centre else 0)
    fac = _KernelFactor.from_kernel(K.clone(), centre)
    assert fac.U.shape == (n, n - 1 if centre else n)
    for alpha in (1e-2, 1.0, 1e3):
        ref = C @ np.linalg.inv(C @ K.numpy() @ C + alpha * np.eye(n)) @ C
        got = fac.U @ fac.solve(alpha, fac.U.T @ torch.as_tensor(Y))
        np.testing.assert_allclose(got.numpy(), ref @ Y, rtol=1e-8, atol=1e-12 * np.abs(ref @ Y).max())
        np.testing.assert_allclose(fac.inv_diag(alpha).numpy(), np.diag(ref), rtol=1e-8)


def test_float32_fit_with_an_alpha_below_the_kernel_rounding_stays_finite():
    """A rank-4 structure at a large scale: the tiniest alpha is below the float32 rounding of the kernel;
    the fit stays finite and scores as the float64 fit does."""
    rng = np.random.default_rng(9)
    Xd = rng.standard_normal((60, 4)) @ rng.standard_normal((4, 200)) * 1e3 + rng.standard_normal((60, 200)) + 5
    Yd = Xd @ rng.standard_normal((200, 3)) * 1e-2 + rng.standard_normal((60, 3))
    Xd, Yd = Xd.astype(np.float32), Yd.astype(np.float32)
    alphas = [1e-6, 1e2, 1e4, 1e6, 1e8]
    for loo in (True, False):
        fit = RidgeDecoder(alphas=alphas, loo=loo, device="cpu").fit(Xd, Yd)
        exact = RidgeDecoder(alphas=alphas, loo=loo, dtype="float64", device="cpu").fit(Xd, Yd)
        assert np.all(np.isfinite(fit.coef_)) and np.all(np.isfinite(fit.cv_scores_))
        assert fit.score(Xd, Yd) == pytest.approx(exact.score(Xd, Yd), abs=1e-3)

@pytest.mark.parametrize("case", ["nan", "inf", "rows", "folds", "alphas", "solver", "features", "unfitted"])
def test_bad_input_is_one_clear_error(case):
    X, Y = _data(20, 10)
    model = RidgeDecoder(alphas=ALPHAS, device="cpu")
    with pytest.raises(InputError) as err:
        if case == "nan":
            X[3, 4] = np.nan
            model.fit(X, Y)
        elif case == "inf":
            Y[1, 0] = np.inf
            model.fit(X, Y)
        elif case == "rows":
            model.fit(X, Y[:-1])
        elif case == "folds":
            RidgeDecoder(cv=5, device="cpu").fit(X[:4], Y[:4])
        elif case == "alphas":
            RidgeDecoder(alphas=[1.0, -1.0], device="cpu").fit(X, Y)
        elif case == "solver":
            RidgeDecoder(solver="cholesky", device="cpu").fit(X, Y)
        elif case == "features":
            model.fit(X, Y).predict(X[:, :5])
        else:
            model.predict(X)
    assert "Fix:" in str(err.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X, Y = _data(60, 120, seed=6)
    cpu = RidgeDecoder(alphas=ALPHAS, dtype="float64", device="cpu").fit(X, Y)
    gpu = RidgeDecoder(alphas=ALPHAS, dtype="float64", device="cuda").fit(X, Y)
    np.testing.assert_array_equal(gpu.best_alphas_, cpu.best_alphas_)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("cv", ["3", 3.0, b"3", True], ids=["text", "float", "bytes", "bool"])
def test_cv_that_is_not_a_number_of_folds_is_one_clear_error(cv):
    """A text has no fold ``split`` (before: TypeError about 'groups'); a float is not a count of folds."""
    X, Y = _data(20, 10)
    with pytest.raises(InputError, match=r"parameter cv: .* is not a number of folds, a splitter or a list of "
                                         r"\(train, test\) index pairs\. Fix: give a whole number of folds"):
        RidgeDecoder(alphas=ALPHAS, cv=cv, device="cpu").fit(X, Y)
    with pytest.raises(InputError, match="parameter cv"):
        RidgeDecoder(alphas=ALPHAS, cv=[1, 2, 3], device="cpu").fit(X, Y)
    fitted = RidgeDecoder(alphas=ALPHAS, cv=np.int64(3), device="cpu").fit(X, Y)  # a numpy integer is a count
    assert fitted.coef_.shape == (Y.shape[1], X.shape[1])


def test_a_1d_target_gives_1d_predictions_as_in_scikit_learn():
    X, Y = _data(40, 12)
    y = Y[:, 2]
    model = RidgeDecoder(alphas=[10.0], dtype="float64", device="cpu").fit(X, y)
    want = Ridge(alpha=10.0).fit(X, y).predict(X[:5])
    assert want.shape == (5,)
    pred = model.predict(X[:5])
    assert pred.shape == (5,)
    np.testing.assert_allclose(pred, want, rtol=1e-8)
    assert model.coef_.shape == (1, 12)
    assert model.score(X, y) == pytest.approx(Ridge(alpha=10.0).fit(X, y).score(X, y), rel=1e-8)
    assert model.fit(X, Y).predict(X[:5]).shape == (5, Y.shape[1])  # a refit on 2D targets is 2D again


@pytest.mark.parametrize("stage", ["predicting", "scoring"])
def test_nan_after_fitting_does_not_say_before_fitting(stage):
    X, Y = _data(20, 10)
    model = RidgeDecoder(alphas=ALPHAS, device="cpu").fit(X, Y)
    X[2, 3] = np.nan
    with pytest.raises(InputError) as err:
        model.predict(X) if stage == "predicting" else model.score(X, Y)
    assert str(err.value) == ("parameter X: contains NaN or Inf (first at row 2, column 3). Fix: remove or fill "
                              f"those values before {stage}.")


def test_a_single_row_is_predicted():
    X, Y = _data(20, 10)
    model = RidgeDecoder(alphas=ALPHAS, device="cpu").fit(X, Y)
    np.testing.assert_allclose(model.predict(X[:1]), model.predict(X)[:1], rtol=1e-6)


def test_sparse_input_is_refused_in_words():
    """numpy reads a scipy sparse matrix as a 0-d object array: the message said 'has 0 dimensions'."""
    from scipy import sparse

    X, Y = _data(20, 10)
    with pytest.raises(InputError, match=r"parameter X: is a sparse csr_matrix; sparse input is not supported"):
        RidgeDecoder(alphas=ALPHAS, device="cpu").fit(sparse.csr_matrix(X), Y)
