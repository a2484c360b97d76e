"""The space mapping through real napari layers: world coordinates are NIfTI millimetres in every orientation."""

import itertools

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image

from napari_brain_concepts.core.space import nifti_to_layer, world_of_voxel

ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3))
                for flips in itertools.product((1, -1), repeat=3)]


def _oriented_affine(perm, flips, sizes=(1.5, 2.0, 3.5), shape=(7, 9, 11)):
    affine = np.zeros((4, 4))
    for data_axis, world_axis in enumerate(perm):
        affine[world_axis, data_axis] = flips[data_axis] * sizes[data_axis]
    affine[:3, 3] = (-30.0, 12.5, 44.0)
    affine[3, 3] = 1
    return affine


@pytest.mark.parametrize(("perm", "flips"), ORIENTATIONS)
def test_layer_world_coordinate_is_nifti_mm(perm, flips):
    shape = (7, 9, 11)
    data = np.zeros(shape, dtype=np.float32)
    marked = (2, 6, 3)
    data[marked] = 1.0
    affine = _oriented_affine(perm, flips)
    layer_data, kwargs = nifti_to_layer(nib.Nifti1Image(data, affine), name="vol")
    layer = Image(layer_data, **kwargs)
    index = np.argwhere(layer.data == 1.0)[0]
    np.testing.assert_allclose(layer.data_to_world(index), world_of_voxel(marked, affine), atol=1e-6)
    assert tuple(layer.axis_labels) == ("S", "A", "R")
