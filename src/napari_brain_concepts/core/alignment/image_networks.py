"""Image→caption-embedding networks (Doerig et al.): a small convolutional network, optionally recurrent.

The network maps an image to a point of a target space. Trained with a cosine loss against the caption
embedding of each stimulus (``target="embedding"``), it learns what a language model would say about the
scene; trained with a sigmoid cross-entropy against multi-hot category labels (``target="categories"``), the
very same architecture becomes the category control. Comparing the two (and the untrained network) in RSA
with brain regions asks whether caption-embedding training, not the architecture, brings the alignment.

The recurrent variant follows the BLT family (bottom-up, lateral, top-down): every convolutional layer also
receives its own previous state (lateral) and the upsampled previous state of the layer above (top-down),
unrolled for ``n_steps`` time steps; the readout uses the last step. The last feature map is averaged over
space (``pool_grid=1``, global average pooling) or over a coarse grid (``pool_grid=2``: 2×2 cells, which
keeps the layout of the scene in the readout) before a linear layer.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import InputError, check_range, check_ranges
from ..progress import Progress, run_to_end
from ..ranges import IMAGE_NETWORK

CHECKPOINT_FORMAT = "napari-brain-concepts image network"
CHECKPOINT_VERSION = 1
TARGETS = ("embedding", "categories")
# Everything that decides the shapes of the parameters; a checkpoint must match all of it.
ARCHITECTURE_KEYS = ("channels", "recurrent", "n_steps", "image_size", "pool_grid", "out_dim", "target")


def _build_module(channels: Sequence[int], recurrent: bool, n_steps: int, out_dim: int, pool_grid: int = 1):
    """The torch module behind :class:`ImageToTextNetwork` (built lazily so torch loads on first use)."""
    from torch import nn
    from torch.nn import functional as F

    class ConvStack(nn.Module):
        """Conv → GroupNorm → ReLU → 2×2 max-pool per layer; BLT recurrence when ``recurrent``."""

        def __init__(self):
            super().__init__()
            chans = [3, *channels]
            self.bottom_up = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1)
                                           for i in range(len(channels)))
            self.norms = nn.ModuleList(nn.GroupNorm(min(8, c), c) for c in channels)
            self.recurrent = recurrent
            self.n_steps = n_steps if recurrent else 1
            if recurrent:
                self.lateral = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for c in channels)
                self.top_down = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 3, padding=1, bias=False)
                                              for i in range(len(channels) - 1))
            self.readout = nn.Linear(channels[-1] * pool_grid ** 2, out_dim)

        def forward(self, x, keep: set[str] | None = None):
            """Output (n, out_dim) and, for names in ``keep``, the spatially averaged layer activations."""
            kept: dict[str, Any] = {}
            states: list[Any] = [None] * len(self.bottom_up)
            for _t in range(self.n_steps):
                inp = x
                new_states = []
                for i, conv in enumerate(self.bottom_up):
                    drive = conv(inp)
                    if self.recurrent and states[i] is not None:
                        drive = drive + self.lateral[i](states[i])
                    if self.recurrent and i + 1 < len(states) and states[i + 1] is not None:
                        above = self.top_down[i](states[i + 1])
                        drive = drive + F.interpolate(above, size=drive.shape[-2:], mode="nearest")
                    h = F.relu(self.norms[i](drive))
                    new_states.append(h)
                    inp = F.max_pool2d(h, 2)
                states = new_states
            pooled = F.adaptive_avg_pool2d(states[-1], pool_grid).flatten(1)
            out = self.readout(pooled)
            if keep:
                for i, h in enumerate(states):
                    if f"conv{i + 1}" in keep:
                        kept[f"conv{i + 1}"] = h.mean(dim=(2, 3))
                if "pool" in keep:
                    kept["pool"] = pooled
                if "readout" in keep:
                    kept["readout"] = out
            return out, kept

    return ConvStack()


def images_to_array(images: Sequence[Any] | np.ndarray, image_size: int, where: str = "images") -> np.ndarray:
    """Images (PIL images or uint8 (n, H, W, 3)) → uint8 array (n, image_size, image_size, 3), resized."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(where, f"have shape {images.shape}", "give RGB images as (n, H, W, 3) uint8")
        if images.shape[1:3] == (image_size, image_size) and images.dtype == np.uint8:
            return images
        images = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
    if len(images) == 0:
        raise InputError(where, "no images were given", "give at least one image")
    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
    return out


