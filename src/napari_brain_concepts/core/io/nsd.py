"""Read the Natural Scenes Dataset (NSD) straight from its folder tree into a :class:`Study`.

The reader streams the single-trial betas one session at a time: it reads only the voxels inside the
analysis mask from each session file (hdf5: only the chunks of the mask's bounding box in each slice;
NIfTI: blocks of trials), converts int16 to percent signal change (÷ 300) and z-scores every voxel
within its session, then writes the block into one preallocated float32 array. No whole-brain array of
all sessions (and no float array of one whole-brain session) is ever held, so a 40-session subject fits
in a desktop's memory (see ``benchmarks/nsd_memory.py``).

Layout (paths relative to the NSD root)::

    nsddata/experiments/nsd/nsd_expdesign.mat          masterordering, subjectim (8 × 10000, 1-based)
    nsddata/experiments/nsd/nsd_stim_info_merged.csv   cocoId, cocoSplit, nsdId, shared1000, subjectK_repR
    nsddata_betas/ppdata/subjXX/func1pt8mm/BETAS/betas_sessionNN.hdf5 (or .nii.gz), ncsnr.nii.gz
    nsddata/ppdata/subjXX/func1pt8mm/brainmask.nii.gz, T1_to_func1pt8mm.nii.gz, roi/NAME.nii.gz
    nsddata/freesurfer/subjXX/label/NAME.mgz.ctab       names of the ROI labels
    nsddata_stimuli/stimuli/nsd/annotations/captions_{train,val}2017.json
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5       imgBrick (73000 × 425 × 425 × 3 uint8)

Trial ``t`` (0-based over the whole experiment; session ``s`` holds trials ``(s-1)·T … s·T-1`` with
``T = 750``) of subject ``k`` shows image ``nsdId = subjectim[k-1, masterordering[t]-1] - 1``; stimulus ids
in the :class:`Study` are ``"nsd-%05d" % nsdId`` (0-based, as in NSD's own image file names).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
import zlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import Progress, run_to_end
from ..study import Embedding, RoiAtlas, Stimuli, Study, Subject
from .volumes import load_nifti

__all__ = ["NSD_ROIS", "NsdImages", "NsdLayout", "load_nsd", "nsd_contents", "nsd_sessions", "nsd_stimulus_id",
           "parse_sessions", "read_nsd"]

BETAS_SCALE = 300.0
DEFAULT_BETAS = "betas_fithrf_GLMdenoise_RR"
NSD_SESSIONS = 40  # sessions per participant in NSD's design (fewer were scanned for some)
NSD_ROIS = ("nsdgeneral", "floc-faces", "floc-bodies", "floc-places", "floc-words", "prf-visualrois",
            "streams")
_SESSION_RE = re.compile(r"^betas_session(\d+)\.(hdf5|nii\.gz|nii)$")
_NIFTI_TRIAL_BLOCK = 50


def nsd_stimulus_id(nsd_id: int) -> str:
    """Stimulus id used in the :class:`Study` for the 0-based NSD image index ``nsd_id``."""
    return f"nsd-{int(nsd_id):05d}"


@dataclass(frozen=True)
class NsdLayout:
    """Where each NSD file lives under ``root``."""

    root: Path
    betas: str = DEFAULT_BETAS

    @property
    def expdesign(self) -> Path:
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_stim_info_merged.csv"

    @property
    def stimuli_dir(self) -> Path:
        return self.root / "nsddata_stimuli" / "stimuli" / "nsd"

    @property
    def images(self) -> Path:
        return self.stimuli_dir / "nsd_stimuli.hdf5"

    def captions(self, split: str, annotations: Path | None = None) -> Path:
        folder = self.stimuli_dir / "annotations" if annotations is None else Path(annotations)
        return folder / f"captions_{split}.json"

    def betas_dir(self, subject: int) -> Path:
        return self.root / "nsddata_betas" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm" / self.betas

    def func_dir(self, subject: int) -> Path:
        return self.root / "nsddata" / "ppdata" / f"subj{subject:02d}" / "func1pt8mm"

    def roi(self, subject: int, name: str) -> Path:
        return self.func_dir(subject) / "roi" / f"{name}.nii.gz"

    def ctab(self, subject: int, name: str) -> Path:
        return self.root / "nsddata" / "freesurfer" / f"subj{subject:02d}" / "label" / f"{name}.mgz.ctab"


# --------------------------------------------------------------------------------------------------
# lazy images


class NsdImages:
    """Lazy access to NSD images in ``nsd_stimuli.hdf5`` (``imgBrick``), one stimulus row at a time.

    Call with a stimulus row ``i`` to get that image as uint8 (H, W, 3). The hdf5 file is opened on
    first use and reopened after pickling (e.g. in a dask worker), so nothing of the 40 GB brick is held.
    """

    def __init__(self, path: str | os.PathLike, nsd_ids: Sequence[int]):
        self.path = Path(path)
        self.nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
        self._file = None
        try:
            import h5py

            with h5py.File(self.path, "r") as f:
                if "imgBrick" not in f:
                    raise InputError(self.path, "has no dataset 'imgBrick'", "use NSD's nsd_stimuli.hdf5")
                shape = f["imgBrick"].shape
        except OSError as err:
            raise InputError(self.path, f"cannot be read as hdf5 ({err})",
                             "re-download nsd_stimuli.hdf5; it may be truncated") from err
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(self.path, f"imgBrick has shape {shape}", "expected (n_images, H, W, 3)")
        if len(self.nsd_ids) and self.nsd_ids.max() >= shape[0]:
            raise InputError(self.path, f"imgBrick holds {shape[0]} images but nsdId {self.nsd_ids.max()} "
                             "is asked for", "use the nsd_stimuli.hdf5 that belongs to this NSD copy")
        self.shape = tuple(int(s) for s in shape)
        st = self.path.stat()
        self.fingerprint = f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    def __len__(self) -> int:
        return len(self.nsd_ids)

    def __call__(self, i: int) -> np.ndarray:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        try:
            return np.asarray(self._file["imgBrick"][int(self.nsd_ids[i])], dtype=np.uint8)
        except OSError as err:
            raise InputError(self.path, f"image {self.nsd_ids[i]} cannot be read ({err})",
                             "re-download nsd_stimuli.hdf5; it may be truncated") from err

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state


# --------------------------------------------------------------------------------------------------
# design and stimulus information


def _load_expdesign(layout: NsdLayout) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    path = layout.expdesign
    if not path.is_file():
        raise InputError(path, "NSD experimental design file is missing",
                         "point the reader at the NSD root (the folder holding nsddata/ and nsddata_betas/)")
    try:
        mat = scipy.io.loadmat(path, variable_names=["masterordering", "subjectim"])
    except (OSError, ValueError, TypeError, zlib.error) as err:
        raise InputError(path, f"cannot be read as a MATLAB file ({err})",
                         "re-download nsd_expdesign.mat") from err
    for key in ("masterordering", "subjectim"):
        if key not in mat:
            raise InputError(path, f"has no variable {key!r}", "use NSD's nsd_expdesign.mat")
    order = np.asarray(mat["masterordering"]).ravel()
    subjectim = np.asarray(mat["subjectim"])
    if subjectim.ndim != 2 or order.size == 0:
        raise InputError(path, f"subjectim has shape {subjectim.shape}", "use NSD's nsd_expdesign.mat")
    if np.any(order < 1) or np.any(order > subjectim.shape[1]):
        raise InputError(path, "masterordering holds values outside 1..subjectim columns",
                         "use NSD's nsd_expdesign.mat (1-based indices)")
    return order.astype(np.int64), subjectim.astype(np.int64)


def _load_stim_info(layout: NsdLayout, subjects: Sequence[int]):
    import pandas as pd

    path = layout.stim_info
    if not path.is_file():
        raise InputError(path, "NSD stimulus information file is missing",
                         "put nsd_stim_info_merged.csv in nsddata/experiments/nsd/")
    wanted = {"cocoId", "cocoSplit", "nsdId", "shared1000"} | {
        f"subject{k}_rep{r}" for k in subjects for r in range(3)}
    try:
        info = pd.read_csv(path, usecols=lambda c: c in wanted)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(path, f"cannot be read as CSV ({err})", "re-download nsd_stim_info_merged.csv") from err
    missing = {"cocoId", "cocoSplit", "nsdId", "shared1000"} - set(info.columns)
    if missing:
        raise InputError(path, f"lacks columns {sorted(missing)}", "use NSD's nsd_stim_info_merged.csv")
    info = info.set_index("nsdId", drop=False).sort_index()
    return info


def _as_bool(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        return arr != 0
    return np.asarray([str(v).strip().lower() in ("true", "1", "yes") for v in arr], dtype=bool)


def _check_against_stim_info(info, subject: int, trials: np.ndarray, nsd_ids: np.ndarray,
                             layout: NsdLayout) -> None:
    """The CSV's ``subjectK_repR`` (1-based trial numbers) must name the same images as the .mat design."""
    cols = [f"subject{subject}_rep{r}" for r in range(3)]
    if not all(c in info.columns for c in cols):
        return
    reps = info[cols].to_numpy(dtype=np.int64)
    rows, r = np.nonzero(reps > 0)
    numbers = reps[rows, r] - 1
    owner = dict(zip(numbers.tolist(), info["nsdId"].to_numpy()[rows].tolist()))
    expected = np.array([owner.get(int(t), -1) for t in trials])
    bad = np.flatnonzero(expected != nsd_ids)
    if bad.size:
        t = int(trials[bad[0]])
        raise InputError(layout.stim_info, f"subject{subject}_rep columns say trial {t + 1} showed nsdId "
                         f"{expected[bad[0]]}, nsd_expdesign.mat says {nsd_ids[bad[0]]} "
                         f"({bad.size} trials disagree)",
                         "use nsd_expdesign.mat and nsd_stim_info_merged.csv from the same NSD release")


