"""Encoding models, and the embed / rsa / encode steps on the synthetic study with its planted truth."""

import numpy as np
import pytest
from scipy import stats

from napari_brain_concepts.core.alignment import steps
from napari_brain_concepts.core.alignment.encoding import (
    EncodingModel,
    pearson_columns,
    voxel_noise_ceiling,
)
from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.io.volumes import load_nifti
from napari_brain_concepts.core.progress import run_to_end


def test_encoding_model_scores_held_out_voxels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8))
    W = rng.normal(size=(8, 30))
    W[:, 20:] = 0.0  # voxels 20.. carry no signal
    Y = X @ W + rng.normal(size=(120, 30))
    model = EncodingModel(alphas=np.logspace(-2, 4, 7), cv=4, device="cpu").fit(X[:90], Y[:90])
    assert model.coef_.shape == (30, 8) and model.best_alphas_.shape == (30,)
    r = model.score_voxels(X[90:], Y[90:])
    for v in (0, 25):
        want = stats.pearsonr(model.predict(X[90:])[:, v], Y[90:, v]).statistic
        assert r[v] == pytest.approx(want, abs=1e-6)
    assert r[:20].mean() > 0.6 > np.abs(r[20:]).mean()
    assert np.median(model.best_alphas_[20:]) > np.median(model.best_alphas_[:20])  # noise: shrink more


def test_predict_map_needs_an_encoder_and_matching_dimensions():
    rng = np.random.default_rng(1)
    model = EncodingModel(alphas=[1.0, 10.0], cv=3, device="cpu").fit(rng.normal(size=(30, 4)),
                                                                        rng.normal(size=(30, 5)))
    with pytest.raises(InputError, match="encoder"):
        model.predict_map("a dog")

    class Words:
        def encode(self, texts):
            return np.ones((len(texts), 7))

    model.encoder = Words()
    with pytest.raises(InputError, match="7-d embeddings"):
        model.predict_map("a dog")
    with pytest.raises(InputError, match="is not fitted"):
        EncodingModel().predict(np.zeros((2, 4)))


def test_voxel_noise_ceiling_recovers_the_planted_reliability():
    rng = np.random.default_rng(2)
    n_stim, reps = 3000, 3
    signal_sd = np.array([0.0, 0.5, 1.0, 2.0])
    signal = rng.normal(size=(n_stim, 1)) * signal_sd
    stim = np.repeat(np.arange(n_stim), reps)
    resp = signal[stim] + rng.normal(size=(n_stim * reps, 4))
    ceiling, ncsnr = voxel_noise_ceiling(resp, stim)
    np.testing.assert_allclose(ncsnr[1:], signal_sd[1:], rtol=0.15)
    assert ncsnr[0] < 0.15
    want = np.sqrt(signal_sd**2 / (signal_sd**2 + 1 / reps))
    np.testing.assert_allclose(ceiling[1:], want[1:], atol=0.05)
    none, _ = voxel_noise_ceiling(resp[:n_stim], np.arange(n_stim))
    assert np.all(np.isnan(none))


