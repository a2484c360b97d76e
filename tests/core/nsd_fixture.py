"""A miniature Natural Scenes Dataset tree with the real file names and formats, and what was planted in it.

What is kept from the real NSD (so that a reader that works here works on the real data):

- ``nsddata/experiments/nsd/nsd_expdesign.mat``: ``masterordering`` (1 × n_trials, 1-based column of
  ``subjectim``), ``subjectim`` (8 × n_images_per_subject, 1-based nsdId), ``sharedix``; the first
  ``n_shared`` columns of ``subjectim`` are the same images for every subject (the shared1000).
- ``nsddata/experiments/nsd/nsd_stim_info_merged.csv`` with an unnamed index column, ``cocoId``,
  ``cocoSplit``, ``cropBox``, ``loss``, ``nsdId`` (0-based), ``flagged``, ``BOLD5000``, ``shared1000``,
  ``subjectK`` and ``subjectK_rep0..2`` (1-based trial numbers, 0 = not shown).
- ``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5``: dataset
  ``betas``, int16 = percent signal change × 300, axes reversed relative to NIfTI (trials, z, y, x),
  chunked one voxel × all trials; or ``betas_sessionNN.nii.gz`` (x, y, z, trials) int16; ``ncsnr.nii.gz``.
- ``nsddata/ppdata/subjXX/func1pt8mm/``: ``brainmask.nii.gz``, ``T1_to_func1pt8mm.nii.gz``,
  ``roi/nsdgeneral.nii.gz`` (-1 outside the brain, 0, 1 = in), ``roi/floc-*.nii.gz``,
  ``roi/prf-visualrois.nii.gz``, ``roi/streams.nii.gz``; label names in
  ``nsddata/freesurfer/subjXX/label/NAME.mgz.ctab``.
- COCO captions in ``nsddata_stimuli/stimuli/nsd/annotations/captions_{train,val}2017.json``; images in
  ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5`` (``imgBrick``, n × H × W × 3 uint8).

What is made small: the grid (per-subject shapes differ, as in NSD), the number of images, sessions and
trials per session, and the image size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

CTAB = {
    "nsdgeneral": {1: "nsdgeneral"},
    "floc-faces": {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-bodies": {1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-places": {1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-words": {1: "OWFA", 2: "VWFA-1", 3: "VWFA-2", 4: "mfs-words", 5: "mTL-words"},
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral",
                6: "lateral", 7: "parietal"},
}
COCO_CATEGORIES = [(1, "person"), (18, "dog"), (17, "cat"), (59, "pizza"), (7, "train"), (9, "boat"),
                   (85, "clock"), (15, "bench"), (3, "car"), (25, "giraffe")]
WORDS = ["dog", "cat", "pizza", "train", "man", "woman", "house", "boat", "clock", "bench"]


@dataclass
class PlantedSubject:
    """What was written for one subject (voxel order = C order of the nsdgeneral mask)."""

    mask: np.ndarray
    affine: np.ndarray
    raw: dict[int, np.ndarray]           # session → int16 (n_trials_in_session, n_voxels)
    nsd_ids: dict[int, np.ndarray]       # session → 0-based nsdId per trial
    ncsnr: np.ndarray                    # (n_voxels,)
    anat: np.ndarray
    rois: dict[str, np.ndarray] = field(default_factory=dict)

    def expected(self, sessions, zscore: bool = True) -> np.ndarray:
        """Responses a correct reader returns: int16 ÷ 300, z-scored per voxel within each session."""
        out = []
        for s in sessions:
            x = self.raw[s].astype(np.float64) / 300.0
            if zscore:
                sd = x.std(axis=0)
                varies = sd > 1e-9
                x = np.where(varies, (x - x.mean(axis=0)) / np.where(varies, sd, 1.0), 0.0)
            out.append(x)
        return np.concatenate(out).astype(np.float32)


@dataclass
class PlantedNSD:
    root: Path
    subjects: dict[int, PlantedSubject]
    captions: dict[int, list[str]]       # nsdId → captions
    categories: dict[int, list[str]]     # nsdId → sorted COCO category names
    shared: np.ndarray                   # bool per nsdId (shared1000 column)
    coco_ids: np.ndarray                 # cocoId per nsdId
    pixels: np.ndarray                   # imgBrick content
    trials_per_session: int
    n_sessions_written: int
    n_sessions_design: int


def _affine(shape, voxel=1.8) -> np.ndarray:
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = -voxel * (np.asarray(shape) - 1) / 2.0
    return aff


def _save(data: np.ndarray, affine: np.ndarray, path: Path, dtype=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype) if dtype is not None else data, affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, str(path))


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return d <= 1.0


def _closest_voxels(region: np.ndarray, centre, n: int) -> np.ndarray:
    """The ``n`` voxels of ``region`` closest to ``centre`` (ties broken by C order), as a bool volume."""
    coords = np.argwhere(region)
    d = ((coords - np.asarray(centre)) ** 2).sum(axis=1)
    keep = coords[np.argsort(d, kind="stable")[:n]]
    out = np.zeros(region.shape, dtype=bool)
    out[tuple(keep.T)] = True
    return out


def write_betas_hdf5(path: Path, volume_trials_first: np.ndarray | None = None, *, shape=None,
                     n_trials=None, fill_plane=None) -> None:
    """Write an NSD-style betas file: dataset ``betas`` (trials, z, y, x) int16, one chunk per voxel.

    Either give the whole array in h5py order, or ``fill_plane(z) -> (n_trials, y, x) int16`` with the
    NIfTI ``shape`` (x, y, z) and ``n_trials`` to write plane by plane without holding the whole session.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if volume_trials_first is not None:
            f.create_dataset("betas", data=volume_trials_first.astype(np.int16),
                             chunks=(volume_trials_first.shape[0], 1, 1, 1))
            return
        x, y, z = shape
        ds = f.create_dataset("betas", shape=(n_trials, z, y, x), dtype=np.int16, chunks=(n_trials, 1, 1, 1))
        for k in range(z):
            ds[:, k, :, :] = fill_plane(k)


