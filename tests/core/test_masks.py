"""Voxel masks: planted regions recovered, unplanted concepts left without a mask, batched == loop."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_brain_concepts.core.concepts.masks import VoxelMaskOptimizer, dice, linear_readout
from napari_brain_concepts.core.decoding.prepare import prepare_subject
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder
from napari_brain_concepts.core.errors import InputError

from ._planted_concepts import CONCEPTS, ONLY_IN_FIRST, planted_study


@pytest.fixture(scope="module")
def planted():
    study = planted_study(seed=3)
    data = {}
    for s in study.subject_names:
        p = prepare_subject(study, s, "captions", protocol="sdc", val_fraction=0.3, random_state=0)
        dec = RidgeDecoder(device="cpu").fit(p.X_train, p.Y_train, groups=p.rows_train)
        data[s] = (p, dec)
    # planted concept directions in embedding space: least squares of the embedding on the features
    E = study.stimuli.embeddings["captions"].values
    F = study.truth["features"]
    dirs = np.linalg.lstsq(np.c_[F, np.ones(len(F))], E, rcond=None)[0][:-1]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return study, data, dirs


def _fit(planted, subject, **kw):
    study, data, dirs = planted
    p, dec = data[subject]
    kw.setdefault("n_steps", 400)
    kw.setdefault("burn_in", 150)
    opt = VoxelMaskOptimizer(device="cpu", random_state=0, **kw)
    return opt.fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val), p


def test_planted_regions_recovered_and_unplanted_concept_gets_no_mask(planted):
    study, data, dirs = planted
    for subject in study.subject_names:
        opt, p = _fit(planted, subject)
        sub = study.subject(subject)
        hard = p.voxel_values(opt.hard_masks_)
        for k, concept in enumerate(CONCEPTS):
            region = study.truth["regions"][subject].get(concept)
            if region is None:
                assert concept == ONLY_IN_FIRST and subject != "sub-01"
                assert opt.full_score_[k] < opt.min_decodability
                assert not opt.decodable_[k] and not hard[k].any()
            else:
                assert opt.decodable_[k]
                assert dice(hard[k], sub.from_volume(region)) >= 0.8, (subject, concept)
                # the hard mask alone decodes the concept about as well as all voxels
                assert opt.hard_score_[k] > 0.8 * opt.full_score_[k]
        assert np.all((opt.masks_ >= 0) & (opt.masks_ <= 1))
        assert np.all(opt.best_step_ > opt.burn_in)


def test_batched_equals_per_concept_loop(planted):
    a, _ = _fit(planted, "sub-01", n_steps=60, burn_in=20, eval_every=5)
    b, _ = _fit(planted, "sub-01", n_steps=60, burn_in=20, eval_every=5, batched=False)
    assert np.max(np.abs(a.masks_ - b.masks_)) < 1e-5
    np.testing.assert_array_equal(a.best_step_, b.best_step_)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, atol=1e-5)


def test_batched_equals_per_concept_loop_in_float64(planted):
    # in float64 the rounding of the two matrix-product kernels is far below what Adam could carry
    a, _ = _fit(planted, "sub-01", n_steps=60, burn_in=20, eval_every=5, dtype="float64")
    b, _ = _fit(planted, "sub-01", n_steps=60, burn_in=20, eval_every=5, dtype="float64", batched=False)
    assert np.max(np.abs(a.masks_.astype(np.float64) - b.masks_)) < 1e-10
    np.testing.assert_array_equal(a.best_step_, b.best_step_)
    c, _ = _fit(planted, "sub-01", n_steps=60, burn_in=20, eval_every=5)
    assert np.max(np.abs(a.masks_ - c.masks_)) < 1e-3  # float32 follows the same path


@pytest.mark.parametrize("fill", ["zero", "shuffle"])
def test_linear_readout_equals_decoding_the_masked_input(planted, fill):
    """The read-out algebra (one product with the trials) equals decoding ``m ⊙ X + (1 − m) ⊙ X_π``."""
    study, data, dirs = planted
    p, dec = data["sub-01"]
    kw = dict(n_steps=30, burn_in=10, eval_every=5, device="cpu", fill=fill)
    lin = VoxelMaskOptimizer(**kw).fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    gen = VoxelMaskOptimizer(**kw).fit(p.X_train, p.Y_train, dirs, dec.torch_forward, X_val=p.X_val, Y_val=p.Y_val)
    assert np.max(np.abs(lin.masks_ - gen.masks_)) < 1e-4
    np.testing.assert_allclose(lin.full_score_, gen.full_score_, atol=1e-5)
    # decodability of the unmasked decoder equals a direct Pearson r of the read-outs
    pred = np.maximum(dec.predict(p.X_val) @ dirs.T, 0)
    true = np.maximum(p.Y_val @ dirs.T, 0)
    r = [np.corrcoef(pred[:, k], true[:, k])[0, 1] for k in range(len(dirs))]
    np.testing.assert_allclose(lin.full_score_, r, atol=1e-4)


def test_fit_iter_yields_progress_and_stops_when_closed(planted):
    study, data, dirs = planted
    p, dec = data["sub-01"]
    opt = VoxelMaskOptimizer(n_steps=500, burn_in=10, device="cpu")
    gen = opt.fit_iter(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    first = next(gen)
    assert first.step == "masks" and 0 < first.done < first.total == 500
    gen.close()
    assert not hasattr(opt, "masks_")


def test_bad_input_is_named(planted):
    study, data, dirs = planted
    p, dec = data["sub-01"]
    other = RidgeDecoder(device="cpu").fit(p.X_train[:, :100], p.Y_train)
    with pytest.raises(InputError, match="fitted on 100 voxels"):
        VoxelMaskOptimizer(n_steps=5).fit(p.X_train, p.Y_train, dirs, other, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="no validation trial"):
        VoxelMaskOptimizer(n_steps=5).fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val[:0], Y_val=p.Y_val[:0])
    with pytest.raises(InputError, match="no validation trial"):
        VoxelMaskOptimizer(n_steps=5).fit(p.X_train[:0], p.Y_train[:0], dirs, dec)
    with pytest.raises(InputError, match="directions"):
        VoxelMaskOptimizer(n_steps=5).fit(p.X_train, p.Y_train, dirs[:, :5], dec, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="sparsity"):
        VoxelMaskOptimizer(sparsity=-1).fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="fill"):
        VoxelMaskOptimizer(fill="noise").fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="parameter dtype"):
        VoxelMaskOptimizer(dtype="float16").fit(p.X_train, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="parameter dtype.*linear decoder"):
        VoxelMaskOptimizer(dtype="float64", n_steps=2).fit(p.X_train, p.Y_train, dirs, dec.torch_forward,
                                                           X_val=p.X_val, Y_val=p.Y_val)
    bad = p.X_train.copy()
    bad[3, 7] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        VoxelMaskOptimizer(n_steps=2).fit(bad, p.Y_train, dirs, dec, X_val=p.X_val, Y_val=p.Y_val)
    with pytest.raises(InputError, match="no linear weights"):
        linear_readout(object(), 10)


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(a, np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)


def test_masks_step_writes_nifti_in_subject_space(planted, tmp_path):
    from napari_brain_concepts.core.concepts.basis import ConceptBasis
    from napari_brain_concepts.core.concepts.steps import masks_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    study, data, dirs = planted
    store = ResultsStore.create(tmp_path / "res")
    ctx = AnalysisContext(study, store, params={"masks": {"n_steps": 400, "burn_in": 150}}, device="cpu")
    ctx.state["decoders"] = {s: d for s, (_, d) in data.items()}
    ctx.state["prepared"] = {s: p for s, (p, _) in data.items()}
    basis = ConceptBasis(len(dirs))
    basis.components_ = dirs.astype(np.float32)  # the planted directions stand in for a fitted basis
    ctx.state["concept_basis"], ctx.state["concept_ids"] = basis, list(CONCEPTS)
    run_to_end(masks_step(ctx))
    assert store.is_done("masks")
    scores = store.read_table("mask_scores")
    assert len(scores) == len(CONCEPTS) * len(study.subjects)
    for s in study.subject_names:
        sub = study.subject(s)
        masks = store.masks(s)
        expected = {c for c in CONCEPTS if c in study.truth["regions"][s]}
        assert set(masks) == expected
        img = nib.load(masks["face"])
        assert img.shape == sub.shape
        np.testing.assert_allclose(img.affine, sub.affine)
        vol = np.asarray(img.dataobj)
        assert set(np.unique(vol)) <= {0, 1}
        assert not vol[~sub.mask].any()
        soft = nib.load(store.maps(s)["mask_face"]).get_fdata()
        np.testing.assert_array_equal(vol.astype(bool), (soft >= 0.5) & sub.mask)
    # the step also checks the optimiser on each planted concept's own direction
    direct = store.read_table("mask_truth_directions")
    assert set(direct["subject"]) == set(study.subject_names)
    here = direct[direct["planted_here"]]
    assert (here["dice"] >= 0.8).all(), here[["subject", "planted", "dice"]].to_dict("list")
    assert not direct[~direct["planted_here"]]["has_mask"].any()
    # read out through its mask, each planted concept correlates with its generative feature
    assert here["decodes_concept"].all() and (here["concept_r"] >= 0.6).all(), here["concept_r"].tolist()
    assert not direct[~direct["planted_here"]]["decodes_concept"].any()
    assert direct[~direct["planted_here"]]["concept_r"].isna().all()  # no mask, nothing read out
    # the best read-out over all of a subject's masks includes the concept's own mask
    assert (here["any_mask_r"] >= here["concept_r"] - 1e-9).all()
    assert (here["any_mask_concept"] == "truth-" + here["planted"]).mean() >= 0.9


def test_masks_step_rejects_a_decoder_of_other_voxels(planted, tmp_path):
    from napari_brain_concepts.core.concepts.basis import ConceptBasis
    from napari_brain_concepts.core.concepts.steps import masks_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    study, data, dirs = planted
    ctx = AnalysisContext(study, ResultsStore.create(tmp_path / "res"), params={"masks": {"n_steps": 5}},
                          device="cpu")
    p1 = data["sub-01"][0]
    narrow = RidgeDecoder(device="cpu").fit(p1.X_train[:, :50], p1.Y_train)
    ctx.state["decoders"] = {"sub-01": narrow}
    ctx.state["prepared"] = {"sub-01": p1}
    basis = ConceptBasis(len(dirs))
    basis.components_ = dirs.astype(np.float32)
    ctx.state["concept_basis"], ctx.state["concept_ids"] = basis, list(CONCEPTS)
    with pytest.raises(InputError, match="decoder of subject sub-01.*fitted on 50 voxels"):
        run_to_end(masks_step(ctx))
    with pytest.raises(InputError, match="run the concepts step first"):
        run_to_end(masks_step(AnalysisContext(study, ctx.store, device="cpu")))
