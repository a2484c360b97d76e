"""Ridge regression with one regularisation strength per target, chosen by cross-validation.

Every alpha of the grid is scored for every target from a single factorisation, so a grid of alphas
costs little more than one fit:

- **kernel form** (``n_samples < n_features``, the usual fMRI decoding case): the centred kernel
  ``K = Xc Xcᵀ`` of all training samples is factorised once as ``U S Uᵀ`` (``torch.linalg.eigh``). With
  ``I − H(α) = α U (S + α)⁻¹ Uᵀ`` (the residual-maker of ridge with an intercept), the held-out residuals
  of a fold ``V`` are the exact leave-group-out formula ``r_V = [(I − H)_VV]⁻¹ [(I − H) y]_V`` — the same
  numbers a refit without the fold gives, but from one factorisation for all folds. The constant direction
  is removed exactly (Householder deflation) rather than by picking the eigenvector closest to it.
- **primal form** (``n_samples ≥ n_features``, e.g. encoding models embedding → voxels): the Gram matrix
  of each fold's training rows is the full Gram matrix minus the fold's rows, decomposed once per fold.

Leave-one-out (``loo=True``) uses the diagonal of ``I − H`` from the same factorisation. Targets are
processed in batches of ``target_batch_size`` so memory stays bounded however many targets there are.
Why ``eigh`` and not the cheaper tridiagonal reduction (LAPACK ``sytrd`` + ``ptsv``, tried: ~12% faster
fits): scipy's ``?sytrd`` holds Python's GIL for the whole call, so a fit in a napari worker froze the
viewer's event loop for 110 ms (35 ms with ``eigh``, ``benchmarks/gui_latency.py``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, RegressorMixin

from ..context import resolve_device
from ..errors import InputError, InputTypeError, not_fitted
from ..progress import Progress, run_to_end

DEFAULT_ALPHAS = tuple(float(a) for a in 10.0 ** np.arange(0, 8))
#: how the ridge solves: ``auto`` (kernel form when samples < features), ``kernel`` or ``primal``
SOLVERS = ("auto", "kernel", "primal")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _as_matrix(value: Any, name: str, stage: str = "fitting") -> np.ndarray:
    """``value`` as a finite 2D numeric array (a 1D ``Y`` becomes one column); ``stage`` ("fitting",
    "predicting", "scoring") is what the NaN message tells the user to clean the values before."""
    if issparse(value) or isinstance(value, torch.Tensor) and value.layout != torch.strided:
        raise InputError(f"parameter {name}", f"is a sparse {type(value).__name__}; sparse input is not supported",
                         f"pass {name} as a dense array (e.g. {name}.toarray() or {name}.to_dense())")
    if value is None:  # the phrases of scikit-learn's validation, which its estimator checks look for
        raise InputError(f"parameter {name}", "requires y to be passed, but the target y is None" if name == "Y"
                         else "Expected array-like (array or non-string sequence), got None",
                         f"pass {name} as a 2D array (n_samples, n_columns)")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim == 1 and name == "Y":
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"parameter {name}", f"has {arr.ndim} dimensions, expected 2 (n_samples, n_columns)",
                         f"Reshape your data: pass {name} as a 2D array" + (
                             f" ({name}.reshape(-1, 1) if it has a single column, {name}.reshape(1, -1) if it is "
                             "a single sample)" if arr.ndim == 1 else ""))
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"parameter {name}", f"has dtype {arr.dtype}: Complex data not supported",
                         f"pass a real {name} (its real part {name}.real, or its magnitude np.abs({name}))")
    if arr.dtype == object:  # numbers held as objects (a pandas frame of mixed columns) are read as numbers
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"parameter {name}", f"has dtype object with values that are not numbers "
                                 f"({err})", f"pass {name} as a float array") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputTypeError(f"parameter {name}", f"has dtype {arr.dtype}", f"pass {name} as a float array")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"parameter {name}", f"contains NaN or Inf (first at row {bad[0]}, column {bad[1]})",
                         f"remove or fill those values before {stage}")
    return arr


def n_dims(value: Any) -> int:
    """Dimensions of an array-like (numpy, torch, pandas, nested lists) as :func:`_as_matrix` reads it."""
    if isinstance(value, torch.Tensor):
        return value.dim()
    return np.asarray(value).ndim


def check_xy(X: Any, Y: Any, *, roles: tuple[str, str] = ("responses", "embedding"), stage: str = "fitting"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of design (n, p) and target (n, t) matrices: 2D, finite, the same rows.

    ``roles`` names what X and Y hold, for the messages (a decoder maps responses to an embedding, an
    encoding model an embedding to responses); ``stage`` is "fitting" or "scoring" (see :func:`_as_matrix`).
    """
    X = _as_matrix(X, "X", stage)
    Y = _as_matrix(Y, "Y", stage)
    if X.shape[0] != Y.shape[0]:
        raise InputError("parameters X and Y", f"have {X.shape[0]} and {Y.shape[0]} rows",
                         f"give one row of Y ({roles[1]}) per row of X ({roles[0]}), in the same order")
    # (worded as scikit-learn's validation words it, so that its estimator checks recognise the errors)
    if X.shape[1] < 1:
        raise InputError("parameter X", f"has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.",
                         f"give X ({roles[0]}) at least one column")
    if Y.shape[1] < 1:
        raise InputError("parameter Y", f"has 0 columns (shape={Y.shape}) while a minimum of 1 is required",
                         f"give Y ({roles[1]}) at least one column")
    if X.shape[0] < 2:
        raise InputError("parameters X and Y", f"have n_samples={X.shape[0]}, and at least 2 samples are needed",
                         "give at least 2 samples (rows)")
    return X, Y


