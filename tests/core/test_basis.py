"""Concept basis: fits decodable directions, beats PCA of the same size, prunes, orders, checks input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brain_concepts.core.concepts.basis import ConceptBasis
from napari_brain_concepts.core.concepts.truth import match_planted
from napari_brain_concepts.core.decoding.prepare import prepare_subject
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder
from napari_brain_concepts.core.errors import InputError

from ._planted_concepts import CONCEPTS, planted_study


@pytest.fixture(scope="module")
def pairs():
    study = planted_study(seed=1, n_stimuli=240)
    out = {"study": study, "val": [], "test": []}
    for s in study.subject_names:
        p = prepare_subject(study, s, "captions", protocol="sdc", val_fraction=0.4, random_state=0)
        dec = RidgeDecoder(device="cpu").fit(p.X_train, p.Y_train, groups=p.rows_train)
        out["val"].append((p.Y_val, dec.predict(p.X_val), p.rows_val))
        out["test"].append((dec.predict(p.X_test), p.rows_test, np.r_[p.rows_train, p.rows_val]))
    Y, Yh, g = (np.concatenate(x) for x in zip(*out["val"]))
    out["Y"], out["Y_hat"], out["groups"] = Y, Yh, g
    return out


@pytest.fixture(scope="module")
def basis(pairs):
    return ConceptBasis(8, n_iter=250, learning_rate=3e-3, device="cpu", random_state=0).fit(
        pairs["Y"], pairs["Y_hat"], groups=pairs["groups"])


def test_basis_keeps_retrieval_and_beats_pca(pairs, basis):
    E = pairs["study"].stimuli.embeddings["captions"].values
    for Y_hat, rows, fit_rows in pairs["test"]:
        cand = np.unique(rows)
        table = basis.retrieval_table(E[cand], Y_hat, np.searchsorted(cand, rows), E[np.unique(fit_rows)])
        t = table.set_index("space")
        assert t.loc["basis", "n_dims"] == t.loc["pca", "n_dims"] == basis.n_concepts_
        # the embedding's largest variance ("style") is not in the brain: PCA spends its dimensions on it
        assert t.loc["basis", "top5"] >= 0.9 * t.loc["full", "top5"]
        # also against the full space centred as PCA centres it (cosine retrieval gains from centring)
        assert t.loc["full_centred", "top5"] >= t.loc["full", "top5"]
        assert t.loc["basis", "top5"] >= 0.9 * t.loc["full_centred", "top5"]
        assert t.loc["basis", "top5"] > t.loc["pca", "top5"] + 0.05
        assert t.loc["full", "top5"] > 1.5 * t.loc["full", "top5_chance"]


def test_components_are_unit_rows_in_cluster_order_and_match_planted_concepts(pairs, basis):
    C = basis.components_
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-5)
    assert C.shape == (basis.n_concepts_, 48)
    assert len(basis.order_) + len(basis.pruned_) == 8
    np.testing.assert_allclose(C, basis.weights_[basis.order_] /
                               np.linalg.norm(basis.weights_[basis.order_], axis=1, keepdims=True), atol=1e-6)
    from scipy.cluster.hierarchy import leaves_list
    assert len(leaves_list(basis.linkage_)) == basis.n_concepts_
    study = pairs["study"]
    E = study.stimuli.embeddings["captions"].values
    acts = basis.transform(E)
    assert acts.shape == (len(E), basis.n_concepts_)
    assert acts.min() >= -0.05 * np.abs(E @ C.T).max() - 1e-6  # leaky ReLU, slope 0.05
    matches = match_planted(study, acts, [f"c{k}" for k in range(basis.n_concepts_)])
    assert set(matches["planted"]) == set(CONCEPTS)
    assert matches["r"].min() > 0.5
    assert matches["concept"].is_unique


def test_skew_weight_is_checked(pairs):
    """The skewness reward's effect is shown on the default synthetic study (test_concepts_default_study)."""
    with pytest.raises(InputError, match="skew_weight"):
        ConceptBasis(4, skew_weight=-1.0).fit(pairs["Y"], pairs["Y_hat"])


def test_pruning_drops_components_that_add_nothing(pairs):
    kw = dict(n_iter=300, learning_rate=2e-3, device="cpu", random_state=0)
    full = ConceptBasis(24, prune=False, **kw).fit(pairs["Y"], pairs["Y_hat"], groups=pairs["groups"])
    pruned = ConceptBasis(24, prune=True, **kw).fit(pairs["Y"], pairs["Y_hat"], groups=pairs["groups"])
    assert full.n_concepts_ == 24 and len(full.pruned_) == 0
    assert 0 < pruned.n_concepts_ < 24
    np.testing.assert_array_equal(np.sort(np.r_[pruned.order_, pruned.pruned_]), np.arange(24))
    np.testing.assert_allclose(full.weights_, pruned.weights_)  # same training, pruning only after


def test_same_seed_same_basis_and_progress_can_stop(pairs):
    kw = dict(n_iter=50, learning_rate=2e-3, device="cpu", random_state=5, prune=False)
    a = ConceptBasis(6, **kw).fit(pairs["Y"], pairs["Y_hat"])
    b = ConceptBasis(6, **kw).fit(pairs["Y"], pairs["Y_hat"])
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.loss_curve_[-1] < a.loss_curve_[0]
    c = ConceptBasis(6, **kw)
    gen = c.fit_iter(pairs["Y"], pairs["Y_hat"])
    p = next(gen)
    assert p.step == "concepts" and p.done < p.total
    gen.close()
    assert not hasattr(c, "components_")


