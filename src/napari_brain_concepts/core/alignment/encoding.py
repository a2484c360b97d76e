"""Encoding models: ridge regression from a stimulus embedding to every voxel.

The regularisation is chosen per voxel by cross-validation on the training stimuli (the project's
:class:`~napari_brain_concepts.core.decoding.ridge.RidgeDecoder`, which scores a grid of alphas for
thousands of targets from one decomposition). Accuracy is the Pearson r between predicted and measured
responses of every voxel on held-out stimuli; the noise ceiling of a voxel bounds that r given how
repeatable its responses are. A fitted model predicts the brain map of any sentence.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ..decoding.ridge import DEFAULT_ALPHAS, RidgeDecoder, check_features, check_targets, check_xy
from ..errors import InputError, not_fitted
from ..progress import Progress, run_to_end
from ..study import Study, Subject


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of ``a`` and ``b`` (n, k) → (k,); NaN for a constant column."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


_ROLES = ("embedding", "responses")  # what X and Y hold, for the messages


class EncodingModel(RegressorMixin, BaseEstimator):
    """Ridge encoding model embedding → voxels with one alpha per voxel.

    Parameters
    ----------
    alphas : sequence of float
        Regularisation strengths tried for every voxel.
    cv : int or splitter
        Folds over training stimuli for choosing each voxel's alpha.
    encoder : object with ``encode(list[str]) -> ndarray``, optional
        The sentence model whose embedding space the model was fitted in; needed by :meth:`predict_map`.
    dtype : {"float32", "float64"}
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    random_state : int or None
        Shuffles the CV folds.
    target_batch_size : int
        Voxels fitted together (bounds memory).

    Attributes
    ----------
    ridge_ : RidgeDecoder
    coef_ : ndarray (n_voxels, d)
    intercept_ : ndarray (n_voxels,)
    best_alphas_ : ndarray (n_voxels,)
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: Any = 5, encoder: Any = None,
                 dtype: str = "float32", device: str = "auto", random_state: int | None = 0,
                 target_batch_size: int = 4096):
        self.alphas = alphas
        self.cv = cv
        self.encoder = encoder
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.target_batch_size = target_batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one ridge per voxel
        return tags

    def fit(self, X: Any, Y: Any) -> EncodingModel:
        """Fit embeddings ``X`` (n_stimuli, d) → responses ``Y`` (n_stimuli, n_voxels)."""
        return run_to_end(self.fit_iter(X, Y))

    def fit_iter(self, X: Any, Y: Any) -> Generator[Progress, None, EncodingModel]:
        """:meth:`fit` as a generator yielding progress."""
        check_xy(X, Y, roles=_ROLES)  # first, so that the messages call X the embedding and Y the responses
        ridge = RidgeDecoder(alphas=self.alphas, cv=self.cv, dtype=self.dtype, device=self.device,
                             random_state=self.random_state, target_batch_size=self.target_batch_size)
        yield from ridge.fit_iter(X, Y)
        self.ridge_ = ridge
        self.coef_ = ridge.coef_
        self.intercept_ = ridge.intercept_
        self.best_alphas_ = ridge.best_alphas_
        self.n_features_in_ = ridge.n_features_in_
        return self

    @classmethod
    def from_coefficients(cls, coef: np.ndarray, intercept: np.ndarray, best_alphas: np.ndarray | None = None,
                          encoder: Any = None, device: str = "auto") -> EncodingModel:
        """A fitted model from saved weights (``coef`` (n_voxels, d), ``intercept`` (n_voxels,)), e.g. those the
        encode step writes to ``arrays/encoding_SUBJ_MODEL.npz``."""
        coef = np.asarray(coef)
        intercept = np.asarray(intercept, dtype=coef.dtype).ravel()
        if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
            raise InputError("parameter coef", f"has shape {coef.shape} with {intercept.size} intercepts",
                             "give coef (n_voxels, d) and one intercept per voxel")
        model = cls(encoder=encoder, device=device)
        ridge = RidgeDecoder(device=device).set_weights(coef, intercept, best_alphas)
        model.ridge_ = ridge
        model.coef_, model.intercept_, model.best_alphas_ = coef, intercept, ridge.best_alphas_
        model.n_features_in_ = coef.shape[1]
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "ridge_"):
            raise not_fitted(self, "call fit(embeddings, responses) first")

    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses (n, n_voxels) of embeddings ``X`` (n, d)."""
        self._check_fitted()
        X = check_features(X, self.n_features_in_, type(self).__name__, "embeddings of the same space")
        return self.ridge_.predict(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of ``predict(X)`` against responses ``y`` (n, n_voxels), averaged uniformly over voxels, as
        ``RidgeDecoder.score`` and scikit-learn's ``RegressorMixin.score`` (what ``cross_val_score`` and
        ``GridSearchCV`` use). :meth:`score_voxels` gives each voxel's Pearson r instead."""
        from sklearn.metrics import r2_score

        self._check_fitted()
        X, Y = check_xy(X, y, roles=_ROLES, stage="scoring")
        check_targets(Y, self.ridge_.n_targets_, "the model",
                      "score with responses of the voxels the model was fitted on")
        pred = self.predict(X)
        return float(r2_score(Y, pred.reshape(len(Y), -1), sample_weight=sample_weight))

    def score_voxels(self, X: Any, Y: Any) -> np.ndarray:
        """Pearson r per voxel between predicted and measured held-out responses ``Y`` (n, n_voxels)."""
        Y = np.asarray(Y)
        pred = self.predict(X)
        if pred.shape != Y.shape:
            raise InputError("parameter Y", f"has shape {Y.shape}, predictions have {pred.shape}",
                             "give held-out responses of the fitted voxels, one row per row of X")
        if Y.shape[0] < 3:
            raise InputError("parameter Y", f"{Y.shape[0]} held-out stimuli", "hold out at least 3 stimuli")
        return pearson_columns(pred, Y)

    def predict_map(self, text: str | Sequence[str], subject: Subject | None = None) -> np.ndarray:
        """Predicted brain response to a sentence (or the mean embedding of several sentences).

        Returns the per-voxel prediction (n_voxels,), or the volume on ``subject``'s grid when given.
        """
        self._check_fitted()
        if self.encoder is None:
            raise InputError("EncodingModel.encoder", "is not set, so text cannot be embedded",
                             "create the model with encoder=SentenceEncoder(...) of the embedding it was fitted on")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(str(t).strip() for t in texts):
            raise InputError("parameter text", "is empty", "give a sentence, e.g. 'a man riding a horse'")
        emb = np.asarray(self.encoder.encode(texts), dtype=np.float64).mean(axis=0, keepdims=True)
        if emb.shape[1] != self.n_features_in_:
            raise InputError("EncodingModel.encoder", f"gives {emb.shape[1]}-d embeddings, the model was fitted on "
                             f"{self.n_features_in_}-d", "use the sentence model the embedding was computed with")
        values = self.predict(emb)[0]
        return values if subject is None else subject.to_volume(values.astype(np.float32))


