"""Pipeline step ``shared``: concepts shared across participants, named, overlapped and validated.

Reads the fitted linear decoder of every subject (``ctx.state["decoders"][subject]``, anything with
``coef_`` of shape (n_targets, n_voxels); or ``arrays/decoder_SUBJ.npz`` in the results store; ridge
decoders with per-dimension alphas are refitted with one alpha, see ``SharedParams.ridge_alpha``), turns
them into activation patterns (``SharedParams.columns``), clusters the voxel columns with
:class:`SharedConceptClustering`, names every shared concept by its most and
least associated stimuli (the least associated ones are the concept's "negation"), and writes:

- ``subjects/SUBJ/masks/shared-KK.nii.gz``  the concept's voxels in each participant (after expansion)
- ``subjects/SUBJ/maps/shared-KK.nii.gz``   cosine of each voxel's column (pattern) with the concept
- ``shared/shared-KK.nii.gz``               n-of-N count volume in the common space
- ``shared/concepts.tsv``, ``tables/shared_concepts.tsv``  one row per concept (names, participants,
  and, for a synthetic study, the planted concept it recovers with its Dice per subject)
- ``tables/shared_concept_names.tsv``        top and bottom stimuli and caption lemmas of each concept
- ``figures/shared_concept_shared-KK.png``   contact sheet: top stimuli and the negation's stimuli
- ``tables/shared_overlap.tsv``              pairwise Jaccard/Dice between subjects, per concept
- ``tables/shared_eps_sweep.tsv``            clusters per eps of the sweep
- ``tables/localizer_validation.tsv`` and ``figures/localizer_validation.png``
- ``figures/shared_concepts.png``            voxels per concept and participant
- ``tables/shared_planted_dice.tsv``         (study with planted truth) Dice of every concept mask with
  every planted region, per subject

``ctx.state["shared"]`` receives a dict with ``clustering`` (the fitted estimator), ``order`` (cluster
index of each ``shared-KK``), ``ridge_alphas`` (subject → alpha of the refit, or None), ``concepts``,
``validation``, ``overlap``, ``sweep`` (DataFrames), ``masks`` (subject → concept → bool per voxel) and
``summary`` (the short table the demo prints, also the step's return value).
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..errors import InputError, Range
from ..io.atomic import write_atomic
from ..progress import Progress
from ..ranges import SHARED
from ..study import Study
from .localizers import WHOLE_ATLAS, localizer_figure, localizer_validation
from .naming import WORD_RANKINGS, name_directions, write_names
from .overlap import common_space, concept_overlap, dice
from .shared import EPS_SWEEP, SharedConceptClustering, decoder_weights

#: radii the step sweeps below the paper's (patterns of one concept lie within cosine distance ~0.2)
PATTERN_EPS_SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3)

STEP = "shared"


@dataclass
class SharedParams:
    """Parameters of the ``shared`` step (defaults from the ICLR 2025 code).

    Attributes
    ----------
    columns : ``"pattern"`` (default) clusters each voxel's activation pattern: the covariance, over the
        training trials, of its responses with the decoded embedding (Haufe et al. 2014: ``cov(X) W``, what
        the voxel carries of each decoded direction). ``"weights"`` clusters the decoder's own columns, as
        the paper does. A decoder's weights also cancel noise (a voxel with no signal of its own gets
        weights that subtract its noise from the others'), which scatters them: on the default synthetic
        study (seed 0, cross-validated ridge) the weights find only the text concept at eps 0.15 (and
        half of relation), and one cluster of every voxel at the paper's 0.6; the patterns find all eight
        shared concepts in every participant (Dice with the planted regions 0.95–1.0 for seed 0, 0.93–1.0
        for seeds 1 and 2).
    eps : cosine-distance radius (0, 2]. 0.15 with patterns (above); from 0.45 up, the paper's range for
        its contrastive decoders' weights, every pattern chains into one cluster.
    min_participants : other participants that must share a voxel's neighbourhood.
    expand_eps : post-expansion radius; None → min(eps + 0.05, 0.65).
    centre : subtract each participant's mean column before the cosine (removes the direction every voxel
        of a participant shares, such as its global signal's; without it every pattern links to every
        other).
    whiten : centre and also whiten the voxel columns (see :class:`SharedConceptClustering`); whitening
        weighs every direction of the embedding alike, which lifts the noise of the weak ones (off).
    eps_sweep : radii summarised in ``tables/shared_eps_sweep.tsv``.
    embedding : embedding the decoders predict (for naming); None → ``ctx.state["decoder_embedding"]``
        or the study's first embedding.
    n_show : most and least associated stimuli listed (and drawn) per concept.
    n_words_from, n_words : caption lemmas counted over this many top stimuli; lemmas kept per end.
    word_ranking : "frequency" (SDC) or "excess" over chance (see :func:`~.naming.name_directions`).
    contact_sheets : draw ``figures/shared_concept_shared-KK.png`` (top and bottom stimuli).
    max_concepts : keep at most this many concepts (largest first); None keeps all.
    ridge_alpha : ``"shared"`` refits a ridge decoder that chose a different alpha per embedding
        dimension with the one alpha of best mean cross-validated score (see
        :func:`shared_alpha_weights`); ``"as-fitted"`` keeps its weights; a number refits with that alpha.
    """

    columns: str = "pattern"
    eps: float = 0.15
    min_participants: int = 3
    expand_eps: float | None = None
    centre: bool = True
    whiten: bool = False
    eps_sweep: tuple[float, ...] = field(default_factory=lambda: PATTERN_EPS_SWEEP + EPS_SWEEP)
    embedding: str | None = None
    n_show: int = 8
    n_words_from: int = 250
    n_words: int = 8
    word_ranking: str = "frequency"
    contact_sheets: bool = True
    max_concepts: int | None = None
    ridge_alpha: str | float = "shared"

    #: intervals of the numeric parameters (:mod:`~..ranges`; ``eps_sweep``: each radius), checked before any
    #: step runs; ``ridge_alpha``'s applies when it is a number
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"columns": ("pattern", "weights"),
                                                     "word_ranking": WORD_RANKINGS}
    RANGES: ClassVar[dict[str, Range]] = {**SHARED, "eps_sweep": SHARED["eps"], "ridge_alpha": Range(0, low_open=True)}


def concept_name(k: int) -> str:
    """File-safe name of shared concept ``k`` (``shared-00`` …)."""
    return f"shared-{k:02d}"


def _prepared(ctx: AnalysisContext, name: str):
    """The decode step's prepared data of subject ``name`` (rebuilt from its parameters when absent)."""
    prepared = (ctx.state.get("prepared") or {}).get(name)
    if prepared is None:
        from ..decoding.steps import prepare_decoded

        prepared = ctx.state.setdefault("prepared", {})[name] = prepare_decoded(ctx, name)
    return prepared


