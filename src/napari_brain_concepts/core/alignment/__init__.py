"""Language-model alignment with the brain (Doerig et al.): RSA, searchlight RSA and encoding models.

Modules: :mod:`.rsa` (RDMs, comparisons, noise ceiling, group statistics, ROI RSA), :mod:`.searchlight`
(batched volumetric searchlight RSA), :mod:`.encoding` (ridge encoding models and predicted maps),
:mod:`.steps` (the ``embed``, ``rsa`` and ``encode`` pipeline steps). Importing the package loads none of
them, so the plugin starts fast: the names below are imported on first use
(``from napari_brain_concepts.core.alignment import EncodingModel``; SPEC 1 lazy loading).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "rsa": ["correlation_rdm", "upper_triangle", "compare_rdms", "noise_ceiling", "group_ttest", "roi_rsa",
            "summarize"],
    "searchlight": ["searchlight_rsa", "searchlight_spheres"],
    "encoding": ["EncodingModel", "fit_encoding", "voxel_noise_ceiling"],
    "captions": ["CaptionReconstructor", "CaptionCorpus", "evaluate_reconstruction", "summarize_reconstruction"],
    "image_networks": ["ImageToTextNetwork", "train_networks"],
})
