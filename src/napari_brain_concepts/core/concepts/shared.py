"""Shared decodable concepts: a DBSCAN that counts participants instead of points (SDC, ICLR 2025).

Every voxel of every participant becomes one point: its column of the participant's linear decoder
(the weights from that voxel to every embedding dimension), L2-normalised. Two voxels are neighbours
when the cosine distance of their columns is at most ``eps``. A voxel is a *core* voxel when at least
``min_participants`` **other** participants each have at least one voxel in its neighbourhood, so a
cluster can only grow where several brains agree: a direction of embedding space that one participant
alone decodes never becomes a shared concept, however many of that participant's voxels carry it.
Clusters are the connected components of core voxels (the breadth-first expansion of DBSCAN); non-core
voxels next to a core voxel join as border voxels. Afterwards each participant's cluster grows by the
voxels of that participant within ``expand_eps`` of one of its members; these expanded memberships may
overlap between clusters, as the masks of the paper do.

With one point per participant and ``min_samples = min_participants + 1`` the rule is exactly
scikit-learn's ``DBSCAN(metric="cosine")``; the tests check that equality.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors

from ..errors import InputError, not_fitted
from ..ranges import SHARED

#: Cosine-distance radii swept by the paper (its default is 0.6).
EPS_SWEEP = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def default_expand_eps(eps: float) -> float:
    """The paper's post-expansion radius: ``min(eps + 0.05, 0.65)``."""
    return float(min(eps + 0.05, 0.65))


