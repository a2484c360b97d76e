"""Caption reconstruction from brain activity (Doerig et al.): voxels → caption embedding → nearest captions.

A decoder (ridge with an alpha per embedding dimension by default) maps a participant's responses to the
sentence-embedding space of the captions. Each decoded vector is compared by cosine with the embeddings of
a caption corpus — by default every caption of the training stimuli, so no caption of a test image can be
retrieved for it — and the closest captions are the reconstruction.

Evaluation, per test stimulus:

- **rank** of the true stimulus among all test stimuli when they are sorted by the cosine of their caption
  embedding with the decoded vector (1 = identified; chance top-1 rate = 1 / n_test);
- **cosine to the human captions**: the decoded vector (and the embedding of the top retrieved caption)
  against the mean embedding of the human captions, leaving one caption out at a time, compared with the
  **human-to-human agreement**: each human caption against the mean of the others (the same reference sets);
- **BLEU and chrF** (sacrebleu) of the top retrieved caption against the human captions, beside the same
  scores of each human caption against the other humans'.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from ..errors import InputError, not_fitted
from ..progress import Progress, run_to_end
from ..ranges import CAPTIONS
from ..study import Stimuli

Encode = Callable[[Sequence[str]], np.ndarray]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _centred(x: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Rows of ``x`` minus ``mean`` (when given), L2-normalised."""
    x = np.asarray(x, dtype=np.float64)
    return _normalise(x if mean is None else x - np.asarray(mean, dtype=np.float64))


def _encode_fn(encoder: Any) -> Encode:
    """An encoder object (with ``encode``) or a callable → ``texts → (n, d)``."""
    if hasattr(encoder, "encode"):
        return encoder.encode
    if callable(encoder):
        return encoder
    raise InputError("parameter encoder", f"{type(encoder).__name__} cannot embed text",
                     "give a SentenceEncoder (or a function texts → embeddings)")


# -- corpus ------------------------------------------------------------------------------------------------
def read_caption_file(path: str | os.PathLike) -> list[str]:
    """Captions of a text file (one per line; ``#`` lines ignored) or a TSV.

    A TSV may have a ``caption`` column, ``caption_1 … caption_k`` columns (the study's ``stimuli.tsv``), or a
    single column. Empty cells are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "caption corpus file is missing", "give a text file (one caption per line) or a TSV")
    if path.suffix.lower() in (".tsv", ".csv"):
        try:
            table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                                keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(path, f"cannot be read as a table ({err})",
                             "save the corpus as a tab-separated file with a 'caption' column") from err
        cols = [c for c in table.columns if str(c).strip().lower() == "caption"]
        if not cols:
            cols = [c for c in table.columns if str(c).strip().lower().startswith("caption")]
        if not cols and len(table.columns) == 1:
            cols = list(table.columns)
        if not cols:
            raise InputError(path, f"has no caption column (columns: {', '.join(map(str, table.columns))})",
                             "name the column 'caption' (or caption_1 … caption_k)")
        texts = [str(v).strip() for c in cols for v in table[c].tolist()]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise InputError(path, "is not UTF-8 text", "save the corpus as UTF-8 text") from err
        texts = [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(path, "contains no captions", "put one caption per line (or per row of a TSV)")
    return texts


@dataclass
class CaptionCorpus:
    """Captions that reconstructions are chosen from, with their sentence embeddings.

    ``rows`` gives the stimulus row each caption came from (-1 for captions from a file); ``source`` says
    where the corpus came from (for tables).
    """

    captions: list[str]
    embeddings: np.ndarray
    rows: np.ndarray
    source: str = ""

    def __post_init__(self):
        self.embeddings = _normalise(self.embeddings).astype(np.float32)
        self.rows = np.asarray(self.rows, dtype=np.int64)
        if len(self.captions) == 0:
            raise InputError(f"caption corpus {self.source}".strip(), "contains no captions",
                             "give a corpus with at least one caption")
        if self.embeddings.shape[0] != len(self.captions) or self.rows.shape != (len(self.captions),):
            raise InputError("caption corpus", f"{len(self.captions)} captions, {self.embeddings.shape[0]} "
                             f"embeddings and {len(self.rows)} rows", "give one embedding and row per caption")

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def from_texts(cls, captions: Sequence[str], encoder: Any, rows: Sequence[int] | None = None,
                   source: str = "captions") -> CaptionCorpus:
        """Embed ``captions`` (duplicates kept once) with ``encoder``; embeddings cached on disk."""
        texts, keep_rows = [], []
        seen: set[str] = set()
        rows = [-1] * len(captions) if rows is None else list(rows)
        for text, row in zip(captions, rows):
            text = " ".join(str(text).split())
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
                keep_rows.append(int(row))
        if not texts:
            raise InputError(f"caption corpus {source}", "contains no captions",
                             "give a corpus with at least one non-empty caption")
        return cls(texts, embed_texts(texts, encoder), np.asarray(keep_rows), source)

    @classmethod
    def from_stimuli(cls, stimuli: Stimuli, rows: Sequence[int] | np.ndarray, encoder: Any) -> CaptionCorpus:
        """Every caption of the stimuli ``rows`` (e.g. the training stimuli)."""
        texts, origin = [], []
        for r in np.asarray(rows, dtype=np.int64):
            for c in stimuli.captions[r]:
                texts.append(c)
                origin.append(int(r))
        if not texts:
            raise InputError("caption corpus (training captions)", "the training stimuli have no captions",
                             "add captions to stimuli.tsv or give a corpus file")
        return cls.from_texts(texts, encoder, origin, source="training captions")

    @classmethod
    def from_file(cls, path: str | os.PathLike, encoder: Any) -> CaptionCorpus:
        """Captions of a text file or TSV (see :func:`read_caption_file`)."""
        return cls.from_texts(read_caption_file(path), encoder, source=str(path))

    def nearest(self, vectors: np.ndarray, top_k: int = 5, mean: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Indices (n, k) and cosine scores (n, k) of the ``top_k`` captions closest to each vector.

        With ``mean`` the cosines are taken after subtracting it from vectors and captions alike (see
        :class:`CaptionReconstructor`'s ``center``).
        """
        CAPTIONS["top_k"].check("top_k", top_k)
        sims = _centred(vectors, mean) @ _centred(self.embeddings, mean).T
        k = min(int(top_k), len(self))
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(sims, idx, axis=1)


