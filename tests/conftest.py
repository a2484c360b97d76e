"""Test configuration shared by core and napari tests: offline models, isolated caches."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest

from napari_brain_concepts.core.compat import preload_triton

# napari tests create an OpenGL context (Mesa llvmpipe under Xvfb); triton must be loaded before or beside it
preload_triton()


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Embedding caches and nilearn data go to a per-session temporary folder, never to $HOME."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("BRAIN_CONCEPTS_CACHE", str(base / "cache"))
    monkeypatch.setenv("NILEARN_DATA", str(base / "nilearn_data"))