_SUBPROCESS_JSON_BYTES = 16 * 2**20


def _coco_by_image(path: str, coco_ids: list[int], what: str) -> dict[int, list[str]]:
    """Captions (``what="captions"``) or category names (``"categories"``) of the given COCO images."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    wanted = {int(c): [] for c in coco_ids}
    if what == "captions":
        for a in data["annotations"]:
            caps = wanted.get(a.get("image_id"))
            if caps is not None:
                caps.append(str(a.get("caption", "")).strip())
        return wanted
    names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    for a in data["annotations"]:
        cats = wanted.get(a.get("image_id"))
        if cats is not None:
            name = names.get(a.get("category_id"))
            if name is not None and name not in cats:
                cats.append(name)
    return {k: sorted(v) for k, v in wanted.items()}


def _parse_coco(path: Path, coco_ids: list[int], what: str) -> dict[int, list[str]]:
    """Parse a COCO annotation file; large ones (train2017: 90-450 MB) in a child process, so that the
    gigabyte of Python objects ``json.load`` makes is returned to the system when it ends."""
    try:
        if path.stat().st_size <= _SUBPROCESS_JSON_BYTES:
            return _coco_by_image(str(path), coco_ids, what)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_coco_by_image, str(path), coco_ids, what).result()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(path, f"cannot be read as COCO {what} annotations ({type(err).__name__}: {err})",
                         "re-download the COCO 2017 annotations") from err


def _read_coco(layout: NsdLayout, info, nsd_ids: np.ndarray, annotations: Path | None,
               what: str) -> list[list[str]] | None:
    """Per image (in ``nsd_ids`` order) its COCO captions or category names, from both 2017 splits."""
    coco = info.loc[nsd_ids, "cocoId"].to_numpy(dtype=np.int64)
    splits = info.loc[nsd_ids, "cocoSplit"].astype(str).to_numpy()
    prefix = "captions" if what == "captions" else "instances"
    found: dict[int, list[str]] = {}
    for split in sorted(set(splits)):
        path = layout.captions(split, annotations).with_name(f"{prefix}_{split}.json")
        if not path.is_file():
            if what == "categories":
                warnings.warn(f"{path} is missing; stimuli have no COCO categories", stacklevel=3)
                return None
            raise InputError(path, f"COCO caption file for {split} is missing",
                             "put COCO's captions_train2017.json and captions_val2017.json there "
                             "(NSD ships them in nsddata_stimuli/stimuli/nsd/annotations), or pass captions=False")
        found.update(_parse_coco(path, [int(c) for c in coco[splits == split]], what))
    return [found.get(int(c), []) for c in coco]


# --------------------------------------------------------------------------------------------------
# volumes


def _volume(path: Path, what: str, shape=None) -> tuple[np.ndarray, np.ndarray]:
    img = load_nifti(path, ndim=3, what=what)
    data = np.asanyarray(img.dataobj)
    if shape is not None and data.shape != tuple(shape):
        raise InputError(path, f"{what} has shape {data.shape}, the subject's grid is {tuple(shape)}",
                         "use the func1pt8mm files of the same subject")
    return data, img.affine


def _read_ctab(path: Path) -> dict[int, str]:
    names = {}
    if not path.is_file():
        return names
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit() and int(parts[0]) > 0:
            names[int(parts[0])] = parts[1]
    return names


def nsd_sessions(root: str | os.PathLike, subject: int, betas: str = DEFAULT_BETAS) -> list[int]:
    """Session numbers (1-based) with a betas file (hdf5 or NIfTI) for ``subject`` under ``root``."""
    folder = NsdLayout(Path(root), betas).betas_dir(subject)
    if not folder.is_dir():
        return []
    found = {int(m.group(1)) for p in folder.iterdir() if (m := _SESSION_RE.match(p.name))}
    return sorted(found)


def nsd_contents(root: str | os.PathLike) -> dict[int, dict[str, list[int]]]:
    """What an NSD copy holds, for choosing what to read: per subject number with a betas folder, each betas
    version found (``betas_*`` folders) and its sessions on disk. Empty when ``root`` holds none."""
    base = Path(root) / "nsddata_betas" / "ppdata"
    out: dict[int, dict[str, list[int]]] = {}
    for folder in sorted(base.glob("subj[0-9][0-9]")) if base.is_dir() else []:
        k = int(folder.name[4:])
        versions = {v.name: nsd_sessions(root, k, v.name) for v in sorted((folder / "func1pt8mm").glob("betas_*"))
                    if v.is_dir()}
        if versions:
            out[k] = versions
    return out


def parse_sessions(text: str, what: str = "sessions") -> list[int] | None:
    """Session numbers from a user's text: ``"1-3, 5"`` → ``[1, 2, 3, 5]``; empty or ``"all"`` → None (every
    session on disk)."""
    text = text.strip()
    if not text or text.lower() == "all":
        return None
    numbers: set[int] = set()
    for part in text.replace(";", ",").split(","):
        first, dash, last = part.strip().replace("–", "-").partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise InputError(f"{what} {text!r}", f"{part.strip()!r} is not a session number or range",
                             "write numbers and ranges, e.g. 1-3, 5, or leave it empty for every session on "
                             "disk") from None
        if low < 1:
            raise InputError(f"{what} {text!r}", f"{part.strip()!r} holds a session below 1",
                             "sessions are numbered from 1: write e.g. 1-3")
        if high < low:
            raise InputError(f"{what} {text!r}", f"{part.strip()!r} runs backwards", f"write it {high}-{low}")
        if high > NSD_SESSIONS:
            raise InputError(f"{what} {text!r}", f"{part.strip()!r} goes beyond session {NSD_SESSIONS}",
                             f"NSD has {NSD_SESSIONS} sessions per participant; choose among 1-{NSD_SESSIONS}")
        numbers.update(range(low, high + 1))
    return sorted(numbers)


def to_common_folder(value: str | os.PathLike | None, subjects: Sequence[int], what: str = "--to-common"
                     ) -> str | dict[int, Path] | None:
    """``to_common`` of :func:`load_nsd` from ``"identity"`` or a folder holding ``subjXX.txt`` (a 4x4 affine,
    native mm → common mm) for every subject (the command line's ``--to-common``; ``what`` names the option
    in an error)."""
    if value is None or value == "identity":
        return value
    folder = Path(value)
    if not folder.is_dir():
        raise InputError(f"{what} {value}", "is neither 'identity' nor a folder",
                         "give a folder holding subjXX.txt (4 lines of 4 numbers: native mm → common mm) for "
                         "every subject read, or 'identity' when their mm coordinates are already aligned")
    missing = [f"subj{k:02d}.txt" for k in subjects if not (folder / f"subj{k:02d}.txt").is_file()]
    if missing:
        raise InputError(folder, f"has no {', '.join(missing)}",
                         "write a 4x4 affine (native mm → common mm) for every subject read")
    return {k: folder / f"subj{k:02d}.txt" for k in subjects}


def nsd_origin(root: str | os.PathLike, subjects: Sequence[int], sessions: Sequence[int] | None, betas: str | None,
               to_common: str | os.PathLike | None, study=None) -> dict:
    """How a results folder records the NSD reading it was made from (the manifest's ``nsd_*`` keys, which
    :func:`recorded_reading` reads back); with ``study``, also the sessions each participant was read with."""
    common = to_common if to_common in (None, "identity") else str(Path(to_common).resolve())
    origin = {"nsd_root": str(Path(root).resolve()), "nsd_subjects": [int(k) for k in subjects],
              "nsd_sessions": None if sessions is None else [int(k) for k in sessions],
              "nsd_betas": betas or DEFAULT_BETAS, "nsd_to_common": common}
    if study is not None:
        origin["nsd_sessions_read"] = {name: sub.session_numbers for name, sub in study.subjects.items()}
    return origin


def recorded_reading(manifest: dict) -> dict:
    """The arguments of :func:`read_nsd` that read NSD as the results folder of ``manifest`` did (the command
    line records them): root, subjects, sessions read, betas version, common space and the sentence model of
    the caption embedding; ``brain-concepts view`` and the Study widget's Open results… use them."""
    subjects = manifest.get("nsd_subjects") or [1]
    read = manifest.get("nsd_sessions_read") or {}
    per_subject = {tuple(v) for v in read.values()}
    sessions = list(per_subject.pop()) if len(per_subject) == 1 else manifest.get("nsd_sessions")
    model = (((manifest.get("parameters") or {}).get("params") or {}).get("embed") or {}).get("model")
    return {"root": manifest["nsd_root"], "subjects": subjects, "sessions": sessions,
            "betas": manifest.get("nsd_betas") or DEFAULT_BETAS,
            "to_common": to_common_folder(manifest.get("nsd_to_common"), subjects),
            "embed_captions": str(model) if model else True}


