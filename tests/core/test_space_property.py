"""Property test of the space mapping: any axis-aligned NIfTI round-trips exactly and lands at its millimetres."""

import itertools

import nibabel as nib
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_brain_concepts.core.space import layer_to_nifti, nifti_to_layer, world_of_voxel

PERMUTATIONS = list(itertools.permutations(range(3)))


@st.composite
def oriented_images(draw):
    perm = draw(st.sampled_from(PERMUTATIONS))
    flips = draw(st.tuples(*[st.sampled_from([1.0, -1.0])] * 3))
    sizes = draw(st.tuples(*[st.floats(0.5, 4.0, allow_nan=False)] * 3))
    shift = draw(st.tuples(*[st.floats(-120.0, 120.0, allow_nan=False)] * 3))
    shape = draw(st.tuples(*[st.integers(2, 7)] * 3))
    dtype = draw(st.sampled_from([np.float32, np.int16, np.uint8]))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for data_axis, world_axis in enumerate(perm):
        affine[world_axis, data_axis] = flips[data_axis] * sizes[data_axis]
    affine[:3, 3] = shift
    seed = draw(st.integers(0, 2**31 - 1))
    data = np.random.default_rng(seed).integers(0, 200, size=shape).astype(dtype)
    return nib.Nifti1Image(data, affine), data, affine


@settings(max_examples=60, deadline=None)
@given(case=oriented_images(), pick=st.integers(0, 10_000))
def test_any_axis_aligned_image_round_trips_and_maps_to_mm(case, pick):
    img, data, affine = case
    layer_data, kwargs = nifti_to_layer(img, name="vol")
    ijk = np.unravel_index(pick % data.size, data.shape)
    # the layer voxel holding the same value at the same place: map every layer index to its NIfTI voxel
    back_index = np.argwhere(np.ones(layer_data.shape, bool))
    world = back_index * np.asarray(kwargs["scale"]) + np.asarray(kwargs["translate"])
    target = world_of_voxel(ijk, affine)
    hit = np.argmin(np.abs(world - target).sum(axis=1))
    np.testing.assert_allclose(world[hit], target, atol=1e-6)
    assert layer_data[tuple(back_index[hit])] == data[ijk]
    out = layer_to_nifti(layer_data, kwargs["metadata"])
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), data)
    np.testing.assert_allclose(out.affine, affine, atol=1e-12)
