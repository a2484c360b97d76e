"""Sample data, reader and writer inside a real viewer."""

import nibabel as nib
import numpy as np

from napari_brain_concepts._napari.layers import (
    NEGATIVE_COLORMAP,
    NEGATIVE_SUFFIX,
    POSITIVE_COLORMAP,
)
from napari_brain_concepts._napari.sample import SAMPLE_SEED, SAMPLE_SIZE
from napari_brain_concepts.core.space import world_of_voxel
from napari_brain_concepts.core.synthetic import make_synthetic_study


def _layer(viewer, suffix):
    matches = [layer for layer in viewer.layers if layer.name.endswith(suffix)]
    assert matches, f"no layer ending in {suffix!r}: {[layer.name for layer in viewer.layers]}"
    return matches[0]


def test_open_sample_layers_line_up(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-brain-concepts", "synthetic-study")
    study = make_synthetic_study(seed=SAMPLE_SEED, size=SAMPLE_SIZE)
    subject = study.subject(study.subject_names[0])
    names = [layer.name for layer in viewer.layers]
    assert f"{subject.name} anatomy" in names
    assert f"{subject.name} mask" in names
    assert f"{subject.name} floc-faces" in names
    face_map = _layer(viewer, "face map")
    assert face_map.colormap.name == POSITIVE_COLORMAP["name"]
    face_negative = viewer.layers[face_map.name + NEGATIVE_SUFFIX]  # the map's negative part, same data
    assert face_negative.colormap.name == NEGATIVE_COLORMAP["name"] and face_negative.data is face_map.data
    # napari added the sample's layers itself: the Study dock ties the two parts when it opens
    viewer.window.add_plugin_dock_widget("napari-brain-concepts", "Study")
    face_map.visible = False
    assert not face_negative.visible
    face_map.visible = True
    assert face_map.blending == "additive"
    np.testing.assert_allclose(face_map.scale, subject.voxel_size[::-1])

    # the planted face region sits at its millimetre position, and the face map peaks inside it
    region = study.truth["regions"][subject.name]["face"]
    planted = _layer(viewer, "planted regions")
    face_label = int(planted.features.loc[planted.features["name"] == "face", "index"].iloc[0])
    # (outlines are drawn on a finer grid: u³ sub-voxels centred on each voxel)
    u = planted.metadata["refine"]
    assert u > 1 and planted.data.shape == tuple(n * u for n in face_map.data.shape)
    sub_voxels = np.argwhere(planted.data == face_label)
    world = np.array([planted.data_to_world(v) for v in sub_voxels])
    _, parent = np.unique(sub_voxels // u, axis=0, return_inverse=True)
    centres = np.stack([np.bincount(parent.ravel(), weights=world[:, k]) for k in range(3)], axis=1) / u ** 3
    expected = world_of_voxel(np.argwhere(region), subject.affine)
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(expected, axis=0), atol=1e-5)
    peak = np.unravel_index(np.argmax(face_map.data), face_map.data.shape)
    at_peak = np.round(planted.world_to_data(face_map.data_to_world(peak))).astype(int)
    assert planted.data[tuple(at_peak)] == face_label


def test_reader_and_writer_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    affine = np.array([[0, 0, -2.5, 40], [1.5, 0, 0, -20], [0, 3.0, 0, 5], [0, 0, 0, 1]], dtype=float)
    data = np.random.default_rng(0).normal(size=(6, 8, 5)).astype(np.float32)
    path = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    layers = viewer.open(path, plugin="napari-brain-concepts")
    layer = layers[0]
    ijk = (4, 2, 3)
    index = np.argwhere(layer.data == data[ijk])[0]
    np.testing.assert_allclose(layer.data_to_world(index), world_of_voxel(ijk, affine), atol=1e-6)

    out = tmp_path / "saved.nii.gz"
    layer.save(str(out), plugin="napari-brain-concepts")
    back = nib.load(out)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), data)
    np.testing.assert_allclose(back.affine, affine)

    labels = (data > 0).astype(np.uint8)
    lpath = tmp_path / "roi_mask.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), lpath)
    [lab] = viewer.open(lpath, plugin="napari-brain-concepts")
    assert lab._type_string == "labels"
    lout = tmp_path / "roi_saved.nii.gz"
    lab.save(str(lout), plugin="napari-brain-concepts")
    np.testing.assert_array_equal(np.asanyarray(nib.load(lout).dataobj), labels)
    np.testing.assert_allclose(nib.load(lout).affine, affine)

    # an anatomical image (the study folder's anat.nii.gz, a BIDS T1w, of integers too) opens grey, as the
    # Study dock shows anatomy: no map colours, no threshold, not labels
    from napari_brain_concepts._napari.threshold import is_map_layer

    anatomy = (np.abs(data) * 1000).astype(np.int16)
    for name, volume in (("anat.nii.gz", np.abs(data)), ("sub-01_T1w.nii.gz", anatomy)):
        nib.save(nib.Nifti1Image(volume, affine), tmp_path / name)
        [anat] = viewer.open(tmp_path / name, plugin="napari-brain-concepts")
        assert anat._type_string == "image" and anat.colormap.name == "gray", name
        assert anat.metadata["brain_concepts"]["role"] == "anatomy" and not is_map_layer(anat)
    # a BIDS file in the space of the T1w is no anatomy: its suffix (the last word) says what it is
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "sub-01_space-T1w_desc-face_stat.nii.gz")
    stat = viewer.open(tmp_path / "sub-01_space-T1w_desc-face_stat.nii.gz", plugin="napari-brain-concepts")[0]
    assert is_map_layer(stat)


def test_planted_regions_have_one_colour_per_concept_in_every_participant():
    from napari_brain_concepts._napari.layers import region_layer
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(seed=0, size="tiny")
    colours = []
    for name in study.subject_names[:2]:
        _, kwargs, _ = region_layer(study.subject(name), study.truth["regions"][name])
        names = dict(zip(kwargs["features"]["index"], kwargs["features"]["name"]))
        colours.append({names[k]: tuple(v) for k, v in kwargs["colormap"].items() if k is not None})
    shared = set(colours[0]) & set(colours[1])
    assert shared and all(colours[0][c] == colours[1][c] for c in shared)
    assert len(set(colours[0].values())) == len(colours[0])  # distinct within a participant
