"""Language-model alignment with the brain (Doerig et al.): RSA, searchlight RSA and encoding models.

Modules: :mod:`.rsa` (RDMs, comparisons, noise ceiling, group statistics, ROI RSA), :mod:`.searchlight`
(batched volumetric searchlight RSA), :mod:`.encoding` (ridge encoding models and predicted maps),
:mod:`.steps` (the ``embed``, ``rsa`` and ``encode`` pipeline steps). Importing the package loads none of
them, so the plugin starts fast.
"""