def decoder_weights(decoder: Any, where: str) -> np.ndarray:
    """Linear weights (n_targets, n_voxels) of a fitted decoder, or of an array given as such.

    Accepts any estimator with a ``coef_`` attribute (scikit-learn layout: targets × features) or the
    array itself.
    """
    coef = getattr(decoder, "coef_", decoder)
    if coef is None:
        raise InputError(where, "the decoder is not fitted (no coef_)", "fit the decoder before clustering")
    try:
        coef = np.asarray(coef, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(where, f"decoder weights are not numeric ({err})",
                         "give a fitted linear decoder or its (n_targets, n_voxels) weights") from err
    if coef.ndim == 1:
        coef = coef[None, :]
    if coef.ndim != 2:
        raise InputError(where, f"decoder weights have {coef.ndim} dimensions",
                         "give (n_targets, n_voxels) linear weights (the decoder's coef_)")
    if not np.all(np.isfinite(coef)):
        raise InputError(where, "decoder weights contain NaN or Inf", "refit the decoder")
    return coef


def _normalise(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros_like(points)
    out[valid] = points[valid] / np.linalg.norm(points[valid], axis=1, keepdims=True)
    return out


def _centre(points: np.ndarray, groups: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Subtract each participant's mean column (over its clusterable voxels)."""
    centred = np.zeros_like(points)
    for g in np.unique(groups):
        rows = (groups == g) & valid
        if rows.any():
            centred[rows] = points[rows] - points[rows].mean(axis=0)
    return centred


def _whiten(centred: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whiten with the pooled covariance of the centred columns (its null space dropped)."""
    cov = centred[valid].T @ centred[valid] / max(int(valid.sum()), 1)
    values, vectors = np.linalg.eigh(cov)
    keep = values > values.max() * 1e-6 if values.max() > 0 else np.zeros_like(values, dtype=bool)
    if not keep.any():
        raise InputError("decoders", "all voxel columns are equal within each participant, nothing to cluster",
                         "check the decoders, or cluster without whiten")
    whitening = vectors[:, keep] / np.sqrt(values[keep])
    return centred @ whitening, whitening


def _cluster_means(points: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Normalised mean of the points of each cluster."""
    cent = np.zeros((n_clusters, points.shape[1]), dtype=np.float64)
    np.add.at(cent, labels[labels >= 0], points[labels >= 0].astype(np.float64))
    norms = np.linalg.norm(cent, axis=1, keepdims=True)
    return (cent / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class SharedConceptClustering(BaseEstimator):
    """Participant-counting DBSCAN of voxel decoder weights.

    Parameters
    ----------
    eps : float
        Cosine-distance radius of a neighbourhood, in (0, 2]. The paper sweeps 0.45–0.70 and uses 0.6.
    min_participants : int
        How many *other* participants must each have a voxel within ``eps`` of a voxel for it to be a
        core voxel (default 3, as in the paper).
    expand_eps : float or None
        Radius of the post-expansion within each participant; ``None`` means ``min(eps + 0.05, 0.65)``.
        ``0`` switches the expansion off.
    whiten : bool
        Before normalising, centre each participant's voxel columns (removing the direction that all of
        a participant's voxels share, such as a global signal) and whiten them with the covariance of
        the columns pooled over participants. Cosine distances then weigh every direction of embedding
        space alike instead of being decided by the embedding's few high-variance axes (sentence and
        CLIP embeddings are strongly anisotropic), and they no longer change with the scale or rotation
        of the target space or with per-target regularisation of the decoders. Off by default, as in
        the paper.
    centre : bool
        Only centre each participant's voxel columns (no whitening) before normalising. Implied by
        ``whiten``. Off by default, as in the paper.
    n_jobs : int or None
        Parallel jobs of the neighbour search (scikit-learn's meaning).

    Attributes
    ----------
    subjects_ : list of str
        Participant names, in the order of the points.
    groups_ : ndarray of int, shape (n_points,)
        Participant index of every point (voxel).
    points_ : ndarray, shape (n_points, n_features)
        The L2-normalised voxel columns, whitened when ``whiten`` (zero rows for voxels whose decoder
        column is all zero; those are never clustered).
    core_sample_mask_ : ndarray of bool, shape (n_points,)
    core_sample_indices_ : ndarray of int
    labels_ : ndarray of int, shape (n_points,)
        Cluster of every point (-1: noise), numbered in the order DBSCAN meets them.
    n_clusters_ : int
    centroids_ : ndarray, shape (n_clusters, n_features)
        Normalised mean of each cluster's member points (in the clustering space).
    directions_ : ndarray, shape (n_clusters, n_targets)
        The concept's direction in embedding space: normalised mean of the members' decoder columns
        (L2-normalised; with ``whiten``, centred instead — equal to ``centroids_`` without whitening). Stimuli whose embeddings point
        along it are the concept; those pointing against it are its negation.
    whitening_ : ndarray, shape (n_targets, n_features) or None
        The whitening map applied to the centred columns (``None`` without whitening).
    memberships_ : dict of str to ndarray of bool, shape (n_clusters, n_voxels)
        Per participant and cluster, its voxels: core voxels, every border voxel within ``eps`` of one
        of its core voxels (also when ``labels_`` gives that voxel to an earlier cluster), and the
        post-expansion; clusters may overlap.
    subject_labels_ : dict of str to ndarray of int
        ``labels_`` split per participant.
    participant_counts_ : ndarray of int, shape (n_clusters, n_subjects)
        Member voxels per cluster and participant (core and border), before the post-expansion.
    expand_eps_ : float
        The post-expansion radius used.
    """

    def __init__(self, eps: float = 0.6, min_participants: int = 3, expand_eps: float | None = None,
                 whiten: bool = False, centre: bool = False, n_jobs: int | None = None):
        self.eps = eps
        self.min_participants = min_participants
        self.expand_eps = expand_eps
        self.whiten = whiten
        self.centre = centre
        self.n_jobs = n_jobs

    # -- input ---------------------------------------------------------------------------------------
    def _check_params(self) -> float:
        SHARED["eps"].check("eps", self.eps)
        if isinstance(self.min_participants, bool) or not float(self.min_participants).is_integer() \
                or self.min_participants < 1:
            raise InputError("parameter min_participants", f"{self.min_participants!r} is not a positive integer",
                             "give how many other participants must share a voxel's neighbourhood, e.g. 3")
        expand = default_expand_eps(self.eps) if self.expand_eps is None else float(self.expand_eps)
        SHARED["expand_eps"].check("expand_eps", expand)
        return expand

    @staticmethod
    def _collect(weights: Any, groups: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Points (n_points, d) and participant index per point from either input form."""
        if isinstance(weights, Mapping):
            if groups is not None:
                raise InputError("parameter groups", "is given together with per-participant decoders",
                                 "pass either a mapping participant → decoder, or points with groups")
            if len(weights) == 0:
                raise InputError("parameter weights", "no participant given", "give one decoder per participant")
            names = [str(k) for k in weights]
            blocks, dims = [], {}
            for name, dec in weights.items():
                coef = decoder_weights(dec, f"decoder of participant {name}")
                dims[str(name)] = coef.shape[0]
                blocks.append(coef.T)
            if len(set(dims.values())) > 1:
                listing = ", ".join(f"{k}: {v}" for k, v in dims.items())
                raise InputError("decoders", f"have different embedding dimensions ({listing})",
                                 "fit every participant's decoder to the same embedding")
            points = np.concatenate(blocks, axis=0)
            group_index = np.concatenate([np.full(b.shape[0], i, dtype=np.int64) for i, b in enumerate(blocks)])
            return names, points, group_index
        points = np.asarray(weights, dtype=np.float64)
        if points.ndim != 2:
            raise InputError("parameter weights", f"points have {points.ndim} dimensions",
                             "give (n_points, n_features) points with groups, or a mapping of decoders")
        if not np.all(np.isfinite(points)):
            raise InputError("parameter weights", "points contain NaN or Inf", "remove or refit them")
        if groups is None:
            raise InputError("parameter groups", "is missing for an array of points",
                             "give the participant of every point (or a mapping participant → decoder)")
        groups = np.asarray(groups)
        if groups.shape != (points.shape[0],):
            raise InputError("parameter groups", f"has shape {groups.shape} for {points.shape[0]} points",
                             "give one participant label per point")
        names_arr, group_index = np.unique(groups, return_inverse=True)
        return [str(n) for n in names_arr], points, group_index.astype(np.int64)

    # -- core algorithm ------------------------------------------------------------------------------
    def _neighbours(self, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All pairs of clusterable points within ``radius`` (both directions, self pairs included)."""
        valid = np.flatnonzero(self._valid)
        nn = NearestNeighbors(radius=radius, metric="cosine", algorithm="brute", n_jobs=self.n_jobs)
        nn.fit(self.points_[valid])
        dist, ind = nn.radius_neighbors(self.points_[valid], radius=radius, return_distance=True)
        index = np.int32 if self.points_.shape[0] < np.iinfo(np.int32).max else np.int64
        valid = valid.astype(index)
        counts = np.fromiter((len(i) for i in ind), dtype=np.int64, count=len(ind))
        if not counts.sum():
            return np.empty(0, index), np.empty(0, index), np.empty(0)
        rows = np.repeat(valid, counts)
        cols = valid[np.concatenate(ind)]
        dists = np.concatenate(dist)
        return rows, cols, dists

    def _cluster(self, edges, eps: float, expand_eps: float) -> dict[str, Any]:
        rows, cols, dists = edges
        n = self.points_.shape[0]
        groups = self.groups_
        n_groups = len(self.subjects_)
        near = dists <= eps
        r, c = rows[near], cols[near]

        # core: at least min_participants other participants with a neighbour within eps
        cross = groups[r] != groups[c]
        pairs = np.unique(r[cross].astype(np.int64) * n_groups + groups[c[cross]])
        n_other = np.bincount(pairs // n_groups, minlength=n)
        core = (n_other >= self.min_participants) & self._valid

        # clusters = connected components of core points (DBSCAN's breadth-first expansion)
        both = core[r] & core[c]
        graph = sparse.coo_matrix((np.ones(both.sum(), dtype=np.int8), (r[both], c[both])), shape=(n, n)).tocsr()
        _, comp = connected_components(graph, directed=False)
        labels = np.full(n, -1, dtype=np.int64)
        core_idx = np.flatnonzero(core)
        # number clusters by their first core point, as DBSCAN does when it scans points in order
        first_comps = pd.unique(comp[core_idx])
        relabel = np.full(comp.max() + 1 if n else 0, -1, dtype=np.int64)
        relabel[first_comps] = np.arange(len(first_comps))
        labels[core_idx] = relabel[comp[core_idx]]

        # border points: the first cluster (lowest number) whose core point reaches them
        border = ~core[r] & core[c]
        if border.any():
            b_rows, b_labels = r[border], labels[c[border]]
            best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, b_rows, b_labels)
            hit = best < np.iinfo(np.int64).max
            labels[hit] = best[hit]

        n_clusters = len(first_comps)
        # memberships: core points plus every border point of the cluster, even one that DBSCAN's label
        # gives to an earlier cluster, so each cluster keeps the participants that made its cores core
        base = np.zeros((n_clusters, n), dtype=bool)
        base[labels[core_idx], core_idx] = True
        if border.any():
            base[labels[c[border]], r[border]] = True
        member = base.copy()
        # post-expansion inside each participant (memberships may overlap)
        if expand_eps > 0 and n_clusters:
            grow = (dists <= expand_eps) & (groups[rows] == groups[cols])
            adjacency = sparse.csr_matrix((np.ones(grow.sum(), dtype=np.float32), (rows[grow], cols[grow])),
                                          shape=(n, n))
            member |= (sparse.csr_matrix(base, dtype=np.float32) @ adjacency).toarray() > 0
        return {"core": core, "labels": labels, "n_clusters": n_clusters, "member": member, "base": base}

    # -- public API ----------------------------------------------------------------------------------
    def fit(self, weights: Mapping[str, Any] | np.ndarray, groups: Sequence | np.ndarray | None = None
            ) -> SharedConceptClustering:
        """Cluster the voxels of all participants.

        Parameters
        ----------
        weights : mapping of str to decoder or array, or ndarray
            Either participant → fitted linear decoder (anything with ``coef_``) or its weights of
            shape (n_targets, n_voxels) — every participant with the same n_targets — or an array of
            points (n_points, n_features) together with ``groups``.
        groups : array-like, optional
            Participant of every point when ``weights`` is an array.

        Returns
        -------
        self
        """
        expand = self._check_params()
        names, points, group_index = self._collect(weights, groups)
        n_groups = len(names)
        if n_groups - 1 < self.min_participants:
            if n_groups < 2:
                raise InputError("shared concepts", f"need at least 2 participants, and {n_groups} is given",
                                 "add participants (a concept is shared when other participants have it too)")
            raise InputError("parameter min_participants",
                             f"{self.min_participants} other participants must share a voxel's concept, but "
                             f"{n_groups} participants are given ({n_groups - 1} others)",
                             f"lower it to at most {n_groups - 1} (--param shared.min_participants="
                             f"{n_groups - 1}) or add participants")
        self._valid = np.linalg.norm(points, axis=1) > 0
        original = _normalise(points, self._valid)
        self.whitening_ = None
        if self.whiten:
            original, self.whitening_ = _centre(points, group_index, self._valid), None
            points, self.whitening_ = _whiten(original, self._valid)
            self._valid &= np.linalg.norm(points, axis=1) > 0
        elif self.centre:
            points = _centre(points, group_index, self._valid)
            self._valid &= np.linalg.norm(points, axis=1) > 0
            original = _normalise(points, self._valid)
        unit = _normalise(points, self._valid)
        self.subjects_ = names
        self.groups_ = group_index
        self.points_ = unit.astype(np.float32)
        self.expand_eps_ = expand
        edges = self._neighbours(max(float(self.eps), expand))
        out = self._cluster(edges, float(self.eps), expand)
        self.core_sample_mask_ = out["core"]
        self.core_sample_indices_ = np.flatnonzero(out["core"])
        self.labels_ = out["labels"]
        self.n_clusters_ = int(out["n_clusters"])
        member = out["member"]
        self.centroids_ = _cluster_means(self.points_, self.labels_, self.n_clusters_)
        self.directions_ = (_cluster_means(original, self.labels_, self.n_clusters_) if self.whiten
                            else self.centroids_.copy())
        base = out["base"]
        self.participant_counts_ = np.stack(
            [np.bincount(self.groups_[base[k]], minlength=n_groups) for k in range(self.n_clusters_)]
        ).astype(np.int64) if self.n_clusters_ else np.zeros((0, n_groups), dtype=np.int64)
        idx = [np.flatnonzero(self.groups_ == g) for g in range(n_groups)]
        self.memberships_ = {name: member[:, idx[g]] for g, name in enumerate(names)}
        self.subject_labels_ = {name: self.labels_[idx[g]] for g, name in enumerate(names)}
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise not_fitted(self, "call fit(decoders) first")

    @property
    def n_participants_(self) -> np.ndarray:
        """Participants with at least one voxel in each cluster."""
        self._check_fitted()
        return (self.participant_counts_ > 0).sum(axis=1)

    def similarity(self, subject: str) -> np.ndarray:
        """Cosine similarity of every voxel column of ``subject`` with every centroid: (n_clusters, n_voxels).

        This is the voxel weight *projected on the concept*; zero for voxels with an all-zero column.
        """
        self._check_fitted()
        if subject not in self.subjects_:
            raise InputError("parameter subject", f"{subject!r} was not clustered",
                             f"choose one of {', '.join(self.subjects_)}")
        g = self.subjects_.index(subject)
        return self.centroids_ @ self.points_[self.groups_ == g].T

    def summary(self) -> pd.DataFrame:
        """One row per cluster: participants, core/member voxels, voxels per participant."""
        self._check_fitted()
        rows = []
        for k in range(self.n_clusters_):
            counts = self.participant_counts_[k]
            row = {
                "cluster": k,
                "n_participants": int((counts > 0).sum()),
                "participants": ",".join(s for s, c in zip(self.subjects_, counts) if c > 0),
                "n_core": int(self.core_sample_mask_[self.labels_ == k].sum()),
                "n_voxels": int(counts.sum()),
                "n_voxels_expanded": int(sum(m[k].sum() for m in self.memberships_.values())),
            }
            for s, c in zip(self.subjects_, counts):
                row[f"voxels_{s}"] = int(c)
            rows.append(row)
        columns = ["cluster", "n_participants", "participants", "n_core", "n_voxels", "n_voxels_expanded"]
        return pd.DataFrame(rows, columns=columns + [f"voxels_{s}" for s in self.subjects_])

    def eps_sweep(self, eps_values: Iterable[float] = EPS_SWEEP) -> pd.DataFrame:
        """Cluster the fitted points again at several radii and summarise each (the fit is unchanged).

        The post-expansion radius follows each ``eps`` as in :meth:`fit` (``expand_eps`` when given,
        else ``min(eps + 0.05, 0.65)``). One neighbour search at the largest radius serves every row.
        """
        self._check_fitted()
        eps_values = [float(e) for e in eps_values]
        if not eps_values:
            raise InputError("parameter eps_values", "is empty", "give at least one radius, e.g. 0.45 … 0.7")
        for e in eps_values:
            SHARED["eps"].check("eps", e)
        expands = [default_expand_eps(e) if self.expand_eps is None else float(self.expand_eps) for e in eps_values]
        edges = self._neighbours(max(max(eps_values), max(expands)))
        rows = []
        for e, x in zip(eps_values, expands):
            out = self._cluster(edges, e, x)
            labels, k = out["labels"], out["n_clusters"]
            parts = [len(np.unique(self.groups_[out["base"][j]])) for j in range(k)]
            sizes = np.bincount(labels[labels >= 0], minlength=k) if k else np.zeros(0, int)
            rows.append({
                "eps": e, "expand_eps": x, "n_clusters": k,
                "n_core": int(out["core"].sum()),
                "n_clustered": int((labels >= 0).sum()),
                "n_clustered_expanded": int(out["member"].any(axis=0).sum()),
                "median_participants": float(np.median(parts)) if k else 0.0,
                "largest_cluster": int(sizes.max()) if k else 0,
            })
        return pd.DataFrame(rows)