def embed_texts(texts: Sequence[str], encoder: Any) -> np.ndarray:
    """Sentence embeddings (n, d) of ``texts``, L2-normalised.

    With a :class:`~napari_brain_concepts.core.embeddings.text.SentenceEncoder` the embeddings are read from
    and written to its on-disk cache (keyed by the model and the text), so a corpus is embedded once.
    """
    texts = [str(t) for t in texts]
    values = np.asarray(_encode_fn(encoder)(texts), dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(texts):
        raise InputError("encoder", f"returned shape {values.shape} for {len(texts)} texts",
                         "give an encoder that returns one embedding row per text")
    return _normalise(values).astype(np.float32)


def default_encoder(model: str | os.PathLike | None = None, device: str = "auto") -> Any:
    """The sentence encoder of the caption space: a local model folder, or all-MiniLM-L6-v2 by default."""
    from ..embeddings.text import SentenceEncoder

    return SentenceEncoder(model, device=device)


# -- reconstructor -----------------------------------------------------------------------------------------
class CaptionReconstructor(RegressorMixin, BaseEstimator):
    """Decode caption embeddings from brain responses and read out the nearest captions of a corpus.

    Parameters
    ----------
    decoder : estimator, optional
        Any regressor with ``fit(X, Y)`` / ``predict(X)`` (a fresh copy is fitted). Default:
        :class:`~napari_brain_concepts.core.decoding.ridge.RidgeDecoder` with an alpha per dimension by
        5-fold cross-validation.
    top_k : int
        Captions returned per stimulus.
    center : bool
        Compare embeddings after subtracting the mean caption embedding of the training stimuli. Every
        caption shares a large common component ("a picture of …"); cosines of raw sentence embeddings are
        dominated by it, centred cosines by what distinguishes one scene from another.
    device : str
        Device of the default ridge decoder.
    random_state : int
        Seed of the default decoder's folds.

    Attributes
    ----------
    decoder_ : estimator
        The fitted decoder.
    n_features_in_ : int
        Voxels seen in ``fit``.
    mean_ : ndarray (d,) or None
        Mean training embedding subtracted before cosines (``None`` when ``center=False``).
    """

    def __init__(self, decoder: Any = None, top_k: int = 5, center: bool = True, device: str = "auto",
                 random_state: int = 0):
        self.decoder = decoder
        self.top_k = top_k
        self.center = center
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False  # Y is a (n, d) embedding
        return tags

    def _make_decoder(self):
        if self.decoder is None:
            from ..decoding.ridge import RidgeDecoder

            return RidgeDecoder(device=self.device, random_state=self.random_state)
        from sklearn.base import clone

        try:
            return clone(self.decoder)
        except TypeError:
            import copy

            return copy.deepcopy(self.decoder)

    def fit_iter(self, X: np.ndarray, Y: np.ndarray, groups: Any = None
                 ) -> Generator[Progress, None, CaptionReconstructor]:
        """:meth:`fit` as a generator yielding the decoder's progress."""
        CAPTIONS["top_k"].check("top_k", self.top_k)
        X = np.asarray(X)
        Y = np.asarray(Y, dtype=np.float32)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise InputError("caption reconstruction", f"responses {X.shape} and embeddings {Y.shape} do not "
                             "pair up", "give one embedding row per response row")
        decoder = self._make_decoder()
        if hasattr(decoder, "fit_iter"):
            kwargs = {"groups": groups} if groups is not None else {}
            yield from decoder.fit_iter(X, Y, **kwargs)
        else:
            decoder.fit(X, Y)
            yield Progress("captions", 1, 1, "decoder fitted")
        self.decoder_ = decoder
        self.n_features_in_ = int(X.shape[1])
        self.dim_ = int(Y.shape[1])
        self.mean_ = Y.astype(np.float64).mean(axis=0) if self.center else None
        return self

    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Any = None) -> CaptionReconstructor:
        """Fit the decoder: responses ``X`` (n, n_voxels) → caption embeddings ``Y`` (n, d); returns self."""
        return run_to_end(self.fit_iter(X, Y, groups))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Decoded caption embeddings (n, d), L2-normalised (not centred: a point of the sentence space)."""
        if not hasattr(self, "decoder_"):
            raise not_fitted(self)
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InputError("parameter X", f"has shape {X.shape}, the decoder was fitted on "
                             f"{self.n_features_in_} voxels", "give responses of the same voxels as in fit")
        return _normalise(self.decoder_.predict(X)).astype(np.float32)

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: Any = None) -> float:
        """R² of :meth:`predict` against caption embeddings ``y`` (n, d) with every row scaled to unit length,
        averaged uniformly over the dimensions: ``RidgeDecoder.score`` in the space this estimator predicts in
        (unit vectors), as ``ContrastiveDecoder.score``. Higher is better, 1 is perfect."""
        from ..decoding.metrics import r2_unit
        from ..decoding.ridge import check_targets, check_xy

        if not hasattr(self, "decoder_"):
            raise not_fitted(self)
        X, Y = check_xy(X, y, roles=("responses", "caption embeddings"), stage="scoring")
        check_targets(Y, self.dim_, "the reconstructor", "score with the caption embedding it was fitted on")
        return r2_unit(Y, self.predict(X), sample_weight)

    def reconstruct(self, X: np.ndarray, corpus: CaptionCorpus) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """Top-k captions per response row: (captions, corpus indices (n, k), cosine scores (n, k))."""
        decoded = self.predict(X)
        if decoded.shape[1] != corpus.embeddings.shape[1]:
            raise InputError("caption corpus", f"embeddings have {corpus.embeddings.shape[1]} dimensions, the "
                             f"decoder predicts {decoded.shape[1]}", "embed the corpus with the decoder's model")
        idx, scores = corpus.nearest(decoded, self.top_k, mean=self.mean_)
        return [[corpus.captions[j] for j in row] for row in idx], idx, scores


# -- evaluation --------------------------------------------------------------------------------------------
def identification_ranks(decoded: np.ndarray, true: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rank (1 = best) of each row's true embedding among all rows' embeddings, by cosine with the decoded one.

    Ties count against the true stimulus (a constant prediction ranks last, never first). With ``mean``,
    cosines are taken after subtracting it.
    """
    sims = _centred(decoded, mean) @ _centred(true, mean).T
    own = np.diag(sims)
    return (sims >= own[:, None]).sum(axis=1).astype(np.int64)


