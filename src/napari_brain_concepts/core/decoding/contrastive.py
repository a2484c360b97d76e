"""Contrastive brain→embedding decoder (SDC, Efird et al.): trained to *retrieve*, not to regress.

The decoder maps voxels to the embedding space (linear by default, or an MLP voxels→hidden→d with
LeakyReLU and dropout) and L2-normalises its output. It is trained with the symmetric InfoNCE loss whose
logits are ``−(1 − cos(ŷᵢ, yⱼ)) / τ`` (τ = 0.03): each decoded sample must be closer to its own
stimulus' embedding than to the other stimuli of the batch, and vice versa. Gaussian noise (σ = 1 on
z-scored voxels) is added to the input during training; training stops early when the loss on a
validation split stops improving. Several seeds ("reruns") are trained; their weights are averaged for the
linear decoder (one voxel-space weight matrix, ``coef_``), their predictions for the MLP.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, RegressorMixin

from ..context import resolve_device
from ..errors import InputError, check_ranges, not_fitted
from ..progress import Progress, run_to_end
from ..ranges import CONTRASTIVE
from .metrics import r2_unit
from .ridge import check_features, check_targets, check_xy, n_dims

#: the decoder's network: a linear map, or an MLP voxels→hidden→d
ARCHITECTURES = ("linear", "mlp")


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with logits ``−(1 − cos)/τ`` between paired rows of ``pred`` and ``target``."""
    p = F.normalize(pred, dim=1)
    t = F.normalize(target, dim=1)
    logits = -(1.0 - p @ t.T) / temperature
    labels = torch.arange(len(p), device=p.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class _Network(torch.nn.Module):
    """Linear map, or MLP with one hidden layer; initialised from an explicit generator (reproducible)."""

    def __init__(self, n_in: int, n_out: int, hidden: int | None, dropout: float, slope: float,
                 generator: torch.Generator):
        super().__init__()
        sizes = [n_in, n_out] if hidden is None else [n_in, hidden, n_out]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(torch.nn.Parameter((torch.rand(b, a, generator=generator) * 2 - 1) * bound))
            self.biases.append(torch.nn.Parameter((torch.rand(b, generator=generator) * 2 - 1) * bound))
        self.dropout = dropout
        self.slope = slope

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unnormalised output; dropout is applied only when a ``generator`` is given (training)."""
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w.T + b
            if i < n - 1:
                x = F.leaky_relu(x, self.slope)
                if generator is not None and self.dropout > 0:
                    keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.dropout
                    x = x * keep / (1.0 - self.dropout)
        return x


class ContrastiveDecoder(RegressorMixin, BaseEstimator):
    """Brain→embedding decoder trained with symmetric InfoNCE (SDC defaults).

    Parameters
    ----------
    architecture : {"linear", "mlp"}
        Linear map (default; its weights live in voxel space) or voxels→``hidden``→d MLP.
    hidden : int
        Hidden units of the MLP (SDC: 5000).
    dropout : float
        Dropout after the MLP's hidden layer.
    temperature : float
        τ of the InfoNCE logits ``−(1 − cos)/τ`` (SDC: 0.03).
    lr, batch_size, max_iter : Adam learning rate (1e-4), batch size (128), maximum iterations (5000).
    noise_std : float
        Standard deviation of Gaussian noise added to the (z-scored) input during training (1.0).
    val_fraction : float
        Fraction of the training stimuli held out for early stopping when ``fit`` gets no validation set.
    eval_every, patience : int
        Validation loss is computed every ``eval_every`` iterations; training stops after ``patience``
        evaluations without improvement and the best weights are kept. ``patience=None``: no early
        stopping, all ``max_iter`` iterations run and the last weights are kept, as in SDC's code.
    n_reruns : int
        Seeds trained; linear weights (or MLP predictions) are averaged.
    weight_decay : float
        Adam weight decay.
    leaky_slope : float
        Slope of the MLP's LeakyReLU below zero (0.01; unused by the linear decoder).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
    random_state : int, numpy RandomState or None
        Seed of rerun ``r`` is ``random_state + r`` (the validation split uses ``random_state``): on CPU the
        same int gives the same decoder. ``None`` or a ``RandomState`` draw the base seed from numpy's global
        generator or that generator (scikit-learn's convention), so reruns of ``fit`` then differ; pass an
        int for results that repeat.

    ``Y`` must hold embeddings of at least 2 dimensions: the decoder compares directions (it L2-normalises
    every row), so a 1D target or a single column is refused.

    Attributes
    ----------
    coef_ : ndarray (d, n_voxels)
        Rerun-averaged weights in voxel space (linear only).
    intercept_ : ndarray (d,)
    networks_ : list of state dicts, one per rerun.
    history_ : list of dicts (rerun, iteration, train_loss, val_loss).
    n_iter_ : list of int, iterations of the kept weights per rerun.
    """

    def __init__(self, architecture: str = "linear", hidden: int = 5000, dropout: float = 0.5,
                 temperature: float = 0.03, lr: float = 1e-4, batch_size: int = 128, max_iter: int = 5000,
                 noise_std: float = 1.0, val_fraction: float = 0.1, eval_every: int = 50,
                 patience: int | None = 10,
                 n_reruns: int = 3, weight_decay: float = 0.0, leaky_slope: float = 0.01,
                 device: str = "auto", random_state: int = 0):
        self.architecture = architecture
        self.hidden = hidden
        self.dropout = dropout
        self.temperature = temperature
        self.lr = lr
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.noise_std = noise_std
        self.val_fraction = val_fraction
        self.eval_every = eval_every
        self.patience = patience
        self.n_reruns = n_reruns
        self.weight_decay = weight_decay
        self.leaky_slope = leaky_slope
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False  # a 1D target is refused (see the class docstring)
        return tags

    def _check_params(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise InputError("parameter architecture", f"{self.architecture!r} is unknown", "use 'linear' or 'mlp'")
        check_ranges(self, {k: r for k, r in CONTRASTIVE.items() if k != "hidden" or self.architecture == "mlp"})

    def _base_seed(self) -> int:
        """The seed of rerun 0: ``random_state`` itself when an int, else drawn from the given (or numpy's
        global) generator."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if rs < 0:
                raise InputError("parameter random_state", f"{rs!r} is negative", "give a seed >= 0, or None")
            return int(rs)
        high = 2 ** 31 - 1 - int(self.n_reruns)
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(high))
        from sklearn.utils import check_random_state

        try:
            return int(check_random_state(rs).randint(high))
        except ValueError:
            raise InputError("parameter random_state", f"{rs!r} cannot seed the decoder",
                             "give an int, None or a numpy RandomState") from None

    @staticmethod
    def _check_directions(Y: np.ndarray, ndim: int) -> None:
        """Refuse a 1D target or one column (``Y`` as :func:`check_xy` returns it, ``ndim`` as given)."""
        if Y.shape[1] == 1:
            what = "is 1D (one number per sample)" if ndim == 1 else "has a single column"
            raise InputError("parameter Y", f"{what}, but the contrastive decoder compares directions: it "
                             "L2-normalises every row, which turns a single number into ±1",
                             "give embeddings (n_samples, d) with d >= 2, or use RidgeDecoder for one target")

    def fit(self, X: Any, Y: Any, X_val: Any = None, Y_val: Any = None, groups: Any = None
            ) -> ContrastiveDecoder:
        """Train on responses ``X`` (n, n_voxels) and embeddings ``Y`` (n, d); see :meth:`fit_iter`."""
        return run_to_end(self.fit_iter(X, Y, X_val, Y_val, groups))

    def fit_iter(self, X: Any, Y: Any, X_val: Any = None, Y_val: Any = None, groups: Any = None
                 ) -> Generator[Progress, None, ContrastiveDecoder]:
        """Train, yielding :class:`Progress` at every validation; closing the generator stops training.

        Without ``X_val``/``Y_val``, ``val_fraction`` of the samples (of the ``groups``, e.g. stimuli,
        when given) is held out for early stopping.
        """
        self._check_params()
        y_ndim = n_dims(Y)
        X, Y = check_xy(X, Y)
        self._check_directions(Y, y_ndim)
        if (X_val is None) != (Y_val is None):
            raise InputError("parameters X_val and Y_val", "only one of them is given", "give both or neither")
        seed0 = self._base_seed()
        if X_val is None:
            rng = np.random.default_rng(seed0)
            units = np.arange(len(X)) if groups is None else np.asarray(groups)
            if len(units) != len(X):
                raise InputError("parameter groups", f"{len(units)} labels for {len(X)} samples",
                                 "give one group label per sample")
            uniq = np.unique(units)
            n_val = max(1, int(round(self.val_fraction * len(uniq))))
            if len(uniq) - n_val < 2:
                raise InputError("parameters X and Y", f"only {len(uniq)} samples/stimuli",
                                 "give more training samples for the contrastive decoder")
            val_units = rng.choice(uniq, size=n_val, replace=False)
            is_val = np.isin(units, val_units)
            X, Y, X_val, Y_val = X[~is_val], Y[~is_val], X[is_val], Y[is_val]
        else:
            X_val, Y_val = check_xy(X_val, Y_val)
            if X_val.shape[1] != X.shape[1] or Y_val.shape[1] != Y.shape[1]:
                raise InputError("parameters X_val and Y_val", f"shapes {X_val.shape}, {Y_val.shape} do not match "
                                 f"training shapes {X.shape}, {Y.shape}", "give validation data of the same voxels "
                                 "and embedding")
        if len(X) < 2:
            raise InputError("parameter X", "fewer than 2 training samples", "give more training samples")
        device = resolve_device(self.device)
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        Yt = torch.as_tensor(np.asarray(Y, dtype=np.float32), device=device)
        Xv = torch.as_tensor(np.asarray(X_val, dtype=np.float32), device=device)
        Yv = torch.as_tensor(np.asarray(Y_val, dtype=np.float32), device=device)
        n, n_in = Xt.shape
        n_out = Yt.shape[1]
        batch = min(int(self.batch_size), n)
        hidden = None if self.architecture == "linear" else int(self.hidden)
        total = int(self.n_reruns) * int(self.max_iter)

        states, history, n_iter = [], [], []
        for r in range(int(self.n_reruns)):
            seed = seed0 + r
            gen = torch.Generator(device=device).manual_seed(seed)
            cpu_gen = torch.Generator().manual_seed(seed)
            net = _Network(n_in, n_out, hidden, float(self.dropout), float(self.leaky_slope), cpu_gen).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            order_rng = np.random.default_rng(seed)
            order, pos = order_rng.permutation(n), 0
            best, best_state, best_iter, since = math.inf, None, 0, 0
            train_loss = 0.0
            for it in range(1, int(self.max_iter) + 1):
                if pos + batch > n:
                    order, pos = order_rng.permutation(n), 0
                idx = torch.as_tensor(order[pos:pos + batch], device=device)
                pos += batch
                xb = Xt[idx]
                if self.noise_std > 0:
                    xb = xb + float(self.noise_std) * torch.randn(xb.shape, generator=gen, device=device)
                loss = info_nce(net(xb, gen), Yt[idx], float(self.temperature))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                train_loss += float(loss.detach())
                if it % int(self.eval_every) == 0 or it == int(self.max_iter):
                    with torch.no_grad():
                        val_loss = float(info_nce(net(Xv), Yv, float(self.temperature))) if len(Xv) > 1 else -it
                    history.append({"rerun": r, "iteration": it, "val_loss": val_loss,
                                    "train_loss": train_loss / int(self.eval_every)})
                    train_loss = 0.0
                    if val_loss < best:
                        best, best_iter, since = val_loss, it, 0
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        since += 1
                    yield Progress("contrastive", r * int(self.max_iter) + it, total,
                                   f"rerun {r + 1}/{self.n_reruns}, iteration {it}, validation loss {val_loss:.3f}")
                    if self.patience is not None and since >= int(self.patience):
                        break
            if self.patience is None:  # no early stopping: the weights after the last iteration
                best_state, best_iter = net.state_dict(), int(self.max_iter)
            states.append({k: v.detach().cpu().clone() for k, v in best_state.items()})
            n_iter.append(best_iter)

        self.networks_ = states
        self.history_ = history
        self.n_iter_ = n_iter
        self.n_features_in_ = n_in
        self.n_targets_ = n_out
        if self.architecture == "linear":
            self.coef_ = torch.stack([s["weights.0"] for s in states]).mean(0).numpy()
            self.intercept_ = torch.stack([s["biases.0"] for s in states]).mean(0).numpy()
        yield Progress("contrastive", total, total, "done")
        return self

    def set_weights(self, coef: Any, intercept: Any) -> ContrastiveDecoder:
        """This linear decoder fitted with the rerun-averaged weights of an earlier fit (``coef`` (d,
        n_features), ``intercept``), as saved in ``arrays/decoder_SUBJ.npz``: its predictions equal the earlier
        fit's (a linear decoder predicts with the averaged weights) without training again. An MLP's reruns
        are not held by those weights: it must be fitted."""
        if self.architecture != "linear":
            raise InputError("ContrastiveDecoder.set_weights", f"needs the linear architecture, not "
                             f"{self.architecture!r}", "fit an MLP decoder again")
        coef = np.asarray(coef, dtype=np.float32)
        intercept = np.asarray(intercept, dtype=np.float32)
        if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
            raise InputError("ContrastiveDecoder.set_weights", f"coef of shape {coef.shape} and intercept of shape "
                             f"{intercept.shape} are no decoder's weights",
                             "give coef (n_targets, n_features) and intercept (n_targets,)")
        self.networks_ = [{"weights.0": torch.as_tensor(coef), "biases.0": torch.as_tensor(intercept)}]
        self.history_, self.n_iter_ = [], []
        self.n_targets_, self.n_features_in_ = coef.shape
        self.coef_, self.intercept_ = coef, intercept
        return self

    # -- using the fit ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "networks_"):
            raise not_fitted(self)

    def _networks(self, device) -> list[_Network]:
        cache = getattr(self, "_net_cache", None)
        if cache is not None and cache[0] == str(device):
            return cache[1]
        nets = []
        hidden = None if self.architecture == "linear" else int(self.hidden)
        for state in self.networks_:
            net = _Network(self.n_features_in_, self.n_targets_, hidden, float(self.dropout),
                           float(self.leaky_slope), torch.Generator())
            net.load_state_dict(state)
            net.requires_grad_(False)
            nets.append(net.to(device))
        self._net_cache = (str(device), nets)
        return nets

    def torch_forward(self, X: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Differentiable decoding of ``X`` (n, n_voxels) on its device: the rerun average, L2-normalised.

        Linear: ``normalize(X coefᵀ + intercept)`` with the averaged weights. MLP: mean of the reruns'
        normalised outputs, normalised again.
        """
        self._check_fitted()
        if self.architecture == "linear":
            W = torch.as_tensor(self.coef_, device=X.device, dtype=X.dtype)
            b = torch.as_tensor(self.intercept_, device=X.device, dtype=X.dtype)
            out = X @ W.T + b
        else:
            out = torch.stack([F.normalize(net(X.float()), dim=1) for net in self._networks(X.device)]).mean(0)
            out = out.to(X.dtype)
        return F.normalize(out, dim=1) if normalize else out

    def predict(self, X: Any) -> np.ndarray:
        """Decoded embeddings (n, d), L2-normalised, of responses ``X`` (n, n_voxels), n ≥ 1: computed in
        float32 and returned at ``X``'s float precision when it is higher (as scikit-learn's regressors)."""
        self._check_fitted()
        X = check_features(X, self.n_features_in_, type(self).__name__)
        with torch.no_grad():
            pred = self.torch_forward(torch.as_tensor(np.asarray(X, dtype=np.float32))).numpy()
        return pred.astype(np.promote_types(X.dtype, np.float32), copy=False) if np.issubdtype(
            X.dtype, np.floating) else pred

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of ``predict(X)`` against ``y`` with every row of ``y`` scaled to unit length, averaged uniformly
        over the embedding dimensions: ``RidgeDecoder.score`` (and scikit-learn's ``RegressorMixin.score``)
        in the space this decoder predicts in (unit vectors: unscaled targets would be scored on their
        lengths, which the decoder does not try to predict). Higher is better, 1 is perfect. For retrieval
        accuracy use :mod:`~napari_brain_concepts.core.decoding.metrics`."""
        self._check_fitted()
        X, Y = check_xy(X, y, stage="scoring")
        check_targets(Y, self.n_targets_)
        return r2_unit(Y, self.predict(X), sample_weight)

    def to_torch_module(self) -> torch.nn.Module:
        """A frozen module whose forward is :meth:`torch_forward`."""
        self._check_fitted()
        decoder = self

        class _Frozen(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return decoder.torch_forward(x)

        return _Frozen()
