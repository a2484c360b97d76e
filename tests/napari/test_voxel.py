"""The voxel panel's concepts and the ROI outlines a participant comes with (no viewer needed)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from napari_brain_concepts._napari.layers import roi_layers
from napari_brain_concepts._napari.voxel import mean_responses, voxel_profile
from napari_brain_concepts.core.study import RoiAtlas


@pytest.fixture(scope="module")
def study():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny", embedding="features")


def _face_voxel(study):
    subject = study.subject(study.subject_names[0])
    ijk = tuple(int(v) for v in np.argwhere(study.truth["regions"][subject.name]["face"])[0])
    point = nib.affines.apply_affine(subject.affine, ijk)[::-1]  # napari world order (S, A, R)
    return subject, ijk, point


def test_only_concepts_that_drive_the_voxel_are_preferred(study):
    subject, ijk, point = _face_voxel(study)
    means = mean_responses(study, subject, ijk)
    seen = np.isfinite(means)
    rng = np.random.default_rng(0)
    up = np.where(seen, means, 0.0) + rng.normal(0, 0.1, len(means))
    scores = np.stack([up, -up, -2 * up], axis=1)
    names = SimpleNamespace(concepts=["c0", "c1", "c2"], scores=scores)
    profile = voxel_profile(study, subject.name, point, concept_names=names)
    assert profile.ijk == ijk and profile.in_mask
    assert [c for c, _ in profile.concepts] == ["c0"] and profile.concepts[0][1] > 0.5
    # every concept against the voxel: none is preferred (it listed the least negative ones)
    names = SimpleNamespace(concepts=["c1", "c2"], scores=scores[:, 1:])
    profile = voxel_profile(study, subject.name, point, concept_names=names)
    assert profile.concepts == [] and profile.measure
    assert profile.stimuli  # the images it prefers are still listed


def test_localizer_outlines_are_shown_and_other_atlases_hidden(study):
    subject = study.subject(study.subject_names[0])
    labels = subject.mask.astype(np.int32)
    atlas = RoiAtlas(labels, {1: "region"})
    nsd_like = dataclasses.replace(subject, rois={"nsdgeneral": atlas, "prf-visualrois": atlas,
                                                  "floc-faces": atlas, "floc-places": atlas})
    shown = {data[1]["name"]: data[1]["visible"] for data in roi_layers(nsd_like)}
    assert shown == {f"{subject.name} nsdgeneral": False, f"{subject.name} prf-visualrois": False,
                     f"{subject.name} floc-faces": True, f"{subject.name} floc-places": True}
    # a study without category localizers shows its first atlas
    own = dataclasses.replace(subject, rois={"V1": atlas, "V2": atlas})
    assert [data[1]["visible"] for data in roi_layers(own)] == [True, False]
