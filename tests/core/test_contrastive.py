"""ContrastiveDecoder: loss, determinism per seed, rerun averaging, early stopping, retrieval vs an oracle."""

import numpy as np
import pytest
import torch

from napari_brain_concepts.core.decoding.contrastive import ContrastiveDecoder, info_nce
from napari_brain_concepts.core.decoding.metrics import topk_retrieval
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.progress import Progress

FAST = {"lr": 1e-3, "max_iter": 200, "eval_every": 20, "batch_size": 64, "device": "cpu"}


def _problem(n=300, d=8, v=60, noise=5.0, seed=0):
    """Embeddings E (n, d) with responses X = E A + noise, and the Bayes decoder knowing A and the noise."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, d)).astype(np.float32)
    A = rng.standard_normal((d, v)).astype(np.float32)
    X = (E @ A + noise * rng.standard_normal((n, v))).astype(np.float32)
    oracle = np.linalg.solve(A @ A.T / noise ** 2 + np.eye(d), A / noise ** 2)  # posterior mean, (d, v)
    return X, E, oracle


def test_info_nce_by_hand():
    rng = np.random.default_rng(0)
    P, T = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    logits = -(1 - Pn @ Tn.T) / 0.03

    def ce(L):
        L = L - L.max(1, keepdims=True)
        return np.mean(np.log(np.exp(L).sum(1)) - np.diag(L))

    expect = (ce(logits) + ce(logits.T)) / 2
    got = info_nce(torch.tensor(P), torch.tensor(T), 0.03).item()
    assert got == pytest.approx(expect, rel=1e-6)


def test_same_seed_same_decoder_and_reruns_averaged():
    X, E, _ = _problem()
    a = ContrastiveDecoder(n_reruns=2, random_state=3, **FAST).fit(X, E)
    b = ContrastiveDecoder(n_reruns=2, random_state=3, **FAST).fit(X, E)
    c = ContrastiveDecoder(n_reruns=2, random_state=4, **FAST).fit(X, E)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.allclose(a.coef_, c.coef_)
    mean = np.mean([s["weights.0"].numpy() for s in a.networks_], axis=0)
    np.testing.assert_allclose(a.coef_, mean, rtol=1e-6)
    assert a.coef_.shape == (E.shape[1], X.shape[1])
    pred = a.predict(X)
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1, rtol=1e-5)


def test_retrieval_reaches_the_oracle():
    X, E, oracle = _problem(n=2100, noise=6.0, seed=1)
    tr, te = slice(0, 2000), slice(2000, 2100)

    def top1(pred):
        return topk_retrieval(pred, E[te], np.arange(100), ks=(1,))[0].value

    best = top1(X[te] @ oracle.T)
    model = ContrastiveDecoder(n_reruns=1, random_state=0, **{**FAST, "max_iter": 800, "batch_size": 128})
    ours = top1(model.fit(X[tr], E[tr]).predict(X[te]))
    assert 0.3 < best < 0.9  # the problem is neither trivial nor hopeless (chance 1/100)
    assert ours >= 0.9 * best


def test_mlp_averages_normalised_predictions():
    X, E, _ = _problem()
    model = ContrastiveDecoder(architecture="mlp", hidden=32, dropout=0.2, n_reruns=2, random_state=0,
                               **FAST).fit(X, E)
    assert not hasattr(model, "coef_")
    Xt = torch.tensor(X[:7])
    single = [torch.nn.functional.normalize(net(Xt), dim=1) for net in model._networks(torch.device("cpu"))]
    expect = torch.nn.functional.normalize(torch.stack(single).mean(0), dim=1).detach().numpy()
    np.testing.assert_allclose(model.predict(X[:7]), expect, rtol=1e-5, atol=1e-6)
    again = ContrastiveDecoder(architecture="mlp", hidden=32, dropout=0.2, n_reruns=2, random_state=0,
                               **FAST).fit(X, E)
    np.testing.assert_array_equal(again.predict(X[:7]), model.predict(X[:7]))


def test_early_stopping_keeps_the_best_validation_weights():
    X, E, _ = _problem(n=120, noise=8.0)
    model = ContrastiveDecoder(n_reruns=1, random_state=0, patience=2, **{**FAST, "max_iter": 2000,
                                                                          "eval_every": 10}).fit(X, E)
    hist = model.history_
    assert model.n_iter_[0] == min(hist, key=lambda h: h["val_loss"])["iteration"]
    assert hist[-1]["iteration"] < 2000  # stopped early: the tiny training set overfits


def test_without_patience_every_iteration_runs_and_the_last_weights_are_kept():
    """SDC's code trains all iterations and keeps the final weights (the paper preset asks for that)."""
    X, E, _ = _problem(n=120, noise=8.0)
    kwargs = dict(n_reruns=1, random_state=0, **{**FAST, "max_iter": 300, "eval_every": 10})
    model = ContrastiveDecoder(patience=None, **kwargs).fit(X, E)
    assert model.history_[-1]["iteration"] == 300 and model.n_iter_ == [300]
    # the same run stopped by hand at its last iteration: the same weights
    again = ContrastiveDecoder(patience=10 ** 6, **kwargs).fit(X, E)
    assert again.history_[-1]["iteration"] == 300
    best = again.n_iter_[0]
    assert best < 300  # this small set overfits: the best validation loss came earlier
    assert not np.allclose(model.coef_, again.coef_)
    last = ContrastiveDecoder(patience=None, **{**kwargs, "max_iter": best}).fit(X, E)
    np.testing.assert_allclose(last.coef_, again.coef_, rtol=1e-5, atol=1e-6)


