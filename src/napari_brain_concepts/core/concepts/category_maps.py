"""Per-concept brain maps: how strongly each voxel follows a concept's stimulus feature.

The simplest map a neuroscientist reads first: the Pearson correlation, across stimuli, between a voxel's
repeat-averaged response and a concept's feature (a category indicator, or any per-stimulus value). It
needs no decoder, so it is also what the sample data shows.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import InputError
from ..study import Study, Subject


def stimulus_responses(study: Study, subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Session-z-scored responses averaged over repeats: (rows in stimuli, (n_stimuli_shown, n_voxels))."""
    from ..decoding.prepare import zscore_by_session

    X = zscore_by_session(subject.responses, subject.sessions)
    rows = study.trial_rows(subject)
    shown, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    mean = np.zeros((len(shown), X.shape[1]), dtype=np.float64)
    np.add.at(mean, inverse, X)
    mean /= counts[:, None]
    return shown, mean.astype(np.float32)


def correlation_maps(responses: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Pearson r of every voxel (columns of ``responses``) with every feature column: (n_features, n_voxels)."""
    X = np.asarray(responses, dtype=np.float64)
    F = np.asarray(features, dtype=np.float64)
    if X.shape[0] != F.shape[0]:
        raise InputError("features", f"{F.shape[0]} rows for {X.shape[0]} stimuli", "give one row per stimulus")
    X = X - X.mean(0)
    F = F - F.mean(0)
    xs = np.sqrt((X ** 2).sum(0))
    fs = np.sqrt((F ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (F.T @ X) / np.outer(fs, xs)
    return np.nan_to_num(r).astype(np.float32)


def category_features(study: Study, min_count: int = 5) -> tuple[list[str], np.ndarray]:
    """Multi-hot category indicators of every stimulus, for categories with ≥ ``min_count`` stimuli."""
    counts = Counter(c for cats in study.stimuli.categories for c in set(cats))
    names = sorted(c for c, n in counts.items() if n >= min_count)
    if not names:
        raise InputError("stimuli.tsv", f"no category is given for at least {min_count} stimuli",
                         "add a ';'-separated categories column to stimuli.tsv")
    col = {c: j for j, c in enumerate(names)}
    F = np.zeros((len(study.stimuli), len(names)), dtype=np.float32)
    for i, cats in enumerate(study.stimuli.categories):
        for c in cats:
            if c in col:
                F[i, col[c]] = 1.0
    return names, F


def category_maps(study: Study, subject_name: str | None = None, min_count: int = 5
                  ) -> tuple[list[str], np.ndarray]:
    """Correlation maps of ``subject`` with every stimulus category: (names, (n_categories, n_voxels))."""
    subject = study.subject(subject_name)
    names, F = category_features(study, min_count)
    shown, responses = stimulus_responses(study, subject)
    return names, correlation_maps(responses, F[shown])


def top_voxel_dice(values: np.ndarray, region: np.ndarray) -> float:
    """Dice between the ``region.sum()`` highest-valued voxels and ``region`` (both over masked voxels)."""
    region = np.asarray(region, dtype=bool)
    k = int(region.sum())
    if k == 0:
        return float("nan")
    top = np.zeros_like(region)
    top[np.argsort(-np.asarray(values))[:k]] = True
    return float(2 * (top & region).sum() / (top.sum() + region.sum()))
