"""Decoding scores with the field's protocols, each returned with its chance level.

- :func:`topk_retrieval`: every decoded sample (a single trial, SDC protocol) ranks all unique test
  stimuli by cosine similarity; top-k accuracy, chance ``k / n_candidates``.
- :func:`mindeye_retrieval`: repeat-averaged decodings; 30 random draws of 300 test stimuli, top-1 in
  both directions (brain→stimulus, stimulus→brain), chance ``1 / draw size``. With fewer test stimuli
  than the draw size every draw uses all of them, and the score says so (``detail``).
- :func:`pairwise_accuracy`: 2-way identification: for every pair of samples with different stimuli,
  is ``r(ŷᵢ, yᵢ) + r(ŷⱼ, yⱼ) > r(ŷᵢ, yⱼ) + r(ŷⱼ, yᵢ)``; chance 0.5.
- :func:`pearson_per_dimension`: Pearson r of every embedding dimension across samples; chance 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .prepare import mean_by_stimulus


@dataclass(frozen=True)
class Score:
    """One score: its value, what chance would give, and how it was measured."""

    metric: str
    value: float
    chance: float
    detail: str = ""


def _pair(pred: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    P = np.asarray(pred, dtype=np.float64)
    T = np.asarray(target, dtype=np.float64)
    if P.ndim != 2 or T.ndim != 2 or P.shape[1] != T.shape[1]:
        raise InputError(what, f"predictions {P.shape} and targets {T.shape} do not match",
                         "give (n, d) predictions and (m, d) targets of the same embedding dimension")
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(T))):
        raise InputError(what, "predictions or targets contain NaN or Inf", "check the decoder's input")
    return P, T


def _unit(A: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(A, axis=1, keepdims=True)
    return A / np.where(norm == 0, 1.0, norm)


def r2_unit(target: np.ndarray, pred: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """R² of unit-length predictions ``pred`` (n, d) against ``target`` (n, d) with its rows scaled to unit length,
    averaged uniformly over the d dimensions (``sklearn.metrics.r2_score``): the ``score`` of the estimators
    that predict directions (L2-normalised embeddings), on the scale of ``RidgeDecoder.score``."""
    from sklearn.metrics import r2_score

    return float(r2_score(_unit(np.asarray(target, dtype=np.float64)), pred, sample_weight=sample_weight))


def cosine_similarity(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities between the rows of ``A`` and ``B``."""
    return _unit(np.asarray(A, dtype=np.float64)) @ _unit(np.asarray(B, dtype=np.float64)).T


def topk_retrieval(pred: np.ndarray, candidates: np.ndarray, true_index: np.ndarray,
                   ks: Sequence[int] = (1, 5, 10)) -> list[Score]:
    """Top-k retrieval of each decoded sample among ``candidates`` (all unique test stimuli).

    ``true_index[i]`` is the row of ``candidates`` shown in sample ``i``. A candidate ties with the true
    one only when its similarity is exactly equal; ties count against the sample (conservative).
    """
    P, C = _pair(pred, candidates, "top-k retrieval")
    true_index = np.asarray(true_index, dtype=np.int64)
    if true_index.shape != (len(P),) or true_index.min() < 0 or true_index.max() >= len(C):
        raise InputError("top-k retrieval", "true_index must give one candidate row per prediction",
                         "pass the row of each sample's stimulus among the candidates")
    S = cosine_similarity(P, C)
    true_sim = S[np.arange(len(P)), true_index]
    rank = (S >= true_sim[:, None]).sum(1) - 1  # 0 = best
    n_c = len(C)
    return [Score(f"top{k}", float(np.mean(rank < k)), min(1.0, k / n_c),
                  f"{len(P)} samples vs {n_c} unique test stimuli") for k in ks]


