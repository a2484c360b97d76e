"""Space mapping NIfTI → napari in all 48 axis orientations, and back."""

from __future__ import annotations

import itertools
import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.study_folder import read_study, write_study
from napari_brain_concepts.core.io.volumes import load_nifti, save_nifti
from napari_brain_concepts.core.space import (
    AXIS_LABELS,
    is_oblique,
    layer_to_nifti,
    nifti_to_layer,
    peak_point,
    refine_layer,
    world_of_voxel,
)
from napari_brain_concepts.core.study import RoiAtlas, Stimuli, Study, Subject

SHAPE = (4, 5, 6)
VOXEL = (1.5, 2.0, 2.5)  # voxel size along the array's i, j, k axes (non-isotropic)
TRANSLATION = (-40.25, 12.5, 7.75)  # exactly representable in float32, so files keep it exactly
MARK = (1, 3, 2)

ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3))
                for flips in itertools.product((1, -1), repeat=3)]


def oriented_affine(perm, flips) -> np.ndarray:
    """Array axis j runs along world axis perm[j], in direction flips[j]."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for j in range(3):
        affine[perm[j], j] = flips[j] * VOXEL[j]
    affine[:3, 3] = TRANSLATION
    return affine


def orientation_id(case) -> str:
    return "".join(nib.orientations.aff2axcodes(oriented_affine(*case)))


def napari_world(index, kwargs) -> np.ndarray:
    """World coordinate of a layer index the way napari computes it: index * scale + translate."""
    return np.asarray(index, dtype=float) * np.asarray(kwargs["scale"]) + np.asarray(kwargs["translate"])


def nifti_mm_zyx(ijk, affine) -> np.ndarray:
    """NIfTI millimetre coordinate of voxel(s) ijk (affine @ ijk), in napari's axis order (z, y, x)."""
    xyz = np.asarray(ijk, dtype=float) @ affine[:3, :3].T + affine[:3, 3]
    return xyz[..., ::-1]


def test_there_are_48_distinct_orientations():
    codes = {"".join(nib.orientations.aff2axcodes(oriented_affine(p, f))) for p, f in ORIENTATIONS}
    assert len(ORIENTATIONS) == 48 and len(codes) == 48


@pytest.mark.parametrize("case", ORIENTATIONS, ids=orientation_id)
def test_every_voxel_lands_on_its_nifti_mm_coordinate(case):
    affine = oriented_affine(*case)
    assert not is_oblique(affine)
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)  # each value names its voxel
    layer, kwargs = nifti_to_layer(data, affine, name="vol")
    assert kwargs["axis_labels"] == AXIS_LABELS and kwargs["units"] == ("mm",) * 3
    assert np.all(np.asarray(kwargs["scale"]) > 0)
    assert sorted(kwargs["scale"]) == sorted(VOXEL)
    # the marked voxel
    (index,) = np.argwhere(layer == data[MARK])
    np.testing.assert_allclose(napari_world(index, kwargs), nifti_mm_zyx(MARK, affine), rtol=0, atol=1e-9)
    np.testing.assert_allclose(world_of_voxel(MARK, affine), nifti_mm_zyx(MARK, affine), rtol=0, atol=1e-9)
    # and every other voxel
    indices = np.argwhere(np.ones(layer.shape, dtype=bool))
    ijk = np.stack(np.unravel_index(layer[tuple(indices.T)].astype(int), SHAPE), axis=1)
    np.testing.assert_allclose(napari_world(indices, kwargs), nifti_mm_zyx(ijk, affine), rtol=0, atol=1e-9)
    # writing the layer back gives the same data and affine, exactly
    img = layer_to_nifti(layer, kwargs["metadata"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)


@pytest.mark.parametrize("case", ORIENTATIONS, ids=orientation_id)
def test_read_through_the_study_reader_and_written_back(tmp_path, case):
    """A study whose grid has this orientation: the reader's ROI layer puts the marked voxel at its mm
    coordinate, and the layer written to disk reads back as the same data and affine."""
    affine = oriented_affine(*case)
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[MARK] = 7
    mask = np.ones(SHAPE, dtype=bool)
    subject = Subject("s", np.zeros((1, mask.size), np.float32), mask, affine, ["a"],
                      rois={"mark": RoiAtlas(labels, {7: "marked"})})
    study = Study("orient", Stimuli(ids=np.asarray(["a"], dtype=object), captions=[["x"]]), {"s": subject})
    read = read_study(write_study(study, tmp_path / "study")).subjects["s"]
    np.testing.assert_array_equal(read.affine, affine)
    layer, kwargs = nifti_to_layer(read.rois["mark"].labels, read.affine, name="mark")
    (index,) = np.argwhere(layer == 7)
    np.testing.assert_allclose(napari_world(index, kwargs), nifti_mm_zyx(MARK, affine), rtol=0, atol=1e-9)
    out = save_nifti(np.asanyarray(layer_to_nifti(layer, kwargs["metadata"]).dataobj), kwargs["metadata"]["affine"],
                     tmp_path / "written.nii.gz")
    back = load_nifti(out, ndim=3)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)
    np.testing.assert_array_equal(back.affine, affine)


