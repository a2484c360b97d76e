"""What one voxel prefers: the stimuli that drive it most, and the concepts whose stimuli drive it.

Clicking the canvas (without dragging) gives a world point in the participant's millimetres; it falls in one
voxel of the participant's grid. From the participant's own responses (the mean over the repeats of each
stimulus):

- preferred stimuli: the largest mean responses;
- preferred concepts: the concepts whose stimulus scores (the projection of each stimulus's embedding on the
  concept direction, from the ``concepts`` step) correlate best with the voxel's mean responses, over the
  stimuli the participant saw. On a results folder opened from disk, the scores come from its saved basis
  and the study's embedding (:func:`~napari_brain_concepts.core.concepts.steps.saved_concept_scores`); only
  when the study lacks that embedding, the difference between the voxel's mean response to a concept's
  most and least associated stimuli (the ``concept_names`` table) ranks the concepts instead. Only concepts
  with a positive preference are listed: a voxel that no concept drives lists none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class VoxelProfile:
    """One voxel of one participant: where it is, and what it prefers."""

    subject: str
    ijk: tuple[int, int, int]
    in_mask: bool
    concepts: list[tuple[str, float]] = field(default_factory=list)  # (concept id, preference > 0), best first
    stimuli: list[tuple[int, float]] = field(default_factory=list)  # (row in stimuli, mean response), best first
    measure: str = ""  # what the concept preference is ("" when no concepts were ranked)


def voxel_of_point(subject: Any, point: Any) -> tuple[int, int, int] | None:
    """Voxel ``(i, j, k)`` of the subject's grid at a napari world point (mm, axes S, A, R); None outside."""
    import nibabel as nib

    ras = np.asarray(point, dtype=float)[-3:][::-1]
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(subject.affine), ras)).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(subject.mask.shape)):
        return None
    return tuple(int(v) for v in ijk)


def mean_responses(study: Any, subject: Any, ijk: tuple[int, int, int]) -> np.ndarray:
    """Mean response of analysed voxel ``ijk`` to every stimulus (NaN for stimuli the subject did not see)."""
    column = int(np.count_nonzero(subject.mask.ravel()[: np.ravel_multi_index(ijk, subject.mask.shape)]))
    rows = study.trial_rows(subject)
    n_stim = len(study.stimuli)
    counts = np.bincount(rows, minlength=n_stim)
    sums = np.bincount(rows, weights=np.asarray(subject.responses[:, column], dtype=np.float64), minlength=n_stim)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def concepts_by_correlation(means: np.ndarray, concepts: list[str], scores: np.ndarray) -> list[tuple[str, float]]:
    """Pearson r between the voxel's mean responses and each concept's stimulus scores, largest first."""
    seen = np.isfinite(means)
    if seen.sum() < 3:
        return []
    m = means[seen] - means[seen].mean()
    s = np.asarray(scores, dtype=np.float64)[seen]
    s = s - s.mean(0)
    denom = np.sqrt((m ** 2).sum() * (s ** 2).sum(0))
    r = np.where(denom > 0, m @ s / np.where(denom > 0, denom, 1.0), 0.0)
    return sorted(zip(map(str, concepts), map(float, r)), key=lambda cr: -cr[1])


def concepts_by_table(means: np.ndarray, table: Any, index: dict[str, int]) -> list[tuple[str, float]]:
    """Mean response to a concept's most associated stimuli minus its least associated ones, largest first."""
    out = []
    for concept, df in table.groupby("concept", sort=False):
        ends = {}
        for end in ("positive", "negative"):
            ids = df[df["end"] == end]["stimulus_ids"]
            rows = [index[s] for s in str(ids.iloc[0]).split(";") if s in index] if len(ids) else []
            values = means[rows] if rows else np.array([])
            ends[end] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        diff = ends["positive"] - ends["negative"]
        if np.isfinite(diff):
            out.append((str(concept), diff))
    return sorted(out, key=lambda cd: -cd[1])


def voxel_profile(study: Any, subject_name: str, point: Any, concept_names: Any = None, table: Any = None,
                  n: int = 5) -> VoxelProfile | None:
    """Profile of the voxel at world ``point`` of ``subject_name``.

    ``concept_names``: the ``concepts`` step's :class:`ConceptNames` (its ``scores``); else ``table``: a
    concept-names table (columns concept, end, stimulus_ids); else no concepts.
    """
    subject = study.subject(subject_name)
    ijk = voxel_of_point(subject, point)
    if ijk is None:
        return None
    profile = VoxelProfile(subject_name, ijk, bool(subject.mask[ijk]))
    if not profile.in_mask:
        return profile
    means = mean_responses(study, subject, ijk)
    order = np.argsort(np.where(np.isfinite(means), -means, np.inf), kind="stable")[:n]
    profile.stimuli = [(int(r), float(means[r])) for r in order if np.isfinite(means[r])]
    # preferred: a positive preference only (a voxel no concept drives lists none, not the least negative)
    if concept_names is not None:
        ranked = concepts_by_correlation(means, concept_names.concepts, concept_names.scores)
        profile.measure = "r with the concept's stimulus scores"
    elif table is not None and len(table):
        ranked = concepts_by_table(means, table, study.stimuli.index)
        profile.measure = "mean response, most − least associated images"
    else:
        ranked = []
    profile.concepts = [(c, v) for c, v in ranked if v > 0][:n]
    return profile
