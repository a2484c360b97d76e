"""Pipeline step ``decode``: a brain→embedding decoder per subject and its retrieval scores.

Parameters: :class:`DecodeParams` (``ctx.step_params("decode", DecodeParams)``).

Writes
    ``tables/decoding.tsv`` — subject, decoder, protocol, metric, value, chance, detail (one row per score;
    on a synthetic study also the oracle decoder's scores, ``decoder = "oracle"``);
    ``figures/decoding.png`` — retrieval scores per subject against chance (and the oracle);
    ``arrays/decoder_SUBJ.npz`` — ``coef`` (d, n_selected) voxel-space weights (linear decoders),
    ``intercept``, ``voxels`` (indices of the selected voxels among the subject's), ``best_alphas`` (ridge),
    ``rows_test`` and ``pred_test`` (decoded test samples);
    ``subjects/SUBJ/maps/decoder_weight_norm.nii.gz`` — L2 norm of each voxel's weights (how much the
    decoder uses it; 0 outside the selection).

Sets in ``ctx.state``
    ``decoders[subject]`` — the fitted :class:`RidgeDecoder` / :class:`ContrastiveDecoder`
    (``coef_`` (d, n_selected), ``predict``, ``torch_forward``);
    ``prepared[subject]`` (also ``splits[subject]``) — its :class:`PreparedData` (train / validation /
    test X, Y and stimulus rows; selected voxels);
    ``decoder_embedding`` — name of the decoded embedding; ``decoding_scores`` — the scores table.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..errors import InputError, Range
from ..progress import Progress
from ..ranges import CONTRASTIVE, RIDGE, SPLIT, some
from .contrastive import ARCHITECTURES, ContrastiveDecoder
from .metrics import decoding_scores
from .prepare import NCSNR_SOURCES, PROTOCOLS, PreparedData, mean_by_stimulus, prepare_subject
from .ridge import DEFAULT_ALPHAS, SOLVERS, RidgeDecoder

STEP = "decode"


@dataclass
class DecodeParams:
    """Parameters of the ``decode`` step (names shared with :func:`prepare_arrays` where they overlap)."""

    embedding: str = "captions"
    decoder: str = "ridge"                 # "ridge" | "contrastive"
    protocol: str = "mindeye"              # "mindeye" (average repeats) | "sdc" (single trials)
    test_fraction: float = 0.15            # used when the study has no shared test set
    val_fraction: float = 0.1
    nc_threshold: float | None = None      # keep voxels with noise ceiling ≥ this (percent)
    n_voxels: int | None = None            # keep at most this many voxels (highest noise ceiling)
    ncsnr_from: str = "study"              # "study" (its ncsnr where given) | "train" (the non-test repeats')
    subjects: tuple[str, ...] | None = None
    # ridge
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cv: int = 5
    solver: str = "auto"
    loo: bool = False
    # contrastive
    architecture: str = "linear"           # "linear" | "mlp"
    hidden: int = 5000
    n_reruns: int = 3
    max_iter: int = 5000
    temperature: float = 0.03
    lr: float = 1e-4
    batch_size: int = 128
    noise_std: float = 1.0
    patience: int | None = 10              # evaluations without improvement; None: all max_iter, last weights
    # scores
    ks: tuple[int, ...] = (1, 5, 10)
    n_draws: int = 30
    draw_size: int = 300

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"decoder": ("ridge", "contrastive"), "protocol": PROTOCOLS,
                                                     "solver": SOLVERS, "architecture": ARCHITECTURES,
                                                     "ncsnr_from": NCSNR_SOURCES}
    RANGES: ClassVar[dict[str, Range]] = {
        **SPLIT, **RIDGE,
        **some(CONTRASTIVE, "hidden", "n_reruns", "max_iter", "temperature", "lr", "batch_size", "noise_std",
               "patience")}


def prepare_decoded(ctx: AnalysisContext, subject: str, embedding: str | None = None) -> PreparedData:
    """The data of ``subject`` as the decode step prepares it (split, voxel selection), from its parameters:
    the steps after it rebuild it with this when the decode step ran in another session (``--resume``).
    ``embedding``: the decoded one (default: that of the decoders in ``ctx.state``, else the parameter's)."""
    params = ctx.step_params(STEP, DecodeParams)
    embedding = embedding or ctx.state.get("decoder_embedding") or params.embedding
    return prepare_subject(ctx.study, subject, embedding, protocol=params.protocol,
                           test_fraction=params.test_fraction, val_fraction=params.val_fraction,
                           nc_threshold=params.nc_threshold, n_voxels=params.n_voxels,
                           ncsnr_from=params.ncsnr_from, random_state=ctx.random_state)


def make_decoder(params: DecodeParams, device: str, random_state: int) -> RidgeDecoder | ContrastiveDecoder:
    """The decoder ``params`` describe (not yet fitted)."""
    if params.decoder == "ridge":
        return RidgeDecoder(alphas=params.alphas, cv=params.cv, solver=params.solver, loo=params.loo,
                            device=device, random_state=random_state)
    if params.decoder == "contrastive":
        return ContrastiveDecoder(architecture=params.architecture, hidden=params.hidden,
                                  n_reruns=params.n_reruns, max_iter=params.max_iter,
                                  temperature=params.temperature, lr=params.lr, batch_size=params.batch_size,
                                  noise_std=params.noise_std, patience=params.patience, device=device,
                                  random_state=random_state)
    raise InputError("parameter decode.decoder", f"{params.decoder!r} is unknown", "use 'ridge' or 'contrastive'")


def fit_decoder_iter(decoder, data: PreparedData) -> Generator[Progress, None, object]:
    """Fit ``decoder`` on prepared data (validation set for early stopping; stimulus groups for CV)."""
    if isinstance(decoder, ContrastiveDecoder):
        if len(data.X_val) > 1:
            return (yield from decoder.fit_iter(data.X_train, data.Y_train, data.X_val, data.Y_val))
        return (yield from decoder.fit_iter(data.X_train, data.Y_train, groups=data.groups_train))
    groups = data.groups_train if data.protocol == "sdc" else None
    return (yield from decoder.fit_iter(data.X_train, data.Y_train, groups=groups))


def saved_decoder(ctx: AnalysisContext, name: str, params: DecodeParams, data: PreparedData, embedding
                  ) -> RidgeDecoder | ContrastiveDecoder | None:
    """The decoder of ``name`` that this results folder's finished decode step saved
    (``arrays/decoder_NAME.npz``), rebuilt from its weights instead of fitted again: a resumed analysis
    reruns decode in memory for the steps after it, which took as long as the first fit (hours for the
    paper's 50 contrastive reruns on NSD). None where the weights do not hold the whole decoder (an MLP) or
    were fitted on other voxels; an error where they were fitted on another embedding (``embedding``, the
    :class:`Embedding` decoded now: NSD's caption embedding follows ``embed.model``)."""
    try:
        arrays = ctx.store.read_arrays(f"decoder_{name}")
    except InputError:
        return None
    made_with = (ctx.store.manifest.get("steps") or {}).get(STEP, {}).get("embedding_model")
    coef = arrays.get("coef")
    if coef is not None and ((made_with is not None and made_with != embedding.model) or coef.ndim != 2
                             or coef.shape[0] != embedding.dim):
        was = f"{made_with!r}" if made_with is not None else f"a {coef.shape[0]}-dimensional embedding"
        raise InputError(ctx.store.root / "arrays" / f"decoder_{name}.npz",
                         f"holds a decoder of the embedding of {was}, and this analysis decodes {embedding.model!r} "
                         f"({embedding.dim} dimensions)",
                         "resume with the embed.model the decoders were made with, or start a new analysis in "
                         "another folder")
    return _rebuilt(ctx, params, data, arrays)


def _rebuilt(ctx: AnalysisContext, params: DecodeParams, data: PreparedData, arrays: dict[str, np.ndarray]
             ) -> RidgeDecoder | ContrastiveDecoder | None:
    """A fitted decoder from the arrays the decode step saves of it (:func:`_decoder_arrays`); None where they do
    not hold the whole decoder (an MLP's reruns) or were fitted on other voxels."""
    if params.decoder == "contrastive" and params.architecture != "linear":
        return None
    if "coef" not in arrays or "intercept" not in arrays or not np.array_equal(arrays.get("voxels"), data.voxels):
        return None
    decoder = make_decoder(params, ctx.device, ctx.random_state)
    if isinstance(decoder, RidgeDecoder):
        return decoder.set_weights(arrays["coef"], arrays["intercept"], arrays.get("best_alphas"),
                                   arrays.get("alphas"), arrays.get("cv_scores"))
    return decoder.set_weights(arrays["coef"], arrays["intercept"])


def _decoder_arrays(decoder, data: PreparedData) -> dict[str, np.ndarray]:
    """What the decode step saves of a fitted decoder: the voxels it reads, its weights (a linear decoder) and,
    for ridge, all a later step reads of it (the shared step, its alpha)."""
    arrays = {"voxels": data.voxels}
    coef = getattr(decoder, "coef_", None)
    if coef is not None:
        arrays.update(coef=coef, intercept=decoder.intercept_)
    if isinstance(decoder, RidgeDecoder):
        arrays.update(best_alphas=decoder.best_alphas_, alphas=decoder.alphas_)
        if getattr(decoder, "cv_scores_", None) is not None:
            arrays["cv_scores"] = decoder.cv_scores_
    return arrays


def checkpoint_key(ctx: AnalysisContext, embedding) -> dict:
    """What a participant's decoder kept from a stopped decode step was made with (every decode value, the seed,
    a hash of the decoded embedding): a resumed step takes it back only when all of these are unchanged."""
    import hashlib

    from ..pipeline import step_values

    values = np.ascontiguousarray(embedding.values, dtype=np.float32)
    return {"decode": step_values(STEP, ctx.params.get(STEP)), "seed": ctx.random_state,
            "embedding": [embedding.model, hashlib.sha256(values.tobytes()).hexdigest()[:16]]}


def fit_decoder(decoder, data: PreparedData):
    """:func:`fit_decoder_iter` run to its end: the fitted decoder (a piece of a run spread over dask)."""
    from ..progress import run_to_end

    run_to_end(fit_decoder_iter(decoder, data))
    return decoder


def _oracle_rows(ctx: AnalysisContext, name: str, data: PreparedData, params: DecodeParams, E: np.ndarray):
    """Scores of the synthetic study's generative-truth decoder on the same test samples (else [])."""
    truth = ctx.study.truth
    if not truth or "weights" not in truth:
        return []
    from ..synthetic import oracle_predictions

    sub = ctx.study.subject(name)
    pred = oracle_predictions(ctx.study, name, params.embedding)
    rows = ctx.study.trial_rows(sub)
    test = np.isin(rows, data.rows_test)
    pred, rows = pred[test], rows[test]
    if params.protocol == "mindeye":
        rows, pred = mean_by_stimulus(pred, rows)
    return decoding_scores(pred, rows, E, params.ks, params.n_draws, params.draw_size, ctx.random_state)


def _figure(table: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = [m for m in ("top1", "top5", "top10", "mindeye_brain_to_stimulus", "mindeye_stimulus_to_brain",
                           "pairwise") if m in set(table.metric)]
    subjects = list(dict.fromkeys(table.subject))
    decoders = list(dict.fromkeys(table.decoder))
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(decoders))
    for ax, metric in zip(axes[0], metrics):
        part = table[table.metric == metric]
        for j, dec in enumerate(decoders):
            vals = [part[(part.subject == s) & (part.decoder == dec)].value.mean() for s in subjects]
            ax.bar(np.arange(len(subjects)) + j * width, vals, width, label=dec)
        chance = part.chance.mean()
        ax.axhline(chance, color="k", ls="--", lw=1, label="chance")
        ax.set_title(metric.replace("mindeye_", "MindEye ").replace("_", " "), fontsize=9)
        ax.set_xticks(np.arange(len(subjects)) + 0.4 - width / 2, subjects, rotation=45, fontsize=8)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0))
    return fig


