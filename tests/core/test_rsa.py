"""RSA: RDMs and RDM comparisons equal rsatoolbox's; subsets, noise ceiling, group statistics."""

import numpy as np
import pytest
from scipy import stats

from napari_brain_concepts.core.alignment import rsa
from napari_brain_concepts.core.errors import InputError

rsatoolbox = pytest.importorskip("rsatoolbox")


def _rsatoolbox_rdm(patterns):
    ds = rsatoolbox.data.Dataset(patterns)
    return rsatoolbox.rdm.calc_rdm(ds, method="correlation")


def test_rdm_equals_rsatoolbox_correlation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 57))
    ours = rsa.correlation_rdm(x)
    theirs = _rsatoolbox_rdm(x)
    np.testing.assert_allclose(ours, theirs.get_matrices()[0], atol=1e-10)
    np.testing.assert_allclose(rsa.upper_triangle(ours), theirs.dissimilarities[0], atol=1e-10)


def _two_hot(rng, n, k):
    out = np.zeros((n, k))
    for row in out:
        row[rng.choice(k, 2, replace=False)] = 1.0
    return out


@pytest.mark.parametrize(("ours", "theirs"), [("pearson", "corr"), ("spearman", "spearman")])
def test_comparison_equals_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(30, 20))
    brains = [shared + rng.normal(scale=s, size=shared.shape) for s in (0.5, 1.0, 2.0)]
    models = [shared @ rng.normal(size=(20, 8)), rng.normal(size=(30, 5)),
              _two_hot(rng, 30, 6)]  # multi-hot categories: many tied distances
    b = np.stack([rsa.upper_triangle(rsa.correlation_rdm(x)) for x in brains])
    m = np.stack([rsa.upper_triangle(rsa.correlation_rdm(x)) for x in models])
    got = rsa.compare_rdms(b, m, ours)
    rb = rsatoolbox.rdm.concat([_rsatoolbox_rdm(x) for x in brains])
    rm = rsatoolbox.rdm.concat([_rsatoolbox_rdm(x) for x in models[:2]])
    want = rsatoolbox.rdm.compare(rb, rm, method=theirs)
    np.testing.assert_allclose(got[:, :2], want, atol=1e-6)
    # Tied model distances: equal in exact arithmetic, so compare on the same (tie-exact) vectors;
    # rsatoolbox on its own float-noisy multi-hot RDM would order the ties arbitrarily.
    tied = rsatoolbox.rdm.RDMs(np.round(m[2:], rsa.TIE_DECIMALS))
    np.testing.assert_allclose(got[:, 2:], rsatoolbox.rdm.compare(rb, tied, method=theirs), atol=1e-6)
    assert np.all(np.abs(got) <= 1 + 1e-12)
    assert got[0, 0] > got[2, 0]  # less noise, closer to the shared structure


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=45).astype(float)
    b = rng.normal(size=45)
    assert rsa.compare_rdms(a, b, "spearman")[0, 0] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_subsets_are_disjoint_and_seeded():
    subsets = rsa.stimulus_subsets(350, 100, random_state=3)
    assert [len(s) for s in subsets] == [100, 100, 100]
    together = np.concatenate(subsets)
    assert len(np.unique(together)) == 300
    again = rsa.stimulus_subsets(350, 100, random_state=3)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again))
    assert len(rsa.stimulus_subsets(50, 100)) == 1
    assert len(rsa.stimulus_subsets(1000, 100, n_subsets=2)) == 2


