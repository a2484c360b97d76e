"""Representational similarity analysis (RSA) the way Doerig et al. ran it.

Representational dissimilarity matrices (RDMs) use the correlation distance ``1 - pearson(pattern_i,
pattern_j)``; two RDMs are compared by the Pearson (or Spearman) correlation of their upper triangles
(row-major, diagonal excluded: the order rsatoolbox uses). Because RDM correlations depend on how many
stimuli enter them, model–brain scores are averaged over disjoint random subsets of 100 stimuli, and
every model is scored on the same subsets. The noise ceiling of a brain area is the correlation of each
subject's RDM with the mean RDM of the other subjects, and group statistics are one-sample t-tests across
subjects with Benjamini–Hochberg false-discovery-rate correction.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..decoding.prepare import mean_by_stimulus, zscore_by_session
from ..errors import InputError
from ..ranges import RSA
from ..study import Embedding, Study, Subject

METHODS = ("pearson", "spearman")


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError("parameter method", f"{method!r} is not an RDM comparison",
                         f"use one of {', '.join(METHODS)}")
    return method


def correlation_rdm(patterns: np.ndarray, *, name: str = "patterns") -> np.ndarray:
    """Correlation-distance RDM of stimulus patterns.

    Parameters
    ----------
    patterns : ndarray (n_stimuli, n_features)
        One row per stimulus (voxels of a brain area, or a model's embedding).
    name : str
        What the patterns are, for the error message.

    Returns
    -------
    ndarray (n_stimuli, n_stimuli), float64
        ``1 - r`` between every pair of rows; zeros on the diagonal.

    Patterns holding NaN or Inf are refused (:class:`InputError`), as are constant rows.
    """
    x = np.asarray(patterns, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise InputError(name, f"has shape {x.shape}, expected (n_stimuli >= 3, n_features)",
                         "give one pattern row per stimulus, at least 3 stimuli")
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise InputError(name, f"contains NaN or Inf (first at stimulus row {row}, column {col}), so its "
                         "correlation distances are undefined", "drop or fill those values (or the voxels or "
                         "features holding them)")
    if x.shape[1] < 2:
        raise InputError(name, "has fewer than 2 features, so correlations are undefined",
                         "use at least 2 voxels or embedding dimensions")
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise InputError(name, f"pattern of stimulus row {bad} is constant, so its correlation distance "
                               "is undefined", "drop that stimulus or the features that make it constant")
    x /= norms[:, None]
    rdm = 1.0 - x @ x.T
    np.fill_diagonal(rdm, 0.0)
    return rdm


def upper_triangle(rdm: np.ndarray) -> np.ndarray:
    """Upper triangle (k=1, row-major) of one RDM (n, n) or a stack (..., n, n)."""
    rdm = np.asarray(rdm)
    n = rdm.shape[-1]
    i, j = np.triu_indices(n, k=1)
    return rdm[..., i, j]


TIE_DECIMALS = 10


def rank_rows(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis after rounding to ``TIE_DECIMALS`` decimals.

    Rounding makes distances that are equal in exact arithmetic (e.g. between multi-hot category vectors)
    tie, instead of being ordered by floating-point noise.
    """
    return stats.rankdata(np.round(v, TIE_DECIMALS), axis=-1, method="average")


def _looks_like_rdm(x: np.ndarray) -> bool:
    """A square, symmetric matrix with a zero diagonal (a full RDM, not a stack of vectors)."""
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 2:
        return False
    scale = max(float(np.max(np.abs(x))), 1.0) if x.size else 1.0
    return bool(np.all(np.abs(np.diagonal(x)) <= 1e-8 * scale) and np.allclose(x, x.T, rtol=0, atol=1e-8 * scale))


def compare_rdms(a: np.ndarray, b: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of every RDM vector in ``a`` with every one in ``b``.

    Parameters
    ----------
    a, b : ndarray (m,) or (k, m)
        Upper-triangle vectors (see :func:`upper_triangle`). A full RDM (a square, symmetric matrix with a
        zero diagonal) is refused with an :class:`InputError`: as a stack of vectors it would give a matrix
        of meaningless row correlations, so pass ``upper_triangle(rdm)``.
    method : {"pearson", "spearman"}
        Spearman ranks each vector first (ties get their average rank, like scipy and rsatoolbox; see
        :func:`rank_rows`).

    Returns
    -------
    ndarray (k_a, k_b)
    """
    _check_method(method)
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    for name, x in (("a", a), ("b", b)):
        if _looks_like_rdm(x):
            raise InputError(f"parameter {name}", f"is a full {x.shape[0]}×{x.shape[1]} RDM (square, symmetric, zero "
                             "diagonal); compare_rdms takes upper-triangle vectors",
                             f"pass upper_triangle(rdm) as {name}")
    if a.shape[1] != b.shape[1]:
        raise InputError("RDMs", f"have {a.shape[1]} and {b.shape[1]} entries",
                         "compare RDMs of the same stimuli")
    if method == "spearman":
        a, b = rank_rows(a), rank_rows(b)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def stimulus_subsets(n_stimuli: int, size: int = 100, n_subsets: int | None = None,
                     random_state: int | np.random.Generator | None = 0) -> list[np.ndarray]:
    """Disjoint random subsets of ``size`` stimuli (indices 0..n_stimuli-1), sorted within each subset.

    With fewer than ``size`` stimuli there is one subset holding all of them. ``n_subsets`` caps the number
    of subsets (default: as many disjoint subsets as fit).
    """
    RSA["subset_size"].check("subset_size", size)
    if n_stimuli < 3:
        raise InputError("stimuli", f"only {n_stimuli} stimuli are shared", "RSA needs at least 3 stimuli")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    if n_stimuli <= size:
        return [np.arange(n_stimuli)]
    order = rng.permutation(n_stimuli)
    k = n_stimuli // size
    if n_subsets is not None:
        RSA["n_subsets"].check("n_subsets", n_subsets)
        k = min(k, int(n_subsets))
    return [np.sort(order[i * size:(i + 1) * size]) for i in range(k)]


def model_rdm_vectors(features: np.ndarray, subsets: Sequence[np.ndarray], name: str = "model") -> list[np.ndarray]:
    """Upper-triangle correlation-distance RDM of a model's features on each subset."""
    features = np.asarray(features)
    return [upper_triangle(correlation_rdm(features[s], name=f"model {name}")) for s in subsets]


def subset_scores(brain: np.ndarray, models: Mapping[str, np.ndarray], subsets: Sequence[np.ndarray],
                  method: str = "pearson", brain_name: str = "brain patterns") -> dict[str, np.ndarray]:
    """Model–brain RDM correlation on each stimulus subset.

    Parameters
    ----------
    brain : ndarray (n_stimuli, n_voxels)
    models : {name: ndarray (n_stimuli, d)}
        Rows in the same stimulus order as ``brain``.
    subsets : list of index arrays, from :func:`stimulus_subsets`

    Returns
    -------
    {name: ndarray (n_subsets,)}
    """
    _check_method(method)
    out = {name: np.empty(len(subsets)) for name in models}
    for k, s in enumerate(subsets):
        b = upper_triangle(correlation_rdm(brain[s], name=brain_name))
        for name, feats in models.items():
            m = upper_triangle(correlation_rdm(np.asarray(feats)[s], name=f"model {name}"))
            out[name][k] = compare_rdms(b, m, method)[0, 0]
    return out


def noise_ceiling(rdm_vectors: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Leave-one-subject-out noise ceiling: r of each subject's RDM with the mean RDM of the others.

    Parameters
    ----------
    rdm_vectors : ndarray (n_subjects, m)
        Upper-triangle RDMs of one brain area on the same stimuli.

    Returns
    -------
    ndarray (n_subjects,)
    """
    v = np.asarray(rdm_vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise InputError("noise ceiling", f"needs RDMs of at least 2 subjects, got {v.shape[0] if v.ndim else 0}",
                         "analyse two or more subjects to estimate a noise ceiling")
    total = v.sum(axis=0)
    others = (total[None] - v) / (v.shape[0] - 1)
    return np.array([compare_rdms(v[i], others[i], method)[0, 0] for i in range(v.shape[0])])


@dataclass
class GroupTest:
    """Across-subject one-sample t-tests, FDR-corrected over all tests given together."""

    mean: np.ndarray
    sem: np.ndarray
    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    significant: np.ndarray


def group_ttest(scores: np.ndarray, alpha: float = 0.05, alternative: str = "greater",
                popmean: float = 0.0) -> GroupTest:
    """One-sample t-test across subjects of every column, Benjamini–Hochberg FDR over all columns.

    Parameters
    ----------
    scores : ndarray (n_subjects, n_tests)
        e.g. RSA r of every (model, ROI) pair, one row per subject; NaN entries are left out per column.
    alpha : float
        FDR level for ``significant``.
    alternative : {"greater", "two-sided", "less"}
    """
    RSA["alpha"].check("alpha", alpha)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    n_tests = s.shape[1]
    mean = np.nanmean(s, axis=0) if s.size else np.full(n_tests, np.nan)
    t = np.full(n_tests, np.nan)
    p = np.full(n_tests, np.nan)
    sem = np.full(n_tests, np.nan)
    for j in range(n_tests):
        col = s[:, j][np.isfinite(s[:, j])]
        if col.size >= 2:
            sem[j] = stats.sem(col)
            res = stats.ttest_1samp(col, popmean, alternative=alternative)
            t[j], p[j] = res.statistic, res.pvalue
    q = np.full(n_tests, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return GroupTest(mean=mean, sem=sem, t=t, p=p, q=q, significant=np.nan_to_num(q, nan=1.0) < alpha)


# -- study level ----------------------------------------------------------------------------------------

def shared_stimulus_rows(study: Study, subjects: Sequence[str] | None = None, use_test: bool = False) -> np.ndarray:
    """Rows (in ``study.stimuli``) of stimuli that every subject saw; with ``use_test`` only the shared test set."""
    names = list(subjects or study.subject_names)
    seen = None
    for name in names:
        rows = set(study.trial_rows(study.subject(name)).tolist())
        seen = rows if seen is None else seen & rows
    rows = np.array(sorted(seen or ()), dtype=np.int64)
    if use_test and study.stimuli.test is not None:
        test_rows = rows[study.stimuli.test[rows]]
        if len(test_rows) >= 3:
            rows = test_rows
    if len(rows) < 3:
        raise InputError(f"study {study.name}", f"subjects {', '.join(names)} share only {len(rows)} stimuli",
                         "choose subjects that saw the same images (e.g. a shared test set)")
    return rows


def stimulus_patterns(study: Study, subject: Subject, rows: np.ndarray, zscore: bool = True) -> np.ndarray:
    """Mean response pattern (n_rows, n_voxels) of each stimulus row over its repeats.

    With ``zscore`` every voxel is z-scored within each session first (the usual single-trial
    normalisation, :func:`~..decoding.prepare.zscore_by_session`), so that session offsets do not enter
    the patterns.
    """
    rows = np.asarray(rows, dtype=np.int64)
    trial_rows = study.trial_rows(subject)
    keep = np.isin(trial_rows, rows)
    resp = subject.responses[keep]
    if zscore:
        resp = zscore_by_session(subject.responses, subject.sessions)[keep]
    shown, means = mean_by_stimulus(resp, trial_rows[keep])
    missing = ~np.isin(rows, shown)
    if np.any(missing):
        raise InputError(f"subject {subject.name}", f"never saw stimulus {study.stimuli.ids[rows[missing][0]]!r}",
                         "restrict the analysis to stimuli every subject saw")
    return means[np.searchsorted(shown, rows)]


def roi_regions(subject: Subject, extra: Mapping[str, np.ndarray] | None = None,
                min_voxels: int = 10) -> dict[str, np.ndarray]:
    """Every labelled region of every ROI volume of ``subject`` as a voxel-column selector.

    Names read ``ATLAS/REGION``; ``extra`` adds boolean volumes by name (e.g. planted regions). Regions with
    fewer than ``min_voxels`` voxels inside the subject's mask are skipped.
    """
    out: dict[str, np.ndarray] = {}
    for atlas_name, atlas in subject.rois.items():
        for label, region in sorted(atlas.names.items()):
            cols = subject.from_volume(atlas.labels == label)
            if cols.sum() >= min_voxels:
                out[f"{atlas_name}/{region}"] = np.flatnonzero(cols)
    for name, volume in (extra or {}).items():
        cols = subject.from_volume(np.asarray(volume).astype(bool))
        if cols.sum() >= min_voxels:
            out[name] = np.flatnonzero(cols)
    return out


def study_models(study: Study, models: Mapping[str, np.ndarray | Embedding]) -> dict[str, np.ndarray]:
    """The models of :func:`roi_rsa` as ``{name: features (n_stimuli_in_study, d)}``, checked.

    A value may be an array, an :class:`~napari_brain_concepts.core.study.Embedding` (its ``values``) or a
    pandas table; each needs one row per stimulus of the study, in stimuli order.
    """
    if not isinstance(models, Mapping):
        raise InputError("parameter models", f"is a {type(models).__name__}, not a mapping of model name to "
                         "features", "pass a dict, e.g. {'captions': study.embedding('captions')}")
    n = len(study.stimuli.ids)
    out = {}
    for name, feats in models.items():
        if isinstance(feats, Embedding) or isinstance(feats, (pd.DataFrame, pd.Series)):
            feats = feats.values
        arr = np.asarray(feats)
        where = f"model {name!r}"
        if arr.ndim != 2:
            raise InputError(where, f"has shape {arr.shape}, expected (n_stimuli, d)",
                             "give one feature row per stimulus of the study (e.g. study.embedding(name))")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(where, f"has dtype {arr.dtype}", "give numeric features")
        if arr.shape[0] != n:
            raise InputError(where, f"has {arr.shape[0]} rows for {n} stimuli",
                             "give one row per stimulus of the study, in stimuli order (all stimuli, not only "
                             "the shared ones: roi_rsa picks the rows itself)")
        out[str(name)] = arr
    return out


def _region_rdm_vectors(patterns: np.ndarray, cols: np.ndarray, subsets: Sequence[np.ndarray], where: str
                        ) -> list[np.ndarray]:
    """Upper-triangle RDM of the region's voxel columns ``cols`` on each stimulus subset."""
    return [upper_triangle(correlation_rdm(patterns[s][:, cols], name=where)) for s in subsets]


def draw_subsets(rows: np.ndarray, subjects: Sequence[str], subject_rows: Mapping[str, np.ndarray] | None,
                 subset_size: int = 100, n_subsets: int | None = None,
                 random_state: int | np.random.Generator | None = 0
                 ) -> tuple[list[np.ndarray], dict[str, tuple[np.ndarray, list[np.ndarray]]]]:
    """The stimulus subsets of :func:`roi_rsa` (the searchlight uses the same): disjoint subsets of ``rows``
    (indices into ``rows``), then, with ``subject_rows``, ``{subject: (its rows, subsets of them)}`` drawn
    in ``subjects`` order from the same generator."""
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    subsets = stimulus_subsets(len(rows), subset_size, n_subsets, rng)
    own: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    for sname in subjects if subject_rows is not None else ():
        if sname not in subject_rows:
            raise InputError("parameter subject_rows", f"has no rows of subject {sname}",
                             "give the stimulus rows of every subject analysed")
        own_rows = np.asarray(subject_rows[sname], dtype=np.int64)
        own[sname] = (own_rows, stimulus_subsets(len(own_rows), subset_size, n_subsets, rng))
    return subsets, own


def roi_rsa(study: Study, models: Mapping[str, np.ndarray | Embedding], *, subjects: Sequence[str] | None = None,
            rows: np.ndarray | None = None, subset_size: int = 100, n_subsets: int | None = None,
            method: str = "pearson", extra_regions: Mapping[str, Mapping[str, np.ndarray]] | None = None,
            min_voxels: int = 10, random_state: int | np.random.Generator | None = 0,
            subject_rows: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """RSA of every model against every ROI of every subject, with the noise ceiling.

    Parameters
    ----------
    study : Study
    models : {name: ndarray (n_stimuli_in_study, d) or Embedding}
        Features of every stimulus of the study, e.g. ``study.embedding(name)`` or its ``values`` (checked by
        :func:`study_models`: a model of the wrong shape or a value that is not a mapping is an
        :class:`InputError`).
    rows : index array, optional
        Stimulus rows to use (default :func:`shared_stimulus_rows`). The same disjoint subsets of these
        rows are used for every model, subject and ROI.
    extra_regions : {subject: {region name: bool volume}}, optional
        More regions per subject (e.g. the synthetic study's planted regions).
    subject_rows : {subject: index array}, optional
        Score each subject on disjoint subsets of its own stimulus rows instead (Doerig et al.'s main
        analysis uses each NSD participant's own ~10,000 images: ~100 subsets where the shared images give
        5–9). The subsets are drawn per subject, after the shared ones, from ``random_state``; the noise
        ceiling stays on the subsets of ``rows``, as the leave-one-subject-out ceiling needs the same stimuli
        in every subject.

    Returns
    -------
    DataFrame
        One row per (subject, roi, model) with ``r`` (mean over subsets), ``r_sd`` (over subsets),
        ``noise_ceiling`` (the subject's leave-one-out ceiling for that ROI on the same subsets; NaN for
        a ROI only one subject has) and ``n_voxels``, ``n_subsets``.
    """
    _check_method(method)
    models = study_models(study, models)
    names = list(subjects or study.subject_names)
    if rows is None:
        rows = shared_stimulus_rows(study, names)
    rows = np.asarray(rows, dtype=np.int64)
    subsets, own = draw_subsets(rows, names, subject_rows, subset_size, n_subsets, random_state)
    model_vecs = {m: model_rdm_vectors(np.asarray(f)[rows], subsets, m) for m, f in models.items()}
    records = []
    roi_vecs: dict[str, dict[str, list[np.ndarray]]] = {}
    for sname in names:
        subj = study.subject(sname)
        patterns = stimulus_patterns(study, subj, rows)
        regions = roi_regions(subj, (extra_regions or {}).get(sname), min_voxels)
        if sname in own:
            own_rows, own_subsets = own[sname]
            own_patterns = stimulus_patterns(study, subj, own_rows)
            own_models = {m: model_rdm_vectors(np.asarray(f)[own_rows], own_subsets, m) for m, f in models.items()}
        for roi, cols in regions.items():
            where = f"subject {sname} ROI {roi}"
            vecs = _region_rdm_vectors(patterns, cols, subsets, where)
            roi_vecs.setdefault(roi, {})[sname] = vecs
            scored, scored_models, n_sub = vecs, model_vecs, len(subsets)
            if sname in own:
                scored = _region_rdm_vectors(own_patterns, cols, own_subsets, where)
                scored_models, n_sub = own_models, len(own_subsets)
            for m, mv in scored_models.items():
                per = np.array([compare_rdms(b, v, method)[0, 0] for b, v in zip(scored, mv)])
                records.append({"subject": sname, "roi": roi, "model": m, "r": per.mean(),
                                "r_sd": per.std(), "n_voxels": len(cols), "n_subsets": n_sub})
    ceilings: dict[tuple[str, str], float] = {}
    for roi, by_subject in roi_vecs.items():
        subs = list(by_subject)
        if len(subs) < 2:
            continue
        per_subset = np.array([noise_ceiling(np.stack([by_subject[s][k] for s in subs]), method)
                               for k in range(len(subsets))])
        for i, s in enumerate(subs):
            ceilings[(s, roi)] = float(per_subset[:, i].mean())
    table = pd.DataFrame.from_records(records, columns=["subject", "roi", "model", "r", "r_sd", "n_voxels",
                                                        "n_subsets"])
    table["noise_ceiling"] = [ceilings.get((s, r), np.nan) for s, r in zip(table["subject"], table["roi"])]
    return table


def summarize(table: pd.DataFrame, alpha: float = 0.05, min_ceiling: float = 0.1) -> pd.DataFrame:
    """Group table: one row per (roi, model) with mean r, noise-ceiling-normalised r, t, p and FDR q.

    The t-tests (r > 0 across subjects) of all (roi, model) pairs are FDR-corrected together. ``r_norm``
    is the mean over subjects of each subject's r divided by that subject's noise ceiling for the ROI (as
    Doerig et al. normalise; a ratio of the group means would weigh the subjects differently), and
    ``r_norm_sem`` its standard error. A subject whose ceiling is under ``min_ceiling`` is left out of
    them: there the ROI's RDM does not replicate across subjects, and dividing by a ceiling near zero gives
    any value (r = 0.05 over a ceiling of 0.01 reads as five times the ceiling); they are NaN without such
    a subject. ``noise_ceiling`` (the mean over subjects) is still reported.
    """
    columns = ["roi", "model", "n_subjects", "r", "r_sem", "noise_ceiling", "r_norm", "r_norm_sem",
               "t", "p", "q", "significant"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    wide = table.pivot_table(index="subject", columns=["roi", "model"], values="r")
    test = group_ttest(wide.to_numpy(), alpha=alpha)
    ceiling = table.groupby("roi")["noise_ceiling"].mean()
    out = pd.DataFrame({"roi": [c[0] for c in wide.columns], "model": [c[1] for c in wide.columns],
                        "n_subjects": wide.notna().sum(axis=0).to_numpy(), "r": test.mean, "r_sem": test.sem})
    out["noise_ceiling"] = out["roi"].map(ceiling).to_numpy()
    nc = table["noise_ceiling"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(nc >= max(min_ceiling, np.finfo(float).tiny), table["r"].to_numpy(np.float64) / nc,
                         np.nan)
    per_subject = (table.assign(r_nc=ratio).set_index(["subject", "roi", "model"])["r_nc"]
                   .groupby(level=[0, 1, 2]).mean().unstack(["roi", "model"])
                   .reindex(index=wide.index, columns=wide.columns).to_numpy())
    n = np.isfinite(per_subject).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no subject with a usable ceiling
        out["r_norm"] = np.where(n > 0, np.nanmean(per_subject, axis=0), np.nan)
        sd = np.nanstd(per_subject, axis=0, ddof=1)
    out["r_norm_sem"] = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    out["t"], out["p"], out["q"], out["significant"] = test.t, test.p, test.q, test.significant
    return out[columns]


def paired_model_tests(table: pd.DataFrame, reference: str, alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-tests across subjects: ``reference`` model vs every other model, per ROI, FDR over all."""
    wide = table.pivot_table(index="subject", columns=["roi", "model"], values="r")
    rows, diffs = [], []
    for roi in sorted({c[0] for c in wide.columns}):
        if (roi, reference) not in wide.columns:
            continue
        for model in sorted({c[1] for c in wide.columns if c[0] == roi} - {reference}):
            rows.append((roi, model))
            diffs.append((wide[(roi, reference)] - wide[(roi, model)]).to_numpy())
    if not rows:
        return pd.DataFrame(columns=["roi", "reference", "model", "difference", "t", "p", "q", "significant"])
    test = group_ttest(np.stack(diffs, axis=1), alpha=alpha, alternative="two-sided")
    return pd.DataFrame({"roi": [r[0] for r in rows], "reference": reference, "model": [r[1] for r in rows],
                         "difference": test.mean, "t": test.t, "p": test.p, "q": test.q,
                         "significant": test.significant})
