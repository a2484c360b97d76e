"""Per-concept brain maps: how strongly each voxel follows a concept's stimulus feature.

The simplest map a neuroscientist reads first: the Pearson correlation, across stimuli, between a voxel's
repeat-averaged response and a concept's feature (a category indicator, or any per-stimulus value). It
needs no decoder, so it is also what the sample data shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..errors import InputError
from ..progress import Progress
from ..study import Study, Subject


def stimulus_responses(study: Study, subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Session-z-scored responses averaged over repeats: (rows in stimuli, (n_stimuli_shown, n_voxels))."""
    from ..decoding.prepare import mean_by_stimulus, zscore_by_session

    shown, mean = mean_by_stimulus(zscore_by_session(subject.responses, subject.sessions,
                                                     where=f"subject {subject.name} responses"),
                                   study.trial_rows(subject))
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


def _category_counts(study: Study) -> Counter:
    return Counter(c for cats in study.stimuli.categories for c in {str(c).strip() for c in cats} if c)


def category_error(study: Study, min_count: int = 5) -> InputError | None:
    """The error of a study that gives no category to map (none labels ``min_count`` stimuli or more), or
    None."""
    counts = _category_counts(study)
    if not counts:
        problem = "the study gives no stimulus categories (stimuli.tsv has no categories column, or it is empty)"
    elif max(counts.values()) < min_count:
        label, n = counts.most_common(1)[0]
        problem = (f"no category label is shared by at least {min_count} stimuli (maps.min_count; the most "
                   f"common, {label!r}, labels {n})")
    else:
        return None
    where = Path(study.path) / "stimuli.tsv" if study.path is not None else "stimuli.tsv"
    return InputError(where, problem, "label the stimuli in a ';'-separated categories column of stimuli.tsv "
                      f"(e.g. animal;red), with labels shared by {min_count} stimuli or more, or lower "
                      "maps.min_count")


def category_features(study: Study, min_count: int = 5) -> tuple[list[str], np.ndarray]:
    """Multi-hot category indicators of every stimulus, for categories with ≥ ``min_count`` stimuli."""
    error = category_error(study, min_count)
    if error is not None:
        raise error
    counts = _category_counts(study)
    names = sorted(c for c, n in counts.items() if n >= min_count)
    col = {c: j for j, c in enumerate(names)}
    F = np.zeros((len(study.stimuli), len(names)), dtype=np.float32)
    for i, cats in enumerate(study.stimuli.categories):
        for c in cats:
            if str(c).strip() in col:
                F[i, col[str(c).strip()]] = 1.0
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


def concept_features(study: Study, min_count: int = 5) -> tuple[list[str], np.ndarray, str]:
    """Per-stimulus concept features: the planted ones of a synthetic study, else the categories."""
    truth = study.truth or {}
    if "features" in truth and "concepts" in truth:
        return list(truth["concepts"]), np.asarray(truth["features"], dtype=np.float32), "planted"
    names, F = category_features(study, min_count)
    return names, F, "categories"


def concept_directions(embedding: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Direction of each concept in embedding space: the covariance of the embedding with the feature,
    L2-normalised (k, d)."""
    E = np.asarray(embedding, dtype=np.float64)
    F = np.asarray(features, dtype=np.float64)
    D = (F - F.mean(0)).T @ (E - E.mean(0)) / len(E)
    norms = np.linalg.norm(D, axis=1, keepdims=True)
    return (D / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass
class MapsParams:
    """Parameters of the ``maps`` step."""

    min_count: int = 5          # categories need at least this many stimuli


def not_applicable(ctx: AnalysisContext) -> InputError | None:
    """Why the maps step cannot run (no planted concepts and no category labelling ``maps.min_count``
    stimuli; a whole analysis leaves it out), or None."""
    truth = ctx.study.truth or {}
    if "features" in truth and "concepts" in truth:
        return None
    return category_error(ctx.study, ctx.step_params("maps", MapsParams).min_count)


def maps_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Per-concept brain maps of every subject: response correlation and decoder weights on the concept.

    Writes ``subjects/SUBJ/maps/corr_CONCEPT.nii.gz`` (Pearson r of each voxel's repeat-averaged response with
    the concept's stimulus feature) and ``decoder_CONCEPT.nii.gz`` (the decoder's voxel weights projected on
    the concept's embedding direction), and ``tables/concept_maps.tsv``: for each subject, concept and map the
    peak value and — on a study that plants concepts (synthetic truth) — the Dice between the map's top
    voxels (as many as the planted region has) and the planted region (``dice_top_vs_planted``: NaN for a
    concept not planted in that subject; no such column on one's own data).
    """
    params = ctx.step_params("maps", MapsParams)
    study = ctx.study
    names, F, source = concept_features(study, params.min_count)
    emb_name = ctx.state.get("decoder_embedding", "captions")
    directions = concept_directions(ctx.embedding(emb_name, param="decode.embedding").values, F)
    regions = (study.truth or {}).get("regions", {})
    rows = []
    subjects = list(ctx.state.get("decoders", {})) or study.subject_names
    for i, sname in enumerate(subjects):
        yield Progress("maps", i, len(subjects), f"concept maps of {sname}")
        subject = study.subject(sname)
        shown, responses = stimulus_responses(study, subject)
        maps = {"corr": correlation_maps(responses, F[shown])}
        decoder = ctx.state.get("decoders", {}).get(sname)
        prepared = ctx.state.get("prepared", {}).get(sname)
        if decoder is not None and prepared is not None and getattr(decoder, "coef_", None) is not None:
            maps["decoder"] = prepared.voxel_values(directions @ np.asarray(decoder.coef_, dtype=np.float32))
        for kind, values in maps.items():
            for j, concept in enumerate(names):
                ctx.store.write_map(sname, f"{kind}_{concept}", subject.to_volume(values[j]), subject.affine)
                planted = regions.get(sname, {}).get(concept)
                dice = top_voxel_dice(values[j], subject.from_volume(planted)) if planted is not None else np.nan
                rows.append({"subject": sname, "concept": concept, "map": kind, "source": source,
                             "peak": float(np.max(values[j])), "dice_top_vs_planted": dice})
    table = pd.DataFrame(rows)
    if not regions:  # one's own data plants nothing: no column of NaN
        table = table.drop(columns="dice_top_vs_planted")
    ctx.store.write_table("concept_maps", table)
    ctx.state["concept_maps"] = table
    ctx.store.mark_done("maps", source=source, concepts=names)
    yield Progress("maps", len(subjects), len(subjects), "concept maps written")