def voxel_noise_ceiling(responses: np.ndarray, trial_stimulus: np.ndarray, n_average: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel noise ceiling from repeated presentations (NSD's ncsnr).

    With responses z-scored per voxel, the noise variance is the mean within-stimulus variance over
    stimuli shown at least twice and the signal variance the rest; ``ncsnr = σ_signal / σ_noise``. The
    ceiling on the r of a model with responses averaged over ``n_average`` repeats is
    ``sqrt(ncsnr² / (ncsnr² + 1 / n_average))``.

    Returns
    -------
    (r_ceiling (n_voxels,), ncsnr (n_voxels,)); NaN where no stimulus was repeated.
    """
    resp = np.asarray(responses, dtype=np.float64)
    stim = np.asarray(trial_stimulus)
    uniq, inverse, counts = np.unique(stim, return_inverse=True, return_counts=True)
    repeated = counts[inverse] >= 2
    n_vox = resp.shape[1]
    if not repeated.any():
        nan = np.full(n_vox, np.nan)
        return nan, nan.copy()
    sd = resp.std(axis=0)
    sd[sd == 0] = 1.0
    z = (resp - resp.mean(axis=0)) / sd
    z, inv = z[repeated], inverse[repeated]
    k = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    sums = np.zeros((len(uniq), n_vox))
    np.add.at(sums, inv, z)
    sq = np.zeros((len(uniq), n_vox))
    np.add.at(sq, inv, z * z)
    used = k >= 2
    within = (sq[used] - sums[used] ** 2 / k[used, None]) / (k[used, None] - 1)
    noise = within.mean(axis=0)
    signal = np.clip(1.0 - noise, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncsnr = np.sqrt(signal) / np.sqrt(noise)
    n_avg = float(np.median(counts[counts >= 2])) if n_average is None else float(n_average)
    ceiling = np.sqrt(ncsnr ** 2 / (ncsnr ** 2 + 1.0 / n_avg))
    return ceiling, ncsnr


@dataclass
class EncodingResult:
    """One subject's encoding model for one embedding, and its held-out accuracy."""

    subject: str
    embedding: str
    model: EncodingModel
    r: np.ndarray
    noise_ceiling: np.ndarray
    train_rows: np.ndarray
    test_rows: np.ndarray


def split_rows(study: Study, subject: str | Subject, test_fraction: float = 0.2,
               random_state: int | np.random.Generator | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out stimulus rows of a subject (a name or a :class:`Subject`): the shared test set
    when flagged, else a random ``test_fraction`` of the stimuli it saw."""
    subject = subject if isinstance(subject, Subject) else study.subject(subject)
    seen = np.unique(study.trial_rows(subject))
    test_flags = study.stimuli.test
    if test_flags is not None and test_flags[seen].sum() >= 3 and (~test_flags[seen]).sum() >= 3:
        return seen[~test_flags[seen]], seen[test_flags[seen]]
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    n_test = max(3, int(round(test_fraction * len(seen))))
    if len(seen) - n_test < 3:
        raise InputError(f"subject {subject.name}", f"saw only {len(seen)} stimuli",
                         "an encoding model needs at least 6 stimuli (3 to fit, 3 to test)")
    perm = rng.permutation(seen)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_encoding(study: Study, subject: str | Subject, embedding: str, *, model: EncodingModel | None = None,
                 test_fraction: float = 0.2, random_state: int | None = 0
                 ) -> Generator[Progress, None, EncodingResult]:
    """Fit and evaluate an encoding model of one subject from one of the study's embeddings (generator).

    Responses are z-scored within session and averaged over repeats per stimulus; the model is fitted on
    the training stimuli and scored (Pearson r per voxel) on the held-out ones. ``subject`` is a name or a
    :class:`Subject`, as for :func:`~napari_brain_concepts.core.decoding.prepare.prepare_subject`.
    """
    from .rsa import stimulus_patterns

    subject = subject if isinstance(subject, Subject) else study.subject(subject)
    features = study.embedding(embedding).values
    train, test = split_rows(study, subject, test_fraction, random_state)
    y_train = stimulus_patterns(study, subject, train)
    y_test = stimulus_patterns(study, subject, test)
    model = model if model is not None else EncodingModel(random_state=random_state)
    yield from model.fit_iter(features[train], y_train)
    r = model.score_voxels(features[test], y_test)
    trial_rows = study.trial_rows(subject)
    in_test = np.isin(trial_rows, test)
    if subject.ncsnr is not None:
        ncsnr = subject.ncsnr.astype(np.float64)
        n_avg = np.median(np.bincount(trial_rows[in_test])[test])
        ceiling = np.sqrt(ncsnr ** 2 / (ncsnr ** 2 + 1.0 / n_avg))
    else:  # from the responses as the model sees them: z-scored within session (a session's offset is no noise)
        from ..decoding.prepare import zscore_by_session

        z = zscore_by_session(subject.responses, subject.sessions, where=f"subject {subject.name} responses")
        ceiling, _ = voxel_noise_ceiling(z[in_test], trial_rows[in_test])
    return EncodingResult(subject=subject.name, embedding=embedding, model=model, r=r, noise_ceiling=ceiling,
                          train_rows=train, test_rows=test)