def test_fit_iter_progress_close_and_torch_forward():
    X, E, _ = _problem()
    model = ContrastiveDecoder(n_reruns=1, **FAST)
    gen = model.fit_iter(X, E)
    first = next(gen)
    assert isinstance(first, Progress) and first.step == "contrastive"
    gen.close()
    assert not hasattr(model, "networks_")
    model.fit(X, E)
    Xt = torch.tensor(X[:4], requires_grad=True)
    out = model.torch_forward(Xt)
    out[:, 0].sum().backward()
    assert Xt.grad is not None and torch.all(torch.isfinite(Xt.grad))
    np.testing.assert_allclose(model.to_torch_module()(Xt).detach().numpy(), model.predict(X[:4]), rtol=1e-5)


@pytest.mark.parametrize("case", ["nan", "rows", "arch", "tau", "val", "unfitted", "voxels"])
def test_bad_input(case):
    X, E, _ = _problem(n=40)
    with pytest.raises(InputError) as err:
        if case == "nan":
            X[0, 0] = np.nan
            ContrastiveDecoder(**FAST).fit(X, E)
        elif case == "rows":
            ContrastiveDecoder(**FAST).fit(X, E[:-2])
        elif case == "arch":
            ContrastiveDecoder(architecture="cnn", **FAST).fit(X, E)
        elif case == "tau":
            ContrastiveDecoder(temperature=0.0, **FAST).fit(X, E)
        elif case == "val":
            ContrastiveDecoder(**FAST).fit(X, E, X_val=X[:5])
        elif case == "unfitted":
            ContrastiveDecoder(**FAST).predict(X)
        else:
            ContrastiveDecoder(n_reruns=1, **{**FAST, "max_iter": 20}).fit(X, E).predict(X[:, :10])
    assert "Fix:" in str(err.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_the_same_code_path():
    X, E, _ = _problem()
    model = ContrastiveDecoder(n_reruns=1, random_state=0, **{**FAST, "device": "cuda"}).fit(X, E)
    again = ContrastiveDecoder(n_reruns=1, random_state=0, **{**FAST, "device": "cuda"}).fit(X, E)
    np.testing.assert_allclose(model.coef_, again.coef_, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(model.predict(X)))


QUICK = {**FAST, "max_iter": 20, "n_reruns": 1}


def test_predict_takes_a_single_sample():
    """predict validated X with a made-up Y of n rows, which needs n >= 2."""
    X, E, _ = _problem(n=60)
    model = ContrastiveDecoder(**QUICK).fit(X, E)
    one = model.predict(X[:1])
    assert one.shape == (1, E.shape[1])
    np.testing.assert_allclose(one, model.predict(X)[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="data to predict from: X has 10 features, but ContrastiveDecoder is expecting 60 features as input"):
        model.predict(X[:1, :10])
    X[0, 0] = np.nan
    with pytest.raises(InputError, match="before predicting"):
        model.predict(X[:1])


def test_random_state_none_or_a_random_state_as_in_scikit_learn():
    X, E, _ = _problem(n=60)
    fresh = [ContrastiveDecoder(random_state=None, **QUICK).fit(X, E).coef_ for _ in range(2)]
    assert not np.array_equal(fresh[0], fresh[1])  # None: fresh randomness on every fit
    seeded = [ContrastiveDecoder(random_state=np.random.RandomState(5), **QUICK).fit(X, E).coef_ for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])  # equal RandomStates give equal decoders
    gen = ContrastiveDecoder(random_state=np.random.default_rng(5), **QUICK).fit(X, E)
    assert gen.coef_.shape == fresh[0].shape
    with pytest.raises(InputError, match="parameter random_state"):
        ContrastiveDecoder(random_state="seed", **QUICK).fit(X, E)


@pytest.mark.parametrize("shape", ["1d", "one column"])
def test_a_single_target_is_refused(shape):
    """L2-normalising one number per sample gives ±1 for every sample: nothing to learn."""
    X, E, _ = _problem(n=40)
    y = E[:, 0] if shape == "1d" else E[:, :1]
    with pytest.raises(InputError, match=r"parameter Y: .*L2-normalises every row, which turns a single number "
                                         r"into ±1\. Fix: give embeddings \(n_samples, d\) with d >= 2"):
        ContrastiveDecoder(**QUICK).fit(X, y)


def test_score_is_r2_of_the_unit_length_embeddings_and_cross_validation_uses_it():
    from sklearn.base import is_regressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import cross_val_score

    X, E, _ = _problem(n=90)
    model = ContrastiveDecoder(**QUICK).fit(X, E)
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)
    assert model.score(X, E) == pytest.approx(r2_score(unit, model.predict(X)), rel=1e-6)
    assert model.score(X, 3 * E) == pytest.approx(model.score(X, E), rel=1e-6)  # lengths do not count
    with pytest.raises(InputError, match="parameter Y: has 4 columns, the decoder was fitted on 8-d targets"):
        model.score(X, E[:, :4])
    assert is_regressor(model)
    tags = model.__sklearn_tags__().target_tags
    assert tags.multi_output and not tags.single_output
    scores = cross_val_score(ContrastiveDecoder(**QUICK), X, E, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
