"""The intervals the analysis's numeric parameters must lie in, in one place.

Each table belongs to the estimator or function named beside it, which checks its own parameters with it (the
library API). The pipeline steps' parameter classes (``DecodeParams.RANGES``, ``MasksParams.RANGES`` …) are made
from the same tables, so that a step's parameters are checked, under the names a user gives them
(``masks.sparsity``), before any step of an analysis runs (:func:`~.pipeline.check_params`) and again when the
step starts (:meth:`~.context.AnalysisContext.step_params`). This module imports nothing heavy, so a parameter
class can take its ranges from here without loading torch.
"""

from __future__ import annotations

from .errors import Range

#: :class:`~.decoding.contrastive.ContrastiveDecoder` (``hidden``: of the MLP only)
CONTRASTIVE: dict[str, Range] = {
    "temperature": Range(0, low_open=True),
    "lr": Range(0, low_open=True),
    "batch_size": Range(2),
    "max_iter": Range(1),
    "noise_std": Range(0),
    "val_fraction": Range(0, 1, high_open=True),
    "eval_every": Range(1),
    "patience": Range(1),
    "n_reruns": Range(1),
    "dropout": Range(0, 1, high_open=True),
    "hidden": Range(1),
}

#: :class:`~.decoding.ridge.RidgeDecoder` (positive alphas, at least 2 folds) and the data split of
#: :func:`~.decoding.prepare.prepare_arrays` (a share of the stimuli in [0, 1), at least one voxel kept): these
#: check their values with code of their own
RIDGE: dict[str, Range] = {"alphas": Range(0, low_open=True), "cv": Range(2)}
SPLIT: dict[str, Range] = {"test_fraction": Range(0, 1, high_open=True), "val_fraction": Range(0, 1, high_open=True),
                           "n_voxels": Range(1)}

#: :class:`~.concepts.basis.ConceptBasis` (``n_components`` must also be a whole number no larger than the
#: embedding's dimension; the basis says so in words of its own)
BASIS: dict[str, Range] = {
    "n_components": Range(1),
    "negative_slope": Range(0.0, 1.0, high_open=True),
    "temperature": Range(0.0, low_open=True),
    "learning_rate": Range(0.0, low_open=True),
    "batch_size": Range(2),
    "n_iter": Range(0),
    "prune_tolerance": Range(0.0, 1.0),
    "prune_pairs": Range(2),
    "skew_weight": Range(0.0),
}

#: :class:`~.concepts.masks.VoxelMaskOptimizer`
MASKS: dict[str, Range] = {
    "sparsity": Range(0.0),
    "learning_rate": Range(0.0, low_open=True),
    "n_steps": Range(1),
    "burn_in": Range(0),
    "eval_every": Range(1),
    "init": Range(0.0, 1.0),
    "threshold": Range(0.0, 1.0, low_open=True),
    "min_decodability": Range(-1.0, 1.0),
    "validation_fraction": Range(0.0, 1.0, high_open=True),
}

#: :class:`~.concepts.shared.SharedConceptClustering` (its ``min_participants`` must also be a whole number; the
#: clustering checks it in words of its own)
SHARED: dict[str, Range] = {"eps": Range(0.0, 2.0, low_open=True), "expand_eps": Range(0.0, 2.0),
                            "min_participants": Range(1)}

#: :func:`~.alignment.rsa.stimulus_subsets` (``subset_size``, ``n_subsets``) and
#: :func:`~.alignment.rsa.group_ttest` (``alpha``, the FDR level)
RSA: dict[str, Range] = {"subset_size": Range(3), "n_subsets": Range(1),
                         "alpha": Range(0, 1, low_open=True, high_open=True)}

#: the searchlight's sphere (:func:`~.alignment.searchlight.searchlight_spheres`): its radius in voxels and the
#: share of it a centre needs in the mask
SEARCHLIGHT: dict[str, Range] = {"radius": Range(0, low_open=True), "threshold": Range(0, 1)}

#: :class:`~.alignment.image_networks.ImageToTextNetwork` (``image_size``, whose low end follows the number of
#: channel stages, is checked by the network itself)
IMAGE_NETWORK: dict[str, Range] = {
    "n_steps": Range(1, 20),
    "pool_grid": Range(1, 8),
    "epochs": Range(0),
    "batch_size": Range(1),
    "lr": Range(0, low_open=True),
}

#: :class:`~.alignment.captions.CaptionReconstructor` and :meth:`~.alignment.captions.CaptionCorpus.nearest`
CAPTIONS: dict[str, Range] = {"top_k": Range(1)}

#: batches of the sentence encoder (:class:`~.embeddings.text.SentenceEncoder`) and the CLIP encoder
#: (:mod:`~.embeddings.clip`), which check their own value too
ENCODER: dict[str, Range] = {"batch_size": Range(1)}


def some(table: dict[str, Range], *names: str) -> dict[str, Range]:
    """The entries ``names`` of ``table`` (a step passes on only some of an estimator's parameters)."""
    return {name: table[name] for name in names}