def needs(ctx: AnalysisContext) -> tuple[str, ...]:
    """The steps decode needs on this study (the pipeline's ``needs`` hook): the embed step when the decoded
    embedding is the caption embedding that step computes and the study has none of its own."""
    return ctx.embedding_steps(ctx.step_params(STEP, DecodeParams).embedding)


def decode_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Fit one decoder per subject, score it on the test stimuli, write weights, maps, table and figure."""
    params: DecodeParams = ctx.step_params(STEP, DecodeParams)
    study = ctx.study
    embedding = ctx.embedding(params.embedding, param="decode.embedding")
    E = embedding.values
    names = list(params.subjects) if params.subjects else study.subject_names
    for n in names:
        study.subject(n)
    # what the later steps read goes to ctx.state once the step finishes: a step stopped halfway leaves the
    # finished run's decoders there, not a mix of two runs
    decoders, prepared = {}, {}
    rows_out = []
    datas, fitted = {}, {}
    for name in names:
        yield Progress(STEP, 0, len(names), f"{name}: preparing responses")
        datas[name] = prepare_decoded(ctx, name, params.embedding)
    resumed = ctx.state.get("in_memory_step") == STEP
    key = None if resumed else checkpoint_key(ctx, embedding)
    if key is not None:  # kept by a decode with other values: no run with these can use them
        ctx.store.drop_checkpoints(STEP, unless=key)

    def keep(name: str, decoder) -> None:
        """A participant's linear decoder, kept should a later one's fit fail or be stopped (an MLP's reruns
        are not: it is fitted again)."""
        if key is not None and getattr(decoder, "coef_", None) is not None:
            ctx.store.write_checkpoint(STEP, name, key, **_decoder_arrays(decoder, datas[name]))

    if resumed:  # rerun in memory for a later step: the finished step's decoders, read back
        for name in names:
            decoder = saved_decoder(ctx, name, params, datas[name], embedding)
            if decoder is not None:
                fitted[name] = decoder
                yield Progress(STEP, 0, len(names), f"{name}: decoder read back from arrays/decoder_{name}.npz "
                               "(fitted before)")
    else:  # a decode step stopped or failed after some participants: their decoders, kept
        for name in names:
            arrays = ctx.store.read_checkpoint(STEP, name, key)
            try:
                decoder = None if arrays is None else _rebuilt(ctx, params, datas[name], arrays)
            except InputError:  # weights that do not fit (a damaged file): fitted again
                decoder = None
            if decoder is not None:
                fitted[name] = decoder
                yield Progress(STEP, 0, len(names), f"{name}: decoder read back from the decode run that stopped "
                               "before (fitted with the same values)")
    todo = [name for name in names if name not in fitted]
    if ctx.scheduler is not None and len(todo) > 1:  # on dask workers, one subject's fit a piece
        from ..distributed import fit_pieces

        fitted.update((yield from fit_pieces(ctx, STEP, [
            (name, fit_decoder, (make_decoder(params, ctx.device, ctx.random_state), datas[name]))
            for name in todo], on_done=keep)))
    for i, name in enumerate(names):
        data, decoder = datas[name], fitted.get(name)
        if decoder is None:
            decoder = make_decoder(params, ctx.device, ctx.random_state)
            for p in fit_decoder_iter(decoder, data):  # the fit's own fraction within this subject's share
                yield Progress(STEP, i * 1000 + int(1000 * p.fraction), len(names) * 1000,
                               f"{name}: {p.message}")
            keep(name, decoder)
        pred = decoder.predict(data.X_test)
        scores = decoding_scores(pred, data.rows_test, E, params.ks, params.n_draws, params.draw_size,
                                 ctx.random_state)
        for s in scores:
            rows_out.append({"subject": name, "decoder": params.decoder, "protocol": params.protocol,
                             "metric": s.metric, "value": s.value, "chance": s.chance, "detail": s.detail})
        for s in _oracle_rows(ctx, name, data, params, E):
            rows_out.append({"subject": name, "decoder": "oracle", "protocol": params.protocol,
                             "metric": s.metric, "value": s.value, "chance": s.chance, "detail": s.detail})
        arrays = {**_decoder_arrays(decoder, data), "rows_test": data.rows_test, "pred_test": pred}
        if "coef" in arrays:
            sub = study.subject(name)
            norm = data.voxel_values(np.linalg.norm(arrays["coef"], axis=0).astype(np.float32))
            ctx.store.write_map(name, "decoder_weight_norm", sub.to_volume(norm), sub.affine)
        ctx.store.write_arrays(f"decoder_{name}", **arrays)
        decoders[name] = decoder
        prepared[name] = data
    table = pd.DataFrame(rows_out, columns=["subject", "decoder", "protocol", "metric", "value", "chance",
                                            "detail"])
    ctx.store.write_table("decoding", table)
    fig = _figure(table)
    ctx.store.write_figure("decoding", fig)
    import matplotlib.pyplot as plt

    plt.close(fig)
    ctx.state["decoding_scores"] = table
    ctx.state.setdefault("decoders", {}).update(decoders)
    ctx.state["prepared"] = ctx.state["splits"] = {**ctx.state.get("prepared", {}), **prepared}
    ctx.state["decoder_embedding"] = params.embedding
    ctx.store.mark_done(STEP, subjects=names, decoder=params.decoder, protocol=params.protocol,
                        embedding=params.embedding, embedding_model=embedding.model)
    yield Progress(STEP, len(names), len(names), "done")