class ImageToTextNetwork(BaseEstimator):
    """A small convolutional network trained to map images to caption embeddings (or categories).

    Parameters
    ----------
    target : {"embedding", "categories"}
        ``"embedding"``: cosine loss to the (caption) embedding of each image. ``"categories"``: sigmoid
        cross-entropy to multi-hot category labels — the category control with the same architecture.
    channels : sequence of int
        Feature maps of each convolutional layer (each followed by 2×2 max-pooling).
    recurrent : bool
        Add lateral and top-down connections, unrolled for ``n_steps`` time steps (BLT-style).
    n_steps : int
        Time steps of the recurrent variant (ignored when ``recurrent=False``).
    image_size : int
        Images are resized to ``image_size`` × ``image_size``.
    pool_grid : int
        The last feature map is averaged over a ``pool_grid`` × ``pool_grid`` grid before the readout
        (1 = global average pooling).
    epochs, batch_size, lr, weight_decay : training schedule (Adam).
    center : bool
        With ``target="embedding"``: train toward the targets minus their mean over the training images.
        Caption embeddings share a large common component; a cosine loss on raw targets is nearly minimised
        by predicting that mean for every image, so the network would learn little about what tells scenes
        apart. Outputs then live in the centred space.
    augment : bool
        Random horizontal flips during training.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    random_state : int
        Seed of the initial weights and of the batch order.

    Attributes
    ----------
    module_ : torch.nn.Module
        The network (initialised at the first ``fit``/``init``).
    out_dim_ : int
        Size of the output space.
    history_ : list of float
        Mean training loss of every epoch.
    target_mean_ : ndarray (out_dim,)
        Mean training target subtracted when ``center`` (zeros otherwise).
    """

    def __init__(self, target: str = "embedding", channels: Sequence[int] = (32, 64, 128, 128),
                 recurrent: bool = False, n_steps: int = 3, image_size: int = 64, pool_grid: int = 1,
                 epochs: int = 30,
                 batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 1e-4, center: bool = True,
                 augment: bool = True, device: str = "auto", random_state: int = 0):
        self.target = target
        self.channels = channels
        self.recurrent = recurrent
        self.n_steps = n_steps
        self.image_size = image_size
        self.pool_grid = pool_grid
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.center = center
        self.augment = augment
        self.device = device
        self.random_state = random_state

    # -- parameters ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.target not in TARGETS:
            raise InputError("parameter target", f"{self.target!r} is unknown", f"use one of {', '.join(TARGETS)}")
        chans = list(self.channels)
        if not chans or any(int(c) < 1 for c in chans):
            raise InputError("parameter channels", f"{self.channels!r} is not a list of positive sizes",
                             "give e.g. channels=(32, 64, 128)")
        check_ranges(self, IMAGE_NETWORK)
        check_range("image_size", self.image_size, 2 ** len(chans), 1024)  # its low end follows the channels

    def architecture(self, out_dim: int | None = None) -> dict[str, Any]:
        """The settings that decide the parameter shapes (stored in and checked against checkpoints)."""
        return {"channels": [int(c) for c in self.channels], "recurrent": bool(self.recurrent),
                "n_steps": int(self.n_steps) if self.recurrent else 1, "image_size": int(self.image_size),
                "pool_grid": int(self.pool_grid),
                "out_dim": int(out_dim if out_dim is not None else self.out_dim_), "target": self.target}

    def init(self, out_dim: int) -> ImageToTextNetwork:
        """Initialise the weights (seeded) without training: the "untrained" baseline of a comparison."""
        import torch

        from ..context import resolve_device

        self._check_params()
        check_range("out_dim", out_dim, 1, None)
        torch.manual_seed(int(self.random_state))
        self.device_ = resolve_device(self.device)
        self.out_dim_ = int(out_dim)
        self.module_ = _build_module([int(c) for c in self.channels], bool(self.recurrent), int(self.n_steps),
                                     self.out_dim_, int(self.pool_grid)).to(self.device_)
        self.history_ = []
        self.target_mean_ = np.zeros(self.out_dim_, dtype=np.float32)
        return self

    # -- training --------------------------------------------------------------------------------
    def _targets(self, targets: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(targets, dtype=np.float32)
        if y.ndim != 2 or y.shape[0] != n:
            raise InputError("targets", f"have shape {y.shape} for {n} images",
                             "give one target row per image: (n_images, d)")
        if not np.all(np.isfinite(y)):
            raise InputError("targets", "contain NaN or Inf", "recompute the embedding or labels")
        if self.target == "categories" and not np.all((y == 0) | (y == 1)):
            raise InputError("targets", "are not multi-hot 0/1 labels", "give category labels as 0/1 columns")
        if self.target == "embedding" and np.any(np.linalg.norm(y, axis=1) == 0):
            raise InputError("targets", "contain an all-zero embedding row", "give every image an embedding")
        return y

    def fit_iter(self, images, targets: np.ndarray) -> Generator[Progress, None, ImageToTextNetwork]:
        """Train, yielding one :class:`Progress` per epoch; closing the generator stops after the batch."""
        import torch
        from torch.nn import functional as F

        self._check_params()
        x = images_to_array(images, int(self.image_size))
        y = self._targets(targets, len(x))
        self.init(y.shape[1])
        if self.center and self.target == "embedding":
            self.target_mean_ = y.mean(axis=0).astype(np.float32)
            y = y - self.target_mean_
            if np.any(np.linalg.norm(y, axis=1) == 0):
                raise InputError("targets", "an image's target equals the mean target, so its centred target is "
                                 "zero", "use center=False or give distinct targets")
        device = self.device_
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        gen = torch.Generator().manual_seed(int(self.random_state) + 1)
        opt = torch.optim.Adam(self.module_.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        n = len(x)
        bs = min(int(self.batch_size), n)
        self.module_.train()
        try:
            for epoch in range(int(self.epochs)):
                order = torch.randperm(n, generator=gen).to(device)
                total = 0.0
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    xb = _normalise(xt[idx])
                    if self.augment:
                        flip = torch.rand(len(idx), generator=gen).to(device) < 0.5
                        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                    out, _ = self.module_(xb)
                    if self.target == "embedding":
                        loss = (1 - F.cosine_similarity(out, yt[idx], dim=1)).mean()
                    else:
                        loss = F.binary_cross_entropy_with_logits(out, yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.history_.append(total / n)
                yield Progress("image network", epoch + 1, int(self.epochs),
                               f"epoch {epoch + 1}: loss {self.history_[-1]:.4f}")
        finally:
            self.module_.eval()
        return self

    def fit(self, images, targets: np.ndarray) -> ImageToTextNetwork:
        """Train on ``images`` (PIL images or uint8 (n, H, W, 3)) and ``targets`` (n, d); returns self."""
        return run_to_end(self.fit_iter(images, targets))

    # -- use -------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise InputError("ImageToTextNetwork", "is not initialised",
                             "call fit(), init() or load_checkpoint() first")

    @property
    def layer_names(self) -> list[str]:
        """Layers of :meth:`transform`: ``convK`` (spatially averaged), ``pool`` (input of the readout), ``readout``."""
        return [f"conv{i + 1}" for i in range(len(list(self.channels)))] + ["pool", "readout"]

    def transform(self, images, layer: str = "pool", batch_size: int = 64) -> np.ndarray:
        """Activations of ``layer`` for every image: (n, features); see :attr:`layer_names`."""
        self._check_fitted()
        if layer not in self.layer_names:
            raise InputError("parameter layer", f"{layer!r} is not a layer of this network",
                             f"choose one of {', '.join(self.layer_names)}")
        return self._run(images, {layer}, batch_size)[layer]

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        """Network output: L2-normalised embeddings (``target="embedding"``; centred when ``center``) or
        category probabilities."""
        out = self._run(images, {"readout"}, batch_size)["readout"]
        if self.target == "embedding":
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return 1.0 / (1.0 + np.exp(-out))

    def _run(self, images, keep: set[str], batch_size: int) -> dict[str, np.ndarray]:
        import torch

        self._check_fitted()
        x = images_to_array(images, int(self.image_size))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
        self.module_.eval()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = _normalise(torch.from_numpy(x[start:start + batch_size]).to(self.device_))
                _, kept = self.module_(xb, keep)
                for k in keep:
                    parts[k].append(kept[k].float().cpu().numpy())
        return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Save weights, architecture and training settings (written atomically)."""
        import torch

        from ..io.atomic import write_atomic

        self._check_fitted()
        payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                   "architecture": self.architecture(),
                   "params": {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                             "center", "augment", "random_state")},
                   "target_mean": torch.from_numpy(np.asarray(self.target_mean_, dtype=np.float32)),
                   "history": list(self.history_),
                   "state_dict": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
                   "extra": extra}
        return write_atomic(Path(path), lambda p: torch.save(payload, p))

    @staticmethod
    def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
        """Read and validate a checkpoint written by :meth:`save_checkpoint`."""
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(path, "checkpoint file is missing", "give the path of a saved image network")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for unreadable files
            raise InputError(path, f"cannot be read as a torch checkpoint ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})",
                             "give a file written by ImageToTextNetwork.save_checkpoint") from err
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise InputError(path, "is not an image-network checkpoint of this package (another model's weights?)",
                             "give a file written by ImageToTextNetwork.save_checkpoint")
        if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
            raise InputError(path, f"was written by a newer version ({payload.get('version')})",
                             "upgrade napari-brain-concepts")
        return payload

    def load_checkpoint(self, path: str | os.PathLike) -> ImageToTextNetwork:
        """Load weights into this network; the checkpoint's architecture must equal this one's."""
        payload = self.read_checkpoint(path)
        stored = payload["architecture"]
        self._check_params()
        mine = self.architecture(out_dim=stored.get("out_dim"))
        diff = [f"{k}: checkpoint {stored.get(k)!r} vs network {mine[k]!r}"
                for k in ARCHITECTURE_KEYS if stored.get(k) != mine[k]]
        if diff:
            raise InputError(path, "is a checkpoint of another architecture (" + "; ".join(diff) + ")",
                             "build the network with the checkpoint's settings, or use "
                             "ImageToTextNetwork.from_checkpoint(path)")
        self.init(int(stored["out_dim"]))
        try:
            self.module_.load_state_dict(payload["state_dict"])
        except RuntimeError as err:
            raise InputError(path, f"weights do not fit the architecture ({err})",
                             "retrain and save the network again") from err
        self.history_ = list(payload.get("history", []))
        if "target_mean" in payload:
            self.target_mean_ = np.asarray(payload["target_mean"], dtype=np.float32)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto") -> ImageToTextNetwork:
        """A network built with the architecture stored in the checkpoint, weights loaded."""
        payload = cls.read_checkpoint(path)
        arch = payload["architecture"]
        params = dict(payload.get("params", {}))
        net = cls(target=arch["target"], channels=tuple(arch["channels"]), recurrent=arch["recurrent"],
                  n_steps=arch["n_steps"], image_size=arch["image_size"], pool_grid=arch.get("pool_grid", 1),
                  device=device, **params)
        return net.load_checkpoint(path)


def _normalise(xb):
    """uint8 NHWC → float NCHW in [-1, 1]."""
    return xb.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_networks(images, embedding: np.ndarray, categories: np.ndarray | None,
                   *, seeds: Sequence[int] = (0,), network: dict[str, Any] | None = None,
                   device: str = "auto") -> Generator[Progress, None, dict[str, list[ImageToTextNetwork]]]:
    """Train the caption network, its untrained twin and the category control for every seed.

    Returns ``{"caption": [...], "untrained": [...], "categories": [...]}`` (one network per seed; the
    category control only when ``categories`` is given).
    """
    network = dict(network or {})
    device = network.pop("device", device)
    network.pop("random_state", None)
    network.pop("target", None)
    x = images_to_array(images, int(network.get("image_size", 64)))
    out: dict[str, list[ImageToTextNetwork]] = {"caption": [], "untrained": []}
    if categories is not None:
        out["categories"] = []
    jobs = [(kind, seed) for seed in seeds for kind in out]
    epochs = int(network.get("epochs", 30))
    total = len([j for j in jobs if j[0] != "untrained"]) * epochs
    done = 0
    for kind, seed in jobs:
        if kind == "untrained":
            out[kind].append(ImageToTextNetwork(target="embedding", device=device, random_state=seed,
                                                **network).init(embedding.shape[1]))
            continue
        target = "categories" if kind == "categories" else "embedding"
        y = categories if kind == "categories" else embedding
        net = ImageToTextNetwork(target=target, device=device, random_state=seed, **network)
        gen = net.fit_iter(x, y)
        try:
            for p in gen:
                done += 1
                yield Progress("image networks", done, total, f"{kind} network, seed {seed}: {p.message}")
        except GeneratorExit:
            gen.close()
            raise
        out[kind].append(net)
    return out


__all__ = ["ImageToTextNetwork", "images_to_array", "train_networks"]