def test_subset_scores_use_the_same_subsets_for_every_model():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(200, 10))
    brain = feats @ rng.normal(size=(10, 50)) + rng.normal(size=(200, 50))
    subsets = rsa.stimulus_subsets(200, 100, random_state=0)
    scores = rsa.subset_scores(brain, {"true": feats, "copy": feats.copy(), "noise": rng.normal(size=(200, 10))},
                               subsets)
    np.testing.assert_array_equal(scores["true"], scores["copy"])
    assert scores["true"].mean() > scores["noise"].mean() + 0.2
    for k, s in enumerate(subsets):
        want = stats.pearsonr(rsa.upper_triangle(rsa.correlation_rdm(brain[s])),
                              rsa.upper_triangle(rsa.correlation_rdm(feats[s]))).statistic
        assert scores["true"][k] == pytest.approx(want, abs=1e-10)


def test_noise_ceiling_is_each_subject_against_the_mean_of_the_others():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=190)
    vecs = np.stack([truth + rng.normal(scale=s, size=190) for s in (0.3, 0.3, 3.0)])
    nc = rsa.noise_ceiling(vecs)
    for i in range(3):
        others = np.delete(vecs, i, axis=0).mean(axis=0)
        assert nc[i] == pytest.approx(stats.pearsonr(vecs[i], others).statistic, abs=1e-12)
    assert nc[0] > nc[2]
    with pytest.raises(InputError, match="at least 2 subjects"):
        rsa.noise_ceiling(vecs[:1])


def test_group_ttest_fdr_matches_scipy():
    rng = np.random.default_rng(6)
    scores = np.column_stack([rng.normal(0.3, 0.1, 8), rng.normal(0.0, 0.1, 8), rng.normal(0.05, 0.1, 8)])
    res = rsa.group_ttest(scores)
    want = stats.ttest_1samp(scores, 0.0, alternative="greater")
    np.testing.assert_allclose(res.t, want.statistic)
    np.testing.assert_allclose(res.q, stats.false_discovery_control(want.pvalue, method="bh"))
    assert res.significant[0] and not res.significant[1]


def test_constant_pattern_is_refused_with_its_row():
    x = np.random.default_rng(7).normal(size=(5, 4))
    x[3] = 1.0
    with pytest.raises(InputError, match="row 3 is constant"):
        rsa.correlation_rdm(x, name="model categories")


def test_bad_method_is_refused():
    with pytest.raises(InputError, match="parameter method"):
        rsa.compare_rdms(np.ones(3), np.arange(3.0), "kendall")


def test_summary_normalises_only_by_a_ceiling_that_replicates():
    import pandas as pd

    rows = []
    for s, r in zip(("sub-01", "sub-02", "sub-03"), (0.04, 0.05, 0.06)):
        rows += [{"subject": s, "roi": "reliable", "model": "m", "r": r, "noise_ceiling": 0.4},
                 {"subject": s, "roi": "noise", "model": "m", "r": r, "noise_ceiling": 0.01}]
    summary = rsa.summarize(pd.DataFrame(rows)).set_index("roi")
    assert summary.loc["reliable", "r_norm"] == pytest.approx(0.05 / 0.4)
    assert np.isnan(summary.loc["noise", "r_norm"])  # 0.05 / 0.01 would read as five times the ceiling
    assert summary.loc["noise", "noise_ceiling"] == pytest.approx(0.01)
    relaxed = rsa.summarize(pd.DataFrame(rows), min_ceiling=0.0).set_index("roi")
    assert relaxed.loc["noise", "r_norm"] == pytest.approx(5.0)


def test_summary_normalises_each_subject_by_its_own_ceiling():
    """Doerig et al. divide each subject's r by that subject's ceiling, then average: a ratio of the group
    means (0.1 / 0.35 = 0.29 here) weighs the subjects otherwise."""
    import pandas as pd

    rows = [{"subject": "sub-01", "roi": "V4", "model": "m", "r": 0.1, "noise_ceiling": 0.2},
            {"subject": "sub-02", "roi": "V4", "model": "m", "r": 0.1, "noise_ceiling": 0.5},
            {"subject": "sub-03", "roi": "V4", "model": "m", "r": 0.1, "noise_ceiling": 0.05}]
    summary = rsa.summarize(pd.DataFrame(rows)).set_index("roi")
    # sub-03's ceiling is under min_ceiling: it is left out of the ratio, not of the mean r
    assert summary.loc["V4", "r_norm"] == pytest.approx((0.5 + 0.2) / 2)
    assert summary.loc["V4", "r_norm_sem"] == pytest.approx(np.std([0.5, 0.2], ddof=1) / np.sqrt(2))
    assert summary.loc["V4", "r"] == pytest.approx(0.1) and summary.loc["V4", "n_subjects"] == 3


