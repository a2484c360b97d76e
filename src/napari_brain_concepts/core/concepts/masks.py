"""Voxel masks: for each concept, the smallest set of voxels from which it stays decodable (SDC 2023).

For a concept direction ``w`` (unit vector of the embedding space) and a frozen decoder ``dec``, a mask
``m ∈ [0, 1]^V`` multiplies the decoder's input. It is trained to keep the concept's read-out
``relu(dec(X ⊙ m) w)`` correlated with the concept's presence in the stimuli ``relu(Y w)`` while using as
few voxels as possible::

    loss(m) = −pearson(relu(Y w), relu(dec(X ⊙ m) w)) + λ · mean(m)

with Adam, ``m`` clamped to [0, 1] after each step, and the mask with the lowest loss on held-out trials
after a burn-in kept; voxels with ``m ≥ 0.5`` form the hard mask.

All K concepts of a subject are one batched problem: the masks are a K × V tensor. With a linear decoder
``dec(x) = x Bᵀ + b`` the read-out of concept k is ``X (m_k ⊙ u_k) + b·w_k`` with ``u_k = Bᵀ w_k``, so one
matrix product ``X (M ⊙ U)ᵀ`` serves every concept at once and is exactly what K separate problems compute.
The loss is a sum over concepts and Adam acts element-wise, so the batched run takes the same steps as a
loop over concepts (``batched=False``, kept as the peer of the benchmark).

What a masked-out voxel feeds the decoder (``fill``): with ``fill="zero"`` the input is literally
``X ⊙ m`` (a z-scored voxel at 0 is at its mean). With a linear decoder that objective is degenerate:
the read-out is linear in ``m`` and the Pearson correlation ignores its scale, so shrinking every entry of
``m`` together lowers the penalty at no cost and all masks sink towards 0 (none reaches the 0.5 threshold).
The default ``fill="shuffle"`` feeds ``m ⊙ X + (1 − m) ⊙ X_π``, where ``X_π`` is the same voxels' responses
to other trials (a fixed random permutation of the trials): removing a voxel then destroys its
information without changing the input's distribution, so a voxel the concept needs is held at 1 and a
voxel it does not need is pushed to 0 by the penalty. The read-out stays one matrix product,
``(X − X_π)(m ⊙ u) + X_π u + b·w``.

Decoders whose output is L2-normalised (the contrastive decoder) are read before the normalisation: the
per-trial norm would couple every concept's voxels and cost K · d times more, and a Pearson correlation is
blind to the overall scale anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..context import resolve_device
from ..errors import InputError, check_ranges
from ..progress import Progress
from ..ranges import MASKS

STEP = "masks"
#: what fills a voxel a mask leaves out: another stimulus' response (``shuffle``) or ``zero``
FILLS = ("shuffle", "zero")


def linear_readout(decoder: Any, n_voxels: int | None = None, where: str = "decoder") -> tuple[np.ndarray, np.ndarray]:
    """The linear map ``(B (d, V), b (d,))`` of a decoder, checked against ``n_voxels``.

    Accepts a weight array (d, V), a pair ``(B, b)``, or an estimator with ``coef_`` (d, V) and optional
    ``intercept_`` (d,) (the scikit-learn convention used by this package's decoders).
    """
    if isinstance(decoder, tuple) and len(decoder) == 2:
        B, b = decoder
    elif isinstance(decoder, np.ndarray):
        B, b = decoder, None
    elif hasattr(decoder, "coef_"):
        B, b = decoder.coef_, getattr(decoder, "intercept_", None)
    else:
        raise InputError(where, f"{type(decoder).__name__} exposes no linear weights (coef_)",
                         "fit a linear decoder (RidgeDecoder or ContrastiveDecoder with hidden=None)")
    B = np.asarray(B, dtype=np.float32)
    if B.ndim != 2:
        raise InputError(where, f"weights have shape {B.shape}", "give weights of shape (embedding_dim, n_voxels)")
    b = np.zeros(B.shape[0], dtype=np.float32) if b is None else np.broadcast_to(
        np.asarray(b, dtype=np.float32), (B.shape[0],)).copy()
    if n_voxels is not None and B.shape[1] != n_voxels:
        raise InputError(where, f"was fitted on {B.shape[1]} voxels but the subject's responses have {n_voxels}",
                         "use the decoder fitted on this subject's voxels (same mask and voxel selection)")
    return B, b


class VoxelMaskOptimizer(BaseEstimator):
    """Batched voxel-mask optimisation for K concept directions of one subject.

    Parameters
    ----------
    sparsity : float
        λ, weight of ``mean(m)``: larger gives smaller masks.
    learning_rate : float
        Adam step size.
    n_steps : int
        Optimisation steps.
    burn_in : int
        Masks before this step are never kept (they still hold voxels the penalty has not removed).
    eval_every : int
        Held-out loss is checked every this many steps (after the burn-in and at the last step).
    init : float
        Starting value of every mask entry.
    threshold : float
        Voxels with ``m ≥ threshold`` form the hard mask.
    min_decodability : float
        A concept whose held-out Pearson r with the full (unmasked) decoder is below this is reported
        as not decodable in this subject: its hard mask is left empty. 0.3: in the demo (default synthetic
        study, ``tables/mask_truth_directions.tsv``) the planted concepts' own directions (regression of the
        embedding on the generative features) reach r = 0.77–0.93 in every subject, while the concepts
        without a region there (vehicle; animal outside its one subject) reach 0.00–0.28.
    validation_fraction : float
        Share of the trials kept out of the optimisation to select the best mask (when no explicit
        held-out trials are given).
    fill : {"shuffle", "zero"}
        What a masked-out voxel feeds the decoder: its responses to other trials (default) or 0 (the
        literal product, degenerate for linear decoders; see the module notes).
    batched : bool
        One K × V problem (default) or a loop of K separate problems (same steps; slower).
    dtype : {"float32", "float64"}
        Precision of the optimisation. float32 (default) is the fast choice; float64 makes the batched and
        the looped runs agree to rounding (in float32 the two take different matrix-product kernels, whose
        rounding differs by ~1e-7 and is carried along by the optimisation; see ``benchmarks/masks.py``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state : int or None
        Seed of the held-out split.

    Attributes
    ----------
    masks_ : ndarray (K, V) float32
        Soft masks with the lowest held-out loss.
    hard_masks_ : ndarray (K, V) bool
        ``masks_ ≥ threshold`` for decodable concepts; empty for the others.
    full_score_ : ndarray (K,)
        Held-out Pearson r of each concept with the unmasked decoder (its decodability).
    mask_score_ : ndarray (K,)
        Held-out Pearson r with the kept soft mask.
    hard_score_ : ndarray (K,)
        Held-out Pearson r when the decoder sees only the hard mask's voxels (the others set to 0, their
        mean after z-scoring).
    hard_readout_ : ndarray (K, n_held_out) float32
        Each concept's read-out ``relu(dec(X ⊙ hard mask) w)`` on the held-out trials (what ``hard_score_``
        correlates with the concept's presence; e.g. to check a synthetic study's masks against the
        generative features).
    decodable_ : ndarray (K,) bool
        ``full_score_ ≥ min_decodability``.
    best_step_ : ndarray (K,) int
        Step at which each kept mask was reached.
    loss_curve_ : ndarray (n_steps, K)
        Training loss per step and concept.
    """

    def __init__(self, *, sparsity: float = 5.0, learning_rate: float = 2e-3, n_steps: int = 1000,
                 burn_in: int = 350, eval_every: int = 10, init: float = 0.5, threshold: float = 0.5,
                 min_decodability: float = 0.3, validation_fraction: float = 0.2, fill: str = "shuffle",
                 batched: bool = True, dtype: str = "float32",
                 device: str = "auto", random_state: int | None = 0):
        self.sparsity = sparsity
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.burn_in = burn_in
        self.eval_every = eval_every
        self.init = init
        self.threshold = threshold
        self.min_decodability = min_decodability
        self.validation_fraction = validation_fraction
        self.fill = fill
        self.batched = batched
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    def _check_params(self) -> None:
        check_ranges(self, MASKS)
        if self.fill not in FILLS:
            raise InputError("parameter fill", f"{self.fill!r} is not a fill", "use 'shuffle' or 'zero'")
        if self.dtype not in ("float32", "float64"):
            raise InputError("parameter dtype", f"{self.dtype!r} is not a supported precision",
                             "use 'float32' or 'float64'")

    # -- data --------------------------------------------------------------------------------------
    @staticmethod
    def _check_data(X, Y, where: str) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if X.ndim != 2 or Y.ndim != 2:
            raise InputError(where, f"responses and embeddings have shapes {X.shape} and {Y.shape}",
                             "give responses (n_trials, n_voxels) and embeddings (n_trials, d)")
        if X.shape[0] != Y.shape[0]:
            raise InputError(where, f"{X.shape[0]} response rows but {Y.shape[0]} embedding rows",
                             "give the true embedding of every trial's stimulus")
        if X.shape[0] == 0:
            raise InputError(where, "are empty (no validation trial)",
                             "keep some trials out of decoder training (validation fraction > 0)")
        if X.shape[0] < 3:
            raise InputError(where, f"hold {X.shape[0]} trials; a correlation needs at least 3",
                             "keep more validation trials")
        if not (_all_finite(X) and _all_finite(Y)):
            raise InputError(where, "contain NaN or Inf", "clean the responses before masking")
        return X, Y

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, Y: np.ndarray, directions: np.ndarray, decoder: Any,
            X_val: np.ndarray | None = None, Y_val: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> VoxelMaskOptimizer:
        """Optimise the masks of all ``directions`` (K, d) for ``decoder`` on trials ``X`` (n, V), ``Y`` (n, d).

        ``decoder`` is a linear decoder (see :func:`linear_readout`), or an estimator with a differentiable
        ``torch_forward(X)``, or a callable mapping a torch tensor (n, V) to decoded embeddings (n, d)
        (e.g. an MLP decoder; memory then grows with K · n · V).
        ``X_val``/``Y_val`` select the best mask; when absent a ``validation_fraction`` of the trials
        (grouped by ``groups``, e.g. stimulus ids, so repeats stay together) is held out.
        """
        gen = self.fit_iter(X, Y, directions, decoder, X_val, Y_val, groups)
        while True:
            try:
                next(gen)
            except StopIteration:
                return self

    def fit_iter(self, X, Y, directions, decoder, X_val=None, Y_val=None,
                 groups=None) -> Generator[Progress, None, VoxelMaskOptimizer]:
        """Like :meth:`fit`, yielding :class:`Progress`; closing the generator stops the optimisation."""
        import torch

        self._check_params()
        X, Y = self._check_data(X, Y, "mask trials")
        W = np.asarray(directions, dtype=np.float32)
        if W.ndim == 1:
            W = W[None]
        if W.ndim != 2 or W.shape[1] != Y.shape[1] or W.shape[0] == 0:
            raise InputError("concept directions", f"have shape {W.shape}, embeddings have dimension {Y.shape[1]}",
                             "give (K, d) directions in the decoder's embedding space")
        if X_val is None:
            X, Y, X_val, Y_val = self._split(X, Y, groups)
        else:
            X_val, Y_val = self._check_data(X_val, Y_val, "held-out mask trials")
            if X_val.shape[1] != X.shape[1] or Y_val.shape[1] != Y.shape[1]:
                raise InputError("held-out mask trials", f"have shapes {X_val.shape}/{Y_val.shape}",
                                 f"give (n, {X.shape[1]}) responses and (n, {Y.shape[1]}) embeddings")
        n_vox = X.shape[1]
        device = resolve_device(self.device)
        dt = getattr(torch, self.dtype)
        Wt = torch.from_numpy(W).to(device, dt)
        n_in = getattr(decoder, "n_features_in_", None)
        if n_in is not None and n_in != n_vox:
            raise InputError("decoder", f"was fitted on {n_in} voxels but the subject's responses have {n_vox}",
                             "use the decoder fitted on this subject's voxels (same mask and voxel selection)")
        linear = hasattr(decoder, "coef_") or isinstance(decoder, (np.ndarray, tuple)) or not (
            hasattr(decoder, "torch_forward") or callable(decoder))
        if not linear and self.dtype != "float32":
            raise InputError("parameter dtype", f"{self.dtype} needs a linear decoder (coef_)",
                             "use dtype='float32' with a non-linear decoder")
        if not hasattr(decoder, "coef_") and hasattr(decoder, "torch_forward"):
            readout = _CallableReadout(decoder.torch_forward, Wt)
        elif callable(decoder) and not hasattr(decoder, "coef_") and not isinstance(decoder, (np.ndarray, tuple)):
            readout = _CallableReadout(decoder, Wt)
        else:
            B, b = linear_readout(decoder, n_vox)
            if B.shape[0] != W.shape[1]:
                raise InputError("decoder", f"decodes {B.shape[0]}-d embeddings, directions are {W.shape[1]}-d",
                                 "use directions from the decoder's embedding space")
            readout = _LinearReadout(torch.from_numpy(B).to(device, dt), torch.from_numpy(b).to(device, dt), Wt)
        rng = np.random.default_rng(None if self.random_state is None else self.random_state + 1)
        Xt = torch.from_numpy(X).to(device, dt)
        Xv = torch.from_numpy(X_val).to(device, dt)
        Xv_zero = readout.prepare(Xv, None)
        if self.fill == "shuffle":
            Xt = readout.prepare(Xt, torch.from_numpy(rng.permutation(len(X))).to(device))
            Xv = readout.prepare(Xv, torch.from_numpy(rng.permutation(len(X_val))).to(device))
        else:
            Xt, Xv = readout.prepare(Xt, None), Xv_zero
        T = torch.relu(torch.from_numpy(Y).to(device, dt) @ Wt.T).T.contiguous()      # (K, n)
        Tv = torch.relu(torch.from_numpy(Y_val).to(device, dt) @ Wt.T).T.contiguous()  # (K, n_val)
        K = W.shape[0]
        lam = float(self.sparsity)

        with torch.no_grad():
            ones = torch.ones(K, n_vox, dtype=dt, device=device)
            self.full_score_ = _pearson(torch.relu(readout(Xv, ones)), Tv).cpu().numpy()

        groups_k = [np.arange(K)] if self.batched else [np.array([k]) for k in range(K)]
        params = [torch.full((len(g), n_vox), float(self.init), dtype=dt, device=device, requires_grad=True)
                  for g in groups_k]
        opts = [torch.optim.Adam([p], lr=self.learning_rate, fused=True) for p in params]  # one kernel per step
        best = torch.full((K, n_vox), float(self.init), dtype=dt, device=device)
        best_loss = torch.full((K,), float("inf"), dtype=torch.float64, device=device)
        best_step = np.full(K, -1, dtype=np.int64)
        curve = np.zeros((int(self.n_steps), K), dtype=np.float32)
        report = max(1, int(self.n_steps) // 50)
        gidx = [torch.from_numpy(g).to(device) for g in groups_k]
        # the batched problem reads every concept's rows in place (no per-step copy of U and the targets)
        sel = [None] if self.batched else gidx
        targets = [T] if self.batched else [T[gi] for gi in gidx]
        targets_v = [Tv] if self.batched else [Tv[gi] for gi in gidx]
        for step in range(int(self.n_steps)):
            for p, opt, si, t, g in zip(params, opts, sel, targets, groups_k):
                pred = torch.relu(readout(Xt, p, si))
                losses = -_pearson(pred, t) + lam * p.mean(1)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                with torch.no_grad():
                    p.clamp_(0.0, 1.0)
                curve[step, g] = losses.detach().cpu().numpy()
            last = step + 1 == self.n_steps
            if (step >= self.burn_in and (step - self.burn_in) % self.eval_every == 0) or last:
                with torch.no_grad():
                    for p, gi, si, tv in zip(params, gidx, sel, targets_v):
                        vloss = (-_pearson(torch.relu(readout(Xv, p, si)), tv) + lam * p.mean(1)).double()
                        better = vloss < best_loss[gi]
                        if bool(better.any()):
                            rows = gi[better]
                            best[rows] = p[better]
                            best_loss[rows] = vloss[better]
                            best_step[rows.cpu().numpy()] = step + 1
            if (step + 1) % report == 0 or last:
                yield Progress(STEP, step + 1, int(self.n_steps),
                               f"voxel masks: step {step + 1}/{self.n_steps} ({K} concepts)")
        with torch.no_grad():
            hard = best >= self.threshold
            self.mask_score_ = _pearson(torch.relu(readout(Xv, best)), Tv).cpu().numpy()
            hard_read = torch.relu(readout(Xv_zero, hard.to(dt)))
            self.hard_score_ = _pearson(hard_read, Tv).cpu().numpy()
            self.hard_readout_ = hard_read.cpu().numpy()
        self.masks_ = best.cpu().numpy()
        self.decodable_ = self.full_score_ >= self.min_decodability
        self.hard_masks_ = hard.cpu().numpy() & self.decodable_[:, None]
        self.best_step_ = best_step
        self.loss_curve_ = curve
        self.n_features_in_ = n_vox
        return self

    def _split(self, X, Y, groups):
        n = X.shape[0]
        if self.validation_fraction <= 0:
            return X, Y, X, Y
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if groups.shape != (n,):
            raise InputError("parameter groups", f"has shape {groups.shape} for {n} trials", "give one id per trial")
        uniq = np.unique(groups)
        rng = np.random.default_rng(self.random_state)
        n_held = int(round(self.validation_fraction * len(uniq)))
        if n_held < 1 or len(uniq) - n_held < 1:
            raise InputError("mask trials", f"{len(uniq)} stimuli cannot be split into optimisation and selection",
                             "give more validation trials or explicit held-out trials")
        held = np.isin(groups, rng.choice(uniq, size=n_held, replace=False))
        if held.sum() < 3 or (~held).sum() < 3:
            raise InputError("mask trials", f"only {n} trials to split", "give more validation trials")
        return X[~held], Y[~held], X[held], Y[held]


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or Inf in ``a`` (its minimum and maximum are finite: two passes, no temporary array)."""
    return a.size == 0 or bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def _pearson(pred, target, eps: float = 1e-8):
    """Pearson r along the last axis of (K, n) tensors; 0 where either side is constant."""
    pc = pred - pred.mean(-1, keepdim=True)
    tc = target - target.mean(-1, keepdim=True)
    num = (pc * tc).sum(-1)
    den = (pc.pow(2).sum(-1) * tc.pow(2).sum(-1) + eps).sqrt()
    return num / den