def test_the_encoding_noise_ceiling_does_not_count_session_offsets_as_noise():
    """Method review: the ceiling was computed from raw responses, so with each repeat in another session the
    sessions' offsets and scales counted as noise (0.73 instead of 0.87) and r / ceiling came out too high."""
    from napari_brain_concepts.core.alignment.encoding import fit_encoding
    from napari_brain_concepts.core.study import Embedding, Stimuli, Study, Subject

    rng = np.random.default_rng(0)
    n_stim, n_vox, n_sess = 300, 20, 3
    signal = rng.normal(size=(n_stim, n_vox))
    stim = np.tile(np.arange(n_stim), n_sess)  # every stimulus once in each session
    sessions = np.repeat(np.arange(n_sess), n_stim)
    clean = signal[stim] + 0.5 * rng.normal(size=(len(stim), n_vox))
    offsets, scales = rng.normal(0, 1.0, (n_sess, n_vox)), rng.uniform(0.7, 1.5, (n_sess, n_vox))
    ids = np.array([f"s{i}" for i in range(n_stim)], dtype=object)
    stimuli = Stimuli(ids=ids, captions=[["x"]] * n_stim, test=np.arange(n_stim) < 100,
                      embeddings={"e": Embedding("e", rng.normal(size=(n_stim, 4)).astype(np.float32))})
    ceilings = []
    for resp in (clean, clean * scales[sessions] + offsets[sessions]):
        subject = Subject("s1", resp.astype(np.float32), np.ones((n_vox, 1, 1)), np.eye(4), ids[stim],
                          sessions=sessions)
        study = Study("t", stimuli, {"s1": subject})
        ceilings.append(run_to_end(fit_encoding(study, "s1", "e")).noise_ceiling)
    true = np.sqrt(1.0 / (1.0 + 0.25 / n_sess))  # signal variance 1, noise 0.25, 3 repeats averaged
    assert np.mean(ceilings[0]) == pytest.approx(true, abs=0.02)
    np.testing.assert_allclose(ceilings[1], ceilings[0], atol=0.02)


def test_pearson_columns_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    want = [stats.pearsonr(a[:, k], b[:, k]).statistic for k in range(3)]
    np.testing.assert_allclose(pearson_columns(a, b), want, atol=1e-12)


def test_row_count_message_calls_x_the_embedding_and_y_the_responses():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 5))
    with pytest.raises(InputError) as err:
        EncodingModel(alphas=[1.0], cv=3, device="cpu").fit(X[:-1], Y)
    assert str(err.value) == ("parameters X and Y: have 29 and 30 rows. Fix: give one row of Y (responses) per row "
                              "of X (embedding), in the same order.")
    model = EncodingModel(alphas=[1.0], cv=3, device="cpu").fit(X, Y)
    with pytest.raises(InputError, match=r"data to predict from: X has 3 features, but EncodingModel is expecting 4 features as input\. Fix: give "
                                         r"embeddings of the same space as in fit"):
        model.predict(X[:, :3])


def test_score_is_r2_over_voxels_and_the_model_is_a_multi_output_regressor():
    from sklearn.base import is_regressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 4))
    Y = X @ rng.normal(size=(4, 6)) + rng.normal(size=(60, 6))
    model = EncodingModel(alphas=[1.0, 10.0], cv=3, device="cpu").fit(X[:40], Y[:40])
    assert model.score(X[40:], Y[40:]) == pytest.approx(r2_score(Y[40:], model.predict(X[40:])), rel=1e-6)
    with pytest.raises(InputError, match="parameter Y: has 5 columns, the model was fitted on 6-d targets"):
        model.score(X[40:], Y[40:, :5])
    assert is_regressor(model) and model.__sklearn_tags__().target_tags.multi_output
    assert cross_val_score(EncodingModel(alphas=[1.0, 10.0], cv=3, device="cpu"), X, Y, cv=3).mean() > 0.3


def test_fit_encoding_takes_a_subject_name_as_prepare_subject_does():
    from napari_brain_concepts.core.alignment.encoding import fit_encoding

    from ._studies import small_study

    study = small_study(n_stimuli=12)

    def fit(subject):
        model = EncodingModel(alphas=(1.0, 10.0), cv=3, device="cpu")
        return run_to_end(fit_encoding(study, subject, "captions", model=model))

    by_name, by_subject = fit("sub-01"), fit(study.subject("sub-01"))
    assert by_name.subject == "sub-01"
    np.testing.assert_array_equal(by_name.r, by_subject.r)
    with pytest.raises(InputError, match="no subject 'sub-09'"):
        fit("sub-09")


