"""Checking concepts and masks against the planted truth of a synthetic study.

Each planted concept is matched to the basis component whose activations over the stimuli correlate
best with the concept's generative feature (one component per concept, by the Hungarian assignment).
For every subject and planted concept the hard mask of the matched component is compared with the
region where the concept was planted (Dice), and the concept itself is read out through the mask: the
held-out Pearson r of the masked read-out with the concept's generative feature (``concept_r``).

A concept not planted in a subject must not be decodable there: the masks of the component matched to it
must not read it out at r ≥ the masks' decodability threshold (``min_decodability``, 0.3). Whether that
component has a mask is not the test: a concept no brain carries has no component of its own, and the
one-to-one matching hands it a left-over component that is about other concepts. On the default study
(seed 0) vehicle, which has no region, gets c001 (r = 0.47 with vehicle), whose positive end reads "car,
toy, vehicle" and whose negative end reads "table, top": c001 is decodable through the relation region and
has masks there, and those masks read vehicle out at r = −0.32 to −0.15. Planted concepts read out through
their own masks at 0.67–0.94.

``any_mask_r`` reports the best read-out of the concept through any of the subject's masks, whichever
component they belong to. It is not held to the threshold: other concepts' masks can carry part of a
concept that no region was planted for (on study seed 1, the best mask in each participant reads vehicle
out at r = 0.39–0.47).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..decoding.metrics import pearson_per_dimension
from ..errors import InputError
from ..study import Study
from .masks import dice


def _truth(study: Study) -> dict:
    truth = study.truth
    if not truth or "features" not in truth or "concepts" not in truth:
        raise InputError(f"study {study.name}", "has no planted truth (features, concepts)",
                         "ground-truth checks need a synthetic study (make_synthetic_study)")
    return truth


def match_planted(study: Study, activations: np.ndarray, concepts: Sequence[str]) -> pd.DataFrame:
    """Match each planted concept to one component.

    Parameters
    ----------
    activations : (n_stimuli, K)
        Concept activations of every stimulus (e.g. ``basis.transform(embeddings)``).
    concepts : K names of the components.

    Returns
    -------
    DataFrame: ``planted`` (concept name), ``concept`` (component name), ``r`` (Pearson r of the component's
    activations with the planted feature over the stimuli), ``best_r`` (the best r any component reaches).
    """
    from scipy.optimize import linear_sum_assignment

    truth = _truth(study)
    F = np.asarray(truth["features"], dtype=np.float64)
    A = np.asarray(activations, dtype=np.float64)
    if A.shape[0] != F.shape[0] or A.shape[1] != len(concepts):
        raise InputError("concept activations", f"have shape {A.shape}",
                         f"give ({F.shape[0]}, {len(concepts)}): one row per stimulus, one column per concept")
    Fc = F - F.mean(0)
    Ac = A - A.mean(0)
    denom = np.outer(np.linalg.norm(Fc, axis=0), np.linalg.norm(Ac, axis=0))
    R = np.divide(Fc.T @ Ac, denom, out=np.zeros((F.shape[1], A.shape[1])), where=denom > 0)
    planted_idx, comp_idx = linear_sum_assignment(-R)
    rows = [{"planted": truth["concepts"][p], "concept": concepts[c], "r": float(R[p, c]),
             "best_r": float(R[p].max())} for p, c in zip(planted_idx, comp_idx)]
    return pd.DataFrame(rows)


def planted_directions(study: Study, embedding: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each planted concept's own direction in embedding space, unit rows (n_concepts, d), and the names.

    The rows of the least-squares map from the (centred) generative features to the (centred) embeddings:
    what a one-unit change of one concept, the others held fixed, does to the embedding. Masks optimised
    for these directions check the mask optimiser on its own, apart from how well the concept basis found
    the concepts.
    """
    truth = _truth(study)
    F = np.asarray(truth["features"], dtype=np.float64)
    E = np.asarray(embedding, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] != F.shape[0]:
        raise InputError("embedding", f"has shape {E.shape}", f"give ({F.shape[0]}, d): one row per stimulus")
    B = np.linalg.lstsq(F - F.mean(0), E - E.mean(0), rcond=None)[0]
    norms = np.linalg.norm(B, axis=1, keepdims=True)
    return (B / np.where(norms > 0, norms, 1.0)).astype(np.float32), list(truth["concepts"])


