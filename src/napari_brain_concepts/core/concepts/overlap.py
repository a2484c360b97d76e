"""Where participants' concept masks coincide: a common space, pairwise Jaccard/Dice, n-of-N counts.

Subjects whose masks share grid and affine are already in one space and are compared voxel to voxel.
Otherwise every subject needs ``to_common`` (``subjects/SUBJ/to_common.txt``: a 4×4 affine from the
subject's native millimetres to common millimetres); masks are then resampled with nilearn onto the grid
of the first subject carried into the common space (nearest neighbour, so a mask stays a mask).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..errors import InputError
from ..study import Study, Subject


@dataclass
class CommonSpace:
    """The grid masks are compared on, and how each subject reaches it.

    Attributes
    ----------
    shape, affine
        The common grid (voxel → common mm).
    to_common : dict of str to ndarray or None
        Per subject, the native-mm → common-mm affine; ``None`` for every subject when the subjects are
        already in one space (``identity`` is then True).
    native : dict of str to (shape, affine)
        Each subject's own grid.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    to_common: dict[str, np.ndarray | None]
    native: dict[str, tuple[tuple[int, int, int], np.ndarray]]

    @property
    def identity(self) -> bool:
        return all(t is None for t in self.to_common.values())

    @property
    def subjects(self) -> list[str]:
        return list(self.native)

    def resample(self, subject: str, volume: np.ndarray) -> np.ndarray:
        """Carry a boolean volume on ``subject``'s grid onto the common grid."""
        if subject not in self.native:
            raise InputError("parameter subject", f"{subject!r} is not in the common space",
                             f"choose one of {', '.join(self.native)}")
        shape, affine = self.native[subject]
        volume = np.asarray(volume)
        if volume.shape != shape:
            raise InputError(f"mask of subject {subject}", f"has shape {volume.shape}, the subject's grid is {shape}",
                             "give a volume on the subject's own grid")
        volume = volume.astype(bool)
        transform = self.to_common[subject]
        if transform is None:
            return volume
        from nilearn.image import resample_img

        img = nib.Nifti1Image(volume.astype(np.uint8), transform @ affine)
        out = resample_img(img, target_affine=self.affine, target_shape=self.shape, interpolation="nearest",
                           force_resample=True, copy_header=True)
        return np.asarray(out.dataobj) > 0


def common_space(study: Study, subjects: list[str] | None = None) -> CommonSpace:
    """The common space of ``subjects`` (default: all) of ``study``.

    Raises
    ------
    InputError
        When the subjects are not in one space and one of them has no ``to_common`` affine.
    """
    names = list(study.subjects) if subjects is None else list(subjects)
    if not names:
        raise InputError("parameter subjects", "is empty", "give at least one subject")
    missing = [n for n in names if n not in study.subjects]
    if missing:
        raise InputError("parameter subjects", f"unknown subjects {missing}",
                         f"choose among {', '.join(study.subjects)}")
    subs: list[Subject] = [study.subjects[n] for n in names]
    native = {s.name: (s.shape, s.affine) for s in subs}
    first = subs[0]
    if all(first.same_space(s) for s in subs[1:]):
        return CommonSpace(first.shape, first.affine.copy(), {s.name: None for s in subs}, native)
    lacking = [s.name for s in subs if s.to_common is None]
    if lacking:
        who = lacking[0] if len(lacking) == 1 else ", ".join(lacking)
        from ..io.nsd import is_nsd_root

        root = Path(study.stimuli.root) if study.stimuli.root is not None else None
        if is_nsd_root(root):  # NSD: its subjects' own func1pt8mm spaces
            raise InputError(f"NSD at {root}", f"the participants are not in one space (each has its own "
                             f"func1pt8mm grid) and {who} {'has' if len(lacking) == 1 else 'have'} no transform "
                             "to a common space, so their voxels cannot be compared",
                             "read NSD with --to-common FOLDER (subjXX.txt: a 4x4 native-mm → common-mm affine "
                             "each; read_nsd(to_common=…) from Python), or run the shared concepts on one "
                             "subject's grid")
        where = (f"subjects/{lacking[0]}/to_common.txt" if len(lacking) == 1
                 else f"subjects/{{{','.join(lacking)}}}/to_common.txt")
        if root is not None:  # a study folder: the path in it
            where = str(root / where)
        # a sentence of its own: a whole analysis (or a dock's run) that leaves the shared step out says it
        raise InputError(where, f"the participants are not in one space (their mask grids or affines differ) "
                         f"and {who} {'has' if len(lacking) == 1 else 'have'} no to_common.txt, so their voxels "
                         "cannot be compared",
                         "add a 4x4 native-mm → common-mm affine per subject, or resample all subjects to "
                         "one template space")
    return CommonSpace(first.shape, first.to_common @ first.affine, {s.name: s.to_common for s in subs}, native)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|) of two boolean arrays; NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index |A∩B| / |A∪B|; NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union


def pairwise_overlap(masks: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Jaccard and Dice of every pair of subjects' masks (all on one grid).

    Returns a table with columns subject_a, subject_b, voxels_a, voxels_b, intersection, jaccard, dice.
    """
    names = list(masks)
    shapes = {np.asarray(masks[n]).shape for n in names}
    if len(shapes) > 1:
        raise InputError("masks", f"lie on different grids {sorted(shapes)}",
                         "carry them to the common space first (CommonSpace.resample)")
    rows = []
    for a, b in itertools.combinations(names, 2):
        ma, mb = np.asarray(masks[a], bool), np.asarray(masks[b], bool)
        rows.append({"subject_a": a, "subject_b": b, "voxels_a": int(ma.sum()), "voxels_b": int(mb.sum()),
                     "intersection": int((ma & mb).sum()), "jaccard": jaccard(ma, mb), "dice": dice(ma, mb)})
    return pd.DataFrame(rows, columns=["subject_a", "subject_b", "voxels_a", "voxels_b", "intersection",
                                       "jaccard", "dice"])


def overlap_counts(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """n-of-N volume: in how many subjects each common-space voxel is in the mask (int16)."""
    stack = [np.asarray(m, bool) for m in masks.values()]
    if not stack:
        raise InputError("masks", "no mask given", "give one mask per subject")
    if len({m.shape for m in stack}) > 1:
        raise InputError("masks", "lie on different grids", "carry them to the common space first")
    return np.sum(stack, axis=0).astype(np.int16)


def concept_overlap(space: CommonSpace, concept_masks: Mapping[str, Mapping[str, np.ndarray]],
                    store=None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Cross-subject overlap of every concept.

    Parameters
    ----------
    space : CommonSpace
    concept_masks : mapping concept → (subject → boolean volume on that subject's own grid)
    store : ResultsStore, optional
        When given, each concept's n-of-N count volume is written as ``shared/CONCEPT.nii.gz``.

    Returns
    -------
    table : DataFrame
        Pairwise Jaccard/Dice per concept (column ``concept`` added).
    counts : dict of str to ndarray
        n-of-N count volume per concept on the common grid.
    """
    tables, counts = [], {}
    for concept, per_subject in concept_masks.items():
        common = {s: space.resample(s, m) for s, m in per_subject.items()}
        pairs = pairwise_overlap(common)
        pairs.insert(0, "concept", concept)
        tables.append(pairs)
        counts[concept] = overlap_counts(common)
        if store is not None:
            store.write_shared(concept, counts[concept], space.affine)
    table = pd.concat(tables, ignore_index=True) if tables else pairwise_overlap({})
    if not tables:
        table.insert(0, "concept", pd.Series(dtype=str))
    return table, counts