def _loo_means(caps: np.ndarray) -> np.ndarray:
    """For captions (m, d): mean of the others for each caption (m, d); the plain mean when m == 1."""
    if len(caps) == 1:
        return caps.copy()
    total = caps.sum(axis=0)
    return (total[None] - caps) / (len(caps) - 1)


def caption_agreement(decoded: np.ndarray, caption_embeddings: np.ndarray, mean: np.ndarray | None = None
                      ) -> tuple[float, float]:
    """(cosine of ``decoded`` to the human captions, human-to-human agreement) for one stimulus.

    Both use the same reference sets: the mean of the human captions with one left out at a time. The
    agreement is each caption against the mean of the others (NaN with a single caption). With ``mean``,
    every embedding is centred on it first.
    """
    caps = _centred(caption_embeddings, mean)
    refs = _normalise(_loo_means(caps))
    model = float(np.mean(refs @ _centred(decoded, mean)))
    human = float(np.mean(np.einsum("ij,ij->i", caps, refs))) if len(caps) > 1 else float("nan")
    return model, human


def text_scores(hypothesis: str, references: Sequence[str]) -> tuple[float, float]:
    """Sentence BLEU and chrF (sacrebleu, 0–100) of ``hypothesis`` against ``references``."""
    import sacrebleu

    refs = [r for r in references if r.strip()]
    if not refs:
        return float("nan"), float("nan")
    return (float(sacrebleu.sentence_bleu(hypothesis, refs).score),
            float(sacrebleu.sentence_chrf(hypothesis, refs).score))