# -- the synthetic study -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """The tiny synthetic study through embed (multi-hot control), rsa (searchlight radius 2) and encode."""
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(seed=0, size="tiny")
    if study.truth["embedding_space"] == "features":
        pytest.skip("the sentence model package is not installed")
    store = ResultsStore.create(tmp_path_factory.mktemp("alignment") / "results")
    ctx = AnalysisContext(study=study, store=store, device="cpu", params={
        "embed": {"controls": ("categories_multihot",)},
        "rsa": {"radius": 2, "searchlight_models": ("captions",)},
        "encode": {"alphas": (1.0, 10.0, 100.0, 1000.0, 10000.0)},
    })
    for name, fn in (("embed", steps.embed_step), ("rsa", steps.rsa_step), ("encode", steps.encode_step)):
        with store.staged(name):
            run_to_end(fn(ctx))
    return study, store, ctx


def test_steps_write_their_results(analysed):
    study, store, ctx = analysed
    assert all(store.is_done(s) for s in ("embed", "rsa", "encode"))
    assert ctx.state["alignment_models"] == ["captions", "categories_multihot"]
    for name in ("rsa_roi", "rsa_summary", "rsa_paired", "encoding_roi", "encoding_summary"):
        assert len(store.read_table(name)) > 0
    assert store.figure_path("rsa_models_by_roi").is_file() and store.figure_path("encoding_models_by_roi").is_file()
    subj = study.subject()
    for map_name in ("searchlight_rsa_captions", "encoding_r_captions", "encoding_noise_ceiling"):
        img = load_nifti(store.map_path(subj.name, map_name), ndim=3)
        assert img.shape == subj.mask.shape and np.allclose(img.affine, subj.affine)
    searchlight = ctx.state["searchlight"][subj.name]
    assert len(searchlight.spheres) > 0 and np.all(np.isfinite(searchlight.scores))
    # which voxels are centres: the map is 0 at the others, which is no r of 0
    centres = np.asarray(load_nifti(store.mask_path(subj.name, "searchlight_centres"), ndim=3).dataobj)
    assert centres.sum() == len(searchlight.spheres.centers)
    assert np.flatnonzero(centres.ravel()).tolist() == sorted(searchlight.spheres.centers.tolist())


def test_a_searchlight_that_covers_little_of_the_mask_says_so(analysed, tmp_path):
    """rsa.radius=6 voxels (DESIGN's default) on the tiny study's 8 mm grid leaves most voxels without a sphere
    centre: a warning names the participant, the count and the fix."""
    study, _, ctx = analysed
    store = ResultsStore.create(tmp_path / "results")
    wide = AnalysisContext(study=study, store=store, device="cpu", state=dict(ctx.state), params={
        **ctx.params, "rsa": {"radius": 6, "searchlight_models": ("captions",)}})
    with store.staged("rsa"), pytest.warns(UserWarning, match=r"searchlight of sub-01: only \d+ of the \d+ "
                                                              r"analysed voxels can be sphere centres at rsa\.radius=6"):
        run_to_end(steps.rsa_step(wide))
    centres = np.asarray(load_nifti(store.mask_path("sub-01", "searchlight_centres"), ndim=3).dataobj)
    assert 0 < centres.sum() < 0.5 * study.subject("sub-01").mask.sum()


def test_rsa_on_the_synthetic_study_equals_rsatoolbox(analysed):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    from napari_brain_concepts.core.alignment import rsa

    study, _, _ = analysed
    subj = study.subject()
    rows = rsa.shared_stimulus_rows(study)
    patterns = rsa.stimulus_patterns(study, subj, rows)
    feats = study.embedding("captions").values[rows]
    ours = rsa.compare_rdms(rsa.upper_triangle(rsa.correlation_rdm(patterns)),
                            rsa.upper_triangle(rsa.correlation_rdm(feats)))
    theirs = rsatoolbox.rdm.compare(
        rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(patterns), method="correlation"),
        rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(feats.astype(np.float64)), method="correlation"),
        method="corr")
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_encoding_r_maps_peak_in_the_planted_regions(analysed):
    study, store, _ = analysed
    for sname, subj in study.subjects.items():
        r = subj.from_volume(np.asarray(load_nifti(store.map_path(sname, "encoding_r_captions")).dataobj))
        planted = subj.from_volume(np.any(list(study.truth["regions"][sname].values()), axis=0))
        top = np.argsort(r)[::-1][:20]
        # planted regions hold ~15% of the mask but most of the best-predicted voxels
        assert planted[top].mean() >= 0.6, sname
        assert r[planted].mean() > r[~planted].mean() + 0.1, sname