def test_file_header_round_trips_through_the_layer(tmp_path):
    """A NIfTI file read, shown and written back keeps its data, dtype, affine and header codes."""
    affine = oriented_affine((2, 0, 1), (-1, 1, -1))
    data = np.random.default_rng(0).integers(-5, 5, SHAPE).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=4)  # MNI
    img.set_qform(affine, code=1)
    nib.save(img, tmp_path / "in.nii.gz")
    layer, kwargs = nifti_to_layer(load_nifti(tmp_path / "in.nii.gz"))
    out = layer_to_nifti(layer, kwargs["metadata"])
    nib.save(out, tmp_path / "out.nii.gz")
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(back.affine, affine)
    assert int(back.header["sform_code"]) == 4


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_every_array_dtype_maps_and_writes_back(tmp_path, dtype):
    """Masks (bool) and label volumes (int64 from numpy) map like any other volume."""
    affine = oriented_affine((1, 0, 2), (-1, 1, 1))
    data = (np.random.default_rng(2).random(SHAPE) * 4).astype(dtype)
    layer, kwargs = nifti_to_layer(data, affine)
    assert layer.dtype == np.dtype(dtype)
    img = layer_to_nifti(layer, kwargs["metadata"])
    nib.save(img, tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    np.testing.assert_array_equal(back.affine, affine)
    if dtype is bool:
        assert back.get_data_dtype() == np.uint8  # NIfTI has no boolean type


def test_extra_dimensions_go_first_and_round_trip():
    affine = oriented_affine((1, 2, 0), (1, -1, 1))
    data = np.random.default_rng(1).normal(size=(*SHAPE, 3)).astype(np.float32)
    layer, kwargs = nifti_to_layer(data, affine)
    assert layer.shape[0] == 3 and kwargs["scale"][0] == 1.0 and kwargs["units"][0] == "pixel"
    for t in range(3):
        (index,) = np.argwhere(layer[t] == data[(*MARK, t)])
        np.testing.assert_allclose(napari_world(index, {"scale": kwargs["scale"][1:],
                                                        "translate": kwargs["translate"][1:]}),
                                   nifti_mm_zyx(MARK, affine), rtol=0, atol=1e-9)
    img = layer_to_nifti(layer, kwargs["metadata"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)


def _rotated_affine(degrees: float = 30.0) -> np.ndarray:
    t = np.deg2rad(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 2.0, 3.0])
    affine[:3, 3] = (-10.0, 5.0, 3.0)
    return affine


def test_oblique_affine_warns_and_resamples():
    affine = _rotated_affine()
    assert is_oblique(affine)
    data = np.zeros((12, 12, 8), dtype=np.float32)
    data[5:8, 3:6, 3:5] = 1.0
    data[6, 4, 3] = 2.0  # not binary: nilearn interpolates it without a warning of its own
    with pytest.warns(UserWarning, match="oblique affine, resampled"):
        layer, kwargs = nifti_to_layer(data, affine, name="tilted")
    meta = kwargs["metadata"]
    assert meta["resampled"] and not is_oblique(meta["resampled_affine"])
    np.testing.assert_array_equal(meta["affine"], affine)  # the original is kept for reference
    assert kwargs["scale"] == (2.0, 2.0, 2.0)  # the smallest voxel size, isotropic
    # the blob's centre stays where it was in millimetres (within a voxel)
    centre_mm = nifti_mm_zyx(np.argwhere(data > 0).mean(axis=0), affine)
    weights = np.clip(layer, 0, None)
    centre_layer = (np.argwhere(np.ones(layer.shape, bool)) * weights.reshape(-1, 1)).sum(0) / weights.sum()
    assert np.linalg.norm(napari_world(centre_layer, kwargs) - centre_mm) < 2.0
    # written back on the resampled grid
    img = layer_to_nifti(layer, meta)
    np.testing.assert_array_equal(img.affine, meta["resampled_affine"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).shape, np.asarray(layer.shape)[::-1])


def test_oblique_affine_refused_when_resampling_is_off():
    with pytest.raises(InputError, match="oblique"):
        nifti_to_layer(np.zeros((3, 3, 3), np.float32), _rotated_affine(), resample_oblique=False)


def test_axis_aligned_volumes_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nifti_to_layer(np.zeros(SHAPE, np.float32), oriented_affine((0, 1, 2), (-1, 1, 1)))


def test_array_without_affine_is_refused():
    with pytest.raises(InputError, match="without its affine"):
        nifti_to_layer(np.zeros(SHAPE, np.float32))


@pytest.mark.parametrize("case", ORIENTATIONS[::7], ids=orientation_id)
def test_peak_point_is_the_centre_of_the_strongest_region(case):
    """The viewer cuts through the strongest region (here negative), not through one stray voxel that is
    stronger still, nor through a wider, weaker region of a dense map; the point is the region's centre in
    napari's world coordinates."""
    affine = oriented_affine(*case)
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.1, (14, 16, 12)).astype(np.float32)
    data[3:6, 8:11, 2:5] = -0.8          # a 3x3x3 region, centre voxel (4, 9, 3)
    data[4, 9, 3] = -0.81                # (marked, to find it in the layer)
    data[7:13, 1:7, 5:11] = 0.3          # a wider, weaker region (216 voxels)
    data[1, 1, 10] = 5.0                 # one stray voxel
    point = peak_point(nib.Nifti1Image(data, affine))
    np.testing.assert_allclose(point, nifti_mm_zyx((4, 9, 3), affine), atol=1e-6)
    layer, kwargs = nifti_to_layer(data, affine)
    (index,) = np.argwhere(layer == data[4, 9, 3])
    np.testing.assert_allclose(point, napari_world(index, kwargs), atol=1e-6)