def check_features(X: Any, n_features: int, estimator: str = "RidgeDecoder",
                   same: str = "responses of the same voxels") -> np.ndarray:
    """``X`` for predicting (any number of rows, even one) with the ``n_features`` columns of the fit;
    ``estimator``: the class name, for the message."""
    X = _as_matrix(X, "X", "predicting")
    if X.shape[1] != n_features:
        raise InputError("data to predict from", f"X has {X.shape[1]} features, but {estimator} is expecting {n_features} "
                         "features as input", f"give {same} as in fit")
    return X


def check_targets(Y: np.ndarray, n_targets: int, what: str = "the decoder",
                  fix: str = "score with the embedding the decoder was fitted on") -> None:
    """Refuse targets ``Y`` (n, t) for scoring whose t is not the ``n_targets`` of the fit."""
    if Y.shape[1] != n_targets:
        raise InputError("parameter Y", f"has {Y.shape[1]} columns, {what} was fitted on {n_targets}-d targets", fix)


def make_folds(n_samples: int, cv: Any, groups: Any = None, random_state: int | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds as (train, validation) index arrays.

    ``cv`` is a number of folds (a whole number: ``KFold``, shuffled when ``random_state`` is given, or
    ``GroupKFold`` when ``groups`` is given so that repeats of one stimulus never straddle train and
    validation), a scikit-learn splitter, or an explicit list of (train, validation) pairs. Anything else (a
    text such as ``"3"``, a float such as ``3.0``) is refused with an :class:`InputError`.
    """
    from sklearn.model_selection import GroupKFold, KFold

    def bad_cv() -> InputError:
        shown = repr(cv) if len(repr(cv)) <= 40 else f"a {type(cv).__name__}"
        return InputError("parameter cv", f"{shown} is not a number of folds, a splitter or a list of "
                          "(train, test) index pairs", "give a whole number of folds, e.g. cv=5")

    if isinstance(cv, (str, bytes, bool)) or (isinstance(cv, numbers.Real) and not isinstance(cv, numbers.Integral)):
        raise bad_cv()
    if isinstance(cv, (int, np.integer)):
        cv = int(cv)
        if cv < 2:
            raise InputError("parameter cv", f"{cv} folds", "use cv >= 2 (or loo=True for leave-one-out)")
        n_units = n_samples if groups is None else len(np.unique(np.asarray(groups)))
        if n_units < cv:
            what = "samples" if groups is None else "distinct groups (stimuli)"
            raise InputError("parameter cv", f"{cv} folds for only {n_units} {what}",
                             f"use cv <= {n_units} or give more samples")
        if groups is not None:
            splits = GroupKFold(n_splits=cv).split(np.zeros(n_samples), groups=np.asarray(groups))
        elif random_state is None:
            splits = KFold(n_splits=cv).split(np.zeros(n_samples))
        else:
            splits = KFold(n_splits=cv, shuffle=True, random_state=random_state).split(np.zeros(n_samples))
    elif hasattr(cv, "split"):
        splits = cv.split(np.zeros(n_samples), groups=groups)
    else:
        splits = cv
    try:
        folds = [(np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64)) for tr, va in splits]
    except (TypeError, ValueError) as err:
        if splits is not cv:  # a splitter's own error says what is wrong with its settings
            raise
        raise bad_cv() from err
    if not folds:
        raise InputError("parameter cv", "gives no folds", "pass a number of folds or (train, test) pairs")
    for tr, va in folds:
        if len(tr) < 2 or len(va) < 1 or np.intersect1d(tr, va).size:
            raise InputError("parameter cv", "a fold has fewer than 2 training or no validation samples, "
                             "or overlapping train and validation rows", "check the folds")
    return folds


def _gram_rows(A: torch.Tensor) -> torch.Tensor:
    """``A Aᵀ`` computing only the upper block triangle (about half the flops of a plain product)."""
    n = A.shape[0]
    K = torch.empty(n, n, dtype=A.dtype, device=A.device)
    bs = max(256, math.ceil(n / 8))
    for i in range(0, n, bs):
        blk = A[i:i + bs] @ A[i:].T
        K[i:i + bs, i:] = blk
        K[i:, i:i + bs] = blk.T
    return K


def _householder_to_constant(n: int, dtype, device) -> torch.Tensor:
    """Unit vector w with (I − 2wwᵀ) e₁ = 1/√n: its columns 2..n span the complement of the constant."""
    w = torch.full((n,), -1.0 / math.sqrt(n), dtype=torch.float64)
    w[0] += 1.0
    w /= torch.linalg.vector_norm(w)
    return w.to(dtype=dtype, device=device)


def _deflate_constant(K: torch.Tensor, centre: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel restricted to the complement of the constant vector (when ``centre``), and the reflector.

    ``K ← (I − 2wwᵀ) K (I − 2wwᵀ)`` in place (the caller's K is not used afterwards); its trailing
    (n−1)×(n−1) block is the centred kernel in the basis given by columns 2..n of the reflection.
    """
    if not centre:
        return K, None
    n = K.shape[0]
    w = _householder_to_constant(n, K.dtype, K.device)
    Kw = K @ w
    wKw = float(w @ Kw)
    K.addr_(w, Kw, alpha=-2.0)
    K.addr_(Kw, w, alpha=-2.0)
    K.addr_(w, w, alpha=4.0 * wKw)
    return K[1:, 1:], w


def _undeflate(V: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Basis vectors of the deflated block (rows 2..n of the reflection) back in sample space."""
    if w is None:
        return V
    n = V.shape[0] + 1
    U = torch.zeros(n, V.shape[1], dtype=V.dtype, device=V.device)
    U[1:] = V
    U.addr_(w, w[1:] @ V, alpha=-2.0)
    return U


class _KernelFactor:
    """``Kc = U diag(s) Uᵀ`` on the complement of the constant: ``U`` (n, m) orthonormal, ``s`` ≥ 0.

    Everything the cross-validation needs is a resolvent ``(diag(s) + α)⁻¹`` applied to a few vectors, so one
    eigendecomposition serves every alpha.
    """

    def __init__(self, U: torch.Tensor, diag: torch.Tensor):
        self.U = U
        self.diag = diag
        self._U_sq = None

    @classmethod
    def from_kernel(cls, K: torch.Tensor, centre: bool) -> _KernelFactor:
        """Factorise a kernel matrix (overwritten)."""
        B, w = _deflate_constant(K, centre)
        s, V = torch.linalg.eigh(B)  # reads the lower triangle only; releases the GIL
        return cls(_undeflate(V, w), s.clamp_min(0))

    def solve(self, alpha: float, R: torch.Tensor) -> torch.Tensor:
        """``(diag(s) + α)⁻¹ R`` for R of shape (m, k)."""
        return R / (self.diag + alpha)[:, None]

    def inv_diag(self, alpha: float) -> torch.Tensor:
        """``diag(U (diag(s) + α)⁻¹ Uᵀ)`` (n,)."""
        if self._U_sq is None:
            self._U_sq = self.U * self.U
        return self._U_sq @ (1.0 / (self.diag + alpha))


def _r2(resid_ss: torch.Tensor, total_ss: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(total_ss.dtype).tiny
    return 1.0 - resid_ss / total_ss.clamp_min(tiny)


class RidgeDecoder(RegressorMixin, BaseEstimator):
    """Multi-target ridge regression with the regularisation chosen per target by cross-validation.

    Parameters
    ----------
    alphas : sequence of float
        Regularisation strengths tried for every target (all scored from one decomposition).
    cv : int, scikit-learn splitter or list of (train, test) index pairs
        Folds for choosing alpha (default 5-fold; ``GroupKFold`` when ``fit`` receives ``groups``). A number
        of folds must be a whole number (``3``, not ``"3"`` or ``3.0``).
    solver : {"auto", "kernel", "primal"}
        ``"kernel"`` decomposes the n×n sample kernel (fast when n_samples < n_features), ``"primal"``
        the p×p feature Gram matrix; ``"auto"`` picks the smaller.
    loo : bool
        Choose alpha by efficient leave-one-out instead of K-fold (ignores ``cv``).
    fit_intercept : bool
        Fit an unpenalised intercept per target (centring X and Y).
    dtype : {"float32", "float64"}
        Working precision; float32 is about twice as fast and is the default for fMRI-sized problems.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    random_state : int or None
        Shuffles the K folds when given; ``None`` keeps contiguous folds (deterministic).
    target_batch_size : int
        Targets processed together; bounds memory for thousands of targets (encoding models).
    scoring : {"r2", "mse"}
        Cross-validation score per target (R² averaged over folds, or minus the mean squared error).

    A 1D target ``y`` (n_samples,) is fitted as one column, and :meth:`predict` then returns 1D predictions
    (n_samples,), as scikit-learn's ``Ridge`` does; ``coef_`` keeps its 2D shape (1, n_features).

    Attributes
    ----------
    coef_ : ndarray (n_targets, n_features)
        Weights in feature (voxel) space at each target's chosen alpha.
    intercept_ : ndarray (n_targets,)
    best_alphas_ : ndarray (n_targets,)
    cv_scores_ : ndarray (n_alphas, n_targets)
        Mean cross-validated score of every alpha for every target.
    solver_ : str
        The solver actually used.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: Any = 5, solver: str = "auto",
                 loo: bool = False, fit_intercept: bool = True, dtype: str = "float32", device: str = "auto",
                 random_state: int | None = None, target_batch_size: int = 1024, scoring: str = "r2"):
        self.alphas = alphas
        self.cv = cv
        self.solver = solver
        self.loo = loo
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.target_batch_size = target_batch_size
        self.scoring = scoring

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one ridge per target column; a 1D y works too
        return tags

    # -- parameters ------------------------------------------------------------------------------
    def _check_params(self) -> np.ndarray:
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
            raise InputError("parameter alphas", f"{self.alphas!r} is not a list of positive numbers",
                             "give positive regularisation strengths, e.g. np.logspace(0, 7, 8)")
        if self.solver not in SOLVERS:
            raise InputError("parameter solver", f"{self.solver!r} is unknown", "use 'auto', 'kernel' or 'primal'")
        if self.dtype not in _DTYPES:
            raise InputError("parameter dtype", f"{self.dtype!r} is unknown", "use 'float32' or 'float64'")
        if self.scoring not in ("r2", "mse"):
            raise InputError("parameter scoring", f"{self.scoring!r} is unknown", "use 'r2' or 'mse'")
        if int(self.target_batch_size) < 1:
            raise InputError("parameter target_batch_size", f"{self.target_batch_size!r}", "use a positive integer")
        return alphas

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any, groups: Any = None) -> RidgeDecoder:
        """Fit on responses ``X`` (n_samples, n_features) → targets ``Y`` (n_samples, n_targets).

        ``groups`` (optional, one label per sample, e.g. the stimulus of each trial) keeps all samples of
        a group in one fold.
        """
        return run_to_end(self.fit_iter(X, Y, groups=groups))

    def fit_iter(self, X: Any, Y: Any, groups: Any = None) -> Generator[Progress, None, RidgeDecoder]:
        """:meth:`fit` as a generator yielding :class:`Progress`; closing it stops the fit."""
        alphas = self._check_params()
        target_1d = n_dims(Y) == 1
        X, Y = check_xy(X, Y)
        n, p = X.shape
        t = Y.shape[1]
        if groups is not None and len(np.asarray(groups)) != n:
            raise InputError("parameter groups", f"{len(np.asarray(groups))} labels for {n} samples",
                             "give one group label per sample")
        device = resolve_device(self.device)
        dtype = _DTYPES[self.dtype]
        folds = None if self.loo else make_folds(n, self.cv, groups, self.random_state)
        solver = self.solver if self.solver != "auto" else ("kernel" if n < p else "primal")

        Xt = torch.as_tensor(X, device=device).to(dtype)
        Yt = torch.as_tensor(Y, device=device).to(dtype)
        if self.fit_intercept:
            x_mean = Xt.mean(0, dtype=torch.float64)
            y_mean = Yt.mean(0, dtype=torch.float64)
            Xt = Xt - x_mean.to(dtype)
            Yt = Yt - y_mean.to(dtype)
        else:
            x_mean = torch.zeros(p, dtype=torch.float64, device=device)
            y_mean = torch.zeros(t, dtype=torch.float64, device=device)
        alphas_t = torch.as_tensor(alphas, dtype=dtype, device=device)
        bs = int(self.target_batch_size)
        batches = [slice(i, min(t, i + bs)) for i in range(0, t, bs)]

        step = "ridge"
        scores = torch.zeros(len(alphas), t, dtype=torch.float64, device=device)
        if solver == "kernel":
            yield Progress(step, 0, 4, f"kernel {n}×{n}")
            K = _gram_rows(Xt)
            yield Progress(step, 1, 4, "factorisation")
            fac = _KernelFactor.from_kernel(K, self.fit_intercept)
            del K
            yield Progress(step, 2, 4, f"scoring {len(alphas)} alphas")
            yield from self._kernel_scores(fac, Yt, alphas, folds, batches, scores, n)
            yield Progress(step, 3, 4, "final fit")
            best = scores.argmax(0)
            coef = torch.empty(t, p, dtype=dtype, device=device)
            for sl in batches:
                UtY = fac.U.T @ Yt[:, sl]
                for a in torch.unique(best[sl]).tolist():
                    idx = torch.nonzero(best[sl] == a).ravel()
                    dual = fac.U @ fac.solve(float(alphas[a]), UtY[:, idx])
                    coef[sl][idx] = dual.T @ Xt
        else:
            total = (len(folds) if folds else 1) + 2
            yield Progress(step, 0, total, f"Gram {p}×{p}")
            G = Xt.T @ Xt
            if self.loo:
                s, W = torch.linalg.eigh(G)
                s = s.clamp_min(0)
                yield Progress(step, 1, total, "leave-one-out scores")
                self._primal_loo_scores(Xt, Yt, s, W, alphas_t, batches, scores, n)
            else:
                for k, (tr, va) in enumerate(folds):
                    yield Progress(step, 1 + k, total, f"fold {k + 1}/{len(folds)}")
                    self._primal_fold_scores(Xt, Yt, G, tr, va, alphas_t, batches, scores)
                scores /= len(folds)
            yield Progress(step, total - 1, total, "final fit")
            s, W = torch.linalg.eigh(G)
            s = s.clamp_min(0)
            best = scores.argmax(0)
            coef = torch.empty(t, p, dtype=dtype, device=device)
            for sl in batches:
                WtXtY = W.T @ (Xt.T @ Yt[:, sl])
                for a in torch.unique(best[sl]).tolist():
                    idx = torch.nonzero(best[sl] == a).ravel()
                    coef[sl][idx] = (W @ (WtXtY[:, idx] / (s + alphas_t[a])[:, None])).T

        intercept = y_mean - coef.to(torch.float64) @ x_mean
        self.solver_ = solver
        self.cv_scores_ = scores.cpu().numpy()
        self.best_alphas_ = alphas[best.cpu().numpy()]
        self.alphas_ = alphas
        self.coef_ = coef.cpu().numpy()
        self.intercept_ = intercept.to(dtype).cpu().numpy()
        self.n_features_in_ = p
        self.n_targets_ = t
        self._target_1d = target_1d
        yield Progress(step, 4, 4, "done")
        return self

    def _kernel_scores(self, fac, Yt, alphas, folds, batches, scores, n):
        """CV scores of every alpha (rows of ``scores``) from one factorisation of the full kernel.

        With ``R(α) = U (B + α)⁻¹ Uᵀ`` (so that ``I − H(α) = α R(α)``), the leave-one-out residual is
        ``[R y]_i / R_ii`` and the held-out residuals of fold V are ``(R_VV)⁻¹ [R y]_V`` (α cancels).
        """
        U = fac.U
        cache: dict[tuple[int, int], torch.Tensor] = {}
        inv_diag: dict[int, torch.Tensor] = {}
        for sl in batches:
            Yb = Yt[:, sl]
            UtY = U.T @ Yb
            if self.loo:
                ones_ss = ((Yb.to(torch.float64)) ** 2).sum(0)
            for a, alpha in enumerate(alphas):
                resid = U @ fac.solve(float(alpha), UtY)  # (I − H) y / α
                if self.loo:
                    if a not in inv_diag:  # n numbers per alpha, kept for the next target batch
                        inv_diag[a] = fac.inv_diag(float(alpha)).to(torch.float64)
                    r = resid.to(torch.float64) / inv_diag[a][:, None]
                    sse = (r ** 2).sum(0)
                    scores[a, sl] = _r2(sse, ones_ss) if self.scoring == "r2" else -sse / n
                    continue
                for k, (_tr, va) in enumerate(folds):
                    chol = cache.get((a, k))
                    if chol is None:
                        Uv = U[va]
                        M = Uv @ fac.solve(float(alpha), Uv.T)  # (I − H)_VV / α
                        chol = torch.linalg.cholesky((M + M.T).to(torch.float64) / 2)
                        if len(batches) > 1:  # reused by the next target batch
                            cache[(a, k)] = chol
                    r = torch.cholesky_solve(resid[va].to(torch.float64), chol)
                    scores[a, sl] += self._fold_score(r, Yb[va])
                yield Progress("ridge", 2, 4, f"alpha {a + 1}/{len(alphas)}")
        if not self.loo:
            scores /= len(folds)

    def _fold_score(self, resid: torch.Tensor, y_val: torch.Tensor) -> torch.Tensor:
        sse = (resid.to(torch.float64) ** 2).sum(0)
        if self.scoring == "mse":
            return -sse / resid.shape[0]
        yv = y_val.to(torch.float64)
        sst = ((yv - yv.mean(0)) ** 2).sum(0)
        return _r2(sse, sst)

    def _primal_fold_scores(self, Xt, Yt, G, tr, va, alphas_t, batches, scores):
        """Add the scores of one fold: exact refit on the training rows (downdated Gram matrix)."""
        dev = Xt.device
        tr_t = torch.as_tensor(tr, device=dev)
        va_t = torch.as_tensor(va, device=dev)
        Xv = Xt[va_t]
        Xtr = Xt[tr_t]
        Gtr = G - Xv.T @ Xv
        if self.fit_intercept:
            m = Xtr.mean(0)
            Gtr = Gtr - len(tr) * torch.outer(m, m)
        else:
            m = torch.zeros(Xt.shape[1], dtype=Xt.dtype, device=dev)
        s, W = torch.linalg.eigh((Gtr + Gtr.T) / 2)
        s = s.clamp_min(0)
        A = (Xv - m) @ W
        for sl in batches:
            Ytr = Yt[tr_t, sl]
            my = Ytr.mean(0) if self.fit_intercept else torch.zeros_like(Ytr[0])
            B = W.T @ ((Xtr - m).T @ (Ytr - my))
            Yv = Yt[va_t, sl]
            for a, alpha in enumerate(alphas_t):
                pred = A @ (B / (s + alpha)[:, None]) + my
                scores[a, sl] += self._fold_score(Yv - pred, Yv)

    def _primal_loo_scores(self, Xt, Yt, s, W, alphas_t, batches, scores, n):
        A = Xt @ W
        A_sq = A * A
        for sl in batches:
            Yb = Yt[:, sl]
            B = W.T @ (Xt.T @ Yb)
            sst = (Yb.to(torch.float64) ** 2).sum(0)
            for a, alpha in enumerate(alphas_t):
                w = 1.0 / (s + alpha)
                resid = (Yb - A @ (B * w[:, None])).to(torch.float64)
                h = (A_sq @ w).to(torch.float64) + (1.0 / n if self.fit_intercept else 0.0)
                r = resid / (1.0 - h)[:, None]
                sse = (r ** 2).sum(0)
                scores[a, sl] = _r2(sse, sst) if self.scoring == "r2" else -sse / n

    def set_weights(self, coef: Any, intercept: Any, best_alphas: Any = None, alphas: Any = None,
                    cv_scores: Any = None) -> RidgeDecoder:
        """This decoder fitted with the weights of an earlier fit (``coef`` (n_targets, n_features),
        ``intercept`` (n_targets,), and where kept the chosen alphas, the alpha grid and its CV scores
        (n_alphas, n_targets)), as saved in ``arrays/decoder_SUBJ.npz``: it predicts as the earlier fit did,
        without fitting again."""
        coef = np.asarray(coef)
        intercept = np.asarray(intercept, dtype=coef.dtype if coef.dtype.kind == "f" else np.float64)
        if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
            raise InputError("RidgeDecoder.set_weights", f"coef of shape {coef.shape} and intercept of shape "
                             f"{intercept.shape} are no decoder's weights",
                             "give coef (n_targets, n_features) and intercept (n_targets,)")
        self.coef_, self.intercept_ = coef, intercept
        self.n_targets_, self.n_features_in_ = coef.shape
        self.alphas_ = np.asarray(self.alphas if alphas is None else alphas, dtype=np.float64)
        self.best_alphas_ = None if best_alphas is None else np.asarray(best_alphas)
        if cv_scores is not None:
            self.cv_scores_ = np.asarray(cv_scores)
        self._target_1d = False
        return self

    # -- using the fit ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise not_fitted(self)

    def _predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples, n_targets), 2D whatever the target was."""
        self._check_fitted()
        X = check_features(X, self.n_features_in_, type(self).__name__)
        dtype = self.coef_.dtype
        pred = np.asarray(X, dtype=dtype) @ self.coef_.T + self.intercept_
        # computed in the fit's dtype (float32 by default); returned at X's precision when that is higher, as
        # scikit-learn's regressors keep their input's float dtype
        out = np.promote_types(X.dtype, dtype) if np.issubdtype(X.dtype, np.floating) else dtype
        return pred.astype(out, copy=False)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets (n_samples, n_targets) for responses ``X``; (n_samples,) after a fit on a 1D y."""
        pred = self._predict(X)
        return pred[:, 0] if getattr(self, "_target_1d", False) else pred

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of ``predict(X)`` against ``y``, averaged uniformly over targets (as scikit-learn's
        ``Ridge.score`` and ``RegressorMixin.score``): 1 is perfect, 0 is predicting each target's mean."""
        from sklearn.metrics import r2_score

        self._check_fitted()
        X, Y = check_xy(X, y, stage="scoring")
        check_targets(Y, self.n_targets_)
        return float(r2_score(Y, self._predict(X), sample_weight=sample_weight))

    def torch_forward(self, X: torch.Tensor) -> torch.Tensor:
        """Differentiable prediction ``X coefᵀ + intercept`` on ``X``'s device and dtype."""
        self._check_fitted()
        W = torch.as_tensor(self.coef_, device=X.device, dtype=X.dtype)
        b = torch.as_tensor(self.intercept_, device=X.device, dtype=X.dtype)
        return X @ W.T + b

    def to_torch_module(self) -> torch.nn.Module:
        """A frozen ``torch.nn.Linear`` holding the fitted weights."""
        self._check_fitted()
        lin = torch.nn.Linear(self.n_features_in_, self.n_targets_)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(self.coef_, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(self.intercept_, dtype=torch.float32))
        lin.requires_grad_(False)
        return lin