def activation_patterns(ctx: AnalysisContext, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each subject's decoder weights (n_targets, n_voxels) turned into activation patterns.

    The pattern of a voxel is the covariance, over the decode step's training trials, of its responses
    with the decoded embedding: ``Xcᵀ (Xc Wᵀ) / n`` for centred responses ``Xc`` (Haufe et al. 2014,
    without their final whitening of the targets). Voxels the decoder did not use keep zero columns.
    """
    out = {}
    for name, W in weights.items():
        data = _prepared(ctx, name)
        voxels = np.asarray(data.voxels)
        X = np.asarray(data.X_train, dtype=np.float64)
        if len(X) < 2:
            raise InputError(f"subject {name} training trials", f"are {len(X)}",
                             "activation patterns need at least 2 training trials; use columns='weights'")
        Xc = X - X.mean(axis=0)
        decoded = Xc @ np.asarray(W, dtype=np.float64)[:, voxels].T
        pattern = np.zeros(W.shape, dtype=np.float64)
        pattern[:, voxels] = (Xc.T @ decoded).T / len(X)
        out[name] = pattern
    return out


def shared_alpha_weights(ctx: AnalysisContext, name: str, alphas: np.ndarray, cv_scores: np.ndarray | None,
                         alpha: float | None = None) -> tuple[np.ndarray, float]:
    """Ridge weights of subject ``name`` refitted with one regularisation for every embedding dimension.

    Per-target alphas shrink each embedding dimension's weights differently, so a voxel's column mixes
    rows estimated at different regularisation and the cosine between two voxels' columns no longer
    compares embedding directions (on the synthetic study no concept survives it). The alpha is ``alpha``
    when given, else the one with the best cross-validated score averaged over all dimensions (for
    decoders saved without their scores, the geometric median of the per-dimension alphas).
    """
    from ..decoding.ridge import RidgeDecoder

    if alpha is None:
        if cv_scores is None:
            raise InputError(f"decoder of subject {name}", "has per-target alphas but no cross-validation scores",
                             "give SharedParams.ridge_alpha a number")
        alpha = float(np.asarray(alphas)[int(np.argmax(np.asarray(cv_scores).mean(axis=1)))])
    data = _prepared(ctx, name)
    refit = RidgeDecoder(alphas=[alpha], device=ctx.device, random_state=ctx.random_state)
    refit.fit(data.X_train, data.Y_train)
    return data.voxel_values(refit.coef_.astype(np.float64)), alpha


def load_decoders(ctx: AnalysisContext, ridge_alpha: str | float = "shared"
                  ) -> tuple[dict[str, np.ndarray], dict[str, float | None]]:
    """Linear weights (n_targets, n_voxels) per subject, from ``ctx.state`` or the results store.

    A decoder fitted on a selection of voxels (``ctx.state["prepared"][subject].voxels``, or ``voxels`` in
    the ``.npz``) is spread back over all of the subject's voxels with zero columns for the others, which
    the clustering never uses. A ridge decoder with different alphas per embedding dimension is refitted
    with one alpha (:func:`shared_alpha_weights`) unless ``ridge_alpha == "as-fitted"``; a number fixes
    that alpha. Returns the weights and the alpha used per subject (None: weights as fitted).
    """
    if not (ridge_alpha in ("shared", "as-fitted") or isinstance(ridge_alpha, (int, float))):
        raise InputError("parameter ridge_alpha", f"{ridge_alpha!r} is not 'shared', 'as-fitted' or a number",
                         "use 'shared' (default), 'as-fitted' or a positive alpha")
    fixed = float(ridge_alpha) if isinstance(ridge_alpha, (int, float)) else None
    if fixed is not None:
        SharedParams.RANGES["ridge_alpha"].check("ridge_alpha", fixed)
    study = ctx.study
    in_state = ctx.state.get("decoders") or {}
    out, used = {}, {}
    for name, subject in study.subjects.items():
        where = f"decoder of subject {name}"
        voxels, best, alphas, cv_scores = None, None, None, None
        if name in in_state:
            dec = in_state[name]
            weights = decoder_weights(dec, where)
            prepared = (ctx.state.get("prepared") or {}).get(name)
            if prepared is not None:
                voxels = np.asarray(prepared.voxels)
            best = getattr(dec, "best_alphas_", None)
            alphas, cv_scores = getattr(dec, "alphas_", None), getattr(dec, "cv_scores_", None)
        else:
            where = f"arrays/decoder_{name}.npz"
            try:
                arrays = ctx.store.read_arrays(f"decoder_{name}")
            except InputError:
                continue
            key = next((k for k in ("coef", "coef_", "weights", "W") if k in arrays), None)
            if key is None:
                raise InputError(where, f"holds no decoder weights (keys {sorted(arrays)})",
                                 "rerun the decode step, which saves them under 'coef'")
            weights = decoder_weights(arrays[key], where)
            if "voxels" in arrays:
                voxels = np.asarray(arrays["voxels"], dtype=np.int64)
            best = arrays.get("best_alphas")
            alphas, cv_scores = arrays.get("alphas"), arrays.get("cv_scores")
        if voxels is not None and weights.shape[1] == len(voxels) != subject.n_voxels:
            if len(voxels) and (voxels.min() < 0 or voxels.max() >= subject.n_voxels):
                raise InputError(where, "selects voxels outside the subject's mask",
                                 "rerun the decode step on this subject")
            full = np.zeros((weights.shape[0], subject.n_voxels), dtype=weights.dtype)
            full[:, voxels] = weights
            weights = full
        if weights.shape[1] != subject.n_voxels:
            raise InputError(where, f"has weights for {weights.shape[1]} voxels but the subject has "
                             f"{subject.n_voxels} analysed voxels",
                             "fit the decoder on the subject's voxels, or rerun the decode step")
        used[name] = None
        per_target = best is not None and len(np.unique(np.asarray(best))) > 1
        if ridge_alpha != "as-fitted" and (per_target or (fixed is not None and best is not None)):
            alpha = fixed
            if alpha is None and cv_scores is None:  # saved without CV scores: geometric median of the choices
                alpha = float(np.exp(np.median(np.log(np.asarray(best, dtype=np.float64)))))
            weights, used[name] = shared_alpha_weights(ctx, name, alphas, cv_scores, alpha)
        out[name] = weights
    if not out:
        raise InputError("step shared", "found no fitted decoder (ctx.state['decoders'] or "
                         "arrays/decoder_SUBJ.npz)", "run the decode step first")
    return out, used


def _naming_embedding(study: Study, params: SharedParams, ctx: AnalysisContext, dim: int):
    name = params.embedding or ctx.state.get("decoder_embedding")
    if name is None:
        candidates = [e for e in study.stimuli.embeddings.values() if e.dim == dim]
        if not candidates:
            raise InputError("step shared", f"no embedding of the study has the decoders' {dim} dimensions",
                             "name the embedding the decoders were fitted to (parameter embedding)")
        return candidates[0]
    emb = ctx.embedding(name, param="shared.embedding" if params.embedding else "decode.embedding")
    if emb.dim != dim:
        raise InputError(f"embedding {name!r}", f"has {emb.dim} dimensions but the decoders predict {dim}",
                         "name the embedding the decoders were fitted to (parameter embedding)")
    return emb


def planted_match(study: Study, masks: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """For a synthetic study: Dice of every concept mask with every planted region, per subject.

    Returns rows (concept, planted, subject, dice) for every subject where the concept is planted.
    """
    truth = study.truth or {}
    regions = truth.get("regions") or {}
    rows = []
    for subject_name, per_concept in masks.items():
        subject = study.subjects[subject_name]
        for planted, volume in (regions.get(subject_name) or {}).items():
            region = subject.from_volume(np.asarray(volume, bool))
            for concept, mask in per_concept.items():
                rows.append({"concept": concept, "planted": planted, "subject": subject_name,
                             "dice": dice(mask, region)})
    return pd.DataFrame(rows, columns=["concept", "planted", "subject", "dice"])


def _best_planted(matches: pd.DataFrame) -> pd.DataFrame:
    """The planted concept each shared concept recovers best (highest mean Dice over subjects)."""
    if matches.empty:
        return pd.DataFrame(columns=["concept", "planted", "planted_dice", "planted_dice_min"])
    mean = matches.groupby(["concept", "planted"], sort=False)["dice"].agg(["mean", "min"]).reset_index()
    best = mean.loc[mean.groupby("concept", sort=False)["mean"].idxmax()]
    return best.rename(columns={"mean": "planted_dice", "min": "planted_dice_min"}).reset_index(drop=True)


def _concepts_figure(clustering: SharedConceptClustering, names: list[str], labels: list[str]):
    from matplotlib.figure import Figure

    counts = clustering.participant_counts_
    fig = Figure(figsize=(2.5 + 0.6 * len(clustering.subjects_), 1.2 + 0.35 * max(1, len(names))))
    ax = fig.subplots()
    if not names:
        ax.set_axis_off()
        ax.set_title("no shared concept at this eps / min_participants")
        return fig
    image = ax.imshow(counts, cmap="magma", aspect="auto")
    ax.set_xticks(range(len(clustering.subjects_)), clustering.subjects_, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), [f"{n} {lab}".strip() for n, lab in zip(names, labels)])
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value < counts.max() / 2 else "black")
    ax.set_title(f"Shared concepts: voxels per participant (eps={clustering.eps})")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _write_tsv(path, table: pd.DataFrame) -> None:
    write_atomic(path, lambda p: table.to_csv(p, sep="\t", index=False, float_format="%.6g"))


def not_applicable(ctx: AnalysisContext) -> str | InputError | None:
    """Why this step cannot run on the study, or None: too few participants for ``min_participants`` (a whole
    analysis leaves it out), or decoded participants that cannot be put in one space (other grids, and one
    without ``to_common.txt``): that error is raised before any step runs when the step is asked for by name,
    and a whole analysis leaves the step out with it; it used to stop the analysis when this step started,
    after the steps before it had run."""
    from ..decoding.steps import DecodeParams

    params = ctx.step_params(STEP, SharedParams)
    n = len(ctx.study.subject_names)
    if n - 1 < params.min_participants:
        return (f"it needs at least {params.min_participants + 1} participants (shared.min_participants="
                f"{params.min_participants}) and the study has {n}")
    decoded = ctx.step_params("decode", DecodeParams).subjects
    try:  # the participants the step clusters: the decoded ones
        common_space(ctx.study, list(decoded) if decoded else None)
    except InputError as err:
        return err
    return None


#: a shared concept holding more than this share of every participant's voxels is no concept
DEGENERATE_SHARE = 0.5


def _degenerate(clustering, order, names, eps) -> str | None:
    """Why the clustering found no concepts but one cluster of (nearly) all voxels, or None."""
    for name, k in zip(names, order):
        shares = [clustering.memberships_[s][k].mean() for s in clustering.subjects_]
        if min(shares) > DEGENERATE_SHARE:
            return (f"{name} holds {min(shares):.0%} or more of every participant's voxels: the voxels' decoder "
                    f"columns do not separate into concepts at eps={eps} (too few participants, or responses "
                    "dominated by one signal); its masks and maps are not a concept's. Try a smaller "
                    "shared.eps, shared.whiten=true, or more participants")
    return None


def shared_step(ctx: AnalysisContext) -> Generator[Progress, None, pd.DataFrame]:
    """Find, name, overlap and validate the concepts shared across participants (see module doc)."""
    params = ctx.step_params(STEP, SharedParams)
    study = ctx.study
    yield Progress(STEP, 0, 6, "reading decoders")
    weights, alphas_used = load_decoders(ctx, params.ridge_alpha)
    if params.columns == "pattern":
        weights = activation_patterns(ctx, weights)
    clustering = SharedConceptClustering(eps=params.eps, min_participants=params.min_participants,
                                         expand_eps=params.expand_eps, whiten=params.whiten,
                                         centre=params.centre)
    yield Progress(STEP, 1, 6, f"clustering the voxels of {len(weights)} participants")
    clustering.fit(weights)
    sweep = clustering.eps_sweep(params.eps_sweep)
    order = np.argsort(-clustering.participant_counts_.sum(axis=1), kind="stable")
    if params.max_concepts is not None:
        order = order[: int(params.max_concepts)]
    names = [concept_name(i) for i in range(len(order))]
    degenerate = _degenerate(clustering, order, names, params.eps)
    if degenerate:
        warnings.warn(degenerate, UserWarning, stacklevel=2)
        yield Progress(STEP, 1, 6, f"warning: {degenerate}")

    yield Progress(STEP, 2, 6, "naming the shared concepts")
    emb = _naming_embedding(study, params, ctx, clustering.directions_.shape[1])
    naming = None
    if names:
        naming = name_directions(clustering.directions_[order], emb.values, study.stimuli, names,
                                 n_show=params.n_show, n_words_from=params.n_words_from, n_words=params.n_words,
                                 word_ranking=params.word_ranking)
        write_names(ctx.store, naming, study.stimuli, table="shared_concept_names", prefix="shared_concept_",
                    sheets=names if params.contact_sheets else [])

    yield Progress(STEP, 3, 6, "writing masks and maps")
    masks: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for subject_name in clustering.subjects_:
        subject = study.subjects[subject_name]
        member = clustering.memberships_[subject_name]
        sim = clustering.similarity(subject_name)
        masks[subject_name], scores[subject_name] = {}, {}
        for name, k in zip(names, order):
            masks[subject_name][name] = member[k]
            scores[subject_name][name] = sim[k]
            if member[k].any():
                ctx.store.write_mask(subject_name, name, subject.to_volume(member[k]), subject.affine)
            ctx.store.write_map(subject_name, name, subject.to_volume(sim[k].astype(np.float32)), subject.affine)

    yield Progress(STEP, 4, 6, "overlap across participants")
    space = common_space(study, clustering.subjects_)
    volumes = {name: {s: study.subjects[s].to_volume(masks[s][name]) for s in clustering.subjects_}
               for name in names}
    overlap, _ = concept_overlap(space, volumes, store=ctx.store)

    yield Progress(STEP, 5, 6, "validating against localizers")
    validation = localizer_validation(study, masks, scores)

    concepts = clustering.summary().iloc[order].reset_index(drop=True)
    concepts = concepts.rename(columns={"cluster": "cluster_index"})
    concepts.insert(0, "concept", names)
    concepts.insert(1, "label", [naming.label(c) if naming else "" for c in names])
    concepts.insert(2, "negation", [naming.label(c, "negative") if naming else "" for c in names])
    concepts.insert(3, "words", [";".join(naming.words(c)) if naming else "" for c in names])
    concepts.insert(4, "negation_words", [";".join(naming.words(c, "negative")) if naming else "" for c in names])
    matches = planted_match(study, masks)
    if not matches.empty:
        best = _best_planted(matches)
        concepts = concepts.merge(best, on="concept", how="left")
        ctx.store.write_table("shared_planted_dice", matches)
    validation.insert(2, "label", validation["concept"].map(dict(zip(concepts["concept"], concepts["label"]))))

    ctx.store.write_table("shared_concepts", concepts)
    _write_tsv(ctx.store.base / "shared" / "concepts.tsv", concepts)
    ctx.store.write_table("shared_overlap", overlap)
    ctx.store.write_table("shared_eps_sweep", sweep)
    ctx.store.write_table("localizer_validation", validation)
    ctx.store.write_figure("localizer_validation", localizer_figure(validation))
    ctx.store.write_figure("shared_concepts", _concepts_figure(
        _reordered(clustering, order), names, list(concepts["label"])))

    summary = _summary(concepts, validation, overlap)
    ctx.state["shared"] = {"clustering": clustering, "ridge_alphas": alphas_used, "order": order,
                           "concepts": concepts,
                           "validation": validation, "overlap": overlap, "sweep": sweep, "masks": masks,
                           "summary": summary}
    ctx.store.mark_done(STEP, n_concepts=len(names), eps=params.eps, min_participants=params.min_participants,
                        whiten=params.whiten, centre=params.centre, columns=params.columns)
    yield Progress(STEP, 6, 6, f"{len(names)} shared concepts")
    return summary


class _reordered:
    """The fitted clustering seen with its clusters in the step's order (for the figure)."""

    def __init__(self, clustering: SharedConceptClustering, order: np.ndarray):
        self.subjects_ = clustering.subjects_
        self.eps = clustering.eps
        self.participant_counts_ = clustering.participant_counts_[order]


def _summary(concepts: pd.DataFrame, validation: pd.DataFrame, overlap: pd.DataFrame) -> pd.DataFrame:
    """One row per concept: participants, mean pairwise Dice, planted match, best ROI with its Dice/AUC."""
    rows = []
    for _, c in concepts.iterrows():
        row = {"concept": c["concept"], "label": c.get("label", ""), "participants": int(c["n_participants"])}
        pairs = overlap[overlap["concept"] == c["concept"]]
        row["pairwise_dice"] = float(pairs["dice"].mean()) if len(pairs) else float("nan")
        if "planted" in concepts.columns and isinstance(c.get("planted"), str):
            row["planted"] = c["planted"]
            row["planted_dice"] = float(c["planted_dice"])
        whole = validation[(validation["concept"] == c["concept"]) & (validation["region"] == WHOLE_ATLAS)]
        if len(whole):
            per_roi = whole.groupby("roi")[["dice", "auc"]].mean()
            best = per_roi["dice"].idxmax() if per_roi["dice"].notna().any() else per_roi.index[0]
            row.update({"best_roi": best, "roi_dice": float(per_roi.loc[best, "dice"]),
                        "roi_auc": float(per_roi.loc[best, "auc"])})
        rows.append(row)
    return pd.DataFrame(rows)