def test_captions_beat_categories_where_only_captions_carry_the_concept(analysed):
    """The generator plants number, colour and relation regions that category labels do not describe."""
    study, store, _ = analysed
    driven = [f"planted/{c}" for c in study.truth["caption_driven"]]
    assert driven
    enc = store.read_table("encoding_roi")
    enc = enc[enc["roi"].isin(driven)].pivot_table(index=["subject", "roi"], columns="model", values="r")
    assert (enc["captions"] - enc["categories_multihot"]).mean() > 0.1
    assert (enc["captions"] > enc["categories_multihot"]).mean() >= 0.75
    for concept in ("relation", "colour"):
        per = enc.xs(f"planted/{concept}", level="roi")
        assert (per["captions"] > per["categories_multihot"]).all(), concept
    rsa_table = store.read_table("rsa_roi")
    sub = rsa_table[rsa_table["roi"].isin(driven)].pivot_table(index=["subject", "roi"], columns="model", values="r")
    assert (sub["captions"] - sub["categories_multihot"]).mean() > 0
    # the categories do predict the regions they describe: the comparison is not one-sided
    face = store.read_table("encoding_roi")
    face = face[face["roi"] == "planted/face"].pivot_table(index="subject", columns="model", values="r")
    assert (face["categories_multihot"] > 0.1).all()


def test_predict_map_of_a_sentence(analysed):
    study, _, ctx = analysed
    subj = study.subject()
    model = ctx.state["encoding_models"][subj.name]
    volume = model.predict_map("a face next to a blue banana", subject=subj)
    assert volume.shape == subj.mask.shape and np.all(volume[~subj.mask] == 0)
    emb = model.encoder.encode(["a face next to a blue banana"])
    np.testing.assert_allclose(subj.from_volume(volume), model.predict(emb)[0], rtol=1e-5, atol=1e-6)
    face = subj.from_volume(study.truth["regions"][subj.name]["face"])
    house = model.predict_map("a house", subject=subj)
    assert subj.from_volume(volume)[face].mean() > subj.from_volume(house)[face].mean()


def test_the_saved_encoding_model_predicts_as_the_fitted_one(analysed, tmp_path):
    """Results opened later predict a phrase's map from arrays/ and the recorded sentence model."""
    study, store, ctx = analysed
    subj = study.subject()
    fitted = ctx.state["encoding_models"][subj.name]
    saved = steps.saved_encoding_model(ResultsStore.open(store.root), subj.name, device="cpu")
    phrase = "a face next to a blue banana"
    np.testing.assert_allclose(saved.predict_map(phrase), fitted.predict_map(phrase), rtol=1e-5, atol=1e-6)
    assert str(saved.encoder.path) == str(fitted.encoder.path)
    empty = ResultsStore.create(tmp_path / "empty", study=study.name)
    with pytest.raises(InputError, match="holds no encoding models. Fix: run the encode step"):
        steps.saved_encoding_model(empty, subj.name)


def test_rsa_step_refuses_unknown_models(analysed):
    study, store, _ = analysed
    ctx = AnalysisContext(study=study, store=store, device="cpu", params={"rsa": {"models": ["nope"]}})
    with pytest.raises(InputError, match="no embedding named nope"):
        run_to_end(steps.rsa_step(ctx))