def human_text_scores(captions: Sequence[str]) -> tuple[float, float]:
    """Mean BLEU and chrF of each human caption against the other humans' (NaN with one caption)."""
    if len(captions) < 2:
        return float("nan"), float("nan")
    pairs = [text_scores(c, [o for j, o in enumerate(captions) if j != i]) for i, c in enumerate(captions)]
    return float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))


def evaluate_reconstruction(decoded: np.ndarray, stimuli: Stimuli, rows: Sequence[int] | np.ndarray,
                            top_captions: Sequence[Sequence[str]], top_scores: np.ndarray, encoder: Any,
                            corpus: CaptionCorpus | None = None, top_indices: np.ndarray | None = None,
                            mean: np.ndarray | None = None) -> pd.DataFrame:
    """Per-stimulus evaluation table of a caption reconstruction.

    Parameters
    ----------
    decoded : ndarray (n, d)
        Decoded caption embeddings of the test stimuli ``rows`` (one row each, repeats averaged).
    stimuli : Stimuli
    rows : index array (n,)
        Stimulus rows of ``decoded``.
    top_captions, top_scores :
        Output of :meth:`CaptionReconstructor.reconstruct`.
    encoder :
        The sentence encoder of the decoded space (embeds the human captions; cached).
    corpus, top_indices : optional
        When given, the top caption's embedding is read from the corpus instead of re-embedded.
    mean : ndarray (d,), optional
        Centre of the cosines (the reconstructor's ``mean_``): ranks and cosines are computed on centred
        embeddings, human agreement included, so both sides are measured alike.

    Returns
    -------
    DataFrame, one row per stimulus: ``stimulus_id``, ``rank``, ``identified`` (rank == 1), ``cos_decoded``,
    ``cos_top1`` (top caption's embedding vs human captions), ``human_agreement``, ``bleu``, ``chrf``,
    ``human_bleu``, ``human_chrf``, ``caption_true`` (first human caption), ``caption_1…k``, ``score_1…k``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    decoded = np.asarray(decoded)
    if decoded.shape[0] != len(rows) or len(top_captions) != len(rows):
        raise InputError("caption evaluation", f"{decoded.shape[0]} decoded rows, {len(top_captions)} "
                         f"reconstructions for {len(rows)} stimuli", "give one of each per test stimulus")
    no_caption = [int(r) for r in rows if not stimuli.captions[r]]
    if no_caption:
        raise InputError("stimuli captions", f"{len(no_caption)} test stimuli have no caption "
                         f"(e.g. {stimuli.ids[no_caption[0]]!r})", "give every test stimulus a caption")
    flat = [c for r in rows for c in stimuli.captions[r]]
    counts = [len(stimuli.captions[r]) for r in rows]
    flat_emb = embed_texts(flat, encoder)
    if flat_emb.shape[1] != decoded.shape[1]:
        raise InputError("encoder", f"embeds captions in {flat_emb.shape[1]} dimensions, the decoded space has "
                         f"{decoded.shape[1]}", "use the sentence model the decoder was trained on")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    per_stim = [flat_emb[bounds[i]:bounds[i + 1]] for i in range(len(rows))]
    true = np.stack([_normalise(e.mean(axis=0)) for e in per_stim])
    ranks = identification_ranks(decoded, true, mean)
    if corpus is not None and top_indices is not None:
        top1_emb = corpus.embeddings[np.asarray(top_indices)[:, 0]]
    else:
        top1_emb = embed_texts([t[0] for t in top_captions], encoder)
    records = []
    k = max(len(t) for t in top_captions)
    for i, r in enumerate(rows):
        caps = stimuli.captions[r]
        cos_dec, human = caption_agreement(decoded[i], per_stim[i], mean)
        cos_top, _ = caption_agreement(top1_emb[i], per_stim[i], mean)
        bleu, chrf = text_scores(top_captions[i][0], caps)
        hbleu, hchrf = human_text_scores(caps)
        rec = {"stimulus_id": stimuli.ids[r], "rank": int(ranks[i]), "identified": bool(ranks[i] == 1),
               "cos_decoded": cos_dec, "cos_top1": cos_top, "human_agreement": human, "bleu": bleu,
               "chrf": chrf, "human_bleu": hbleu, "human_chrf": hchrf, "caption_true": caps[0]}
        for j in range(k):
            rec[f"caption_{j + 1}"] = top_captions[i][j] if j < len(top_captions[i]) else ""
            rec[f"score_{j + 1}"] = float(top_scores[i][j]) if j < len(top_scores[i]) else float("nan")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def summarize_reconstruction(per_stimulus: pd.DataFrame) -> dict[str, float]:
    """One summary row: identification (top-1 rate vs chance, mean rank), cosines, BLEU/chrF."""
    n = len(per_stimulus)
    if n == 0:
        raise InputError("caption evaluation", "has no test stimulus", "give at least one test stimulus")
    out = {"n_test": n, "top1": float(per_stimulus["identified"].mean()), "chance_top1": 1.0 / n,
           "mean_rank": float(per_stimulus["rank"].mean()), "chance_mean_rank": (n + 1) / 2.0}
    for col in ("cos_decoded", "cos_top1", "human_agreement", "bleu", "chrf", "human_bleu", "human_chrf"):
        out[col] = float(per_stimulus[col].mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        out["cos_decoded_vs_human"] = out["cos_decoded"] / out["human_agreement"]
    return out


def format_reconstructions(per_stimulus: pd.DataFrame, n: int = 5, width: int = 100,
                           rows: Sequence[int] | None = None) -> str:
    """Readable text of ``n`` test stimuli: the first human caption and the top reconstructed captions."""
    table = per_stimulus if rows is None else per_stimulus.iloc[list(rows)]
    table = table.head(n)
    k = len([c for c in per_stimulus.columns if c.startswith("caption_") and c != "caption_true"])
    lines = []
    for _, rec in table.iterrows():
        lines.append(f"stimulus {rec['stimulus_id']} (rank {int(rec['rank'])} of {len(per_stimulus)})")
        lines.append(f"  true:          {_clip(rec['caption_true'], width)}")
        for j in range(1, min(k, 3) + 1):
            label = "reconstructed:" if j == 1 else "              "
            lines.append(f"  {label} {_clip(rec[f'caption_{j}'], width)}  (cos {rec[f'score_{j}']:.2f})")
    return "\n".join(lines)


def _clip(text: Any, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["CaptionCorpus", "CaptionReconstructor", "caption_agreement", "embed_texts",
           "default_encoder", "evaluate_reconstruction", "format_reconstructions", "human_text_scores",
           "identification_ranks",
           "read_caption_file", "summarize_reconstruction", "text_scores"]