def test_peak_point_of_an_empty_map_is_the_grid_centre():
    affine = oriented_affine((0, 1, 2), (1, 1, 1))
    point = peak_point(nib.Nifti1Image(np.zeros((5, 7, 9), np.float32), affine))
    np.testing.assert_allclose(point, nifti_mm_zyx((2, 3, 4), affine))


@pytest.mark.parametrize("case", ORIENTATIONS[::5], ids=orientation_id)
def test_refined_outline_layer_keeps_world_coordinates_and_writes_back_the_original(case):
    """Outline layers are drawn on a finer grid: each sub-voxel lies inside its voxel, the voxel's sub-voxels
    are centred on it, and the layer writes back as the original data and affine."""
    affine = oriented_affine(*case)
    data = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)
    coarse, kwargs = nifti_to_layer(data, affine, name="labels")
    fine, fine_kwargs = refine_layer(coarse, kwargs, target_mm=0.5)
    u = fine_kwargs["metadata"]["refine"]
    assert u == round(min(VOXEL) / 0.5) == 3
    assert fine.shape == tuple(n * u for n in coarse.shape) and "refine" not in kwargs["metadata"]
    index = np.argwhere(np.ones(fine.shape, dtype=bool))
    parent = index // u
    np.testing.assert_array_equal(fine[tuple(index.T)], coarse[tuple(parent.T)])
    offset = napari_world(index, fine_kwargs) - napari_world(parent, kwargs)
    assert np.all(np.abs(offset) < np.asarray(kwargs["scale"]) / 2)
    np.testing.assert_allclose(offset.mean(axis=0), 0, atol=1e-9)  # (every voxel has its u³ sub-voxels)
    img = layer_to_nifti(fine, fine_kwargs["metadata"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)
    # a grid at or below the target is left as it is
    same, same_kwargs = refine_layer(coarse, kwargs, target_mm=2.0)
    assert same is coarse and same_kwargs is kwargs