def make_nsd_tree(root: str | Path, *, subjects=(1, 2), shapes=None, n_sessions: int = 3,
                  n_sessions_design: int = 4, trials_per_session: int = 75, n_shared: int = 20,
                  n_images: int = 700, image_size: int = 16, fmt: str = "hdf5", seed: int = 0,
                  ) -> PlantedNSD:
    """Write a miniature NSD under ``root`` and return what was planted.

    Each subject sees ``n_sessions_design * trials_per_session / 3`` images three times (as in NSD, where
    10,000 images × 3 = 30,000 trials = 40 sessions × 750); only the first ``n_sessions`` session files are
    written, so asking for a later session finds a missing file. ``fmt`` is ``"hdf5"``, ``"nifti"`` or
    ``"both"`` for the betas files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if shapes is None:
        shapes = {s: (9 + (s % 2), 10 - (s % 3 == 0), 8) for s in range(1, 9)}
    design = write_design(root, n_sessions_design=n_sessions_design, trials_per_session=trials_per_session,
                          n_shared=n_shared, n_images=n_images, image_size=image_size, rng=rng)
    planted = {}
    for s in subjects:
        planted[s] = _write_subject(root, s, shapes[s], design["subjectim"], design["masterordering"],
                                    n_sessions, trials_per_session, fmt, rng)
    return PlantedNSD(root=root, subjects=planted, captions=design["captions"],
                      categories=design["categories"], shared=design["shared"],
                      coco_ids=design["coco_ids"], pixels=design["pixels"],
                      trials_per_session=trials_per_session, n_sessions_written=n_sessions,
                      n_sessions_design=n_sessions_design)


def write_design(root: Path, *, n_sessions_design: int, trials_per_session: int, n_shared: int,
                 n_images: int, image_size: int, rng: np.random.Generator) -> dict:
    """Write the files every subject shares: design .mat, stimulus table, COCO captions, image brick."""
    n_design_trials = n_sessions_design * trials_per_session
    if n_design_trials % 3:
        raise ValueError("n_sessions_design * trials_per_session must be a multiple of 3")
    per_subject = n_design_trials // 3

    # Experimental design: subjectim (8 × per_subject, 1-based nsdIds); the first n_shared columns shared.
    all_ids = rng.permutation(n_images)
    shared_ids = all_ids[:n_shared]
    rest = all_ids[n_shared:]
    n_own = per_subject - n_shared
    if len(rest) < 8 * n_own:
        raise ValueError(f"n_images must be at least {n_shared + 8 * n_own}")
    subjectim = np.zeros((8, per_subject), dtype=np.int64)
    for s in range(8):                          # as in NSD, non-shared images are seen by one subject only
        subjectim[s] = np.concatenate([shared_ids, rest[s * n_own:(s + 1) * n_own]]) + 1
    # masterordering: every column shown 3 times, in random order, same for all subjects (as in NSD).
    masterordering = rng.permutation(np.repeat(np.arange(1, per_subject + 1), 3))
    exp = root / "nsddata" / "experiments" / "nsd"
    exp.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(exp / "nsd_expdesign.mat", {
        "masterordering": masterordering[None, :].astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": (np.arange(1, n_shared + 1)[None, :]).astype(np.float64),
        "basiccnt": np.zeros((3, n_sessions_design)),
        "stimpattern": np.zeros((n_sessions_design, 12, 75), dtype=np.uint8),
    })

    # Stimulus information (one row per nsdId in the whole image set).
    coco_ids = rng.choice(np.arange(100_000, 600_000), size=n_images, replace=False)
    split = np.where(rng.random(n_images) < 0.2, "val2017", "train2017")
    shared = np.zeros(n_images, dtype=bool)
    shared[shared_ids] = True
    info = {"cocoId": coco_ids, "cocoSplit": split,
            "cropBox": ["(0, 0, 0.1671875, 0.1671875)"] * n_images,
            "loss": np.zeros(n_images), "nsdId": np.arange(n_images), "flagged": np.zeros(n_images, bool),
            "BOLD5000": np.zeros(n_images, bool), "shared1000": shared}
    for s in range(1, 9):
        info[f"subject{s}"] = np.isin(np.arange(n_images), subjectim[s - 1] - 1).astype(np.int64)
    for s in range(1, 9):
        reps = np.zeros((n_images, 3), dtype=np.int64)
        shown = subjectim[s - 1, masterordering - 1] - 1            # nsdId of every trial
        order = np.argsort(shown, kind="stable")                     # trials of one image in time order
        repeat = np.arange(len(shown)) - np.searchsorted(shown[order], shown[order])
        reps[shown[order], repeat] = order + 1                       # 1-based trial numbers
        for r in range(3):
            info[f"subject{s}_rep{r}"] = reps[:, r]
    pd.DataFrame(info).to_csv(exp / "nsd_stim_info_merged.csv")

    # COCO captions, 5 per image (6 for some), split by cocoSplit as in COCO 2017.
    captions: dict[int, list[str]] = {}
    ann = {"train2017": [], "val2017": []}
    images = {"train2017": [], "val2017": []}
    ann_id = 1
    for nsd in range(n_images):
        k = 5 + int(nsd % 7 == 0)
        caps = [f"A {WORDS[(nsd + j) % len(WORDS)]} number {nsd} seen {j}. " for j in range(k)]
        captions[nsd] = [c.strip() for c in caps]
        images[split[nsd]].append({"id": int(coco_ids[nsd]), "file_name": f"{coco_ids[nsd]:012d}.jpg"})
        for c in caps:
            ann[split[nsd]].append({"image_id": int(coco_ids[nsd]), "id": ann_id, "caption": c})
            ann_id += 1
    annot = root / "nsddata_stimuli" / "stimuli" / "nsd" / "annotations"
    annot.mkdir(parents=True, exist_ok=True)
    for sp in ("train2017", "val2017"):
        (annot / f"captions_{sp}.json").write_text(json.dumps(
            {"info": {"description": "COCO 2017"}, "licenses": [], "images": images[sp],
             "annotations": ann[sp]}))

    # COCO object instances: 1-3 objects per image (a category may repeat); categories = sorted names.
    categories: dict[int, list[str]] = {}
    inst = {"train2017": [], "val2017": []}
    for nsd in range(n_images):
        objs = [nsd % 10] if nsd % 11 == 0 else [nsd % 10, (3 * nsd) % 10, nsd % 10]
        categories[nsd] = sorted({COCO_CATEGORIES[o][1] for o in objs})
        for o in objs:
            inst[split[nsd]].append({"image_id": int(coco_ids[nsd]), "category_id": COCO_CATEGORIES[o][0],
                                     "id": ann_id, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0,
                                     "segmentation": [[0, 0, 1, 0, 1, 1]]})
            ann_id += 1
    for sp in ("train2017", "val2017"):
        (annot / f"instances_{sp}.json").write_text(json.dumps(
            {"info": {"description": "COCO 2017"}, "licenses": [], "images": images[sp],
             "annotations": inst[sp],
             "categories": [{"id": i, "name": n, "supercategory": "thing"} for i, n in COCO_CATEGORIES]}))

    # Images: imgBrick (n, H, W, 3) uint8; image k has a recognisable pattern.
    pixels = np.zeros((n_images, image_size, image_size, 3), dtype=np.uint8)
    pixels[:, :, :, 0] = (np.arange(n_images) % 256)[:, None, None]
    pixels[:, :, :, 1] = (np.arange(n_images) // 256)[:, None, None]
    pixels[:, :, :, 2] = np.arange(image_size)[None, None, :] * 7
    with h5py.File(root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=pixels, chunks=(1, image_size, image_size, 3))

    return {"subjectim": subjectim, "masterordering": masterordering, "captions": captions, "shared": shared,
            "coco_ids": coco_ids, "pixels": pixels, "categories": categories}


def _write_subject(root: Path, s: int, shape, subjectim, masterordering, n_sessions, tps, fmt, rng):
    sub = f"subj{s:02d}"
    aff = _affine(shape)
    centre = (np.asarray(shape) - 1) / 2.0
    brain = _ellipsoid(shape, centre, np.asarray(shape) / 2.0 - 0.5)
    general = brain & _ellipsoid(shape, centre + [0, -1.5, 0], np.asarray(shape) / 3.0)
    ppdir = root / "nsddata" / "ppdata" / sub / "func1pt8mm"
    _save(brain.astype(np.int16), aff, ppdir / "brainmask.nii.gz", np.int16)
    anat = np.where(brain, rng.uniform(200, 900, shape), 0.0).astype(np.float32)
    _save(anat, aff, ppdir / "T1_to_func1pt8mm.nii.gz", np.float32)
    nsdgeneral = np.where(brain, general.astype(np.int16), -1).astype(np.int16)
    _save(nsdgeneral, aff, ppdir / "roi" / "nsdgeneral.nii.gz", np.int16)
    rois = {"nsdgeneral": np.where(nsdgeneral > 0, 1, 0)}
    label_dir = root / "nsddata" / "freesurfer" / sub / "label"
    label_dir.mkdir(parents=True, exist_ok=True)
    for name, names in CTAB.items():
        lines = ["0 Unknown"] + [f"{k} {v}" for k, v in names.items()]
        (label_dir / f"{name}.mgz.ctab").write_text("\n".join(lines) + "\n")
        if name == "nsdgeneral":
            continue
        labels = np.where(brain, rng.integers(0, max(names) + 1, size=shape), -1).astype(np.int16)
        if name == "floc-words":
            labels[labels == max(names)] = 0          # a label with a name but no voxel
        _save(labels, aff, ppdir / "roi" / f"{name}.nii.gz", np.int16)
        rois[name] = np.where(labels > 0, labels, 0)

    mask = nsdgeneral > 0
    betas_dir = root / "nsddata_betas" / "ppdata" / sub / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
    betas_dir.mkdir(parents=True, exist_ok=True)
    ncsnr = np.where(brain, rng.uniform(0.0, 1.2, shape), 0.0).astype(np.float32)
    _save(ncsnr, aff, betas_dir / "ncsnr.nii.gz", np.float32)
    raw, ids = {}, {}
    for sess in range(1, n_sessions + 1):
        t0 = (sess - 1) * tps
        cols = masterordering[t0:t0 + tps]
        ids[sess] = subjectim[s - 1, cols - 1] - 1
        # percent signal change with a session offset and a voxel scale, stored ×300 as int16
        psc = rng.normal(0.5 * sess, 1.0 + 0.1 * sess, size=(tps,) + tuple(shape))
        psc *= rng.uniform(0.5, 2.0, size=shape)
        vol = np.clip(np.rint(psc * 300), -32768, 32767).astype(np.int16)
        vol[:, ~brain] = 0
        if sess == 1:
            first = np.argwhere(mask)[0]
            vol[:, first[0], first[1], first[2]] = 17      # a constant voxel: z-score must give 0, not NaN
        raw[sess] = vol[:, mask]
        if fmt in ("hdf5", "both"):
            write_betas_hdf5(betas_dir / f"betas_session{sess:02d}.hdf5", vol.transpose(0, 3, 2, 1))
        if fmt in ("nifti", "both"):
            _save(np.moveaxis(vol, 0, -1), aff, betas_dir / f"betas_session{sess:02d}.nii.gz", np.int16)
    return PlantedSubject(mask=mask, affine=aff, raw=raw, nsd_ids=ids, ncsnr=ncsnr[mask], anat=anat,
                          rois=rois)