def mask_truth_table(study: Study, matches: pd.DataFrame, hard_masks: Mapping[str, np.ndarray],
                     decodability: Mapping[str, np.ndarray], decodable: Mapping[str, np.ndarray],
                     concepts: Sequence[str], readouts: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     min_r: float) -> pd.DataFrame:
    """Dice of every subject's hard mask with the planted region, and the concept read out through it.

    ``hard_masks[subject]`` is (K, V) bool over the subject's voxels, ``decodability[subject]`` and
    ``decodable[subject]`` are (K,) (held-out r with the full decoder and whether it passed the threshold).
    ``readouts[subject]`` is ``(rows, R)``: the held-out trials' stimulus rows (n,) and each concept's
    read-out through its hard mask on them, (K, n) (``VoxelMaskOptimizer.hard_readout_``).

    Rows: ``subject``, ``planted``, ``concept``, ``planted_here`` (the concept has a region in this subject),
    ``decodability``, ``has_mask``, ``n_mask``, ``n_region``, ``dice`` (NaN where nothing was planted),
    ``concept_r`` (Pearson r of the masked read-out with the planted concept's generative feature over the
    held-out trials; NaN without a mask), ``decodes_concept`` (a mask with ``concept_r ≥ min_r``), and
    ``any_mask_r``/``any_mask_concept``: the highest such r over all the subject's masks, of any component,
    and whose mask it is (NaN/empty when the subject has no mask).
    """
    truth = _truth(study)
    regions = truth.get("regions", {})
    features = np.asarray(truth["features"], dtype=np.float64)
    feature_index = {c: i for i, c in enumerate(truth["concepts"])}
    index = {c: k for k, c in enumerate(concepts)}
    rows = []
    for subject, hard in hard_masks.items():
        subj = study.subject(subject)
        trial_rows, readout = readouts[subject]
        with_mask = np.flatnonzero(np.asarray(decodable[subject], dtype=bool) & np.asarray(hard, dtype=bool).any(1))
        for _, m in matches.iterrows():
            k = index[m["concept"]]
            region_vol = regions.get(subject, {}).get(m["planted"])
            region = None if region_vol is None else subj.from_volume(np.asarray(region_vol, dtype=bool))
            planted_here = region is not None and bool(region.any())
            mask = np.asarray(hard[k], dtype=bool)
            has_mask = bool(decodable[subject][k] and mask.any())
            feature = features[trial_rows, feature_index[m["planted"]]]
            # r of every concept's masked read-out with the feature (0 for a constant read-out)
            r = pearson_per_dimension(readout.T, np.broadcast_to(feature[:, None], readout.T.shape))
            concept_r = float(r[k]) if has_mask else float("nan")
            every = r[with_mask]
            rows.append({
                "subject": subject, "planted": m["planted"], "concept": m["concept"],
                "planted_here": planted_here,
                "decodability": float(decodability[subject][k]),
                "has_mask": has_mask,
                "n_mask": int(mask.sum()),
                "n_region": int(region.sum()) if region is not None else 0,
                "dice": dice(mask, region) if planted_here else float("nan"),
                "concept_r": concept_r,
                "decodes_concept": bool(has_mask and concept_r >= min_r),
                "any_mask_r": float(every.max()) if every.size else float("nan"),
                "any_mask_concept": concepts[with_mask[every.argmax()]] if every.size else "",
            })
    return pd.DataFrame(rows)


def truth_figure(table: pd.DataFrame):
    """Heat map of Dice (subjects × planted concepts); ``—`` where the concept was not planted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    pivot = table.pivot_table(index="subject", columns="planted", values="dice", aggfunc="first", dropna=False)
    fig = Figure(figsize=(1.0 + 0.8 * pivot.shape[1], 1.2 + 0.45 * pivot.shape[0]))
    ax = fig.subplots()
    im = ax.imshow(pivot.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=8)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            v = pivot.iat[i, j]
            ax.text(j, i, "—" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and v < 0.6 else "black")
    ax.set_title("Hard mask vs planted region (Dice)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig
