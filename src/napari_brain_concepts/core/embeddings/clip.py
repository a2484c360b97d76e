"""CLIP image and text embeddings from local model files (open_clip, or a Hugging Face CLIP folder).

The decoders of SDC (Efird et al.) predict CLIP image embeddings from brain activity; this module makes
those targets for any stimulus set, from weights the user already has on disk — nothing is downloaded.

- open_clip: any model name open_clip knows (``"ViT-B-32"``, ``"ViT-L-14-quickgelu"``, or an architecture
  registered from a JSON config with ``config=``) plus a local ``checkpoint`` (a state_dict file such as
  ``open_clip_pytorch_model.bin`` or ``.safetensors``); or ``"local-dir:/folder"`` (open_clip_config.json
  + weights). The model's own validation transform is the preprocessing.
- transformers: a folder saved with ``CLIPModel.save_pretrained`` (config.json with ``model_type`` "clip",
  weights, preprocessor_config.json and tokenizer files); preprocessing by its ``CLIPImageProcessor``.

Embeddings are L2-normalised per image / per caption and cached on disk (``$BRAIN_CONCEPTS_CACHE``, see
:mod:`.cache`) under a key made of the model name, the SHA-256 of the checkpoint (and config), and the
stimulus ids with a fingerprint of their images (or the caption text), so a second run reads the cache
instead of recomputing. open_clip, torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, Range
from ..progress import Progress, run_to_end
from ..ranges import ENCODER
from ..study import Embedding, Stimuli
from .cache import EmbeddingCache, text_key

__all__ = ["ClipEncoder", "ClipParams", "clip_embeddings", "clip_step", "iter_clip_embeddings", "load_clip"]

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (remembered per path, size and modification time in this process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 23), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _is_hf_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") in ("clip", "clip_vision_model")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


class ClipEncoder:
    """A CLIP model from local files that embeds images and texts (unit-norm, float32).

    Creating the encoder checks the files and hashes the checkpoint (the cache key); the weights load on
    the first call that misses the cache, or on :meth:`load`.

    Parameters
    ----------
    model : str or path
        open_clip model name, ``"local-dir:/folder"``, or a Hugging Face CLIP folder.
    checkpoint : path, optional
        Local open_clip weights file (required for a model name; not used for folders). A Hugging Face
        CLIP folder may also be given here, with ``model`` as its display name.
    config : path, optional
        A JSON model config (or a folder of them) registered with ``open_clip.add_model_config`` first,
        for architectures open_clip does not ship.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    batch_size : int
        Images or texts per forward pass.
    cache : bool or EmbeddingCache pair
        Read and write the on-disk cache.

    Attributes
    ----------
    name : str
        Display name (model name or folder name); used in embedding names.
    identity : str
        Backend, model, and SHA-256 of the weights and config: the model part of the cache keys.
    n_images_encoded_, n_texts_encoded_ : int
        How many images / texts went through the model (cache hits do not count).
    """

    def __init__(self, model: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                 config: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 32,
                 cache: bool = True):
        if int(batch_size) < 1:
            raise InputError("parameter batch_size", f"{batch_size!r} is below 1", "use a positive batch size")
        if not (device in ("auto", "cpu") or str(device).startswith("cuda")):
            raise InputError("parameter device", f"{device!r} is not a device", "use 'auto', 'cpu' or 'cuda'")
        self.batch_size = int(batch_size)
        self.device_param = device
        self.device: str | None = None
        self.config = None if config is None else Path(config).expanduser()
        self.model_arg = str(model)
        self.checkpoint = None if checkpoint is None else Path(checkpoint).expanduser()
        self.image_cache = EmbeddingCache(kind="clip-image") if cache else None
        self.text_cache = EmbeddingCache(kind="clip-text") if cache else None
        self.n_images_encoded_ = 0
        self.n_texts_encoded_ = 0
        self._model = None
        self._inspect()

    # ------------------------------------------------------------------ files and identity

    def _inspect(self) -> None:
        arg = self.model_arg
        parts: list[str] = []
        if self.config is not None:
            if not self.config.exists():
                raise InputError(self.config, "open_clip model config is missing",
                                 "give a JSON model config file or a folder of them")
            files = [self.config] if self.config.is_file() else sorted(self.config.glob("*.json"))
            parts += [f"{f.name}:{file_sha256(f)}" for f in files]
        hf_dir = None
        if self.checkpoint is not None and self.checkpoint.is_dir():
            if not _is_hf_folder(self.checkpoint):
                raise InputError(self.checkpoint, "is a folder but not a Hugging Face CLIP folder "
                                 "(config.json with model_type 'clip')",
                                 "give an open_clip checkpoint file, or a folder saved with CLIPModel.save_pretrained")
            hf_dir = self.checkpoint
        elif not arg.startswith("local-dir:") and _is_hf_folder(Path(arg).expanduser()):
            hf_dir = Path(arg).expanduser()
        if hf_dir is not None:
            self.backend = "transformers"
            self.path = hf_dir
            self.name = Path(arg).name if hf_dir != Path(arg).expanduser() else hf_dir.name
            weights = [f for f in ("model.safetensors", "pytorch_model.bin") if (hf_dir / f).is_file()]
            if not weights:
                raise InputError(hf_dir, "holds no weights (model.safetensors or pytorch_model.bin)",
                                 "copy the weights into the folder or re-export it with save_pretrained")
            for fname in ("config.json", "preprocessor_config.json", "tokenizer.json", "vocab.json",
                          "merges.txt", *weights):
                if (hf_dir / fname).is_file():
                    parts.append(f"{fname}:{file_sha256(hf_dir / fname)}")
        elif arg.startswith("local-dir:"):
            self.backend = "open_clip"
            folder = Path(arg[len("local-dir:"):]).expanduser()
            if not (folder / "open_clip_config.json").is_file():
                raise InputError(folder, "is not an open_clip model folder (no open_clip_config.json)",
                                 "give local-dir:/folder holding open_clip_config.json and the weights")
            self.path = folder
            self.name = folder.name
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix in (".json", ".bin", ".safetensors", ".pth", ".pt"):
                    parts.append(f"{f.name}:{file_sha256(f)}")
        else:
            self.backend = "open_clip"
            self.name = arg
            self.path = None
            if self.checkpoint is None:
                raise InputError("parameter checkpoint", f"no checkpoint given for open_clip model {arg!r}",
                                 "give the local weights file (models are never downloaded), or a "
                                 "local-dir:/folder or Hugging Face CLIP folder as the model")
            if not self.checkpoint.is_file():
                raise InputError(self.checkpoint, "checkpoint file is missing",
                                 "give the path of a local open_clip weights file (.bin, .pt, .safetensors); "
                                 "pretrained tags such as 'openai' would need a download and are not used")
            parts.append(f"{self.checkpoint.name}:{file_sha256(self.checkpoint)}")
        # folders are identified by their files alone; an open_clip name also picks the architecture
        self.cache_name = self.name if self.path is None else self.path.name
        self.identity = "|".join([self.backend, self.cache_name, *parts])

    def __repr__(self) -> str:
        return f"ClipEncoder(name={self.name!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ loading

    def load(self) -> ClipEncoder:
        """Load the weights and preprocessing; a mismatch between checkpoint and model is an InputError."""
        if self._model is not None:
            return self
        from ..context import resolve_device

        self.device = resolve_device(self.device_param)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if self.backend == "transformers":
            self._load_hf()
        else:
            self._load_open_clip()
        self._model.to(self.device).eval()
        return self

    def _load_open_clip(self) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise InputError("open_clip", "is not installed", "pip install open_clip_torch torchvision") from err
        if self.config is not None:
            open_clip.add_model_config(self.config)
        arg = self.model_arg
        if not arg.startswith("local-dir:") and arg not in open_clip.list_models():
            close = [m for m in open_clip.list_models() if m.lower().startswith(arg.lower()[:5])][:8]
            raise InputError("parameter model", f"open_clip knows no model {arg!r}",
                             f"give an open_clip model name (e.g. {', '.join(close) or 'ViT-B-32'}), "
                             "register a JSON config with config=..., or use local-dir:/folder")
        where = self.checkpoint if self.checkpoint is not None else self.path
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arg, pretrained=None if arg.startswith("local-dir:") else str(self.checkpoint))
        except RuntimeError as err:
            msg = _first_line(err)
            if "state_dict" in str(err) or "size mismatch" in str(err) or "Missing key" in str(err):
                raise InputError(where, f"does not match open_clip model {arg!r} ({msg})",
                                 "give the checkpoint that belongs to this model name, or the model name "
                                 "the checkpoint was trained with") from err
            raise InputError(where, f"open_clip model {arg!r} cannot be loaded ({msg})",
                             "check the model name and the checkpoint file") from err
        except Exception as err:        # unpickling, safetensors and zip errors of a damaged file
            raise InputError(where, f"cannot be read as open_clip weights ({_first_line(err)})",
                             "give an intact state_dict checkpoint (.bin, .pt, .safetensors)") from err
        try:
            tokenizer = open_clip.get_tokenizer(arg)
        except (OSError, ValueError, RuntimeError) as err:
            raise InputError(f"tokenizer of {arg}", f"cannot be loaded offline ({_first_line(err)})",
                             "use a model whose tokenizer ships with open_clip, or a local-dir folder "
                             "that holds the tokenizer files") from err
        self._model, self._preprocess, self._tokenizer = model, preprocess, tokenizer

    def _load_hf(self) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        from ..compat import quiet_model_loading

        path = self.path
        try:
            with quiet_model_loading():
                model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise InputError(path, f"CLIP model cannot be loaded ({_first_line(err)})",
                             "re-export the folder with CLIPModel.save_pretrained") from err
        try:
            processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise InputError(path, f"has no usable image preprocessing ({_first_line(err)})",
                             "save the CLIPImageProcessor into the folder (preprocessor_config.json)") from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            tokenizer = None
            self._tokenizer_error = _first_line(err)
        self._model, self._processor, self._tokenizer = model, processor, tokenizer

    # ------------------------------------------------------------------ forward passes

    def _features(self, out: Any):
        import torch

        if isinstance(out, torch.Tensor):
            return out
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out[0]

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Unit-norm embeddings of PIL images, (n, d) float32 (one forward pass; no cache)."""
        import torch

        self.load()
        with torch.inference_mode():
            if self.backend == "open_clip":
                batch = torch.stack([self._preprocess(im.convert("RGB")) for im in images]).to(self.device)
                feats = self._model.encode_image(batch)
            else:
                pix = self._processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
                feats = self._features(self._model.get_image_features(pixel_values=pix["pixel_values"]
                                                                      .to(self.device)))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        self.n_images_encoded_ += len(images)
        return feats.cpu().numpy().astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of texts, (n, d) float32 (one forward pass; no cache)."""
        import torch

        self.load()
        with torch.inference_mode():
            if self.backend == "open_clip":
                tokens = self._tokenizer(list(texts)).to(self.device)
                feats = self._model.encode_text(tokens)
            else:
                if self._tokenizer is None:
                    raise InputError(self.path, f"has no tokenizer ({self._tokenizer_error})",
                                     "save the CLIP tokenizer into the folder (vocab.json, merges.txt)")
                enc = self._tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                feats = self._features(self._model.get_text_features(**enc))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        self.n_texts_encoded_ += len(texts)
        return feats.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ batched, cached

    def iter_embed_images(self, stimuli: Stimuli, rows: Sequence[int] | None = None,
                          ) -> Generator[Progress, None, np.ndarray]:
        """Embed the images of ``stimuli`` (all, or ``rows``) in batches; yields progress, returns (n, d)."""
        rows = np.arange(len(stimuli)) if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(rows)
        if not stimuli.has_images:
            raise InputError("stimuli", "have no images", "give a study with images (image column, pixels "
                             "or an image source such as NSD's nsd_stimuli.hdf5)")
        key = None
        if self.image_cache is not None:
            fingerprint = _images_fingerprint(stimuli, rows)
            if fingerprint is not None:
                key = text_key(self.identity + "|image", [fingerprint])
                hit = self.image_cache.load(self.cache_name, key, shape0=n)
                if hit is not None:
                    yield Progress("embed images", n, n, f"{n} {self.name} image embeddings from the cache")
                    return hit.astype(np.float32, copy=False)
        out = None
        yield Progress("embed images", 0, n, f"embedding {n} images with {self.name}")
        for start in range(0, n, self.batch_size):
            batch = rows[start:start + self.batch_size]
            feats = self.encode_images([stimuli.image(int(i)) for i in batch])
            if out is None:
                out = np.empty((n, feats.shape[1]), dtype=np.float32)
            out[start:start + len(batch)] = feats
            yield Progress("embed images", start + len(batch), n, f"{start + len(batch)}/{n} images")
        if key is not None:
            self.image_cache.save(self.cache_name, key, out)
        return out

    def iter_embed_texts(self, texts: Sequence[str], step: str = "embed texts",
                         ) -> Generator[Progress, None, np.ndarray]:
        """Embed texts in batches (cached by model and text); yields progress, returns (n, d)."""
        texts = [str(t) for t in texts]
        n = len(texts)
        key = text_key(self.identity + "|text", texts) if self.text_cache is not None else None
        if key is not None:
            hit = self.text_cache.load(self.cache_name, key, shape0=n)
            if hit is not None:
                yield Progress(step, n, n, f"{n} {self.name} text embeddings from the cache")
                return hit.astype(np.float32, copy=False)
        out = None
        yield Progress(step, 0, n, f"embedding {n} texts with {self.name}")
        for start in range(0, n, self.batch_size):
            feats = self.encode_texts(texts[start:start + self.batch_size])
            if out is None:
                out = np.empty((n, feats.shape[1]), dtype=np.float32)
            out[start:start + len(feats)] = feats
            yield Progress(step, start + len(feats), n, f"{start + len(feats)}/{n} texts")
        if key is not None:
            self.text_cache.save(self.cache_name, key, out)
        return out

    def iter_embed_captions(self, stimuli: Stimuli) -> Generator[Progress, None, np.ndarray]:
        """Caption-mean CLIP text embedding per stimulus: mean of its unit-norm caption embeddings."""
        unique: dict[str, int] = {}
        for sid, caps in zip(stimuli.ids, stimuli.captions):
            if not caps:
                raise InputError(f"stimulus {sid}", "has no caption",
                                 "give every stimulus a caption, or embed images only (kinds=('image',))")
            for c in caps:
                unique.setdefault(c, len(unique))
        vectors = yield from self.iter_embed_texts(list(unique), step="embed captions")
        return np.stack([vectors[[unique[c] for c in caps]].mean(axis=0) for caps in stimuli.captions])


def _images_fingerprint(stimuli: Stimuli, rows: np.ndarray) -> str | None:
    """Ids plus a cheap identity of the image content; ``None`` when no reliable identity exists."""
    h = hashlib.sha256()
    for sid in stimuli.ids[rows]:
        h.update(str(sid).encode("utf-8") + b"\x00")
    if stimuli.pixels is not None:
        h.update(b"pixels")
        for i in rows:
            h.update(np.ascontiguousarray(stimuli.pixels[int(i)]).tobytes())
    elif stimuli.image_source is not None:
        source = getattr(stimuli.image_source, "fingerprint", None)
        if source is None:
            return None
        h.update(f"source:{source}".encode())
    else:
        for i in rows:
            rel = stimuli.image_paths[int(i)]
            if rel is None:
                raise InputError(f"stimulus {stimuli.ids[int(i)]}", "has no image",
                                 "add an image for every stimulus, or embed captions only")
            path = Path(rel) if stimuli.root is None else Path(stimuli.root) / rel
            try:
                st = path.stat()
            except OSError as err:
                raise InputError(path, "image file is missing", "put the image there or fix stimuli.tsv") from err
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def load_clip(model: str | os.PathLike, checkpoint: str | os.PathLike | None = None, **kwargs) -> ClipEncoder:
    """A loaded :class:`ClipEncoder` (weights read now, so a bad checkpoint fails here)."""
    return ClipEncoder(model, checkpoint, **kwargs).load()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "clip"


def iter_clip_embeddings(stimuli: Stimuli, model: str | os.PathLike | ClipEncoder,
                         checkpoint: str | os.PathLike | None = None, *,
                         kinds: Sequence[str] = ("image", "captions"), config: str | os.PathLike | None = None,
                         batch_size: int = 32, device: str = "auto", cache: bool = True, add: bool = True,
                         ) -> Generator[Progress, None, dict[str, Embedding]]:
    """CLIP embeddings of a study's stimuli, as :class:`Embedding` objects; yields :class:`Progress`.

    Parameters
    ----------
    stimuli : Stimuli
        The stimuli (images via pixels, files or a lazy image source; captions for ``"captions"``).
    model, checkpoint, config, batch_size, device, cache
        See :class:`ClipEncoder` (``model`` may also be an encoder already made).
    kinds : sequence of {"image", "captions"}
        ``"image"``: unit-norm image embeddings, named ``"<model>-image"`` (kind ``image``).
        ``"captions"``: mean of the unit-norm caption embeddings, named ``"<model>-captions"``
        (kind ``caption-mean``).
    add : bool
        Also add them to ``stimuli.embeddings``.

    Returns
    -------
    dict of name → Embedding
    """
    bad = set(kinds) - {"image", "captions"}
    if bad or not kinds:
        raise InputError("parameter kinds", f"{sorted(bad) or 'nothing'} asked for",
                         "give 'image' and/or 'captions'")
    encoder = model if isinstance(model, ClipEncoder) else ClipEncoder(
        model, checkpoint, config=config, device=device, batch_size=batch_size, cache=cache)
    out: dict[str, Embedding] = {}
    slug = _slug(encoder.name)
    if "image" in kinds:
        values = yield from encoder.iter_embed_images(stimuli)
        out[f"{slug}-image"] = Embedding(f"{slug}-image", values, model=encoder.name,
                                         kind="image", normalized=True)
    if "captions" in kinds:
        values = yield from encoder.iter_embed_captions(stimuli)
        out[f"{slug}-captions"] = Embedding(f"{slug}-captions", values, model=encoder.name,
                                            kind="caption-mean", normalized=False)
    if add:
        for emb in out.values():
            stimuli.add_embedding(emb)
    return out


def clip_embeddings(stimuli: Stimuli, model: str | os.PathLike | ClipEncoder,
                    checkpoint: str | os.PathLike | None = None, progress=None, **kwargs) -> dict[str, Embedding]:
    """Run :func:`iter_clip_embeddings` to the end; ``progress`` receives each report."""
    return run_to_end(iter_clip_embeddings(stimuli, model, checkpoint, **kwargs), progress)


@dataclass
class ClipParams:
    """Parameters of the ``clip`` step (``brain-concepts embed --model NAME --checkpoint FILE``).

    ``model``: open_clip name, ``local-dir:/folder`` or Hugging Face CLIP folder (required);
    ``checkpoint``: local weights file for an open_clip name; ``config``: JSON model config to register;
    ``kinds``: ``"image"`` and/or ``"captions"``; ``batch_size``: images/texts per forward pass.
    """

    model: str | None = None
    checkpoint: str | None = None
    config: str | None = None
    kinds: tuple[str, ...] = ("image", "captions")
    batch_size: int = 32

    #: intervals of the numeric parameters (:mod:`~..ranges`), checked before any step runs
    RANGES: ClassVar[dict[str, Range]] = ENCODER


def clip_step(ctx) -> Generator[Progress, None, None]:
    """Pipeline step ``clip``: CLIP embeddings of the study's stimuli from local weights.

    Adds ``<model>-image`` / ``<model>-captions`` to ``ctx.study.stimuli.embeddings`` (so a decoder can
    target them, e.g. ``--param decode.embedding=ViT-B-32-image``), writes ``arrays/clip_embeddings.npz``
    and ``tables/clip_embeddings.tsv``, and puts the names in ``ctx.state["clip_embeddings"]``.
    """
    import pandas as pd

    params = ctx.step_params("clip", ClipParams)
    if not params.model:
        raise InputError("parameter clip.model", "no CLIP model given",
                         "give --model NAME --checkpoint FILE (or a local-dir:/ or Hugging Face CLIP folder)")
    made = yield from iter_clip_embeddings(
        ctx.study.stimuli, params.model, params.checkpoint, kinds=tuple(params.kinds), config=params.config,
        batch_size=params.batch_size, device=ctx.device, add=True)
    ctx.store.write_arrays("clip_embeddings", **{n: e.values for n, e in made.items()})
    ctx.store.write_table("clip_embeddings", pd.DataFrame({
        "name": list(made), "model": [e.model for e in made.values()], "kind": [e.kind for e in made.values()],
        "dim": [e.dim for e in made.values()],
        "checkpoint": [str(params.checkpoint or params.model)] * len(made)}))
    ctx.state["clip_embeddings"] = list(made)
    ctx.store.mark_done("clip", embeddings=list(made))
