"""Pipeline steps ``concepts`` (concept basis + names) and ``masks`` (voxel masks per subject and concept).

Both read what the ``decode`` step left in ``ctx.state``:

- ``ctx.state["decoders"][subject]``: the fitted decoder (``coef_``/``intercept_`` or ``torch_forward``);
- ``ctx.state["prepared"][subject]``: its :class:`~napari_brain_concepts.core.decoding.prepare.PreparedData`
  (z-scored train / validation / test samples, selected voxels). When absent it is rebuilt with
  :func:`~napari_brain_concepts.core.decoding.prepare.prepare_subject` and the ``decode`` step's
  parameters (``protocol``, ``test_fraction``, ``val_fraction`` …) found in ``ctx.params["decode"]``;
- ``ctx.state["decoder_embedding"]``: the name of the decoded embedding (default ``"captions"``).

``concepts`` writes
    ``arrays/concept_basis.npz`` (components, raw weights, order, linkage, loss curve, concept ids),
    ``tables/concept_retrieval.tsv`` (top-k in full / centred full / basis / PCA space per subject),
    ``tables/concept_names.tsv`` and ``figures/concept_CID.png`` (contact sheets),
    on a study with planted truth ``tables/concept_truth.tsv`` (planted concept ↔ component);
and sets ``ctx.state["concept_basis"]`` (fitted :class:`ConceptBasis`), ``ctx.state["concept_ids"]``
(list of str, ``c000``…, in basis order), ``ctx.state["concept_names"]`` (:class:`ConceptNames`),
``ctx.state["concept_retrieval"]`` and ``ctx.state["concept_matches"]`` (DataFrame or None).

``masks`` optimises each subject's masks on the decoder's training samples and keeps, per concept, the
mask with the lowest loss on the validation samples (SDC: "best validation mask"); decodability is the
validation r of the unmasked decoder. It writes per subject ``subjects/SUBJ/maps/mask_CID.nii.gz`` (soft masks, every concept),
``subjects/SUBJ/masks/CID.nii.gz`` (hard masks, decodable concepts with a non-empty mask),
``tables/mask_scores.tsv`` (decodability, masked scores, sizes), and on a study with planted truth
``tables/mask_truth.tsv`` + ``figures/mask_truth.png`` (Dice with the planted regions); it sets
``ctx.state["masks"][subject]`` (fitted :class:`VoxelMaskOptimizer`) and ``ctx.state["mask_scores"]``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..errors import InputError, Range
from ..progress import Progress
from ..ranges import BASIS, MASKS, some
from .basis import ConceptBasis
from .masks import FILLS, VoxelMaskOptimizer
from .naming import WORD_RANKINGS, name_directions, write_names
from .truth import mask_truth_table, match_planted, planted_directions, truth_figure

DEFAULT_K = 128


@dataclass
class ConceptsParams:
    """Parameters of the ``concepts`` step (SDC 2023 defaults).

    ``n_components`` None means ``min(128, embedding dimension)``.

    ``pairs``: ``"validation"`` (the paper) fits the basis on the decoded validation trials of every
    subject. ``"held-out"`` adds every training trial decoded by a copy of the subject's decoder fitted
    without it (``held_out_folds`` folds grouped by stimulus; scikit-learn's ``clone``), so each pair is
    still held out, and there are ten times more of them: on the default synthetic study 2,000 pairs
    instead of 200 for a 128 × 384 map. With ``prune=False`` too, the demo's basis then reaches top-1
    retrieval 0.63 against PCA's 0.49 (full space 0.32), the body component's match with the planted
    feature rises from r = 0.49 to 0.77, and the hard masks' mean Dice per subject from 0.55–0.60 to
    0.68–0.72; but the demo takes 4.3 minutes instead of 1.7 (each decoder refitted ``held_out_folds``
    times, 2,000-pair batches, 128 concepts' masks), so it is not the default. The demo uses it with
    K = 256 in batches of 500 pairs: the component matched to each planted concept mixes in less of the
    others as K grows (mean hard-mask Dice per subject 0.64–0.70 at K = 64, 0.75–0.77 at 256, 0.76–0.78 at
    384; basis top-1 0.64 against PCA's 0.49 at 256).

    ``skew_weight`` (beyond the paper; :class:`~.basis.ConceptBasis`): a reward for components whose
    projections of the decoded embeddings are right-skewed, i.e. read one concept rather than a mix. In
    the demo (0.5), the component matched to each planted concept correlates 0.73-0.95 with it (0.70-0.88
    without), and the hard masks' mean Dice per subject over the planted regions is 0.83-0.86, 0.85 and
    0.83-0.85 for study seeds 0, 1 and 2 (0.75-0.77, 0.74-0.75 and 0.72-0.76 without). Weights of 1 and
    more pull components onto the few most skewed concepts; skewness of the true embeddings instead also
    rewards concepts no brain carries.

    ``word_ranking``: how caption lemmas name a concept (:func:`~.naming.name_directions`): ``"frequency"``
    (SDC) or ``"excess"`` over chance, which the demo uses.
    """

    n_components: int | None = None
    pairs: str = "validation"
    held_out_folds: int = 5
    negative_slope: float = 0.05
    temperature: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 3000
    n_iter: int = 1500
    prune: bool = True
    prune_tolerance: float = 0.0
    skew_weight: float = 0.0
    n_show: int = 8
    n_words_from: int = 250
    n_words: int = 8
    word_ranking: str = "frequency"
    contact_sheets: bool = True

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs; ``n_components``
    #: must also be at most the embedding's dimension (the basis checks it when fitted)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"pairs": ("validation", "held-out"),
                                                     "word_ranking": WORD_RANKINGS}
    RANGES: ClassVar[dict[str, Range]] = {
        "held_out_folds": Range(2),
        **some(BASIS, "n_components", "negative_slope", "temperature", "learning_rate", "batch_size", "n_iter",
               "prune_tolerance", "skew_weight")}


@dataclass
class MasksParams:
    """Parameters of the ``masks`` step (SDC 2023 defaults; see :class:`VoxelMaskOptimizer`).

    ``concepts`` restricts the masks to some concept ids (default: all of the basis).
    """

    sparsity: float = 5.0
    learning_rate: float = 2e-3
    n_steps: int = 1000
    burn_in: int = 350
    eval_every: int = 10
    threshold: float = 0.5
    min_decodability: float = 0.3
    fill: str = "shuffle"
    batched: bool = True
    concepts: list[str] | None = None

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"fill": FILLS}
    RANGES: ClassVar[dict[str, Range]] = some(MASKS, "sparsity", "learning_rate", "n_steps", "burn_in", "eval_every",
                                              "threshold", "min_decodability")


def subject_data(ctx: AnalysisContext, subject: str):
    """(PreparedData, decoder) of ``subject`` from the decode step, checked against the subject's voxels."""

    decoders = ctx.state.get("decoders") or {}
    if subject not in decoders:
        raise InputError(f"subject {subject}", "has no fitted decoder in this analysis", "run the decode step first")
    decoder = decoders[subject]
    prepared = (ctx.state.get("prepared") or {}).get(subject)
    if prepared is None:
        from ..decoding.steps import prepare_decoded

        prepared = ctx.state.setdefault("prepared", {})[subject] = prepare_decoded(ctx, subject)
    sub = ctx.study.subject(subject)
    n_in = getattr(decoder, "n_features_in_", None)
    if prepared.n_voxels_total != sub.n_voxels or (n_in is not None and n_in != len(prepared.voxels)):
        raise InputError(f"decoder of subject {subject}",
                         f"was fitted on {n_in} voxels of a {prepared.n_voxels_total}-voxel mask, the subject has "
                         f"{sub.n_voxels} voxels ({len(prepared.voxels)} selected)",
                         "rerun the decode step on this subject's responses")
    return prepared, decoder


def decoded_subjects(ctx: AnalysisContext) -> list[str]:
    """Subjects with a fitted decoder, in study order."""
    decoders = ctx.state.get("decoders") or {}
    names = [s for s in ctx.study.subject_names if s in decoders]
    if not names:
        raise InputError("step concepts", "found no fitted decoder in this analysis", "run the decode step first")
    return names


def _embedding(ctx: AnalysisContext) -> np.ndarray:
    return ctx.embedding(ctx.state.get("decoder_embedding", "captions"), param="decode.embedding").values


def concepts_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Fit the concept basis on every subject's validation pairs, compare retrieval, name the concepts."""
    params: ConceptsParams = ctx.step_params("concepts", ConceptsParams)
    study = ctx.study
    subjects = decoded_subjects(ctx)
    yield Progress("concepts", 0, 1, "collecting decoded validation embeddings")
    data = {s: subject_data(ctx, s) for s in subjects}
    Y, Y_hat, groups = [], [], []
    for prepared, decoder in data.values():
        if len(prepared.X_val):
            Y.append(prepared.Y_val)
            Y_hat.append(decoder.predict(prepared.X_val))
            groups.append(prepared.rows_val)
    if not Y:
        raise InputError("decode step", "left no validation trials in any subject",
                         "set the decode step's val_fraction above 0")
    if params.pairs == "held-out":
        from sklearn.base import clone
        from sklearn.model_selection import GroupKFold

        for si, (s, (prepared, decoder)) in enumerate(data.items()):
            n_groups = len(np.unique(prepared.rows_train))
            if n_groups < 2:
                continue
            folds = GroupKFold(n_splits=min(int(params.held_out_folds), n_groups))
            decoded = np.empty_like(prepared.Y_train)
            for fi, (tr, te) in enumerate(folds.split(prepared.X_train, groups=prepared.rows_train)):
                yield Progress("concepts", si * folds.n_splits + fi, len(data) * folds.n_splits,
                               f"{s}: decoding training trials held out of fold {fi + 1}")
                fold_decoder = clone(decoder).fit(prepared.X_train[tr], prepared.Y_train[tr])
                decoded[te] = fold_decoder.predict(prepared.X_train[te])
            Y.append(prepared.Y_train)
            Y_hat.append(decoded)
            groups.append(prepared.rows_train)
    Y, Y_hat, groups = np.concatenate(Y), np.concatenate(Y_hat), np.concatenate(groups)
    E = _embedding(ctx)
    k = params.n_components if params.n_components is not None else min(DEFAULT_K, E.shape[1])
    basis = ConceptBasis(k, negative_slope=params.negative_slope, temperature=params.temperature,
                         learning_rate=params.learning_rate, batch_size=params.batch_size, n_iter=params.n_iter,
                         prune=params.prune, prune_tolerance=params.prune_tolerance,
                         skew_weight=params.skew_weight, device=ctx.device,
                         random_state=int(ctx.rng("concepts").integers(2**31)))
    ctx.state["concept_pairs"] = len(Y)
    yield from basis.fit_iter(Y, Y_hat, groups)
    ids = [f"c{i:03d}" for i in range(basis.n_concepts_)]

    yield Progress("concepts", 0, 3, "retrieval in full, basis and PCA space")
    tables = []
    for s, (prepared, decoder) in data.items():
        if len(prepared.X_test) == 0:
            continue
        cand = np.unique(prepared.rows_test)
        fit_rows = np.unique(np.concatenate([prepared.rows_train, prepared.rows_val]))
        t = basis.retrieval_table(E[cand], decoder.predict(prepared.X_test),
                                  np.searchsorted(cand, prepared.rows_test), E[fit_rows])
        t.insert(0, "subject", s)
        tables.append(t)
    retrieval = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not retrieval.empty:
        mean = retrieval.drop(columns="subject").groupby("space", sort=False).mean().reset_index()
        mean.insert(0, "subject", "mean")
        retrieval = pd.concat([retrieval, mean], ignore_index=True)
    ctx.store.write_table("concept_retrieval", retrieval)

    yield Progress("concepts", 1, 3, "naming concepts")
    names = name_directions(basis.components_, E, study.stimuli, ids, n_show=params.n_show,
                            n_words_from=params.n_words_from, n_words=params.n_words,
                            word_ranking=params.word_ranking)
    write_names(ctx.store, names, study.stimuli, sheets=ids if params.contact_sheets else [])
    matches = None
    if study.truth and "features" in study.truth:
        matches = match_planted(study, basis.transform(E), ids)
        matches["label"] = [names.label(c) for c in matches["concept"]]
        ctx.store.write_table("concept_truth", matches)
    ctx.store.write_arrays("concept_basis", components=basis.components_, weights=basis.weights_,
                           order=basis.order_, linkage=basis.linkage_, loss=basis.loss_curve_,
                           pruned=basis.pruned_, concept_ids=np.asarray(ids))
    ctx.state.update(concept_basis=basis, concept_ids=ids, concept_names=names, concept_retrieval=retrieval,
                     concept_matches=matches)
    yield Progress("concepts", 3, 3, f"{len(ids)} concepts")
    ctx.store.mark_done("concepts", n_concepts=len(ids), pruned=int(len(basis.pruned_)),
                        embedding=ctx.state.get("decoder_embedding", "captions"))


def _optimise_masks(ctx: AnalysisContext, subjects: list[str], directions: np.ndarray, opt_kwargs: dict,
                    seed: tuple[str, ...], what: str = ""
                    ) -> Generator[Progress, None, dict[str, tuple[Any, VoxelMaskOptimizer]]]:
    """Every subject's masks for ``directions``: {subject: (prepared data, fitted optimiser)}."""
    out, jobs = {}, []
    for si, s in enumerate(subjects):
        prepared, decoder = subject_data(ctx, s)
        if len(prepared.X_val) == 0:
            raise InputError(f"subject {s} validation trials", "are empty",
                             "set the decode step's val_fraction above 0 (masks are chosen on validation trials)")
        opt = VoxelMaskOptimizer(**opt_kwargs, device=ctx.device,
                                 random_state=int(ctx.rng(*seed, s).integers(2**31)))
        if ctx.scheduler is not None and len(subjects) > 1:  # each subject's masks a piece on a dask worker
            jobs.append((s, _fit_masks, (opt, prepared, directions, decoder)))
            out[s] = (prepared, opt)
            continue
        for p in opt.fit_iter(prepared.X_train, prepared.Y_train, directions, decoder,
                              X_val=prepared.X_val, Y_val=prepared.Y_val):
            yield Progress("masks", si * p.total + p.done, len(subjects) * p.total, f"{s}: {what}{p.message}")
        out[s] = (prepared, opt)
    if jobs:
        from ..distributed import fit_pieces

        fitted = yield from fit_pieces(ctx, "masks", jobs)
        out = {s: (prepared, fitted[s]) for s, (prepared, _) in out.items()}
    return out


def _fit_masks(opt: VoxelMaskOptimizer, prepared, directions: np.ndarray, decoder) -> VoxelMaskOptimizer:
    """One subject's masks (a piece of a run spread over dask): the fitted optimiser."""
    from ..progress import run_to_end

    run_to_end(opt.fit_iter(prepared.X_train, prepared.Y_train, directions, decoder,
                            X_val=prepared.X_val, Y_val=prepared.Y_val))
    return opt


def _readouts(fits: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{subject: (stimulus rows of the held-out trials, read-outs through the hard masks)} of fitted masks."""
    return {s: (prepared.rows_val, opt.hard_readout_) for s, (prepared, opt) in fits.items()}


def masks_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Optimise every subject's voxel masks for all concepts at once; write them as NIfTI."""
    params: MasksParams = ctx.step_params("masks", MasksParams)
    basis: ConceptBasis | None = ctx.state.get("concept_basis")
    ids: list[str] | None = ctx.state.get("concept_ids")
    if basis is None or ids is None:
        raise InputError("step masks", "found no concept basis in this analysis", "run the concepts step first")
    keep = np.arange(len(ids))
    if params.concepts is not None:
        unknown = sorted(set(params.concepts) - set(ids))
        if unknown:
            raise InputError("parameters of step 'masks'", f"unknown concepts {unknown}",
                             f"choose among {', '.join(ids)}")
        keep = np.asarray([ids.index(c) for c in params.concepts], dtype=np.int64)
    directions, cids = basis.components_[keep], [ids[i] for i in keep]
    opt_kwargs = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "concepts"}
    subjects = decoded_subjects(ctx)
    fits = yield from _optimise_masks(ctx, subjects, directions, opt_kwargs, ("masks",))
    rows, fitted = [], {}
    hard_all, score_all, decodable_all = {}, {}, {}
    for s, (prepared, opt) in fits.items():
        sub = ctx.study.subject(s)
        soft = prepared.voxel_values(opt.masks_)          # (K, n_voxels of the subject)
        hard = prepared.voxel_values(opt.hard_masks_)
        for k, cid in enumerate(cids):
            ctx.store.write_map(s, f"mask_{cid}", sub.to_volume(soft[k]), sub.affine)
            if hard[k].any():
                ctx.store.write_mask(s, cid, sub.to_volume(hard[k]), sub.affine)
            rows.append({"subject": s, "concept": cid, "decodability": float(opt.full_score_[k]),
                         "decodable": bool(opt.decodable_[k]), "mask_r": float(opt.mask_score_[k]),
                         "hard_mask_r": float(opt.hard_score_[k]), "n_voxels": int(hard[k].sum()),
                         "best_step": int(opt.best_step_[k])})
        fitted[s] = opt
        hard_all[s], score_all[s], decodable_all[s] = hard, opt.full_score_, opt.decodable_
    scores = pd.DataFrame(rows)
    ctx.store.write_table("mask_scores", scores)
    matches = ctx.state.get("concept_matches")
    if matches is not None and ctx.study.truth and "regions" in ctx.study.truth:
        matches = matches[matches["concept"].isin(cids)]
        table = mask_truth_table(ctx.study, matches, hard_all, score_all, decodable_all, cids,
                                 _readouts(fits), params.min_decodability)
        ctx.store.write_table("mask_truth", table)
        ctx.store.write_figure("mask_truth", truth_figure(table))
        ctx.state["mask_truth"] = table
    if ctx.study.truth and "regions" in ctx.study.truth and "features" in ctx.study.truth:
        # the optimiser on its own: masks of each planted concept's true direction
        truth_dirs, planted = planted_directions(ctx.study, _embedding(ctx))
        names = [f"truth-{c}" for c in planted]
        direct_fits = yield from _optimise_masks(ctx, subjects, truth_dirs, opt_kwargs, ("masks", "truth"),
                                                 "planted concepts' own directions, ")
        hard_t = {s: prepared.voxel_values(opt.hard_masks_) for s, (prepared, opt) in direct_fits.items()}
        table = mask_truth_table(ctx.study, pd.DataFrame({"planted": planted, "concept": names}), hard_t,
                                 {s: opt.full_score_ for s, (_, opt) in direct_fits.items()},
                                 {s: opt.decodable_ for s, (_, opt) in direct_fits.items()}, names,
                                 _readouts(direct_fits), params.min_decodability)
        ctx.store.write_table("mask_truth_directions", table)
        ctx.state["mask_truth_directions"] = table
    ctx.state["masks"] = fitted
    ctx.state["mask_scores"] = scores
    ctx.store.mark_done("masks", n_subjects=len(fitted), n_concepts=len(cids))


def saved_concept_scores(store, study) -> tuple[list[str], np.ndarray] | None:
    """The basis concepts of results on disk and every stimulus's score on each (n_stimuli, K): the projection
    of its embedding on the concept direction, as the concepts step names them. The embedding the basis was
    fitted in is the study's own, else the one the embed step saved with the results (the caption embedding
    of a study folder without embeddings/). ``None`` before the step, or when neither has it (e.g. a CLIP
    embedding made by the run)."""
    from ..context import stored_embedding

    if not store.is_done("concepts") or not store.array_path("concept_basis", ".npz").is_file():
        return None
    arrays = store.read_arrays("concept_basis")
    recorded = store.manifest.get("steps", {}).get("concepts", {}).get("embedding")
    decode = ((store.parameters or {}).get("params") or {}).get("decode") or {}
    name = recorded or decode.get("embedding") or "captions"
    emb = study.stimuli.embeddings.get(name)
    emb = emb if emb is not None else stored_embedding(store, name)
    if emb is None:
        return None
    E = emb.values
    D = np.asarray(arrays["components"])
    if E.shape[1] != D.shape[1]:
        return None
    return [str(c) for c in arrays["concept_ids"]], E @ D.T
