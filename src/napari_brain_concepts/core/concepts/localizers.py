"""Do concepts land where localizers put them? Dice, ROI coverage and AUC against every ROI volume.

For every ROI atlas of a subject (fLoc faces/bodies/places/words in NSD, the planted fLoc-style volumes of
the synthetic study, or any ``rois/NAME.nii.gz``) and every concept: the Dice of the concept's voxel mask
with the ROI, the fraction of the ROI the mask covers, the fraction of the mask inside the ROI, and the
area under the ROC curve of the voxels' concept scores (their decoder weights projected on the concept)
for telling ROI voxels from the other analysed voxels. The AUC needs no threshold, so it still says
whether a concept points at a region when the hard mask is small.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ..errors import InputError
from ..study import Study, Subject
from .overlap import dice

#: Name of the row that joins all labels of an atlas into one region.
WHOLE_ATLAS = "all"

COLUMNS = ["subject", "concept", "roi", "region", "roi_voxels", "mask_voxels", "intersection", "dice",
           "roi_covered", "mask_in_roi", "auc"]


def roi_regions(subject: Subject) -> list[tuple[str, str, np.ndarray]]:
    """Every ROI of a subject as (atlas, region, membership per analysed voxel).

    Each atlas gives its union (region ``"all"``) and, when it has several labels, each named label.
    """
    out = []
    for atlas_name, atlas in subject.rois.items():
        out.append((atlas_name, WHOLE_ATLAS, subject.from_volume(atlas.labels != 0)))
        if len(atlas.names) > 1:
            for label, name in sorted(atlas.names.items()):
                out.append((atlas_name, name, subject.from_volume(atlas.labels == label)))
    return out


def _per_voxel(values, n_voxels: int, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n_voxels,):
        raise InputError(where, f"has shape {arr.shape}, the subject has {n_voxels} analysed voxels",
                         "give one value per masked voxel (Subject.from_volume turns a volume into that)")
    return arr


def localizer_validation(study: Study, concept_masks: Mapping[str, Mapping[str, np.ndarray]],
                         concept_scores: Mapping[str, Mapping[str, np.ndarray]] | None = None
                         ) -> pd.DataFrame:
    """Validate concept masks against every ROI volume of the study.

    Parameters
    ----------
    study : Study
    concept_masks : mapping subject → (concept → bool per analysed voxel)
    concept_scores : mapping subject → (concept → float per analysed voxel), optional
        Voxel weights projected on the concept (e.g. :meth:`SharedConceptClustering.similarity`); the
        AUC column is NaN without them, and wherever the ROI holds none or all of the analysed voxels.

    Returns
    -------
    DataFrame
        One row per subject, concept and ROI region, columns ``COLUMNS``.
    """
    rows = []
    for subject_name, masks in concept_masks.items():
        if subject_name not in study.subjects:
            raise InputError("concept masks", f"name subject {subject_name!r}, which the study lacks",
                             f"use subjects of the study ({', '.join(study.subjects)})")
        subject = study.subjects[subject_name]
        regions = roi_regions(subject)
        scores = (concept_scores or {}).get(subject_name, {})
        for concept, mask in masks.items():
            mask = _per_voxel(mask, subject.n_voxels, f"mask of concept {concept} in subject {subject_name}")
            mask = mask.astype(bool)
            score = scores.get(concept)
            if score is not None:
                score = _per_voxel(score, subject.n_voxels,
                                   f"scores of concept {concept} in subject {subject_name}").astype(np.float64)
            for atlas, region, roi in regions:
                n_roi, n_mask, inter = int(roi.sum()), int(mask.sum()), int((roi & mask).sum())
                auc = float("nan")
                if score is not None and 0 < n_roi < roi.size:
                    auc = float(roc_auc_score(roi, score))
                rows.append({
                    "subject": subject_name, "concept": concept, "roi": atlas, "region": region,
                    "roi_voxels": n_roi, "mask_voxels": n_mask, "intersection": inter,
                    "dice": dice(mask, roi),
                    "roi_covered": inter / n_roi if n_roi else float("nan"),
                    "mask_in_roi": inter / n_mask if n_mask else float("nan"),
                    "auc": auc,
                })
    return pd.DataFrame(rows, columns=COLUMNS)


def localizer_figure(table: pd.DataFrame, whole_atlas_only: bool = True):
    """Heat maps of mean Dice and mean AUC (over subjects) per concept and ROI.

    Returns a matplotlib ``Figure`` (no pyplot state, safe in worker threads).
    """
    from matplotlib.figure import Figure

    data = table[table["region"] == WHOLE_ATLAS] if whole_atlas_only else table
    data = data.assign(roi_region=np.where(data["region"] == WHOLE_ATLAS, data["roi"],
                                           data["roi"] + ":" + data["region"]))
    fig = Figure(figsize=(4.0 + 0.9 * max(1, data["roi_region"].nunique()) * 2,
                          1.5 + 0.35 * max(1, data["concept"].nunique())))
    axes = fig.subplots(1, 2)
    for ax, column, title, cmap, limits in ((axes[0], "dice", "Dice with ROI", "viridis", (0, 1)),
                                            (axes[1], "auc", "AUC of concept scores", "RdBu_r", (0, 1))):
        if data.empty:
            ax.set_axis_off()
            ax.set_title(f"{title}\n(no ROI volumes)")
            continue
        pivot = data.pivot_table(index="concept", columns="roi_region", values=column, aggfunc="mean",
                                 sort=False)
        image = ax.imshow(pivot.to_numpy(dtype=float), cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
        ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=45, ha="right")
        ax.set_yticks(range(pivot.shape[0]), pivot.index)
        for (i, j), value in np.ndenumerate(pivot.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if (column == "dice" and value < 0.5) else "black")
        ax.set_title(f"{title} (mean over subjects)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