def is_nsd_root(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is an NSD copy's root (it holds ``nsddata/`` and ``nsddata_betas/``)."""
    return path is not None and (Path(path) / "nsddata").is_dir() and (Path(path) / "nsddata_betas").is_dir()


def number_ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1–3, 5"``."""
    parts, run = [], []
    for n in sorted(numbers):
        if run and n != run[-1] + 1:
            parts.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else f"{run[0]}")
            run = []
        run.append(n)
    if run:
        parts.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ", ".join(parts)


def _session_file(layout: NsdLayout, subject: int, session: int) -> Path:
    folder = layout.betas_dir(subject)
    for ext in ("hdf5", "nii.gz", "nii"):
        path = folder / f"betas_session{session:02d}.{ext}"
        if path.is_file():
            return path
    raise InputError(folder / f"betas_session{session:02d}.hdf5", f"session {session} of subj{subject:02d} "
                     "is missing (neither .hdf5 nor .nii.gz)",
                     "download that session's betas or leave it out of the sessions read (sessions=…, on the "
                     "command line --sessions)")


class _Session:
    """One betas file: checks its header, then reads only the masked voxels as int16 (n_trials, n_voxels)."""

    def __init__(self, path: Path, mask: np.ndarray):
        self.path = path
        self.mask = mask
        self.hdf5 = path.suffix == ".hdf5"
        self.n_trials = self._check()

    def _fail(self, err: Exception):
        with open(self.path, "rb") as fh:  # the first bytes tell a file of another format from a broken one
            head = fh.read(348)
        if self.hdf5 and (head[:2] == b"\x1f\x8b" or head[344:348] in (b"n+1\x00", b"ni1\x00")):
            return InputError(self.path, "is a NIfTI file (gzip or NIfTI header), not HDF5",
                              f"name it {self.path.stem}.nii.gz (NIfTI betas are read too)")
        return InputError(self.path, f"cannot be read ({type(err).__name__}: {err})",
                          "re-download this session's betas file; it may be truncated")

    def _check(self) -> int:
        grid = self.mask.shape
        if self.hdf5:
            import h5py

            try:
                with h5py.File(self.path, "r") as f:
                    if "betas" not in f:
                        raise InputError(self.path, "has no dataset 'betas'", "use NSD's betas_sessionNN.hdf5")
                    shape, dtype = f["betas"].shape, f["betas"].dtype
            except OSError as err:
                raise self._fail(err) from err
            if len(shape) != 4 or tuple(shape[1:]) != grid[::-1]:
                raise InputError(self.path, f"betas have shape {shape}; expected (n_trials,) + {grid[::-1]} "
                                 "(hdf5 axes are reversed relative to NIfTI)",
                                 "use the func1pt8mm betas of the same subject as the mask")
        else:
            import nibabel as nib

            try:
                img = nib.load(str(self.path))
            except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile,
                    nib.filebasedimages.ImageFileError) as err:
                raise self._fail(err) from err
            shape, dtype = img.shape, img.get_data_dtype()
            if len(shape) != 4 or tuple(shape[:3]) != grid:
                raise InputError(self.path, f"betas have shape {shape}; expected {grid} + (n_trials,)",
                                 "use the func1pt8mm betas of the same subject as the mask")
            shape = (shape[3],)
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise InputError(self.path, f"betas have dtype {dtype}", "use NSD's int16 betas")
        return int(shape[0])

    def read(self, out: np.ndarray | None = None) -> np.ndarray:
        """Masked voxels of every trial into ``out`` (float32 (n_trials, n_voxels), made when None)."""
        if out is None:
            out = np.empty((self.n_trials, int(self.mask.sum())), dtype=np.float32)
        try:
            return self._read_hdf5(out) if self.hdf5 else self._read_nifti(out)
        except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as err:
            raise self._fail(err) from err

    def _read_hdf5(self, out: np.ndarray) -> np.ndarray:
        import h5py

        mask = self.mask
        cols = np.full(mask.shape, -1, dtype=np.int64)
        cols[mask] = np.arange(int(mask.sum()))
        with h5py.File(self.path, "r") as f:
            ds = f["betas"]
            for z in range(mask.shape[2]):
                plane = mask[:, :, z].T                    # (y, x), as stored
                if not plane.any():
                    continue
                ys, xs = np.nonzero(plane)
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                sel = plane[y0:y1, x0:x1]
                slab = ds[:, z, y0:y1, x0:x1]              # only the chunks of the bounding box
                out[:, cols[:, :, z].T[y0:y1, x0:x1][sel]] = slab[:, sel]
        return out

    def _read_nifti(self, out: np.ndarray) -> np.ndarray:
        import nibabel as nib

        img = nib.load(str(self.path), keep_file_open=True)
        try:
            for t0 in range(0, self.n_trials, _NIFTI_TRIAL_BLOCK):
                t1 = min(t0 + _NIFTI_TRIAL_BLOCK, self.n_trials)
                block = np.asanyarray(img.dataobj[..., t0:t1])   # (x, y, z, block) read sequentially
                out[t0:t1] = block[self.mask].T
                del block
        finally:
            img.uncache()
            if hasattr(img.dataobj, "_opener") and img.dataobj._opener is not None:
                img.dataobj._opener.close_if_mine()
        return out


_ROW_BLOCK = 64


def _standardize(block: np.ndarray, zscore: bool) -> None:
    """In place: ÷ 300 (percent signal change), then z-score each voxel over the session's trials.

    The sum of squares is taken over blocks of rows, so no temporary as large as the session is made.
    """
    block *= np.float32(1.0 / BETAS_SCALE)
    if not zscore:
        return
    mean = block.mean(axis=0, dtype=np.float64)
    block -= mean.astype(np.float32)
    squares = np.zeros(block.shape[1], dtype=np.float64)
    for r0 in range(0, block.shape[0], _ROW_BLOCK):
        part = block[r0:r0 + _ROW_BLOCK]
        squares += np.square(part).sum(axis=0, dtype=np.float64)
    sd = np.sqrt(squares / max(1, block.shape[0]))
    constant = sd <= 1e-8 * np.maximum(1.0, np.abs(mean))
    block /= np.where(constant, 1.0, sd).astype(np.float32)
    block[:, constant] = 0.0


# --------------------------------------------------------------------------------------------------
# the reader


def _resolve_subjects(subject, n_rows: int, layout: NsdLayout) -> list[int]:
    subjects = [subject] if np.isscalar(subject) else list(subject)
    if not subjects:
        raise InputError("parameter subject", "no subject given", "give a subject number 1..8")
    out = []
    for s in subjects:
        try:
            k = int(str(s).lower().removeprefix("subj"))
        except ValueError:
            raise InputError("parameter subject", f"{s!r} is not a subject number",
                             f"give a number 1..{n_rows}") from None
        if not 1 <= k <= n_rows:
            raise InputError("parameter subject", f"{s!r} is outside 1..{n_rows}",
                             f"NSD has subjects 1..{n_rows}; give one of them")
        out.append(k)
    return out


