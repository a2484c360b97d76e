"""Common space, pairwise Jaccard/Dice and n-of-N counts of concept masks across subjects."""

import nibabel as nib
import numpy as np
import pytest

from napari_brain_concepts.core.concepts.overlap import (
    common_space,
    concept_overlap,
    dice,
    jaccard,
    overlap_counts,
    pairwise_overlap,
)
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.study import Stimuli, Study, Subject


def _study(shapes, affines, to_common=None):
    stimuli = Stimuli(ids=["a", "b"], captions=[["x"], ["y"]])
    subjects = {}
    for i, (shape, affine) in enumerate(zip(shapes, affines)):
        mask = np.ones(shape, bool)
        subjects[f"s{i}"] = Subject(name=f"s{i}", responses=np.zeros((2, mask.sum()), np.float32), mask=mask,
                                    affine=affine, stimulus_ids=["a", "b"],
                                    to_common=None if to_common is None else to_common[i])
    return Study(name="t", stimuli=stimuli, subjects=subjects)


def _shift(dx):
    m = np.eye(4)
    m[0, 3] = dx
    return m


def test_dice_and_jaccard_against_scipy():
    from scipy.spatial.distance import dice as scipy_dice
    from scipy.spatial.distance import jaccard as scipy_jaccard

    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.3, rng.random(500) < 0.4
    assert dice(a, b) == pytest.approx(1 - scipy_dice(a, b))
    assert jaccard(a, b) == pytest.approx(1 - scipy_jaccard(a, b))
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


def test_one_space_compares_voxel_to_voxel(tmp_path):
    study = _study([(6, 6, 6)] * 3, [np.diag([2, 2, 2, 1])] * 3)
    space = common_space(study)
    assert space.identity and space.shape == (6, 6, 6)
    masks = {}
    for i, s in enumerate(study.subjects):
        m = np.zeros((6, 6, 6), bool)
        m[1:4, 1:4, 1 + i:4 + i] = True
        masks[s] = m
    table, counts = concept_overlap(space, {"face": masks}, store=ResultsStore.create(tmp_path / "r"))
    assert list(table["concept"]) == ["face"] * 3
    first = table.iloc[0]
    assert (first["subject_a"], first["subject_b"]) == ("s0", "s1")
    assert first["intersection"] == 18 and first["dice"] == pytest.approx(2 * 18 / 54)
    assert first["jaccard"] == pytest.approx(18 / 36)
    assert counts["face"].max() == 3 and counts["face"].dtype == np.int16
    assert (counts["face"] == 3).sum() == 9
    img = nib.load(tmp_path / "r" / "shared" / "face.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), counts["face"])
    np.testing.assert_allclose(img.affine, np.diag([2, 2, 2, 1]))


def test_different_spaces_use_to_common_with_nilearn_resampling():
    # subject s1's grid is shifted by one voxel (2 mm); to_common undoes that shift
    study = _study([(8, 6, 6), (8, 6, 6)], [np.diag([2, 2, 2, 1]), _shift(2.0) @ np.diag([2, 2, 2, 1])],
                   to_common=[np.eye(4), _shift(-2.0)])
    space = common_space(study)
    assert not space.identity
    m0 = np.zeros((8, 6, 6), bool)
    m0[2:5, 1:4, 1:4] = True
    m1 = m0.copy()  # same voxel indices, but a different place in mm until mapped
    table, counts = concept_overlap(space, {"c": {"s0": m0, "s1": m1}})
    assert table.loc[0, "dice"] == pytest.approx(1.0)

    moved = _study([(8, 6, 6), (8, 6, 6)], [np.diag([2, 2, 2, 1]), _shift(2.0) @ np.diag([2, 2, 2, 1])],
                   to_common=[np.eye(4), np.eye(4)])
    table2, _ = concept_overlap(common_space(moved), {"c": {"s0": m0, "s1": m1}})
    assert table2.loc[0, "dice"] == pytest.approx(2 * 18 / 54)  # one voxel of shift along x


def test_different_spaces_without_to_common_is_an_error():
    study = _study([(6, 6, 6), (7, 6, 6)], [np.eye(4), np.eye(4)], to_common=[np.eye(4), None])
    with pytest.raises(InputError, match=r"subjects/s1/to_common.txt: the participants are not in one space "
                                         r".* s1 has no to_common.txt"):
        common_space(study)
    study2 = _study([(6, 6, 6), (6, 6, 6)], [np.eye(4), _shift(3.0)])
    with pytest.raises(InputError, match=r"to_common.txt: .* s0, s1 have no to_common.txt"):
        common_space(study2)


def test_counts_and_pairs_need_one_grid():
    with pytest.raises(InputError, match="different grids"):
        pairwise_overlap({"a": np.zeros((2, 2, 2)), "b": np.zeros((3, 2, 2))})
    with pytest.raises(InputError, match="different grids"):
        overlap_counts({"a": np.zeros((2, 2, 2)), "b": np.zeros((3, 2, 2))})
    study = _study([(6, 6, 6)] * 2, [np.eye(4)] * 2)
    with pytest.raises(InputError, match="mask of subject s0"):
        common_space(study).resample("s0", np.zeros((5, 5, 5)))
