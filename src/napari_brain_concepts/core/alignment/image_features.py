"""Activations of image models, to compare them with brain areas by RSA.

Any torchvision architecture with weights from a LOCAL file (a saved ``state_dict``), any open_clip model
from a local checkpoint (a model name or JSON config plus a weights file, or a ``local-dir:`` folder), and
the networks of :mod:`.image_networks`. A layer is chosen by its module name; its output is averaged over
space (convolutional maps) or tokens (transformers) so every model gives one vector per image. Nothing is
downloaded: a missing file is an :class:`~napari_brain_concepts.core.errors.InputError` naming it.
torchvision and open_clip are imported only when a model of theirs is asked for.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Progress, run_to_end
from ..study import Stimuli

SOURCES = ("torchvision", "open_clip", "network")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageModelSpec:
    """Which image model to read activations from.

    Parameters
    ----------
    name : str
        Label of the model in tables and figures.
    source : {"torchvision", "open_clip", "network"}
        Where the architecture comes from. ``"network"``: a checkpoint of
        :class:`~.image_networks.ImageToTextNetwork`.
    arch : str
        torchvision model name (``"resnet18"``, any name of ``torchvision.models.list_models()``) or open_clip
        model name (a built-in one, one defined by ``config``, or ``"local-dir:/folder"``).
    weights : str or path
        Local weights file: a torchvision ``state_dict``, an open_clip checkpoint, or a network checkpoint.
        Required except for ``local-dir:`` open_clip folders, which hold their weights.
    layer : str
        Module name (as in ``model.named_modules()``); ``""`` picks a default: torchvision ``"avgpool"`` (when
        the model has it), open_clip ``"embedding"`` (the image embedding), network ``"pool"``.
    config : str or path, optional
        open_clip: a JSON model config file (or a folder of them) registered with
        ``open_clip.add_model_config`` before the model is built.
    image_size : int
        torchvision input size (resize + centre crop, ImageNet normalisation). open_clip uses its own transform.
    """

    name: str
    source: str
    arch: str = ""
    weights: str | os.PathLike | None = None
    layer: str = ""
    config: str | os.PathLike | None = None
    image_size: int = 224

    def check(self) -> None:
        where = f"image model {self.name!r}"
        if self.source not in SOURCES:
            raise InputError(where, f"source {self.source!r} is unknown", f"use one of {', '.join(SOURCES)}")
        if self.source != "network" and not self.arch:
            raise InputError(where, "names no architecture", "set arch, e.g. 'resnet18' or an open_clip model")
        local_dir = self.source == "open_clip" and str(self.arch).startswith("local-dir:")
        if self.weights is None and not local_dir:
            raise InputError(where, "names no weights file (nothing is downloaded)",
                             "set weights to a local file holding the model's weights")
        if self.weights is not None and not Path(self.weights).is_file():
            raise InputError(Path(self.weights), f"weights file of {where} is missing",
                             "give the path of a local weights file")
        if local_dir and not Path(str(self.arch)[len("local-dir:"):]).is_dir():
            raise InputError(str(self.arch), f"model folder of {where} is missing",
                             "give an existing folder with open_clip_config.json and weights")
        if self.config is not None and not Path(self.config).exists():
            raise InputError(Path(self.config), f"open_clip config of {where} is missing",
                             "give an existing JSON config file or folder")


# -- images ----------------------------------------------------------------------------------------
class StimulusImages(Sequence):
    """The RGB PIL images of some stimuli, read from their files (or lazy image source) when indexed.

    A sequence: ``images[k]`` reads and returns the ``k``-th image; a slice or an index array gives
    another :class:`StimulusImages` over those images, reading nothing. So a consumer that works in
    batches (:func:`image_features_iter`, ``images[start:start + batch_size]``) holds one batch of
    decoded images at a time, not the whole stimulus set (NSD: 10,000 images of 425 × 425 per subject).
    """

    def __init__(self, stimuli: Stimuli, rows: Sequence[int] | np.ndarray):
        self.stimuli = stimuli
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return StimulusImages(self.stimuli, self.rows[key])
        if isinstance(key, (list, tuple, np.ndarray)):
            return StimulusImages(self.stimuli, self.rows[np.asarray(key, dtype=np.int64)])
        return self.stimuli.image(int(self.rows[key]))      # IndexError past the end ends iteration

    def __repr__(self) -> str:
        return f"StimulusImages({len(self)} images)"


def stimulus_images(stimuli: Stimuli, rows: Sequence[int] | np.ndarray | None = None) -> StimulusImages:
    """The RGB PIL images of ``rows`` of ``stimuli`` (all by default), after checking every file exists.

    All missing files are found before any is read, so the error says how many are missing and names the
    first. The images are read when indexed (see :class:`StimulusImages`), so batches stream from disk.
    """
    rows = np.arange(len(stimuli)) if rows is None else np.asarray(rows, dtype=np.int64)
    if stimuli.pixels is None and getattr(stimuli, "image_source", None) is None:
        no_image = [int(r) for r in rows if stimuli.image_paths[r] is None]
        if no_image:
            raise InputError("stimuli", f"{len(no_image)} of {len(rows)} stimuli have no image "
                                        f"(e.g. {stimuli.ids[no_image[0]]!r})",
                             "add an image column to stimuli.tsv for every stimulus")
        root = Path(stimuli.root) if stimuli.root is not None else Path()
        missing = [root / stimuli.image_paths[r] for r in rows if not (root / stimuli.image_paths[r]).is_file()]
        if missing:
            raise InputError(missing[0], f"image file is missing ({len(missing)} of {len(rows)} images are)",
                             "put the images in the study folder or fix the image column of stimuli.tsv")
    return StimulusImages(stimuli, rows)


# -- models ----------------------------------------------------------------------------------------
@dataclass
class LoadedImageModel:
    """A model ready to run: ``forward(batch)`` on the device, ``preprocess(PIL) → tensor``, named modules."""

    spec: ImageModelSpec
    module: Any
    preprocess: Callable[[Any], Any] | None
    forward: Callable[[Any], Any]
    device: str


def _torch_load(path: Path, what: str) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise InputError(path, f"cannot be read as {what} ({type(err).__name__}: {err})",
                         "give a file saved with torch.save(model.state_dict(), path)") from err


def _load_torchvision(spec: ImageModelSpec, device: str) -> LoadedImageModel:
    import torchvision
    from torchvision import transforms

    names = torchvision.models.list_models()
    if spec.arch not in names:
        close = difflib.get_close_matches(spec.arch, names, n=3)
        raise InputError(f"image model {spec.name!r}", f"torchvision has no model {spec.arch!r}",
                         f"use a name of torchvision.models.list_models(){' such as ' + ', '.join(close) if close else ''}")
    model = torchvision.models.get_model(spec.arch, weights=None)
    state = _torch_load(Path(spec.weights), f"torchvision {spec.arch} weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(Path(spec.weights), "does not hold a state_dict",
                         "save the weights with torch.save(model.state_dict(), path)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]!r})" for v, what in
                 ((missing, "missing keys"), (unexpected, "unexpected keys"), (wrong, "keys of another shape")) if v]
        raise InputError(Path(spec.weights), f"weights do not fit torchvision {spec.arch}: {', '.join(parts)}",
                         f"give weights saved from a torchvision {spec.arch}, or name the architecture they are of")
    model.load_state_dict(state)
    model.eval().to(device)
    preprocess = transforms.Compose([
        transforms.Resize(int(spec.image_size)), transforms.CenterCrop(int(spec.image_size)),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return LoadedImageModel(spec, model, preprocess, model, device)


def _load_open_clip(spec: ImageModelSpec, device: str) -> LoadedImageModel:
    import open_clip

    if spec.config is not None:
        open_clip.add_model_config(Path(spec.config))
    arch = str(spec.arch)
    if not arch.startswith("local-dir:") and arch not in open_clip.list_models():
        raise InputError(f"image model {spec.name!r}", f"open_clip knows no model {arch!r}",
                         "give a built-in open_clip model name, a JSON config (config=...) or local-dir:/folder")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=None if spec.weights is None else str(spec.weights), device=device)
    except RuntimeError as err:
        where = spec.weights if spec.weights is not None else arch
        raise InputError(where, f"weights do not fit open_clip {arch} ({str(err).splitlines()[0]})",
                         "give the checkpoint of that open_clip model") from err
    model.eval()
    return LoadedImageModel(spec, model, preprocess, model.encode_image, device)


def _load_network(spec: ImageModelSpec, device: str) -> LoadedImageModel:
    from .image_networks import ImageToTextNetwork

    net = ImageToTextNetwork.from_checkpoint(spec.weights, device=device)
    return LoadedImageModel(spec, net, None, net.module_, net.device_)


def load_image_model(spec: ImageModelSpec, device: str = "auto") -> LoadedImageModel:
    """Build the model of ``spec`` and load its local weights (no download)."""
    from ..context import resolve_device

    spec.check()
    device = resolve_device(device)
    loader = {"torchvision": _load_torchvision, "open_clip": _load_open_clip, "network": _load_network}
    return loader[spec.source](spec, device)


# -- activations -----------------------------------------------------------------------------------
def _pool(out: Any, n: int, where: str) -> Any:
    """Average a layer output over space/tokens → (n, channels)."""
    import torch

    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if not isinstance(out, torch.Tensor):
        raise InputError(where, "layer output is not a tensor", "choose another layer")
    if out.ndim == 2:
        return out
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    if out.ndim == 3:
        if out.shape[0] == n:
            return out.mean(dim=1)
        if out.shape[1] == n:
            return out.mean(dim=0)
    if out.ndim >= 2 and out.shape[0] == n:
        return out.reshape(n, out.shape[1], -1).mean(dim=2)
    raise InputError(where, f"layer output has shape {tuple(out.shape)}, which cannot be averaged per image",
                     "choose a convolutional or transformer-block layer")


def default_layer(model: LoadedImageModel) -> str:
    spec = model.spec
    if spec.layer:
        return spec.layer
    if spec.source == "network":
        return "pool"
    if spec.source == "open_clip":
        return "embedding"
    names = dict(model.module.named_modules())
    if "avgpool" in names:
        return "avgpool"
    raise InputError(f"image model {spec.name!r}", "names no layer and the model has no 'avgpool'",
                     "set layer to a module name of the model")


def image_features_iter(model: LoadedImageModel | ImageModelSpec, images: Sequence[Any], *,
                        layer: str | None = None, batch_size: int = 32,
                        device: str = "auto") -> Generator[Progress, None, np.ndarray]:
    """Activations (n_images, channels) of ``layer`` for ``images`` (PIL), yielding progress per batch."""
    import torch

    if isinstance(model, ImageModelSpec):
        model = load_image_model(model, device)
    spec = model.spec
    layer = layer or default_layer(model)
    where = f"image model {spec.name!r} layer {layer!r}"
    if len(images) == 0:
        raise InputError(f"image model {spec.name!r}", "no images were given", "give at least one image")
    if spec.source == "network":
        net = model.module
        if layer not in net.layer_names:
            raise InputError(where, "is not a layer of the network", f"choose one of {', '.join(net.layer_names)}")
        out = []
        for start in range(0, len(images), batch_size):
            out.append(net.transform(images[start:start + batch_size], layer=layer, batch_size=batch_size))
            yield Progress("image features", min(start + batch_size, len(images)), len(images), spec.name)
        return np.concatenate(out).astype(np.float32)

    modules = dict(model.module.named_modules())
    target = None
    if not (spec.source == "open_clip" and layer == "embedding"):
        if layer not in modules:
            choices = [k for k in modules if k]
            close = difflib.get_close_matches(layer, choices, n=5, cutoff=0.4)
            raise InputError(where, "is not a module of the model",
                             f"choose a name of model.named_modules(), e.g. {', '.join(close or choices[-5:])}")
        target = modules[layer]
    captured: dict[str, Any] = {}

    def hook(_module, _inp, output):
        captured["out"] = output

    handle = target.register_forward_hook(hook) if target is not None else None
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                x = torch.stack([model.preprocess(im.convert("RGB")) for im in batch]).to(model.device)
                captured.clear()
                result = model.forward(x)
                if target is None:
                    feats = result
                elif "out" not in captured:
                    raise InputError(where, "was not run when encoding images (a text-tower layer?)",
                                     "choose a layer of the image encoder (for open_clip: 'visual.…')")
                else:
                    feats = _pool(captured["out"], len(batch), where)
                parts.append(feats.float().cpu().numpy())
                yield Progress("image features", min(start + batch_size, len(images)), len(images), spec.name)
    finally:
        if handle is not None:
            handle.remove()
    return np.concatenate(parts).astype(np.float32)


def image_features(model: LoadedImageModel | ImageModelSpec, images: Sequence[Any], *, layer: str | None = None,
                   batch_size: int = 32, device: str = "auto") -> np.ndarray:
    """Activations (n_images, channels) of ``layer`` (spatially averaged) for ``images``."""
    return run_to_end(image_features_iter(model, images, layer=layer, batch_size=batch_size, device=device))


def network_spec(name: str, checkpoint: str | os.PathLike, layer: str = "pool") -> ImageModelSpec:
    """Spec of a saved :class:`~.image_networks.ImageToTextNetwork`."""
    return ImageModelSpec(name=name, source="network", weights=checkpoint, layer=layer)


__all__ = ["ImageModelSpec", "LoadedImageModel", "StimulusImages", "default_layer", "image_features", "image_features_iter",
           "load_image_model", "network_spec", "stimulus_images"]