def test_compare_rdms_refuses_a_full_rdm():
    """A full (n, n) RDM read as n vectors gave an (n, n) matrix of meaningless row correlations."""
    rng = np.random.default_rng(9)
    a = rsa.correlation_rdm(rng.normal(size=(12, 5)))
    b = rsa.correlation_rdm(rng.normal(size=(12, 7)))
    for args, name in (((a, b), "a"), ((rsa.upper_triangle(a), b), "b")):
        with pytest.raises(InputError) as err:
            rsa.compare_rdms(*args)
        assert str(err.value) == (f"parameter {name}: is a full 12×12 RDM (square, symmetric, zero diagonal); "
                                  "compare_rdms takes upper-triangle vectors. Fix: pass upper_triangle(rdm) "
                                  f"as {name}.")
    r = rsa.compare_rdms(rsa.upper_triangle(a), rsa.upper_triangle(b))
    assert r.shape == (1, 1) and -1 <= r[0, 0] <= 1
    stack = rng.normal(size=(4, 4))  # a square stack of 4 vectors is not an RDM
    assert rsa.compare_rdms(stack, stack).shape == (4, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_correlation_rdm_refuses_nan_and_inf(bad):
    x = np.random.default_rng(10).normal(size=(5, 4))
    x[3, 2] = bad
    with pytest.raises(InputError, match=r"model m: contains NaN or Inf \(first at stimulus row 3, column 2\)"):
        rsa.correlation_rdm(x, name="model m")
    with pytest.raises(InputError, match="contains NaN or Inf"):
        rsa.correlation_rdm(np.full((5, 4), np.nan))


def test_roi_rsa_takes_embeddings_and_checks_its_models():
    import pandas as pd

    from ._studies import small_study

    study = small_study()
    emb = study.embedding("captions")
    with_object = rsa.roi_rsa(study, {"captions": emb}, min_voxels=1)
    with_values = rsa.roi_rsa(study, {"captions": emb.values}, min_voxels=1)
    assert len(with_object) > 0
    pd.testing.assert_frame_equal(with_object, with_values)
    with pytest.raises(InputError, match=r"model 'x': has 4 rows for 6 stimuli\. Fix: give one row per stimulus"):
        rsa.roi_rsa(study, {"x": emb.values[:4]}, min_voxels=1)
    with pytest.raises(InputError, match=r"model 'x': has shape \(6,\), expected \(n_stimuli, d\)"):
        rsa.roi_rsa(study, {"x": emb.values[:, 0]}, min_voxels=1)
    with pytest.raises(InputError, match="parameter models: is a list, not a mapping of model name to features"):
        rsa.roi_rsa(study, [emb], min_voxels=1)


def _study_with_own_images(n_shared=100, n_own=200, n_subjects=3, seed=0):
    """Participants who saw ``n_shared`` images together and ``n_own`` of their own, twice each; every voxel
    of the one ROI carries a random projection of the images' features."""
    from napari_brain_concepts.core.study import Embedding, RoiAtlas, Stimuli, Study, Subject

    rng = np.random.default_rng(seed)
    n_stim = n_shared + n_subjects * n_own
    feats = rng.normal(size=(n_stim, 6))
    ids = np.array([f"im{i}" for i in range(n_stim)], dtype=object)
    stimuli = Stimuli(ids=ids, captions=[["x"]] * n_stim,
                      embeddings={"feats": Embedding("feats", feats.astype(np.float32))})
    mask = np.ones((4, 4, 2), dtype=bool)
    subjects = {}
    for k in range(n_subjects):
        seen = np.r_[np.arange(n_shared), n_shared + k * n_own + np.arange(n_own)]
        trials = np.r_[seen, seen]
        resp = feats[trials] @ rng.normal(size=(6, mask.sum())) + 2.0 * rng.normal(size=(len(trials), mask.sum()))
        subjects[f"sub-{k + 1}"] = Subject(
            f"sub-{k + 1}", resp.astype(np.float32), mask, np.eye(4), ids[trials],
            sessions=np.repeat([0, 1], len(seen)), rois={"roi": RoiAtlas(mask.astype(np.int32), {1: "all"})})
    return Study("own-images", stimuli, subjects)


def test_roi_rsa_on_each_subjects_own_images_keeps_the_ceiling_on_the_shared_ones():
    """Doerig et al. score each NSD participant on its own ~10,000 images (about 100 subsets of 100), where the
    images all participants saw give 5-9 subsets; the leave-one-out noise ceiling needs the shared ones."""
    study = _study_with_own_images()
    models = {"feats": study.embedding("feats")}
    shared = rsa.roi_rsa(study, models, min_voxels=1, random_state=0)
    own_rows = {s: np.unique(study.trial_rows(study.subject(s))) for s in study.subject_names}
    own = rsa.roi_rsa(study, models, min_voxels=1, random_state=0, subject_rows=own_rows)
    assert set(shared["n_subsets"]) == {1} and set(own["n_subsets"]) == {3}  # 100 shared, 300 seen
    np.testing.assert_array_equal(own["noise_ceiling"], shared["noise_ceiling"])
    # each subject's r by hand: the mean over its own subsets, drawn after the shared ones
    rows = rsa.shared_stimulus_rows(study)
    _, drawn = rsa.draw_subsets(rows, study.subject_names, own_rows, random_state=0)
    for sname in study.subject_names:
        r_rows, subsets = drawn[sname]
        patterns = rsa.stimulus_patterns(study, study.subject(sname), r_rows)
        want = np.mean([rsa.compare_rdms(rsa.upper_triangle(rsa.correlation_rdm(patterns[s])),
                                         rsa.upper_triangle(rsa.correlation_rdm(
                                             study.embedding("feats").values[r_rows][s])))[0, 0]
                        for s in subsets])
        assert own.set_index("subject").loc[sname, "r"] == pytest.approx(want)
    assert (own["r"] > 0.3).all()


def test_the_rsa_step_on_each_subjects_own_images(tmp_path):
    from napari_brain_concepts.core.alignment.steps import rsa_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    study = _study_with_own_images()
    store = ResultsStore.create(tmp_path / "r")
    reports = []
    ctx = AnalysisContext(study=study, store=store, device="cpu", params={"rsa": {
        "models": ["feats"], "stimuli": "subject", "min_voxels": 1, "radius": 2.0}})
    with store.staged("rsa"):
        run_to_end(rsa_step(ctx), reports.append)
    assert reports[0].message == ("ROI RSA of 1 models on each participant's own stimuli (300–300; noise ceiling "
                                  "on the 100 shared)")
    assert set(ctx.state["rsa_table"]["n_subsets"]) == {3}
    sl = ctx.state["searchlight"]["sub-1"]
    assert sl.n_subsets == 3  # the subject's own subsets, as in the ROI analysis (the shared rows give 1)
    assert np.nanmean(sl.volume("feats")) > 0.1  # every voxel carries the features
    with pytest.raises(InputError, match=r"parameter rsa\.stimuli: 'own' is unknown\. "
                                         r"Fix: use one of 'shared', 'test', 'subject'"):
        ctx.params["rsa"]["stimuli"] = "own"
        run_to_end(rsa_step(ctx))
