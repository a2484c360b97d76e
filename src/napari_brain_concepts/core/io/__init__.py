"""Readers and writers: study folder, NSD, NIfTI volumes, results store.

The names below are imported on first use (``from napari_brain_concepts.core.io import read_study``; the
scientific Python lazy-loading convention, SPEC 1), so importing the package stays cheap.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "study_folder": ["read_study", "write_study", "is_study_folder"],
    "nsd": ["read_nsd", "load_nsd", "nsd_sessions"],
    "volumes": ["load_nifti", "save_nifti", "read_nifti"],
    "results": ["ResultsStore"],
})
