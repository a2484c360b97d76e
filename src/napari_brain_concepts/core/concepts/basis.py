"""The brain-decodable concept basis (SDC 2023): a contrastive reduction of the embedding space.

A linear map ``W`` (K × d) is trained so that the projections ``f(y) = leaky_relu(y Wᵀ, 0.05)`` of a
stimulus' true embedding ``y`` and of its embedding decoded from the brain ``ŷ`` find each other among
the other stimuli of a batch (symmetric InfoNCE with squared-euclidean logits). Directions the brain
does not carry cannot help that match, so the K rows of ``W`` end up spanning what is decodable. The rows
are normalised to unit length and ordered by hierarchical clustering so that related concepts sit
side by side; a greedy pass then drops components whose removal costs no retrieval accuracy.

Beyond the paper (``skew_weight``, off by default): InfoNCE is as well served by any rotation of the
decodable subspace, so a component can mix several concepts, which then spreads its voxel mask over
several regions. A concept is present in a minority of images, so a direction that reads one concept
has a right-skewed distribution over the stimuli, while a mix of independent concepts is less skewed
(the central-limit argument behind ICA). ``skew_weight`` > 0 subtracts that weight times the mean
skewness of the components' projections of the *decoded* embeddings (centred per batch) from the loss,
which turns the components towards single concepts that the brain carries. (The skewness of the true
embeddings would also reward concepts no brain carries.)
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ..context import resolve_device
from ..errors import InputError, check_ranges, not_fitted
from ..progress import Progress
from ..ranges import BASIS

STEP = "concepts"


def _check_pairs(Y: np.ndarray, Y_hat: np.ndarray, where: str = "validation pairs") -> tuple[np.ndarray, np.ndarray]:
    Y = np.asarray(Y, dtype=np.float32)
    Y_hat = np.asarray(Y_hat, dtype=np.float32)
    if Y.ndim != 2 or Y_hat.ndim != 2:
        raise InputError(where, f"true and decoded embeddings have shapes {Y.shape} and {Y_hat.shape}",
                         "give two 2D arrays (n_pairs, embedding_dim)")
    if Y.shape != Y_hat.shape:
        raise InputError(where, f"true embeddings have shape {Y.shape} but decoded ones {Y_hat.shape}",
                         "pair every decoded embedding with the true embedding of its stimulus")
    if Y.shape[0] == 0:
        raise InputError(where, "are empty (no validation trial)",
                         "keep some trials out of decoder training (validation fraction > 0)")
    if Y.shape[0] < 2:
        raise InputError(where, "hold a single pair; a contrastive basis needs at least 2",
                         "keep more validation trials")
    if not (np.all(np.isfinite(Y)) and np.all(np.isfinite(Y_hat))):
        raise InputError(where, "contain NaN or Inf", "check the decoder's predictions")
    return Y, Y_hat


def leaky_relu(z: np.ndarray, negative_slope: float) -> np.ndarray:
    """``max(z, 0) + negative_slope · min(z, 0)`` (numpy, for the fitted basis)."""
    return np.where(z >= 0, z, negative_slope * z).astype(np.float32, copy=False)


class ConceptBasis(BaseEstimator):
    """Contrastive concept basis of an embedding space, fitted on (true, decoded) embedding pairs.

    Parameters
    ----------
    n_components : int
        K, the number of concept directions (at most the embedding dimension).
    negative_slope : float
        Slope of the leaky ReLU below zero; small so that each component reads one end of its axis.
    temperature : float
        τ of the InfoNCE logits ``-‖f(y_i) − f(ŷ_j)‖² / τ``.
    learning_rate : float
        Adam step size.
    batch_size : int
        Pairs per step (all pairs when fewer).
    n_iter : int
        Optimisation steps.
    prune : bool
        Drop, greedily, components whose removal does not lower top-1 retrieval on the fitting pairs.
    prune_tolerance : float
        Retrieval (fraction) a pruned basis may lose against the unpruned one.
    prune_pairs : int
        At most this many pairs (random) are used to judge pruning, to bound its cost.
    skew_weight : float
        Weight of the skewness reward that turns components towards single concepts (module docstring);
        0 (default) is the paper's basis. 0.5 in the demo; too large a weight (2 on the synthetic study)
        pulls many components onto the few most skewed concepts and loses the others.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state : int or None
        Seed of the initialisation and of the batch draws.

    Attributes
    ----------
    components_ : ndarray (K', d)
        Unit-length concept directions, in clustering order (after pruning K' ≤ K).
    order_ : ndarray (K',)
        Index of each kept row in the raw trained weight matrix.
    linkage_ : ndarray
        SciPy linkage of the kept rows (average linkage, cosine distance) that gave the order.
    weights_ : ndarray (K, d)
        The raw trained weight matrix, before normalisation, pruning and ordering.
    loss_curve_ : ndarray (n_iter,)
        Training loss per step.
    pruned_ : ndarray (K - K',)
        Raw indices of the dropped components.
    """

    def __init__(self, n_components: int = 128, *, negative_slope: float = 0.05, temperature: float = 1.0,
                 learning_rate: float = 2e-4, batch_size: int = 3000, n_iter: int = 1500, prune: bool = True,
                 prune_tolerance: float = 0.0, prune_pairs: int = 500, skew_weight: float = 0.0,
                 device: str = "auto", random_state: int | None = 0):
        self.n_components = n_components
        self.negative_slope = negative_slope
        self.temperature = temperature
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.prune = prune
        self.prune_tolerance = prune_tolerance
        self.prune_pairs = prune_pairs
        self.skew_weight = skew_weight
        self.device = device
        self.random_state = random_state

    # -- validation --------------------------------------------------------------------------------
    def _check_params(self, d: int) -> None:
        if int(self.n_components) != self.n_components or self.n_components < 1:
            raise InputError("parameter n_components", f"{self.n_components!r} is not a positive integer",
                             "give the number of concept directions K ≥ 1")
        if self.n_components > d:
            raise InputError("parameter n_components",
                             f"K = {self.n_components} is larger than the embedding dimension {d}",
                             f"choose K ≤ {d} (a basis cannot have more directions than the space)")
        check_ranges(self, BASIS)

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise not_fitted(self, "call fit(Y, Y_hat) first")

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, Y: np.ndarray, Y_hat: np.ndarray, groups: np.ndarray | None = None) -> ConceptBasis:
        """Fit on pairs of true ``Y`` and decoded ``Y_hat`` embeddings (n_pairs, d).

        ``groups`` (optional, one id per pair, e.g. the stimulus row) marks pairs of the same stimulus
        (several subjects or repeats): they count as positives of each other instead of negatives.
        """
        gen = self.fit_iter(Y, Y_hat, groups)
        while True:
            try:
                next(gen)
            except StopIteration:
                return self

    def fit_iter(self, Y: np.ndarray, Y_hat: np.ndarray,
                 groups: np.ndarray | None = None) -> Generator[Progress, None, ConceptBasis]:
        """Like :meth:`fit`, yielding :class:`Progress`; closing the generator stops the training."""
        import torch
        import torch.nn.functional as F

        Y, Y_hat = _check_pairs(Y, Y_hat)
        n, d = Y.shape
        self._check_params(d)
        if groups is None:
            groups = np.arange(n)
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise InputError("parameter groups", f"has shape {groups.shape} for {n} pairs", "give one id per pair")
        device = resolve_device(self.device)
        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        K = int(self.n_components)
        W = torch.nn.Parameter(torch.randn(K, d, generator=gen, dtype=torch.float32).mul_(1.0 / np.sqrt(d)).to(device))
        opt = torch.optim.Adam([W], lr=self.learning_rate)
        Yt = torch.from_numpy(Y).to(device)
        Yht = torch.from_numpy(Y_hat).to(device)
        _, gid = np.unique(groups, return_inverse=True)
        gt = torch.from_numpy(gid.astype(np.int64)).to(device)
        batch = min(int(self.batch_size), n)
        total = int(self.n_iter) + (1 if self.prune else 0)
        losses = np.zeros(int(self.n_iter), dtype=np.float32)
        report = max(1, int(self.n_iter) // 50)
        for it in range(int(self.n_iter)):
            idx = torch.from_numpy(rng.choice(n, size=batch, replace=False)).to(device)
            fy = F.leaky_relu(Yt[idx] @ W.T, self.negative_slope)
            fh = F.leaky_relu(Yht[idx] @ W.T, self.negative_slope)
            sq = fy.pow(2).sum(1, keepdim=True) + fh.pow(2).sum(1) - 2.0 * fy @ fh.T  # cdist's backward is slow
            logits = -sq.clamp_min(0.0) / self.temperature
            g = gt[idx]
            same = (g[:, None] == g[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            if self.skew_weight:
                a = Yht[idx] @ F.normalize(W, dim=1).T  # decoded: what the brain carries
                a = a - a.mean(0)
                skew = a.pow(3).mean(0) / a.pow(2).mean(0).clamp_min(1e-12).pow(1.5)
                loss = loss - float(self.skew_weight) * skew.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[it] = float(loss.detach())
            if (it + 1) % report == 0 or it + 1 == self.n_iter:
                yield Progress(STEP, it + 1, total, f"concept basis: step {it + 1}/{self.n_iter}, "
                                                    f"loss {losses[it]:.3f}")
        weights = W.detach().cpu().numpy().astype(np.float32)
        self.weights_ = weights
        self.loss_curve_ = losses
        unit = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
        keep = np.arange(K)
        if self.prune and K > 1:
            keep = self._greedy_prune(unit, Y, Y_hat, groups, rng)
            yield Progress(STEP, total, total, f"concept basis: kept {len(keep)} of {K} components")
        self.pruned_ = np.setdiff1d(np.arange(K), keep)
        order, linkage = _cluster_order(unit[keep])
        self.order_ = keep[order]
        self.linkage_ = linkage
        self.components_ = unit[self.order_]
        self.n_features_in_ = d
        return self

    def _greedy_prune(self, unit: np.ndarray, Y: np.ndarray, Y_hat: np.ndarray, groups: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """Backward elimination: repeatedly drop the component whose loss hurts top-1 retrieval least.

        Retrieval here is decoded → true among the unique stimuli of a random subset of the pairs, by
        squared euclidean distance in the reduced space (the geometry the basis was trained in). The
        distance is a sum over components, so each candidate removal costs one subtraction.
        """
        import torch

        _, first = np.unique(groups, return_index=True)
        if len(first) > self.prune_pairs:
            first = np.sort(rng.choice(first, size=self.prune_pairs, replace=False))
        cand_groups = groups[first]
        pick = np.flatnonzero(np.isin(groups, cand_groups))
        if len(pick) > self.prune_pairs:
            pick = np.sort(rng.choice(pick, size=self.prune_pairs, replace=False))
        lookup = {g: i for i, g in enumerate(cand_groups)}
        target = torch.from_numpy(np.fromiter((lookup[g] for g in groups[pick]), dtype=np.int64))
        fy = torch.from_numpy(leaky_relu(Y[first] @ unit.T, self.negative_slope))   # (m, K)
        fh = torch.from_numpy(leaky_relu(Y_hat[pick] @ unit.T, self.negative_slope))  # (q, K)
        per = (fh.T[:, :, None] - fy.T[:, None, :]).pow(2)  # (K, q, m)
        total = per.sum(0)

        def top1(dist: torch.Tensor) -> torch.Tensor:
            # (..., q, m) → (...): the true candidate must be strictly nearest (ties count against)
            idx = target.view(*([1] * (dist.ndim - 2)), -1, 1).expand(*dist.shape[:-1], 1)
            true = dist.gather(-1, idx)
            return ((dist < true).sum(-1) == 0).float().mean(-1)

        reference = float(top1(total))
        floor = reference * (1.0 - self.prune_tolerance)
        alive = list(range(unit.shape[0]))
        while len(alive) > 1:
            accs = top1(total[None] - per[alive])
            j = int(torch.argmax(accs))
            if float(accs[j]) + 1e-9 < floor:
                break
            total = total - per[alive[j]]
            alive.pop(j)
        return np.asarray(sorted(alive), dtype=np.int64)

    # -- use ---------------------------------------------------------------------------------------
    def transform(self, Y: np.ndarray) -> np.ndarray:
        """Concept activations ``leaky_relu(Y Cᵀ)`` (n, K') of embeddings ``Y`` (n, d)."""
        self._check_fitted()
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim != 2 or Y.shape[1] != self.n_features_in_:
            raise InputError("ConceptBasis.transform", f"got shape {Y.shape}, expected (n, {self.n_features_in_})",
                             "give embeddings from the space the basis was fitted in")
        return leaky_relu(Y @ self.components_.T, self.negative_slope)

    @property
    def n_concepts_(self) -> int:
        self._check_fitted()
        return int(self.components_.shape[0])

    def retrieval_table(self, Y_candidates: np.ndarray, Y_hat: np.ndarray, target: np.ndarray,
                        Y_pca: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> pd.DataFrame:
        """Retrieval of the true stimulus from decoded embeddings in three spaces.

        Parameters
        ----------
        Y_candidates : (m, d)
            True embeddings of the candidate stimuli (e.g. the unique test stimuli).
        Y_hat : (n, d)
            Decoded embeddings (e.g. single test trials, several subjects pooled).
        target : (n,)
            Row in ``Y_candidates`` of each decoded embedding's stimulus.
        Y_pca : (p, d)
            Embeddings the PCA baseline is fitted on (use the basis' training stimuli).

        Returns
        -------
        DataFrame with one row per space — ``full`` (the original space), ``full_centred`` (the original
        space less the mean of ``Y_pca``, as PCA centres: a cosine in an embedding space whose vectors share
        a large mean compares mostly that mean), ``basis`` (the concept activations), ``pca`` (the first K'
        principal components) — and columns ``top1``, ``top5``…, their chance levels and ``n_dims``.
        Retrieval ranks candidates by cosine similarity in every space
        (:func:`~napari_brain_concepts.core.decoding.metrics.topk_retrieval`).
        """
        from sklearn.decomposition import PCA

        from ..decoding.metrics import topk_retrieval

        self._check_fitted()
        Y_candidates = np.asarray(Y_candidates, dtype=np.float32)
        Y_hat = np.asarray(Y_hat, dtype=np.float32)
        target = np.asarray(target, dtype=np.int64)
        if len(Y_hat) == 0:
            raise InputError("retrieval", "no decoded embedding to evaluate", "give test trials")
        k = self.n_concepts_
        Y_pca = np.asarray(Y_pca, dtype=np.float32)
        pca = PCA(n_components=min(k, *Y_pca.shape), random_state=0).fit(Y_pca)
        spaces = {
            "full": (Y_hat, Y_candidates),
            "full_centred": (Y_hat - pca.mean_, Y_candidates - pca.mean_),
            "basis": (self.transform(Y_hat), self.transform(Y_candidates)),
            "pca": (pca.transform(Y_hat), pca.transform(Y_candidates)),
        }
        rows = []
        for name, (pred, cand) in spaces.items():
            scores = topk_retrieval(pred, cand, target, ks=ks)
            row = {"space": name, "n_dims": int(pred.shape[1])}
            row.update({s.metric: s.value for s in scores})
            row.update({f"{s.metric}_chance": s.chance for s in scores})
            rows.append(row)
        return pd.DataFrame(rows)


def _cluster_order(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leaf order of an average-linkage clustering of unit rows by cosine distance."""
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import pdist

    if unit.shape[0] < 2:
        return np.arange(unit.shape[0]), np.zeros((0, 4))
    dist = np.clip(pdist(unit.astype(np.float64), metric="cosine"), 0.0, None)
    link = linkage(dist, method="average")
    link = optimal_leaf_ordering(link, dist)
    return leaves_list(link).astype(np.int64), link


__all__ = ["ConceptBasis", "leaky_relu"]
