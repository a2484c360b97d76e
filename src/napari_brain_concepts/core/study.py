"""The data model: a :class:`Study` holds :class:`Stimuli` and one :class:`Subject` per participant.

Responses are float32 (n_trials, n_voxels); the boolean ``mask`` maps the voxel axis back to the volume
(voxel order = C-order of the mask's True voxels). Every constructor validates shapes, ids, affines and
dtypes and raises :class:`~napari_brain_concepts.core.errors.InputError` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

EMBEDDING_KINDS = ("image", "text", "caption-mean", "features")
_CHECK_CHUNK_BYTES = 4 * 2**20


def _first_nonfinite(values: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or Inf of a 2D array (row-major order), or ``None`` when all are finite.

    Checked in blocks of rows, so the boolean temporary stays a few megabytes however large the array is
    (a 40-session NSD subject's responses take 1.9 GB; a whole-array ``np.isfinite`` would add 470 MB).
    """
    if values.dtype.kind in "iub":
        return None
    rows = max(1, _CHECK_CHUNK_BYTES // max(1, values.shape[1]))
    for r0 in range(0, values.shape[0], rows):
        ok = np.isfinite(values[r0:r0 + rows])
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            return (r0 + int(bad[0]), int(bad[1]))
    return None


def _check_affine(affine: Any, where: str) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(where, f"affine has shape {affine.shape}, expected (4, 4)",
                         "give a 4x4 voxel-to-mm affine")
    if not np.all(np.isfinite(affine)):
        raise InputError(where, "affine contains NaN or Inf", "fix the image header (sform/qform)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(where, "affine is singular (zero voxel size)", "fix the image header's voxel sizes")
    return affine


@dataclass(repr=False)
class Embedding:
    """Features of every stimulus, rows in stimulus order."""

    name: str
    values: np.ndarray
    model: str = ""
    kind: str = "features"
    normalized: bool = False

    def __repr__(self) -> str:
        shape = "×".join(map(str, np.shape(self.values)))
        return f"Embedding({self.name!r}, {shape}, model={self.model!r}, kind={self.kind!r})"

    def __post_init__(self):
        values = np.asarray(self.values)
        where = f"embedding {self.name!r}"
        if values.ndim != 2:
            raise InputError(where, f"has {values.ndim} dimensions, expected 2 (n_stimuli, d)",
                             "save embeddings as a 2D float array")
        if not np.issubdtype(values.dtype, np.floating):
            raise InputError(where, f"has dtype {values.dtype}, expected float", "save it as float32")
        if _first_nonfinite(values) is not None:
            raise InputError(where, "contains NaN or Inf", "recompute the embedding")
        if self.kind not in EMBEDDING_KINDS:
            raise InputError(where, f"kind {self.kind!r} is unknown",
                             f"use one of {', '.join(EMBEDDING_KINDS)}")
        self.values = values.astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass(repr=False)
class Stimuli:
    """The images shown: ids, captions, categories, optional images and precomputed embeddings.

    Images are either held in memory (``pixels``: uint8 (n, H, W, 3)) or given as paths relative to
    ``root`` (``image_paths``; ``None`` for a stimulus without an image file). ``test`` (optional, bool per
    stimulus) marks a test set shared by all subjects (NSD's shared1000; column ``test`` in stimuli.tsv).
    ``image_source`` (optional) reads images lazily: called with a stimulus row ``i`` it returns uint8
    (H, W, 3) pixels (e.g. :class:`~napari_brain_concepts.core.io.nsd.NsdImages` on NSD's 40 GB brick);
    it is used when ``pixels`` is ``None``.
    """

    ids: np.ndarray
    captions: list[list[str]]
    categories: list[list[str]] = field(default_factory=list)
    image_paths: list[str | None] = field(default_factory=list)
    pixels: np.ndarray | None = None
    root: Path | None = None
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    test: np.ndarray | None = None
    image_source: Callable[[int], np.ndarray] | None = None
    #: names of the embeddings that analysis steps added (:meth:`add_embedding`), as opposed to the study's own
    added_embeddings: set[str] = field(default_factory=set, init=False, repr=False)

    def __repr__(self) -> str:
        images = ("in memory" if self.pixels is not None else "read on use" if self.image_source is not None
                  else "files" if any(self.image_paths) else "none")
        test = "none" if self.test is None else int(np.sum(self.test))
        return (f"Stimuli({len(self.ids)} stimuli, {sum(map(len, self.captions))} captions, "
                f"categories={any(self.categories)}, images={images}, test={test}, "
                f"embeddings={list(self.embeddings)})")

    def __post_init__(self):
        ids = np.asarray([str(i) for i in self.ids], dtype=object)
        where = "stimuli"
        if ids.ndim != 1 or len(ids) == 0:
            raise InputError(where, "no stimulus ids", "list at least one stimulus in stimuli.tsv")
        uniq, counts = np.unique(ids.astype(str), return_counts=True)
        if np.any(counts > 1):
            dup = ", ".join(uniq[counts > 1][:5])
            raise InputError(where, f"duplicate stimulus ids: {dup}", "give every stimulus a unique id")
        if any(i.strip() == "" for i in ids):
            raise InputError(where, "an empty stimulus id", "give every stimulus a non-empty id")
        self.ids = ids
        n = len(ids)
        if len(self.captions) != n:
            raise InputError(where, f"{len(self.captions)} caption lists for {n} stimuli",
                             "give one caption list per stimulus (empty allowed)")
        self.captions = [[str(c) for c in caps if str(c).strip()] for caps in self.captions]
        if not self.categories:
            self.categories = [[] for _ in range(n)]
        if len(self.categories) != n:
            raise InputError(where, f"{len(self.categories)} category lists for {n} stimuli",
                             "give one category list per stimulus (empty allowed)")
        self.categories = [[str(c).strip() for c in cats if str(c).strip()] for cats in self.categories]
        if not self.image_paths:
            self.image_paths = [None] * n
        if len(self.image_paths) != n:
            raise InputError(where, f"{len(self.image_paths)} image paths for {n} stimuli",
                             "give one image path per stimulus (None when absent)")
        if self.pixels is not None:
            px = np.asarray(self.pixels)
            if px.ndim != 4 or px.shape[0] != n or px.shape[-1] != 3 or px.dtype != np.uint8:
                raise InputError(where, f"pixels have shape {px.shape} and dtype {px.dtype}",
                                 f"give uint8 pixels of shape ({n}, H, W, 3)")
        if self.test is not None:
            test = np.asarray(self.test)
            if test.shape != (n,):
                raise InputError(where, f"test flags have shape {test.shape} for {n} stimuli",
                                 "give one 0/1 test flag per stimulus")
            self.test = test.astype(bool)
        for name, emb in self.embeddings.items():
            if emb.values.shape[0] != n:
                raise InputError(f"embedding {name!r}", f"has {emb.values.shape[0]} rows for {n} stimuli",
                                 "recompute it with one row per stimulus, in stimuli.tsv order")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[str, int]:
        """Stimulus id → row."""
        return {sid: i for i, sid in enumerate(self.ids)}

    @property
    def has_images(self) -> bool:
        return (self.pixels is not None or self.image_source is not None
                or any(p is not None for p in self.image_paths))

    def image(self, i: int):
        """Stimulus ``i`` as an RGB PIL image (from memory or from disk)."""
        from PIL import Image, UnidentifiedImageError

        if self.pixels is not None:
            return Image.fromarray(np.asarray(self.pixels[i]))
        if self.image_source is not None:
            return Image.fromarray(np.asarray(self.image_source(i), dtype=np.uint8)).convert("RGB")
        rel = self.image_paths[i]
        if rel is None:
            raise InputError(f"stimulus {self.ids[i]}", "has no image", "add an image column to stimuli.tsv")
        path = Path(rel) if self.root is None else Path(self.root) / rel
        if not path.is_file():
            raise InputError(path, "image file is missing", "put the image there or fix stimuli.tsv")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(path, f"image cannot be read ({err})", "replace it with a PNG or JPEG") from err

    def add_embedding(self, emb: Embedding) -> None:
        """Add (or replace) an embedding computed for these stimuli; :meth:`is_given` tells it from the
        study's own."""
        if emb.values.shape[0] != len(self):
            raise InputError(f"embedding {emb.name!r}", f"has {emb.values.shape[0]} rows for {len(self)} stimuli",
                             "compute it with one row per stimulus")
        self.embeddings[emb.name] = emb
        self.added_embeddings.add(emb.name)

    def is_given(self, name: str) -> bool:
        """True when embedding ``name`` came with the study (its folder's ``embeddings/``, or the stimuli as
        built), not from :meth:`add_embedding` (a step of an analysis)."""
        return name in self.embeddings and name not in self.added_embeddings


@dataclass(repr=False)
class RoiAtlas:
    """A label volume (0 = none) and the names of its labels."""

    labels: np.ndarray
    names: dict[int, str]

    def __repr__(self) -> str:
        return f"RoiAtlas({len(self.names)} regions: {', '.join(self.names.values())})"

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if not np.issubdtype(self.labels.dtype, np.integer):
            rounded = np.rint(self.labels)
            if not np.allclose(rounded, self.labels):
                raise InputError("ROI volume", "has non-integer labels", "save ROI volumes as integer labels")
            self.labels = rounded
        self.labels = self.labels.astype(np.int32)
        present = {int(v) for v in np.unique(self.labels) if v != 0}
        self.names = {int(k): str(v) for k, v in self.names.items()}
        for v in present - set(self.names):
            self.names[v] = f"label {v}"

    def region(self, name_or_label: str | int) -> np.ndarray:
        """Boolean volume of one region, by name or label value."""
        if isinstance(name_or_label, str):
            match = [k for k, v in self.names.items() if v == name_or_label]
            if not match:
                raise InputError("ROI", f"no region named {name_or_label!r}",
                                 f"choose one of {', '.join(self.names.values())}")
            return np.isin(self.labels, match)
        return self.labels == int(name_or_label)


@dataclass(repr=False)
class Subject:
    """One participant: single-trial responses inside a mask, in the participant's own space."""

    name: str
    responses: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    stimulus_ids: np.ndarray
    sessions: np.ndarray | None = None
    anat: np.ndarray | None = None
    anat_affine: np.ndarray | None = None
    rois: dict[str, RoiAtlas] = field(default_factory=dict)
    to_common: np.ndarray | None = None
    ncsnr: np.ndarray | None = None

    def __repr__(self) -> str:
        size = "×".join(f"{v:g}" for v in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))
        sessions = "" if self.sessions is None else f", {len(np.unique(self.sessions))} sessions"
        return (f"Subject({self.name!r}, {np.shape(self.responses)[0]} trials × {int(np.sum(self.mask))} voxels "
                f"on a {'×'.join(map(str, np.shape(self.mask)))} grid of {size} mm{sessions}, "
                f"ROIs={list(self.rois)})")

    def __post_init__(self):
        where = f"subject {self.name}"
        mask = np.asarray(self.mask)
        if mask.ndim != 3:
            raise InputError(f"{where} mask", f"has {mask.ndim} dimensions, expected 3",
                             "give a 3D mask volume (nonzero = analysed voxels)")
        self.mask = mask != 0
        n_vox = int(self.mask.sum())
        if n_vox == 0:
            raise InputError(f"{where} mask", "is empty (no nonzero voxel)", "give a mask with analysed voxels")
        self.affine = _check_affine(self.affine, f"{where} affine")
        resp = np.asarray(self.responses)
        if resp.ndim != 2:
            raise InputError(f"{where} responses", f"have {resp.ndim} dimensions, expected 2",
                             "give responses as (n_trials, n_voxels)")
        if not (np.issubdtype(resp.dtype, np.floating) or np.issubdtype(resp.dtype, np.integer)):
            raise InputError(f"{where} responses", f"have dtype {resp.dtype}", "give numeric responses")
        if resp.shape[1] != n_vox:
            raise InputError(f"{where} responses", f"have {resp.shape[1]} voxels but the mask has {n_vox}",
                             "use the mask the responses were extracted with")
        self.responses = resp.astype(np.float32, copy=False)
        bad = _first_nonfinite(self.responses)
        if bad is not None:
            raise InputError(f"{where} responses", f"contain NaN or Inf (first at trial {bad[0]}, voxel {bad[1]})",
                             "remove those voxels from the mask or fill them before loading")
        ids = np.asarray([str(s) for s in self.stimulus_ids], dtype=object)
        if ids.shape != (resp.shape[0],):
            raise InputError(f"{where} trials", f"list {ids.size} trials but responses have {resp.shape[0]}",
                             "give one trials.tsv row per response trial, in order")
        self.stimulus_ids = ids
        if self.sessions is None:
            self.sessions = np.zeros(len(ids), dtype=np.int64)
        self.sessions = np.asarray(self.sessions).astype(np.int64)
        if self.sessions.shape != ids.shape:
            raise InputError(f"{where} trials", "session column length differs from the trials",
                             "give one session per trial")
        if self.anat is not None:
            self.anat = np.asarray(self.anat, dtype=np.float32)
            if self.anat.ndim != 3:
                raise InputError(f"{where} anat", f"has {self.anat.ndim} dimensions", "give a 3D anatomy")
            self.anat_affine = _check_affine(self.affine if self.anat_affine is None else self.anat_affine,
                                             f"{where} anat affine")
        for rname, atlas in self.rois.items():
            if atlas.labels.shape != self.mask.shape:
                raise InputError(f"{where} roi {rname}", f"has shape {atlas.labels.shape}, mask has {self.mask.shape}",
                                 "resample the ROI volume to the subject's grid")
        if self.to_common is not None:
            self.to_common = _check_affine(self.to_common, f"{where} to_common")
        if self.ncsnr is not None:
            self.ncsnr = np.asarray(self.ncsnr, dtype=np.float32).ravel()
            if self.ncsnr.shape != (n_vox,):
                raise InputError(f"{where} ncsnr", f"has {self.ncsnr.size} values for {n_vox} voxels",
                                 "give one ncsnr value per masked voxel")

    @property
    def n_voxels(self) -> int:
        return int(self.responses.shape[1])

    @property
    def session_numbers(self) -> list[int]:
        """The sessions the trials come from, sorted (empty when none is given)."""
        return [] if self.sessions is None else sorted(int(s) for s in np.unique(self.sessions))

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.mask.shape)

    @property
    def voxel_indices(self) -> np.ndarray:
        """(n_voxels, 3) voxel coordinates of the masked voxels in C order."""
        return np.argwhere(self.mask)

    @property
    def voxel_size(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def to_volume(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Put per-voxel values (n_voxels,) or (k, n_voxels) back into the volume: (X, Y, Z) or (k, X, Y, Z)."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_voxels:
            raise InputError(f"subject {self.name}", f"{values.shape[-1]} values for {self.n_voxels} voxels",
                             "give one value per masked voxel")
        out = np.full(values.shape[:-1] + self.mask.shape, fill, dtype=values.dtype)
        out[..., self.mask] = values
        return out

    def from_volume(self, volume: np.ndarray) -> np.ndarray:
        """Read per-voxel values out of a volume on the subject's grid."""
        volume = np.asarray(volume)
        if volume.shape[-3:] != self.mask.shape:
            raise InputError(f"subject {self.name}", f"volume has shape {volume.shape}, grid is {self.mask.shape}",
                             "resample the volume to the subject's grid")
        return volume[..., self.mask]

    def same_space(self, other: Subject) -> bool:
        return self.mask.shape == other.mask.shape and np.allclose(self.affine, other.affine, atol=1e-4)


@dataclass(repr=False)
class Study:
    """A study: stimuli, subjects, and (for synthetic studies) the planted truth."""

    name: str
    stimuli: Stimuli
    subjects: dict[str, Subject]
    space: str = "native"
    tr: float | None = None
    truth: dict[str, Any] | None = None
    path: Path | None = None

    def __repr__(self) -> str:
        where = f", path='{self.path}'" if self.path is not None else ""
        truth = ", with planted truth" if self.truth else ""
        return (f"Study({self.name!r}, {len(self.stimuli.ids)} stimuli, subjects={list(self.subjects)}, "
                f"space={self.space!r}{where}{truth})")

    def __post_init__(self):
        if not self.subjects:
            raise InputError(f"study {self.name}", "has no subjects", "add a subjects/SUBJ folder")
        known = set(self.stimuli.ids)
        for sname, subj in self.subjects.items():
            unknown = sorted(set(subj.stimulus_ids) - known)
            if unknown:
                raise InputError(f"subject {sname} trials", f"{len(unknown)} unknown stimulus ids (e.g. {unknown[0]!r})",
                                 "list every shown stimulus in stimuli.tsv")

    @property
    def subject_names(self) -> list[str]:
        return list(self.subjects)

    def subject(self, name: str | None = None) -> Subject:
        if name is None:
            return next(iter(self.subjects.values()))
        if name not in self.subjects:
            raise InputError(f"study {self.name}", f"no subject {name!r}",
                             f"choose one of {', '.join(self.subjects)}")
        return self.subjects[name]

    def embedding(self, name: str | None = None) -> Embedding:
        embs = self.stimuli.embeddings
        if not embs:
            raise InputError(f"study {self.name}", "has no embeddings",
                             "add caption_1, caption_2, … columns to stimuli.tsv (the embed step computes the "
                             "'captions' embedding from them), or save one as embeddings/NAME.npy")
        if name is None:
            return next(iter(embs.values()))
        if name not in embs:
            raise InputError(f"study {self.name}", f"no embedding {name!r}",
                             f"choose one of {', '.join(embs)} (the step's embedding parameter, e.g. "
                             f"--param decode.embedding={next(iter(embs))})")
        return embs[name]

    def fingerprint(self) -> str:
        """A short hash of the study's data: stimulus ids and test flags, and per subject the mask, the trials
        and a sample of the responses (64 trials, so that reading NSD-sized responses stays cheap).

        Results record it, so that results are not continued or shown with other data under the same study
        name. Embeddings are left out: steps add them to the study as they run.
        """
        import hashlib

        h = hashlib.sha256()

        def add(*parts: Any) -> None:
            for part in parts:
                h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())

        test = self.stimuli.test
        add(self.name, list(map(str, self.stimuli.ids)), None if test is None else np.asarray(test, bool))
        for name, subj in self.subjects.items():
            n = len(subj.responses)
            add(name, subj.responses.shape, np.asarray(subj.mask, bool), list(map(str, subj.stimulus_ids)),
                None if subj.sessions is None else np.asarray(subj.sessions),
                np.asarray(subj.responses[:: max(1, n // 64)], dtype=np.float32))
        return h.hexdigest()[:16]

    def trial_rows(self, subject: Subject) -> np.ndarray:
        """Row in ``stimuli`` of every trial of ``subject``."""
        index = self.stimuli.index
        return np.fromiter((index[s] for s in subject.stimulus_ids), dtype=np.int64,
                           count=len(subject.stimulus_ids))

    def in_one_space(self, names: Sequence[str] | None = None) -> bool:
        subs = [self.subjects[n] for n in (names or self.subject_names)]
        return all(subs[0].same_space(s) for s in subs[1:])
