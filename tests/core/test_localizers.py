"""Localizer validation: Dice, ROI coverage and AUC of concept masks against ROI volumes."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from napari_brain_concepts.core.concepts.localizers import (
    COLUMNS,
    localizer_figure,
    localizer_validation,
    roi_regions,
)
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.study import RoiAtlas, Stimuli, Study, Subject


def _study():
    shape = (6, 6, 6)
    mask = np.zeros(shape, bool)
    mask[1:5, 1:5, 1:5] = True
    faces = np.zeros(shape, np.int32)
    faces[1:3, 1:3, 1:3] = 1   # FFA: 8 voxels
    faces[3:5, 1:2, 1:3] = 2   # OFA: 4 voxels
    places = np.zeros(shape, np.int32)
    places[3:5, 3:5, 3:5] = 1
    rois = {"floc-faces": RoiAtlas(faces, {1: "FFA", 2: "OFA"}), "floc-places": RoiAtlas(places, {1: "PPA"})}
    subj = Subject(name="s0", responses=np.zeros((2, mask.sum()), np.float32), mask=mask, affine=np.eye(4),
                   stimulus_ids=["a", "b"], rois=rois)
    return Study(name="t", stimuli=Stimuli(ids=["a", "b"], captions=[["x"], ["y"]]), subjects={"s0": subj})


def test_roi_regions_give_union_and_labels():
    regions = roi_regions(_study().subjects["s0"])
    names = [(a, r) for a, r, _ in regions]
    assert names == [("floc-faces", "all"), ("floc-faces", "FFA"), ("floc-faces", "OFA"), ("floc-places", "all")]
    assert [int(m.sum()) for _, _, m in regions] == [12, 8, 4, 8]


def test_validation_values():
    study = _study()
    subj = study.subjects["s0"]
    ffa = subj.from_volume(subj.rois["floc-faces"].labels == 1)
    face_mask = ffa.copy()
    face_mask[np.flatnonzero(~ffa)[:4]] = True  # 8 in FFA + 4 outside
    rng = np.random.default_rng(0)
    score = rng.normal(size=subj.n_voxels) + 2.0 * ffa
    table = localizer_validation(study, {"s0": {"face": face_mask}}, {"s0": {"face": score}})
    assert list(table.columns) == COLUMNS
    row = table[(table.roi == "floc-faces") & (table.region == "FFA")].iloc[0]
    assert row["intersection"] == 8 and row["dice"] == pytest.approx(16 / 20)
    assert row["roi_covered"] == 1.0 and row["mask_in_roi"] == pytest.approx(8 / 12)
    assert row["auc"] == pytest.approx(roc_auc_score(ffa, score)) and row["auc"] > 0.8
    places = table[(table.roi == "floc-places") & (table.region == "all")].iloc[0]
    assert places["dice"] < 0.2
    fig = localizer_figure(table)
    assert len(fig.axes) == 4  # two heat maps and their colour bars


def test_auc_is_nan_without_scores_and_errors_name_the_input():
    study = _study()
    n = study.subjects["s0"].n_voxels
    table = localizer_validation(study, {"s0": {"c": np.zeros(n, bool)}})
    assert table["auc"].isna().all() and table["mask_in_roi"].isna().all()
    with pytest.raises(InputError, match="mask of concept c in subject s0"):
        localizer_validation(study, {"s0": {"c": np.zeros(n + 1, bool)}})
    with pytest.raises(InputError, match="subject 'nobody'"):
        localizer_validation(study, {"nobody": {"c": np.zeros(n, bool)}})