def test_bad_input_is_named(pairs):
    Y, Yh = pairs["Y"], pairs["Y_hat"]
    with pytest.raises(InputError, match="larger than the embedding dimension 48"):
        ConceptBasis(49).fit(Y, Yh)
    with pytest.raises(InputError, match="empty"):
        ConceptBasis(4).fit(Y[:0], Yh[:0])
    with pytest.raises(InputError, match="decoded ones"):
        ConceptBasis(4).fit(Y, Yh[:, :10])
    with pytest.raises(InputError, match="n_components"):
        ConceptBasis(0).fit(Y, Yh)
    with pytest.raises(InputError, match="not fitted"):
        ConceptBasis(4).transform(Y)
    b = ConceptBasis(4, n_iter=5, device="cpu", prune=False).fit(Y, Yh)
    with pytest.raises(InputError, match="expected"):
        b.transform(Y[:, :10])


def test_concepts_step_writes_basis_retrieval_names_and_truth(tmp_path):
    from napari_brain_concepts.core.concepts.steps import concepts_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    study = planted_study(seed=4, n_stimuli=120)
    store = ResultsStore.create(tmp_path / "res")
    ctx = AnalysisContext(study, store, params={"concepts": {"n_components": 6, "n_iter": 60,
                                                             "learning_rate": 3e-3}}, device="cpu")
    ctx.state["decoders"], ctx.state["prepared"] = {}, {}
    for s in study.subject_names:
        p = prepare_subject(study, s, "captions", protocol="sdc", val_fraction=0.3, random_state=0)
        ctx.state["prepared"][s] = p
        ctx.state["decoders"][s] = RidgeDecoder(device="cpu").fit(p.X_train, p.Y_train)
    run_to_end(concepts_step(ctx))
    assert store.is_done("concepts")
    ids = ctx.state["concept_ids"]
    arrays = store.read_arrays("concept_basis")
    np.testing.assert_array_equal(arrays["components"], ctx.state["concept_basis"].components_)
    assert list(arrays["concept_ids"]) == ids
    retrieval = store.read_table("concept_retrieval")
    assert set(retrieval["space"]) == {"full", "full_centred", "basis", "pca"}
    assert set(retrieval["subject"]) == set(study.subject_names) | {"mean"}
    assert set(store.read_table("concept_names")["concept"]) == set(ids)
    assert all(store.figure_path(f"concept_{c}").is_file() for c in ids)
    truth = store.read_table("concept_truth")
    assert set(truth["planted"]) == set(CONCEPTS) and set(truth["concept"]) <= set(ids)
    # results opened later: the stimulus scores of every concept, as the step named them
    from napari_brain_concepts.core.concepts.steps import saved_concept_scores

    concepts, scores = saved_concept_scores(ResultsStore.open(store.root), study)
    assert concepts == ids
    np.testing.assert_allclose(scores, ctx.state["concept_names"].scores, rtol=1e-5, atol=1e-6)

    ctx.state["decoders"].clear()
    with pytest.raises(InputError, match="run the decode step first"):
        run_to_end(concepts_step(ctx))


def test_concepts_step_on_held_out_pairs(tmp_path):
    """pairs="held-out" adds every training trial, decoded by a clone of its subject's decoder fitted on the
    other folds (grouped by stimulus), to the validation pairs; bad pairs / fold parameters are named."""
    from napari_brain_concepts.core.concepts.steps import concepts_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    study = planted_study(seed=4, n_stimuli=120)
    params = {"n_components": 6, "n_iter": 60, "learning_rate": 3e-3, "contact_sheets": False}

    def run(**extra):
        ctx = AnalysisContext(study, ResultsStore.create(tmp_path / f"res{len(extra)}{extra.get('held_out_folds', '')}",
                                                         overwrite=True),
                              params={"concepts": {**params, **extra}}, device="cpu")
        ctx.state["decoders"], ctx.state["prepared"] = {}, {}
        for s in study.subject_names:
            p = prepare_subject(study, s, "captions", protocol="sdc", val_fraction=0.3, random_state=0)
            ctx.state["prepared"][s] = p
            ctx.state["decoders"][s] = RidgeDecoder(alphas=[10.0, 1000.0], device="cpu").fit(p.X_train, p.Y_train)
        reports = []
        run_to_end(concepts_step(ctx), reports.append)
        return ctx, reports

    val, _ = run()
    held, reports = run(pairs="held-out")
    prepared = held.state["prepared"].values()
    assert val.state["concept_pairs"] == sum(len(p.X_val) for p in prepared)
    assert held.state["concept_pairs"] == sum(len(p.X_val) + len(p.X_train) for p in prepared)
    assert any("held out of fold 5" in r.message for r in reports)
    assert held.store.is_done("concepts")
    with pytest.raises(InputError, match="held_out_folds"):
        run(pairs="held-out", held_out_folds=1)
    with pytest.raises(InputError, match="pairs"):
        run(pairs="training")
