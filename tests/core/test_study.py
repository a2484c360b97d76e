"""The data model: Study, Subject, Stimuli, Embedding, RoiAtlas and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.study import Embedding, RoiAtlas, Stimuli, Study, Subject

from ._studies import small_study

SHAPE = (3, 4, 2)


def _mask():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:, 1:3, :] = True  # 8 voxels
    return mask


def _subject(**changes):
    kwargs = dict(name="s1", responses=np.arange(24, dtype=np.float32).reshape(3, 8), mask=_mask(),
                  affine=np.diag([2.0, 2.0, 2.0, 1.0]), stimulus_ids=["a", "b", "a"])
    kwargs.update(changes)
    return Subject(**kwargs)


def _stimuli(**changes):
    kwargs = dict(ids=["a", "b"], captions=[["a cat"], ["a dog", "  "]])
    kwargs.update(changes)
    return Stimuli(**kwargs)


# ------------------------------------------------------------------------------------------------
# valid objects behave
# ------------------------------------------------------------------------------------------------
def test_subject_maps_voxels_to_the_volume_and_back():
    subject = _subject(responses=np.arange(24).reshape(3, 8))  # integers are accepted and become float32
    assert subject.responses.dtype == np.float32
    assert (subject.n_trials, subject.n_voxels, subject.shape) == (3, 8, SHAPE)
    np.testing.assert_array_equal(subject.voxel_indices, np.argwhere(_mask()))  # C order
    np.testing.assert_array_equal(subject.voxel_size, [2.0, 2.0, 2.0])
    values = np.arange(8, dtype=np.float32) + 1
    volume = subject.to_volume(values)
    assert volume.shape == SHAPE and volume[0, 0, 0] == 0 and volume[1, 1, 0] == 1 and volume[1, 1, 1] == 2
    np.testing.assert_array_equal(subject.from_volume(volume), values)
    stacked = subject.to_volume(subject.responses, fill=np.nan)
    assert stacked.shape == (3, *SHAPE) and np.isnan(stacked[:, 0, 0, 0]).all()
    np.testing.assert_array_equal(subject.from_volume(stacked), subject.responses)
    np.testing.assert_array_equal(subject.sessions, [0, 0, 0])


def test_study_helpers():
    study = Study("t", _stimuli(embeddings={"e": Embedding("e", np.ones((2, 3)))}), {"s1": _subject()})
    np.testing.assert_array_equal(study.trial_rows(study.subject("s1")), [0, 1, 0])
    assert study.subject().name == "s1" and study.subject_names == ["s1"]
    assert study.embedding().dim == 3 and study.embedding("e").values.dtype == np.float32
    assert study.in_one_space()
    other = _subject(name="s2", affine=np.diag([2.0, 2.0, 2.5, 1.0]))
    assert not Study("t", _stimuli(), {"s1": _subject(), "s2": other}).in_one_space()


def test_stimuli_clean_captions_and_categories():
    stimuli = _stimuli(categories=[[" face ", ""], []], test=[1, 0])
    assert stimuli.captions == [["a cat"], ["a dog"]]
    assert stimuli.categories == [["face"], []]
    assert stimuli.test.dtype == bool and stimuli.test.tolist() == [True, False]
    assert stimuli.index == {"a": 0, "b": 1} and len(stimuli) == 2
    assert not stimuli.has_images


def test_stimuli_images_from_memory_and_disk(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(_stimuli(pixels=pixels).image(1)), pixels[1])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    on_disk = _stimuli(image_paths=["missing.png", "broken.png"], root=tmp_path)
    assert on_disk.has_images
    with pytest.raises(InputError, match="image file is missing"):
        on_disk.image(0)
    with pytest.raises(InputError, match="image cannot be read"):
        on_disk.image(1)
    with pytest.raises(InputError, match="has no image"):
        _stimuli(image_paths=[None, None]).image(0)


def test_roi_atlas_names_and_regions():
    labels = np.zeros(SHAPE)
    labels[0, 0, 0] = 2.0
    labels[1, 1, 1] = 5.0
    atlas = RoiAtlas(labels, {2: "FFA-1"})
    assert atlas.labels.dtype == np.int32
    assert atlas.names == {2: "FFA-1", 5: "label 5"}
    assert atlas.region("FFA-1").sum() == 1 and atlas.region(5)[1, 1, 1]
    with pytest.raises(InputError, match="no region named 'PPA'"):
        atlas.region("PPA")


def test_small_study_is_valid():
    study = small_study()
    assert study.subject_names == ["sub-01", "sub-02"] and not study.in_one_space()


# ------------------------------------------------------------------------------------------------
# invalid input: one InputError naming what is wrong
# ------------------------------------------------------------------------------------------------
SUBJECT_ERRORS = [
    ("mask-4d", dict(mask=np.ones((*SHAPE, 2), bool)), "subject s1 mask", "has 4 dimensions, expected 3"),
    ("mask-empty", dict(mask=np.zeros(SHAPE, bool)), "subject s1 mask", "is empty"),
    ("affine-shape", dict(affine=np.eye(3)), "subject s1 affine", "affine has shape (3, 3)"),
    ("affine-nan", dict(affine=np.diag([np.nan, 1, 1, 1])), "subject s1 affine", "NaN or Inf"),
    ("affine-singular", dict(affine=np.diag([2.0, 0.0, 2.0, 1.0])), "subject s1 affine", "singular"),
    ("responses-1d", dict(responses=np.zeros(8, np.float32)), "subject s1 responses", "have 1 dimensions"),
    ("responses-voxels", dict(responses=np.zeros((3, 7), np.float32)), "subject s1 responses",
     "have 7 voxels but the mask has 8"),
    ("responses-text", dict(responses=np.full((3, 8), "x")), "subject s1 responses", "have dtype <U1"),
    ("responses-nan", dict(responses=np.where(np.eye(3, 8) > 0, np.inf, 0.0)), "subject s1 responses",
     "NaN or Inf (first at trial 0, voxel 0)"),
    ("trials-count", dict(stimulus_ids=["a", "b"]), "subject s1 trials", "list 2 trials but responses have 3"),
    ("sessions-count", dict(sessions=[0, 1]), "subject s1 trials", "session column length"),
    ("anat-2d", dict(anat=np.zeros((3, 4))), "subject s1 anat", "has 2 dimensions"),
    ("anat-affine", dict(anat=np.zeros(SHAPE), anat_affine=np.zeros((4, 4))), "subject s1 anat affine",
     "singular"),
    ("roi-shape", dict(rois={"floc": RoiAtlas(np.zeros((3, 3, 3), int), {})}), "subject s1 roi floc",
     "has shape (3, 3, 3), mask has (3, 4, 2)"),
    ("to-common", dict(to_common=np.eye(3)), "subject s1 to_common", "affine has shape (3, 3)"),
    ("ncsnr-length", dict(ncsnr=np.ones(5)), "subject s1 ncsnr", "has 5 values for 8 voxels"),
]


@pytest.mark.parametrize("changes, where, problem", [c[1:] for c in SUBJECT_ERRORS],
                         ids=[c[0] for c in SUBJECT_ERRORS])
def test_invalid_subject(changes, where, problem):
    with pytest.raises(InputError) as info:
        _subject(**changes)
    assert info.value.where == where and problem in info.value.problem and info.value.fix


@pytest.mark.parametrize("trial, voxel", [(0, 7), (5, 1), (9, 0), (9, 7)])
def test_nonfinite_responses_found_in_any_block_of_rows(monkeypatch, trial, voxel):
    """The finite check works in blocks of rows (no whole-array temporary) and still names the first NaN."""
    import napari_brain_concepts.core.study as study_module

    monkeypatch.setattr(study_module, "_CHECK_CHUNK_BYTES", 16)       # 2 rows of 8 voxels per block
    responses = np.zeros((10, 8), np.float32)
    responses[trial, voxel] = np.nan
    responses[9, 7] = np.inf                                          # a later one is not the first
    with pytest.raises(InputError, match=rf"NaN or Inf \(first at trial {trial}, voxel {voxel}\)"):
        _subject(responses=responses, stimulus_ids=["a"] * 10)
    responses[:] = 0
    assert _subject(responses=responses, stimulus_ids=["a"] * 10).n_trials == 10
    with pytest.raises(InputError, match="contains NaN or Inf"):
        Embedding("e", np.where(np.arange(40).reshape(5, 8) == 37, np.nan, 1.0))


STIMULI_ERRORS = [
    ("no-ids", dict(ids=[], captions=[]), "no stimulus ids"),
    ("duplicate-ids", dict(ids=["a", "a"]), "duplicate stimulus ids: a"),
    ("empty-id", dict(ids=["a", " "]), "an empty stimulus id"),
    ("captions-count", dict(captions=[["x"]]), "1 caption lists for 2 stimuli"),
    ("categories-count", dict(categories=[["x"], [], []]), "3 category lists for 2 stimuli"),
    ("image-paths-count", dict(image_paths=["a.png"]), "1 image paths for 2 stimuli"),
    ("pixels-shape", dict(pixels=np.zeros((2, 4, 4), np.uint8)), "pixels have shape (2, 4, 4)"),
    ("pixels-dtype", dict(pixels=np.zeros((2, 4, 4, 3), np.float32)), "dtype float32"),
    ("pixels-count", dict(pixels=np.zeros((3, 4, 4, 3), np.uint8)), "pixels have shape (3, 4, 4, 3)"),
    ("test-shape", dict(test=[1, 0, 1]), "test flags have shape (3,) for 2 stimuli"),
    ("embedding-rows", dict(embeddings={"e": Embedding("e", np.ones((3, 2)))}), "has 3 rows for 2 stimuli"),
]


@pytest.mark.parametrize("changes, problem", [c[1:] for c in STIMULI_ERRORS], ids=[c[0] for c in STIMULI_ERRORS])
def test_invalid_stimuli(changes, problem):
    with pytest.raises(InputError) as info:
        _stimuli(**changes)
    assert problem in info.value.problem and info.value.fix


def test_add_embedding_checks_rows():
    stimuli = _stimuli()
    stimuli.add_embedding(Embedding("ok", np.zeros((2, 4))))
    with pytest.raises(InputError, match="has 5 rows for 2 stimuli"):
        stimuli.add_embedding(Embedding("bad", np.zeros((5, 4))))
    assert list(stimuli.embeddings) == ["ok"]


EMBEDDING_ERRORS = [
    ("1d", dict(values=np.zeros(4)), "has 1 dimensions"),
    ("int", dict(values=np.zeros((2, 4), int)), "expected float"),
    ("nan", dict(values=np.full((2, 4), np.nan)), "NaN or Inf"),
    ("kind", dict(values=np.zeros((2, 4)), kind="audio"), "kind 'audio' is unknown"),
]


@pytest.mark.parametrize("changes, problem", [c[1:] for c in EMBEDDING_ERRORS], ids=[c[0] for c in EMBEDDING_ERRORS])
def test_invalid_embedding(changes, problem):
    with pytest.raises(InputError) as info:
        Embedding(name="e", **changes)
    assert info.value.where == "embedding 'e'" and problem in info.value.problem


def test_roi_atlas_refuses_fractional_labels():
    with pytest.raises(InputError, match="non-integer labels"):
        RoiAtlas(np.full(SHAPE, 0.5), {})


def test_invalid_study():
    with pytest.raises(InputError, match="has no subjects"):
        Study("t", _stimuli(), {})
    with pytest.raises(InputError, match=r"subject s1 trials: 1 unknown stimulus ids \(e.g. 'zebra'\)"):
        Study("t", _stimuli(), {"s1": _subject(stimulus_ids=["a", "zebra", "b"])})
    study = Study("t", _stimuli(), {"s1": _subject()})
    with pytest.raises(InputError, match="no subject 's9'.*choose one of s1"):
        study.subject("s9")
    with pytest.raises(InputError, match="has no embeddings"):
        study.embedding()
    study.stimuli.add_embedding(Embedding("e", np.zeros((2, 3))))
    with pytest.raises(InputError, match="no embedding 'clip'.*choose one of e"):
        study.embedding("clip")


def test_volume_helpers_refuse_wrong_sizes():
    subject = _subject()
    with pytest.raises(InputError, match="7 values for 8 voxels"):
        subject.to_volume(np.zeros(7))
    with pytest.raises(InputError, match="resample the volume"):
        subject.from_volume(np.zeros((3, 4, 3)))


def test_reprs_summarise_instead_of_printing_the_arrays():
    """In a notebook, evaluating a study printed ~300,000 characters of arrays."""
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(seed=0, size="tiny", n_subjects=2)
    subject = study.subject("sub-01")
    ctx = AnalysisContext(study=study, store=None, params={"decode": {"cv": 3}})
    texts = [repr(x) for x in (study, study.stimuli, subject, study.embedding("captions"),
                               next(iter(subject.rois.values())), ctx)]
    assert all(len(t) < 400 for t in texts), [len(t) for t in texts]
    assert repr(study).startswith("Study('synthetic-tiny-seed0', ") and "sub-02" in repr(study)
    assert f"{subject.n_trials} trials × {subject.n_voxels} voxels" in repr(subject)
    assert "'cv': 3" in repr(ctx)


def test_the_packages_export_what_a_user_reaches_for_and_load_it_on_first_use():
    import subprocess
    import sys

    code = ("import sys; import napari_brain_concepts.core.io as io, napari_brain_concepts.core.alignment as al; "
            "assert 'torch' not in sys.modules and 'napari_brain_concepts.core.io.study_folder' not in sys.modules; "
            "from napari_brain_concepts.core.io import read_study, ResultsStore; "
            "from napari_brain_concepts.core.alignment import EncodingModel, roi_rsa, CaptionReconstructor; "
            "from napari_brain_concepts.core.concepts import SharedConceptClustering; "
            "assert all(hasattr(m, n) for m in (io, al) for n in m.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True)
