"""Language-model alignment with the brain (Doerig et al.): RSA, searchlight RSA and encoding models.

Modules: :mod:`.rsa` (RDMs, comparisons, noise ceiling, group statistics, ROI RSA), :mod:`.searchlight`
(batched volumetric searchlight RSA), :mod:`.encoding` (ridge encoding models and predicted maps),
:mod:`.steps` (the ``embed``, ``rsa`` and ``encode`` pipeline steps). Importing the package loads none of
them, so the plugin starts fast: the names below are imported on first use
(``from napari_brain_concepts.core.alignment import EncodingModel``).
"""

from __future__ import annotations

import importlib

_LAZY = {
    **dict.fromkeys(["correlation_rdm", "upper_triangle", "compare_rdms", "noise_ceiling", "group_ttest",
                     "roi_rsa", "summarize"], ".rsa"),
    "searchlight_rsa": ".searchlight", "searchlight_spheres": ".searchlight",
    **dict.fromkeys(["EncodingModel", "fit_encoding", "voxel_noise_ceiling"], ".encoding"),
    **dict.fromkeys(["CaptionReconstructor", "CaptionCorpus", "evaluate_reconstruction",
                     "summarize_reconstruction"], ".captions"),
    **dict.fromkeys(["ImageToTextNetwork", "train_networks"], ".image_networks"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
