"""Concepts decodable from the brain (SDC): the concept basis, concept names, voxel masks per concept,
shared concepts across participants and their validation against localizer regions.

Submodules: :mod:`.basis` (:class:`ConceptBasis`), :mod:`.naming` (:func:`name_directions`),
:mod:`.masks` (:class:`VoxelMaskOptimizer`), :mod:`.truth` (checks against a synthetic study's planted
truth), :mod:`.steps` (pipeline steps ``concepts`` and ``masks``); :mod:`.shared`, :mod:`.overlap`,
:mod:`.localizers`, :mod:`.category_maps` and :mod:`.shared_steps` for shared concepts.
"""

from .basis import ConceptBasis
from .masks import VoxelMaskOptimizer, dice
from .naming import ConceptNames, contact_sheet, name_directions, write_names
from .shared import SharedConceptClustering

__all__ = ["ConceptBasis", "ConceptNames", "SharedConceptClustering", "VoxelMaskOptimizer", "contact_sheet", "dice",
           "name_directions", "write_names"]
