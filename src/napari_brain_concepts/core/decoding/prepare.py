"""From a subject's single-trial responses to decoder-ready (X, Y) pairs, split by stimulus.

The steps follow the published decoding pipelines:

1. z-score every voxel within each session (removes session drifts in scale and offset);
2. split *stimuli* (never trials) into train / validation / test, using the study's shared test set
   (``stimuli.test``, e.g. NSD shared1000) when it has one, else a seeded split of all study stimuli that
   is the same for every subject, so subjects are tested on the same images where they saw them;
3. select voxels by a mask and/or by noise ceiling (NSD: ``NC = 100·ncsnr² / (ncsnr² + 1/n)``), with
   ncsnr estimated from the repeats of the non-test stimuli when the study gives none (or when asked:
   ``prepare_subject(ncsnr_from="train")``);
4. either average the repeats of each stimulus (MindEye protocol, one sample per stimulus) or keep
   single trials (SDC protocol, one sample per trial; repeats share a CV group).

Voxels that are constant over all trials carry no signal and would make z-scores undefined: they are
dropped with a warning (listed in ``PreparedData.dropped_constant``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..study import Study, Subject

PROTOCOLS = ("mindeye", "sdc")


def _check_finite(responses: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(responses)):
        bad = np.argwhere(~np.isfinite(responses))[0]
        raise InputError(where, f"contain NaN or Inf (first at trial {bad[0]}, voxel {bad[1]})",
                         "remove those voxels from the mask or fill them before decoding")


def zscore_by_session(responses: np.ndarray, sessions: np.ndarray | None = None,
                      where: str = "responses") -> np.ndarray:
    """z-score every voxel (column) within each session; float32 (n_trials, n_voxels).

    A voxel constant within one session gets 0 there (it carries no information in that session).
    ``where`` names the responses in errors (``"subject sub-01 responses"``).
    """
    R = np.asarray(responses)
    if R.ndim != 2:
        raise InputError(where, f"have {R.ndim} dimensions", "give responses as (n_trials, n_voxels)")
    _check_finite(R, where)
    sessions = np.zeros(len(R), dtype=np.int64) if sessions is None else np.asarray(sessions)
    if sessions.shape != (len(R),):
        raise InputError("sessions", f"{sessions.size} session labels for {len(R)} trials",
                         "give one session label per trial")
    out = np.empty(R.shape, dtype=np.float32)
    for s in np.unique(sessions):
        rows = sessions == s
        block = R[rows].astype(np.float64)
        if len(block) > 1 and np.all(block == block.flat[0]):
            # a session where nothing varies is a failed export (e.g. zero-filled), not data
            raise InputError(where, f"session {s} holds the same value ({block.flat[0]:g}) in every voxel "
                             f"and trial ({int(rows.sum())} trials)",
                             "re-export that session's responses or leave its trials out (trials.tsv's session "
                             "column gives each trial's session)")
        mean = block.mean(0)
        std = block.std(0)
        std[std == 0] = np.inf
        out[rows] = ((block - mean) / std).astype(np.float32)
    return out


def constant_voxels(responses: np.ndarray) -> np.ndarray:
    """Indices of voxels whose response never changes across trials."""
    R = np.asarray(responses)
    return np.flatnonzero(np.ptp(R, axis=0) == 0)


def ncsnr_from_repeats(responses: np.ndarray, stimulus_rows: np.ndarray) -> np.ndarray:
    """Noise-ceiling SNR per voxel from repeated presentations (NSD definition).

    With responses z-scored per session, the noise variance is the mean over stimuli (with ≥ 2 trials) of
    the variance across repeats; the signal variance is ``1 − noise``, floored at 0;
    ``ncsnr = sqrt(signal) / sqrt(noise)``.
    """
    R = np.asarray(responses, dtype=np.float64)
    rows = np.asarray(stimulus_rows)
    uniq, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    rep = counts[inverse] >= 2
    if not np.any(rep):
        raise InputError("responses", "no stimulus was shown more than once, so a noise ceiling cannot be "
                         "estimated", "give ncsnr with the subject (decode.ncsnr_from=study), or do not select voxels by noise "
                         "ceiling")
    R, inverse = R[rep], np.unique(inverse[rep], return_inverse=True)[1]
    k = inverse.max() + 1
    n_per = np.bincount(inverse, minlength=k).astype(np.float64)
    total = np.zeros((k, R.shape[1]))
    np.add.at(total, inverse, R)
    mean = total / n_per[:, None]
    ss = np.zeros((k, R.shape[1]))
    np.add.at(ss, inverse, (R - mean[inverse]) ** 2)
    noise_var = (ss / (n_per - 1)[:, None]).mean(0)
    total_var = R.var(0)
    signal_var = np.clip(total_var - noise_var, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncsnr = np.sqrt(signal_var) / np.sqrt(noise_var)
    return np.nan_to_num(ncsnr, nan=0.0, posinf=0.0).astype(np.float32)


def noise_ceiling(ncsnr: np.ndarray, n_average: float = 1.0) -> np.ndarray:
    """NSD noise ceiling in percent of explainable variance: ``100·ncsnr² / (ncsnr² + 1/n)``."""
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    if n_average < 1:
        raise InputError("parameter n_average", f"{n_average!r}", "give the number of trials averaged (≥ 1)")
    snr2 = ncsnr ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        nc = 100.0 * snr2 / (snr2 + 1.0 / n_average)
    return np.nan_to_num(nc).astype(np.float32)


def split_stimuli(n_stimuli: int, shown: np.ndarray, test_flags: np.ndarray | None = None,
                  test_fraction: float = 0.15, val_fraction: float = 0.1, random_state: int = 0,
                  subject: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stimulus rows for train, validation and test among the ``shown`` ones.

    The permutation is drawn over *all* ``n_stimuli`` from ``random_state`` alone, so every subject of a
    study gets the same assignment for the stimuli it saw.
    """
    shown = np.unique(np.asarray(shown, dtype=np.int64))
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= frac < 1:
            raise InputError(f"parameter {name}", f"{frac!r} is outside [0, 1)", f"choose {name} in [0, 1)")
    order = np.random.default_rng(random_state).permutation(n_stimuli)
    rank = np.empty(n_stimuli, dtype=np.int64)
    rank[order] = np.arange(n_stimuli)
    if test_flags is not None:
        flags = np.asarray(test_flags, dtype=bool)
        test = shown[flags[shown]]
        if len(test) == 0:
            who = f"subject {subject}" if subject else "the subject"
            raise InputError("stimuli.tsv column 'test'", f"marks none of the stimuli {who} saw as test",
                             "write 1 for some of the stimuli each subject saw, or remove the test column")
        rest = shown[~flags[shown]]
    else:
        cut = int(round(test_fraction * n_stimuli))
        is_test = rank[shown] < cut
        test, rest = shown[is_test], shown[~is_test]
    rest = rest[np.argsort(rank[rest], kind="stable")[::-1]]  # independent of the test draw
    n_val = int(round(val_fraction * len(rest)))
    val, train = np.sort(rest[:n_val]), np.sort(rest[n_val:])
    if len(train) < 2 or len(test) < 2:
        who = f" of subject {subject}" if subject else ""
        split = f"the split{who} leaves {len(train)} training and {len(test)} test stimuli"
        if test_flags is not None:
            raise InputError("stimuli.tsv column 'test'", split, "mark fewer stimuli as test (1), or more if "
                             "there are fewer than 2 test stimuli" + (", or a smaller val_fraction" if n_val else ""))
        raise InputError("stimuli", split, "give more stimuli or smaller test_fraction / val_fraction")
    return train, val, np.sort(test)