def mindeye_retrieval(pred: np.ndarray, target: np.ndarray, n_draws: int = 30, draw_size: int = 300,
                      random_state: int = 0) -> list[Score]:
    """MindEye top-1 retrieval in both directions over random draws of ``draw_size`` paired samples."""
    P, T = _pair(pred, target, "MindEye retrieval")
    if len(P) != len(T):
        raise InputError("MindEye retrieval", f"{len(P)} predictions for {len(T)} targets",
                         "give one repeat-averaged prediction per test stimulus")
    n = len(P)
    if n < 2:
        raise InputError("MindEye retrieval", "needs at least 2 test stimuli", "use a larger test set")
    size = min(draw_size, n)
    rng = np.random.default_rng(random_state)
    fwd, bwd = [], []
    for _ in range(n_draws):
        idx = rng.choice(n, size=size, replace=False)
        S = cosine_similarity(P[idx], T[idx])
        diag = np.arange(size)
        fwd.append(np.mean(S.argmax(1) == diag))
        bwd.append(np.mean(S.argmax(0) == diag))
    detail = f"{n_draws} draws of {size} test stimuli"
    if size < draw_size:
        detail += f" (fewer than the protocol's {draw_size}: all {n} test stimuli)"
    return [Score("mindeye_brain_to_stimulus", float(np.mean(fwd)), 1.0 / size, detail),
            Score("mindeye_stimulus_to_brain", float(np.mean(bwd)), 1.0 / size, detail)]


def _zrows(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(1, keepdims=True)
    return _unit(A)


def pairwise_accuracy(pred: np.ndarray, target: np.ndarray, stimulus: np.ndarray | None = None) -> Score:
    """2-way identification accuracy over all pairs of samples with different stimuli (chance 0.5)."""
    P, T = _pair(pred, target, "pairwise accuracy")
    if len(P) != len(T):
        raise InputError("pairwise accuracy", f"{len(P)} predictions for {len(T)} targets",
                         "give one target per prediction")
    R = _zrows(P) @ _zrows(T).T  # Pearson r of every prediction with every target
    d = np.diag(R)
    correct = (d[:, None] + d[None, :]) > (R + R.T)
    valid = ~np.eye(len(P), dtype=bool)
    if stimulus is not None:
        stim = np.asarray(stimulus)
        valid &= stim[:, None] != stim[None, :]
    iu = np.triu(valid, 1)
    if not iu.any():
        raise InputError("pairwise accuracy", "no pair of samples with different stimuli",
                         "use a test set with at least 2 stimuli")
    return Score("pairwise", float(correct[iu].mean()), 0.5, f"{int(iu.sum())} pairs")


def pearson_per_dimension(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r across samples of every embedding dimension (0 where a dimension is constant)."""
    P, T = _pair(pred, target, "per-dimension correlation")
    if len(P) != len(T):
        raise InputError("per-dimension correlation", f"{len(P)} predictions for {len(T)} targets",
                         "give one target per prediction")
    P = P - P.mean(0)
    T = T - T.mean(0)
    denom = np.sqrt((P ** 2).sum(0) * (T ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (P * T).sum(0) / denom
    return np.nan_to_num(r).astype(np.float32)


def decoding_scores(pred: np.ndarray, stimulus: np.ndarray, embedding: np.ndarray,
                    ks: Sequence[int] = (1, 5, 10), n_draws: int = 30, draw_size: int = 300,
                    random_state: int = 0) -> list[Score]:
    """Every score of a test set: ``pred`` (n_samples, d), ``stimulus`` row of each sample in ``embedding``.

    Top-k uses the samples as given (single trials or averages) against the unique test stimuli; MindEye
    and pairwise use predictions averaged per stimulus; per-dimension r uses the samples.
    """
    stimulus = np.asarray(stimulus)
    E = np.asarray(embedding)
    uniq, inverse = np.unique(stimulus, return_inverse=True)
    scores = topk_retrieval(pred, E[uniq], inverse, ks)
    _, avg = mean_by_stimulus(pred, stimulus)
    scores += mindeye_retrieval(avg, E[uniq], n_draws, draw_size, random_state)
    scores.append(pairwise_accuracy(avg, E[uniq]))
    r = pearson_per_dimension(pred, E[stimulus])
    scores.append(Score("pearson_mean", float(r.mean()), 0.0, f"mean over {len(r)} dimensions"))
    return scores