def _subject_mask(layout: NsdLayout, subject: int, mask) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(mask, np.ndarray):
        ref = layout.roi(subject, "nsdgeneral")
        if not ref.is_file():
            ref = layout.func_dir(subject) / "brainmask.nii.gz"
        _, affine = _volume(ref, "reference volume", mask.shape)
        return mask.astype(bool), affine, "array"
    mask = str(mask)
    if mask == "brainmask":
        path = layout.func_dir(subject) / "brainmask.nii.gz"
    elif mask.endswith((".nii", ".nii.gz")):
        path = Path(mask)
    else:
        path = layout.roi(subject, mask)
    data, affine = _volume(path, "mask")
    sel = np.asarray(data) > 0
    if not sel.any():
        raise InputError(path, "mask has no voxel > 0", "choose another mask (e.g. 'nsdgeneral' or 'brainmask')")
    return sel, affine, mask


def load_nsd(root: str | os.PathLike, subject: int | Sequence[int] = 1, sessions: Sequence[int] | None = None,
             *, mask: str | os.PathLike | np.ndarray = "nsdgeneral", betas: str = DEFAULT_BETAS,
             zscore: bool = True, average_repeats: bool = False, rois: Sequence[str] = NSD_ROIS,
             anat: bool = True, captions: bool = True, categories: bool = True,
             annotations: str | os.PathLike | None = None, images: bool = True,
             embed_captions: bool | str | os.PathLike = False, to_common=None, name: str = "NSD") -> Generator[Progress, None, Study]:
    """Read NSD subjects into a :class:`Study`, yielding one :class:`Progress` per session read.

    Parameters
    ----------
    root : path
        The NSD root: the folder holding ``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``.
    subject : int or sequence of int
        Subject number(s), 1..8 (``"subj01"`` works too). Subjects keep their own native grids.
    sessions : sequence of int, optional
        1-based session numbers to read (same for every subject); default all sessions on disk.
    mask : str, path or bool array
        Voxels to keep: an ROI name in ``roi/`` (default ``"nsdgeneral"``: label 1), ``"brainmask"``,
        a NIfTI path on the subject's grid, or a boolean volume.
    betas : str
        Betas version folder, e.g. ``"betas_fithrf_GLMdenoise_RR"`` (default) or ``"betas_fithrf"``.
    zscore : bool
        z-score each voxel within each session (after ÷ 300); ``False`` keeps percent signal change.
    average_repeats : bool
        Average the (z-scored) repeats of each image over the sessions read (MindEye protocol; one row
        per image, ``sessions`` holds the session of its first showing); default keeps single trials (SDC).
    rois : sequence of str
        ROI volumes to attach (missing files are skipped); names come from the FreeSurfer ``.ctab`` files.
    anat : bool
        Attach ``T1_to_func1pt8mm`` as anatomy.
    captions : bool
        Read the COCO captions of the shown images (``captions_{train,val}2017.json`` in
        ``annotations``, default NSD's copy in ``nsddata_stimuli/stimuli/nsd/annotations``).
    categories : bool
        Read the COCO object categories of the shown images (``instances_{train,val}2017.json`` in the
        same folder); skipped with a warning when those files are absent.
    annotations : path, optional
        Folder of the COCO 2017 annotation files, when not NSD's copy.
    images : bool
        Give the stimuli a lazy image source on ``nsd_stimuli.hdf5`` when that file exists.
    embed_captions : bool or path
        Also compute ``stimuli.embeddings["captions"]`` (caption-mean sentence embedding, cached on disk)
        as the synthetic study has it: ``True`` uses all-MiniLM-L6-v2, a path another local sentence model.
    to_common : dict, "identity" or None
        Per subject (number or ``"subjXX"``) a 4×4 affine native mm → common mm, or the path of a text
        file holding one; ``"identity"`` when the subjects' native mm coordinates are already aligned. NSD
        subjects live in their own func1pt8mm spaces, so cross-subject steps (shared concepts) need it.
    name : str
        Name of the study.

    Returns
    -------
    Study
        Stimuli = every image any of the read subjects saw in the read sessions (sorted by nsdId),
        ``stimuli.test`` = NSD's shared1000; per subject single-trial (or repeat-averaged) responses.
    """
    root = Path(root)
    layout = NsdLayout(root, betas)
    if not root.is_dir():
        raise InputError(root, "NSD root folder does not exist", "give the folder holding nsddata/")
    order, subjectim = _load_expdesign(layout)
    subjects = _resolve_subjects(subject, subjectim.shape[0], layout)
    info = _load_stim_info(layout, subjects)

    # Plan every subject (files, shapes, trials) before reading any betas, so bad input fails at once.
    plans = []
    for k in subjects:
        on_disk = nsd_sessions(root, k, betas)
        chosen = on_disk if sessions is None else sorted({int(s) for s in sessions})
        if not chosen:
            others = sorted(p.parent.name for p in layout.betas_dir(k).parent.glob("*/betas_session*")
                            if p.parent.name != betas)
            found = f"; betas of another version are there: {', '.join(dict.fromkeys(others))}" if others else ""
            raise InputError(layout.betas_dir(k), f"no betas_sessionNN.hdf5 or .nii.gz for subj{k:02d}{found}",
                             "choose that betas version (betas=…, on the command line --betas), or download "
                             "the betas of at least one session" if others else
                             "download the betas of at least one session")
        gaps = sorted(set(range(1, max(chosen) + 1)) - set(chosen)) if sessions is None else []
        if gaps:  # a copy still downloading, or half copied: said, as the analysis has fewer trials
            warnings.warn(f"subj{k:02d}: session{'s' if len(gaps) > 1 else ''} {number_ranges(gaps)} "
                          f"{'have' if len(gaps) > 1 else 'has'} no betas file in {layout.betas_dir(k)} "
                          f"(read: {number_ranges(chosen)}); the study holds the sessions on disk only", stacklevel=2)
        for s in chosen:
            if s < 1:
                raise InputError("parameter sessions", f"session {s} is below 1", "sessions are numbered from 1")
        sel, affine, mask_name = _subject_mask(layout, k, mask)
        absent = [s for s in chosen if s not in on_disk]
        if absent and on_disk:  # a session asked for is not on disk: beyond the design, or not downloaded?
            per_session = _Session(_session_file(layout, k, on_disk[0]), sel).n_trials
            if max(absent) * per_session > order.size:
                raise InputError("parameter sessions", f"session {max(absent)} lies beyond the "
                                 f"{order.size // per_session} sessions of nsd_expdesign.mat",
                                 "choose sessions the design covers (sessions=…, on the command line "
                                 "--sessions)")
        files = [_Session(_session_file(layout, k, s), sel) for s in chosen]
        n_trials = {f.n_trials for f in files}
        if len(n_trials) != 1:
            raise InputError(layout.betas_dir(k), f"sessions hold different numbers of trials {sorted(n_trials)}",
                             "re-download the truncated session file(s); every NSD session has 750 trials")
        tps = n_trials.pop()
        trials = np.concatenate([np.arange((s - 1) * tps, s * tps) for s in chosen])
        if trials.max() >= order.size:
            raise InputError("parameter sessions", f"session {max(chosen)} lies beyond the {order.size // tps} "
                             f"sessions of nsd_expdesign.mat", "choose sessions the design covers")
        nsd_ids = subjectim[k - 1, order[trials] - 1] - 1
        if nsd_ids.min() < 0 or nsd_ids.max() > int(info["nsdId"].max()):
            raise InputError(layout.expdesign, f"subjectim of subject {k} names images outside the stimulus table",
                             "use nsd_expdesign.mat and nsd_stim_info_merged.csv from the same release")
        _check_against_stim_info(info, k, trials, nsd_ids, layout)
        # the transform to a common space, read now: a bad file fails before any betas are read
        common = _to_common(to_common, k, f"subj{k:02d}")
        plans.append((k, chosen, files, sel, affine, trials, nsd_ids, tps, common))

    if embed_captions is not False and not captions:
        raise InputError("parameter embed_captions", "needs the captions, but captions=False",
                         "pass captions=True or leave embed_captions off")
    encoder = None
    if embed_captions is not False:  # the model's folder is checked before the betas are read
        from ..embeddings.text import SentenceEncoder

        encoder = SentenceEncoder(None if embed_captions is True else str(embed_captions))

    # Stimuli first: the images every read subject saw are known from the design, so the COCO files are
    # checked before minutes of betas reading, and their parsing is not stacked on the full responses.
    total = sum(len(p[1]) for p in plans) + 1
    yield Progress("load", 0, total, "stimuli and captions")
    shown = np.unique(np.concatenate([p[6] for p in plans]))
    ann = None if annotations is None else Path(annotations)
    caps = _read_coco(layout, info, shown, ann, "captions") if captions else None
    cats = _read_coco(layout, info, shown, ann, "categories") if categories else None
    source = None
    if images and layout.images.is_file():
        source = NsdImages(layout.images, shown)
    elif images:
        warnings.warn(f"{layout.images} is missing; stimuli have no images", stacklevel=2)
    stimuli = Stimuli(ids=[nsd_stimulus_id(i) for i in shown], captions=caps or [[] for _ in shown],
                      categories=cats or [],
                      test=_as_bool(info.loc[shown, "shared1000"].to_numpy()), root=root, image_source=source)
    del caps, cats

    done = 1
    subjects_out: dict[str, Subject] = {}
    for k, chosen, files, sel, affine, trials, nsd_ids, tps, common in plans:
        label = f"subj{k:02d}"
        n_vox = int(sel.sum())
        session_of_trial = np.repeat(np.asarray(chosen), tps)
        if average_repeats:
            uniq, first, inverse = np.unique(nsd_ids, return_index=True, return_inverse=True)
            responses = np.zeros((len(uniq), n_vox), dtype=np.float32)
            counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float32)
            block = np.empty((tps, n_vox), dtype=np.float32)     # one session, reused for every session
        else:
            responses = np.empty((len(trials), n_vox), dtype=np.float32)
        for i, sess in enumerate(files):
            yield Progress("load", done, total, f"{label} session {chosen[i]} ({i + 1}/{len(files)})")
            rows = slice(i * tps, (i + 1) * tps)
            if average_repeats:
                _standardize(sess.read(block), zscore)
                np.add.at(responses, inverse[rows], block)
            else:
                _standardize(sess.read(responses[rows]), zscore)
            done += 1
        if average_repeats:
            del block
            responses /= counts[:, None]
            stim_ids, sess_out = uniq, session_of_trial[first]
        else:
            stim_ids, sess_out = nsd_ids, session_of_trial
        subjects_out[label] = _make_subject(layout, k, label, responses, sel, affine, stim_ids, sess_out,
                                            rois, anat, mask_name, common)
        del responses

    if encoder is not None:
        from ..embeddings.text import iter_embed_captions

        values = yield from iter_embed_captions(stimuli.captions, model=encoder, ids=list(stimuli.ids))
        stimuli.add_embedding(Embedding("captions", values, model=encoder.name, kind="caption-mean"))
    yield Progress("load", total, total, "done")
    return Study(name=name, stimuli=stimuli, subjects=subjects_out, space="native", path=root)