@dataclass
class PreparedData:
    """Decoder-ready data of one subject (rows of X and Y are samples; ``rows_*`` give each sample's stimulus).

    ``voxels`` are indices into the subject's masked voxels (``Subject.to_volume`` order) of the columns of
    every ``X_*``. For the SDC protocol, samples are single trials and ``groups_train`` keeps the repeats
    of one stimulus in one CV fold.
    """

    subject: str
    protocol: str
    embedding: str
    X_train: np.ndarray
    Y_train: np.ndarray
    rows_train: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    rows_val: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    rows_test: np.ndarray
    voxels: np.ndarray
    n_voxels_total: int
    noise_ceiling: np.ndarray | None = None
    dropped_constant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_average: float = 1.0

    @property
    def groups_train(self) -> np.ndarray:
        return self.rows_train

    def voxel_values(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter per-selected-voxel values (..., n_selected) back to all masked voxels (..., n_voxels)."""
        values = np.asarray(values)
        out = np.full(values.shape[:-1] + (self.n_voxels_total,), fill, dtype=values.dtype)
        out[..., self.voxels] = values
        return out


def mean_by_stimulus(values: np.ndarray, stimulus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average rows sharing a stimulus: (sorted unique stimuli, (n_unique, d) float64 means).

    The one repeat-averaging of the project: decoder inputs (MindEye protocol), RSA and encoding
    patterns, concept maps and decoded predictions all average through it.
    """
    values = np.asarray(values)
    uniq, inverse = np.unique(np.asarray(stimulus), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    if len(values) == 0:
        return uniq, np.zeros((0, values.shape[1]))
    # rows grouped by stimulus in their original order, summed group by group in float64 (the same sums,
    # in the same order, as accumulating row by row; np.add.at is ~10x slower)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = np.add.reduceat(values[order], starts, axis=0, dtype=np.float64)
    return uniq, total / counts[:, None]


def prepare_arrays(responses: np.ndarray, stimulus_rows: np.ndarray, embedding: np.ndarray, *,
                   sessions: np.ndarray | None = None, test_flags: np.ndarray | None = None,
                   protocol: str = "mindeye", test_fraction: float = 0.15, val_fraction: float = 0.1,
                   voxel_mask: np.ndarray | None = None, ncsnr: np.ndarray | None = None,
                   nc_threshold: float | None = None, n_voxels: int | None = None, random_state: int = 0,
                   subject: str = "subject", embedding_name: str = "embedding",
                   mask: np.ndarray | None = None) -> PreparedData:
    """Prepare decoder data from plain arrays (see the module docstring for the steps).

    Parameters
    ----------
    responses : (n_trials, n_voxels) single-trial responses.
    stimulus_rows : (n_trials,) row in ``embedding`` of each trial's stimulus.
    embedding : (n_stimuli, d) target embedding of every stimulus of the study.
    sessions : (n_trials,) session of each trial (z-scoring unit); one session when omitted.
    test_flags : (n_stimuli,) bool, the study's shared test set; a seeded split when omitted.
    protocol : "mindeye" (average repeats) or "sdc" (single trials).
    voxel_mask : (n_voxels,) bool, voxels allowed (e.g. a visual-cortex ROI).
    ncsnr : (n_voxels,) noise-ceiling SNR; estimated from the repeats of non-test stimuli when omitted
        and a noise-ceiling selection is asked for.
    nc_threshold : keep voxels whose noise ceiling (percent, for the protocol's number of averaged
        trials) is at least this. n_voxels : keep at most this many voxels, highest noise ceiling first.
    mask : the 3D mask whose nonzero voxels, in C order, are the columns of ``responses``; only used to name
        dropped voxels by their (i, j, k) index in the mask volume.
    """
    if protocol not in PROTOCOLS:
        raise InputError("parameter protocol", f"{protocol!r} is unknown", f"use one of {', '.join(PROTOCOLS)}")
    R = np.asarray(responses)
    if R.ndim != 2:
        raise InputError("responses", f"have {R.ndim} dimensions", "give responses as (n_trials, n_voxels)")
    _check_finite(R, f"subject {subject} responses")
    rows = np.asarray(stimulus_rows, dtype=np.int64)
    E = np.asarray(embedding, dtype=np.float32)
    if rows.shape != (len(R),):
        raise InputError(f"subject {subject} trials", f"{rows.size} stimulus rows for {len(R)} response trials",
                         "give one stimulus per response trial, in order")
    if E.ndim != 2:
        raise InputError(f"embedding {embedding_name!r}", f"has {E.ndim} dimensions", "give (n_stimuli, d)")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(E)):
        raise InputError(f"embedding {embedding_name!r}", f"has {len(E)} rows but trials refer to stimulus row "
                         f"{rows.max()}", "compute the embedding for every stimulus of the study")
    if not np.all(np.isfinite(E)):
        raise InputError(f"embedding {embedding_name!r}", "contains NaN or Inf", "recompute the embedding")
    n_vox_total = R.shape[1]

    keep = np.ones(n_vox_total, dtype=bool)
    if voxel_mask is not None:
        vm = np.asarray(voxel_mask, dtype=bool).ravel()
        if vm.shape != (n_vox_total,):
            raise InputError("parameter voxel_mask", f"has {vm.size} values for {n_vox_total} voxels",
                             "give one True/False per masked voxel")
        keep &= vm
    const = constant_voxels(R)
    if len(const):
        if mask is not None and int(np.count_nonzero(mask)) == n_vox_total:
            ijk = np.argwhere(np.asarray(mask) != 0)[const[:5]]
            first = "first at (i, j, k) of the mask volume: " + ", ".join(str(tuple(int(v) for v in p))
                                                                          for p in ijk)
        else:
            first = f"first response columns: {const[:5].tolist()}"
        warnings.warn(f"subject {subject}: {len(const)} of {n_vox_total} voxel(s) are constant over all trials "
                      f"and are dropped ({first}); many usually mean that the mask reaches beyond the data "
                      "(responses of 0 outside the brain): fit the mask to the data", UserWarning, stacklevel=2)
        keep[const] = False

    train_s, val_s, test_s = split_stimuli(len(E), rows, test_flags, test_fraction, val_fraction, random_state,
                                           subject=subject)
    Z = zscore_by_session(R, sessions, where=f"subject {subject} responses")
    is_test = np.isin(rows, test_s)

    uniq, counts = np.unique(rows, return_counts=True)
    n_average = float(np.median(counts)) if protocol == "mindeye" else 1.0
    nc = None
    if nc_threshold is not None or n_voxels is not None or ncsnr is not None:
        if ncsnr is None:
            ncsnr = ncsnr_from_repeats(Z[~is_test], rows[~is_test])
        ncsnr = np.asarray(ncsnr, dtype=np.float32).ravel()
        if ncsnr.shape != (n_vox_total,):
            raise InputError(f"subject {subject} ncsnr", f"has {ncsnr.size} values for {n_vox_total} voxels",
                             "give one ncsnr value per masked voxel")
        nc = noise_ceiling(ncsnr, n_average)
        if nc_threshold is not None:
            keep &= nc >= nc_threshold
    voxels = np.flatnonzero(keep)
    if n_voxels is not None and len(voxels) > n_voxels:
        if n_voxels < 1:
            raise InputError("parameter n_voxels", f"{n_voxels!r} keeps no voxel",
                             "keep at least 1 voxel, or leave n_voxels out to keep every selected voxel")
        voxels = np.sort(voxels[np.argsort(-nc[voxels], kind="stable")[:int(n_voxels)]])
    if len(voxels) == 0:
        raise InputError(f"subject {subject} voxel selection", "keeps no voxel",
                         "lower nc_threshold, widen the voxel mask, or check the responses")
    Z = Z[:, voxels]

    def pick(stims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sel = np.isin(rows, stims)
        X, r = Z[sel], rows[sel]
        if protocol == "mindeye":
            r, X = mean_by_stimulus(X, r)
            X = X.astype(np.float32)
        return X, E[r], r

    Xtr, Ytr, rtr = pick(train_s)
    Xva, Yva, rva = pick(val_s)
    Xte, Yte, rte = pick(test_s)
    return PreparedData(subject=subject, protocol=protocol, embedding=embedding_name,
                        X_train=Xtr, Y_train=Ytr, rows_train=rtr, X_val=Xva, Y_val=Yva, rows_val=rva,
                        X_test=Xte, Y_test=Yte, rows_test=rte, voxels=voxels, n_voxels_total=n_vox_total,
                        noise_ceiling=None if nc is None else nc[voxels], dropped_constant=const,
                        n_average=n_average)


#: where the ncsnr that selects voxels by noise ceiling comes from: the study's where it gives one (NSD's own,
#: computed by NSD from every trial, the test images' too), or the repeats of the non-test trials (Efird et al.)
NCSNR_SOURCES = ("study", "train")


def prepare_subject(study: Study, subject: str | Subject, embedding: str = "captions", *,
                    ncsnr_from: str = "study", **kwargs: Any) -> PreparedData:
    """:func:`prepare_arrays` for one subject of a study (its sessions, ncsnr and the study's test set).

    Voxels selected by noise ceiling (``nc_threshold`` or ``n_voxels``) use the subject's own ncsnr with
    ``ncsnr_from="study"`` where the study gives one, and otherwise (or with ``"train"``) an ncsnr estimated
    from the repeats of the non-test trials (after each session's z-scoring), as Efird et al. do: the test
    trials' repeats then play no part in the selection."""
    from ..errors import check_choices

    check_choices({"ncsnr_from": ncsnr_from}, {"ncsnr_from": NCSNR_SOURCES})
    sub = subject if isinstance(subject, Subject) else study.subject(subject)
    emb = study.embedding(embedding)
    kwargs.setdefault("test_flags", study.stimuli.test)
    selects = kwargs.get("nc_threshold") is not None or kwargs.get("n_voxels") is not None
    kwargs.setdefault("ncsnr", sub.ncsnr if selects and ncsnr_from == "study" else None)
    kwargs.setdefault("mask", sub.mask)
    return prepare_arrays(sub.responses, study.trial_rows(sub), emb.values, sessions=sub.sessions,
                          subject=sub.name, embedding_name=emb.name, **kwargs)
