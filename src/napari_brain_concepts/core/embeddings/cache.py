"""On-disk cache of computed embeddings, keyed by the model's identity and a hash of the input text.

Embedding the captions of a study is the slowest part of loading it; the cache makes the second load
instant. Files live under ``$BRAIN_CONCEPTS_CACHE`` (default ``~/.cache/napari-brain-concepts``) as
``KIND/MODEL/KEY.npy`` and are written atomically, so an interrupted write never leaves a half file that a
later run would read. A file that cannot be read is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import write_atomic

CACHE_ENV = "BRAIN_CONCEPTS_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$BRAIN_CONCEPTS_CACHE`` or ``~/.cache/napari-brain-concepts``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-brain-concepts"


def text_key(model_identity: str, texts: Sequence[str]) -> str:
    """SHA-256 over the model identity and the ordered texts (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256()
    h.update(model_identity.encode("utf-8"))
    h.update(b"\x00")
    for text in texts:
        data = str(text).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "model"


class EmbeddingCache:
    """A folder of cached embedding arrays.

    Parameters
    ----------
    root : path, optional
        Cache root; default :func:`cache_dir`, read at each use.
    kind : str
        Sub-folder per kind of embedding (``"text"``, ``"image"``, ...).
    """

    def __init__(self, root: str | os.PathLike | None = None, kind: str = "text"):
        self._root = Path(root) if root is not None else None
        self.kind = kind

    @property
    def root(self) -> Path:
        """The cache root (the environment is read at each use when no root was given)."""
        return self._root if self._root is not None else cache_dir()

    def path(self, model_name: str, key: str) -> Path:
        """Where the array for ``key`` of model ``model_name`` lives."""
        return self.root / _slug(self.kind) / _slug(model_name) / f"{key}.npy"

    def load(self, model_name: str, key: str, shape0: int | None = None) -> np.ndarray | None:
        """The cached array, or ``None`` on a miss (absent, unreadable, or not ``shape0`` rows)."""
        path = self.path(model_name, key)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if arr.ndim != 2 or (shape0 is not None and arr.shape[0] != shape0) or not np.all(np.isfinite(arr)):
            return None
        return arr

    def save(self, model_name: str, key: str, values: np.ndarray) -> Path | None:
        """Write ``values`` atomically; returns the path, or ``None`` when the cache folder is not writable."""
        path = self.path(model_name, key)
        arr = np.ascontiguousarray(values)
        try:
            write_atomic(path, lambda tmp: _save_npy(tmp, arr))
        except (OSError, InputError):
            return None
        return path

    def clear(self) -> int:
        """Delete every cached file of this kind; returns how many were removed."""
        folder = self.root / _slug(self.kind)
        n = 0
        if folder.is_dir():
            for f in folder.rglob("*.npy"):
                f.unlink(missing_ok=True)
                n += 1
        return n


def _save_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
