"""Readers and writers: study folder, NSD, NIfTI volumes, results store.

The names below are imported on first use (``from napari_brain_concepts.core.io import read_study``), so
importing the package stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "read_study": ".study_folder", "write_study": ".study_folder", "is_study_folder": ".study_folder",
    "read_nsd": ".nsd", "load_nsd": ".nsd", "nsd_sessions": ".nsd",
    "load_nifti": ".volumes", "save_nifti": ".volumes", "read_nifti": ".volumes",
    "ResultsStore": ".results",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