def _to_common(to_common, k: int, label: str) -> np.ndarray | None:
    if to_common is None:
        return None
    if isinstance(to_common, str) and to_common == "identity":
        return np.eye(4)
    if not isinstance(to_common, dict):
        raise InputError("parameter to_common", f"{type(to_common).__name__} given",
                         "give a dict subject → 4x4 affine (or text file), or 'identity'")
    value = to_common.get(k, to_common.get(label, to_common.get(str(k))))
    if value is None:
        raise InputError("parameter to_common", f"has no transform for {label}",
                         "give one for every subject read")
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        try:
            value = np.loadtxt(path)
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot be read as a 4x4 affine ({err})",
                             "write 4 lines of 4 numbers") from err
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (4, 4):
        raise InputError(f"to_common of {label}", f"has shape {value.shape}", "give a 4x4 affine")
    return value


def _make_subject(layout, k, label, responses, sel, affine, nsd_ids, sessions, rois, anat, mask_name,
                  to_common=None):
    shape = sel.shape
    atlases = {}
    for rname in rois:
        path = layout.roi(k, rname)
        if not path.is_file():
            continue
        data, _ = _volume(path, f"ROI {rname}", shape)
        labels = np.where(np.asarray(data) > 0, np.rint(data), 0).astype(np.int32)
        names = _read_ctab(layout.ctab(k, rname)) or ({1: rname} if labels.max() <= 1 else {})
        if not names:  # labels named by their numbers in every table and layer: said once
            warnings.warn(f"{layout.ctab(k, rname)} is missing or names no label: the labels of {rname} "
                          f"({label}) are named by their numbers (label 1, …)", stacklevel=2)
        atlases[rname] = RoiAtlas(labels=labels, names=names)
    ncsnr = None
    ncsnr_path = layout.betas_dir(k) / "ncsnr.nii.gz"
    if ncsnr_path.is_file():
        data, _ = _volume(ncsnr_path, "ncsnr", shape)
        ncsnr = np.asarray(data, dtype=np.float32)[sel]
    t1, t1_affine = None, None
    t1_path = layout.func_dir(k) / "T1_to_func1pt8mm.nii.gz"
    if anat and t1_path.is_file():
        t1, t1_affine = _volume(t1_path, "anatomy", shape)
    return Subject(name=label, responses=responses, mask=sel, affine=affine,
                   stimulus_ids=[nsd_stimulus_id(i) for i in nsd_ids], sessions=sessions,
                   anat=None if t1 is None else np.asarray(t1, dtype=np.float32), anat_affine=t1_affine,
                   rois=atlases, ncsnr=ncsnr, to_common=to_common)


def read_nsd(root: str | os.PathLike, subject: int | Sequence[int] | None = None,
             sessions: Sequence[int] | None = None, progress: Callable[[Progress], None] | None = None, *,
             subjects: int | Sequence[int] | None = None, **kwargs) -> Study:
    """Read NSD subjects into a :class:`Study` (see :func:`load_nsd` for the parameters).

    ``subjects`` is another name for ``subject`` (give one of them; default subject 1). ``progress``
    (optional) receives every :class:`Progress` report.
    """
    if subject is not None and subjects is not None:
        raise InputError("parameters subject and subjects", "both are given", "give one of them")
    chosen = subjects if subjects is not None else (1 if subject is None else subject)
    return run_to_end(load_nsd(root, chosen, sessions, **kwargs), progress)