class _LinearReadout:
    """Read-outs of concepts ``k`` as one product ``(M ⊙ U) Dᵀ`` with ``U = W B``.

    With fill ``F = X[π]`` (the same voxels' responses to other trials) the decoder sees
    ``m ⊙ X + (1 − m) ⊙ F``, whose read-out is ``Z − Z[:, π] + (U Xᵀ)[:, π] + b·w`` with ``Z = (M ⊙ U) Xᵀ``:
    one product with the trials themselves per step (the shuffled copy and the difference ``X − F`` are
    never formed), the constant part ``(U Xᵀ)[:, π] + b·w`` once. With zero fill it is ``Z + b·w``.
    """

    def __init__(self, B, b, W):
        self.U = (W @ B).contiguous()  # (K, V)
        self.c = W @ b                  # (K,)

    def prepare(self, X, perm):
        """Read-out data of trials ``X`` (n, V) with fill ``X[perm]`` (``perm=None``: zero fill)."""
        if perm is None:
            return X, None, self.c[:, None].expand(-1, X.shape[0])
        return X, perm, ((self.U @ X.T)[:, perm] + self.c[:, None]).contiguous()

    def __call__(self, data, M, rows=None):
        X, perm, offset = data
        U = self.U if rows is None else self.U[rows]
        off = offset if rows is None else offset[rows]
        Z = (M * U) @ X.T
        return (Z if perm is None else Z - Z[:, perm]) + off


class _CallableReadout:
    """Read-outs of a general differentiable decoder: K masked copies of the trials decoded together."""

    def __init__(self, decode: Callable, W):
        self.decode = decode
        self.W = W

    def prepare(self, X, perm):
        return X, (torch_zeros_like(X) if perm is None else X[perm])

    def __call__(self, data, M, rows=None):
        X, F = data
        W = self.W if rows is None else self.W[rows]
        k, n = M.shape[0], X.shape[0]
        inputs = F[None] + (X - F)[None] * M[:, None, :]
        Z = self.decode(inputs.reshape(k * n, -1)).reshape(k, n, -1)
        return (Z * W[:, None, :]).sum(-1)


def torch_zeros_like(X):
    import torch

    return torch.zeros_like(X)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays (1 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)
