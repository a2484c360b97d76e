"""The study folder: read it into a :class:`~napari_brain_concepts.core.study.Study`, write one.

Its layout (also in README, section "The study folder"):

::

    STUDY/
      study.json               {"name", "space", "tr"?, "version": 1, "subjects"?: [...], "embeddings"?: [...]}
      stimuli.tsv              stimulus_id, image?, caption_1..caption_k, categories? (";"-separated), test? (0/1)
      images/                  image files referenced by stimuli.tsv (paths relative to STUDY)
      embeddings/NAME.npy      float (n_stimuli, d), rows in stimuli.tsv order
      embeddings/NAME.json     {"model", "kind", "normalized"} (optional)
      subjects/SUBJ/
        mask.nii.gz            3D, nonzero = analysed voxels
        responses.nii.gz       4D (x, y, z, n_trials) on the mask's grid, or
        responses.npy          (n_trials, n_voxels), voxels in C order of the mask's nonzero voxels
        trials.tsv             trial (0-based), stimulus_id, session (int, optional)
        anat.nii.gz            optional 3D anatomy (kept on its own grid unless ``resample_anat``)
        rois/NAME.nii.gz       optional integer label volumes on the mask's grid (0 = none)
        rois/NAME.tsv          label, name (optional)
        to_common.txt          optional 4x4 affine, native mm -> common mm
        ncsnr.nii.gz|.npy      optional noise-ceiling SNR (volume on the mask's grid, or one value per voxel)
      truth/                   optional planted truth of a synthetic study: truth.json + arrays.npz

Only study.json, stimuli.tsv (its stimulus_id column) and each subject's mask, responses and trials.tsv are
required. ``embeddings/`` is optional: the ``embed`` step computes the ``captions`` embedding (the mean
sentence embedding of each stimulus's captions) from the caption columns, and the steps that decode it run
``embed`` first when the study has no ``captions`` embedding of its own.

The optional ``subjects`` and ``embeddings`` lists in study.json fix the order of subjects and embeddings
(the first embedding is the study's default); folders and files not listed follow in sorted order.

The reader checks everything and raises one :class:`~napari_brain_concepts.core.errors.InputError` naming the
file, the problem and the fix. The writer writes every file atomically into a fresh folder beside the target
and moves it into place at the end, so a failed write never leaves a half-written study.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ..errors import InputError
from ..study import EMBEDDING_KINDS, Embedding, RoiAtlas, Stimuli, Study, Subject
from .atomic import write_atomic, write_text_atomic
from .volumes import read_nifti, save_nifti

STUDY_FORMAT_VERSION = 1
#: Largest affine difference (mm) between two images still taken as the same grid (NIfTI stores float32).
AFFINE_TOLERANCE = 1e-3
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CAPTION_COLUMN = re.compile(r"^caption_(\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

__all__ = ["STUDY_FORMAT_VERSION", "is_study_folder", "read_study", "write_study"]


# ------------------------------------------------------------------------------------------------
# small readers
# ------------------------------------------------------------------------------------------------
def _rewhere(err: InputError, where: str | os.PathLike) -> InputError:
    """The same problem and fix, reported against a file."""
    inner = err.where
    problem = err.problem if inner in ("", str(where)) else f"{inner} {err.problem}"
    return InputError(where, problem, err.fix)


def _read_json(path: Path, what: str, fix_missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, f"{what} is missing", fix_missing)
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))  # tolerate a byte-order mark
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"is not valid JSON ({err})", "fix the JSON syntax (e.g. with a JSON linter)") from err
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a JSON {type(obj).__name__}, expected an object {{...}}",
                         "write the fields as one JSON object")
    return obj


def _read_tsv(path: Path, what: str, required: Iterable[str], fix_missing: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, f"{what} is missing", fix_missing)
    try:
        with warnings.catch_warnings():
            # a row with more fields than the header would otherwise lose data silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                                index_col=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as err:
        raise InputError(path, "is empty", f"write a header row ({', '.join(required)}) and one row per entry") from err
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cannot be parsed as a tab-separated table ({' '.join(str(err).split())})",
                         "separate columns with tabs and give every row as many fields as the header") from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing and len(table.columns) == 1 and "," in table.columns[0]:
        # one column whose name holds the others: a comma-separated file saved under .tsv
        raise InputError(path, f"is comma-separated, not tab-separated (header: {table.columns[0]})",
                         "save it with tabs between the columns (e.g. pandas to_csv(sep='\\t'))")
    if missing:
        raise InputError(path, f"has no column {', '.join(repr(c) for c in missing)} (columns: "
                         f"{', '.join(table.columns)})", f"add a header row with {', '.join(required)}, tab-separated")
    dup = sorted({c for c in table.columns if list(table.columns).count(c) > 1})
    if dup:
        raise InputError(path, f"has duplicate columns {', '.join(dup)}", "give every column a unique name")
    return table


def _int_column(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = table[column].str.strip()
    try:
        out = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(values) if not re.fullmatch(r"[+-]?\d+", v))
        raise InputError(path, f"column {column!r} holds {values.iloc[bad]!r} at row {bad + 2}, expected an integer",
                         f"write whole numbers in the {column} column") from None
    return out


def _find_nifti(folder: Path, stem: str) -> Path | None:
    for suffix in _NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _nifti_stem(path: Path) -> str | None:
    for suffix in _NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _same_grid(img: nib.spatialimages.SpatialImage, shape: tuple[int, ...], affine: np.ndarray) -> bool:
    return tuple(img.shape[:3]) == tuple(shape) and np.allclose(img.affine, affine, atol=AFFINE_TOLERANCE)


def _grid_problem(img: nib.spatialimages.SpatialImage, shape: tuple[int, ...], affine: np.ndarray,
                  mask_path: Path) -> str | None:
    """How the grid of ``img`` differs from the mask's (None when it does not)."""
    if tuple(img.shape[:3]) != tuple(shape):
        return f"grid {tuple(img.shape[:3])} differs from {mask_path.name}'s {tuple(shape)}"
    diff = float(np.abs(np.asarray(img.affine) - affine).max())
    if diff > AFFINE_TOLERANCE:
        return f"affine differs from {mask_path.name}'s (max difference {diff:.4g} mm)"
    return None


def _ordered(names: Iterable[str], order: list[str] | None) -> list[str]:
    names = sorted(names)
    order = [n for n in (order or []) if n in names]
    return order + [n for n in names if n not in order]


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as err:  # a damaged header fails in numpy's parser with many types (even TokenError)
        raise InputError(path, f"{what} cannot be read as a numeric .npy array ({err})",
                         "save it with numpy.save from a float array (no Python objects)") from err


# ------------------------------------------------------------------------------------------------
# reader
# ------------------------------------------------------------------------------------------------
def _check_image_header(path: Path, stimulus: str, row: int) -> None:
    """Fail now, not when a late step first opens it, on an image file that is not an image: PIL reads the
    header only (the pixels are decoded on use)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(path, f"image of stimulus {stimulus!r} (stimuli.tsv row {row + 2}) cannot be read ({err})",
                         "replace it with a PNG or JPEG file") from err


def is_study_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a study.json."""
    return (Path(path) / "study.json").is_file()


def read_study(path: str | os.PathLike, *, resample_anat: bool = False) -> Study:
    """Read and validate a study folder (the layout of this module's docstring).

    Parameters
    ----------
    path : path-like
        The study folder (or its study.json).
    resample_anat : bool
        Anatomy on another grid than the mask is kept on its own grid by default (``Subject.anat_affine``;
        napari shows each layer on its own grid, aligned in millimetres, so nothing is lost). With
        ``True`` it is resampled with nilearn onto the mask's grid instead.

    Returns
    -------
    Study
        With ``path`` set; images stay on disk (``stimuli.image_paths`` relative to ``stimuli.root``).

    Raises
    ------
    InputError
        For the first problem found, naming the file, the problem and the fix.
    """
    root = Path(path)
    if root.name == "study.json" and root.is_file():
        root = root.parent
    if not root.exists():
        raise InputError(root, "study folder does not exist", "give the path of a folder holding study.json")
    if not root.is_dir():
        raise InputError(root, "is not a folder", "give the path of a study folder (holding study.json)")
    if not (root / "study.json").is_file() and (root / "manifest.json").is_file():
        raise InputError(root, "is a results folder (it holds manifest.json), not a study folder",
                         "open it as results (brain-concepts view RESULTS; in napari: Open results…), which brings "
                         "its study, or give the study folder it was made from")
    meta = _read_study_json(root)
    stimuli = _read_stimuli(root, meta.get("embeddings"))
    subjects_dir = root / "subjects"
    if not subjects_dir.is_dir():
        raise InputError(subjects_dir, "subjects folder is missing",
                         "add subjects/SUBJ/ with mask.nii.gz, responses and trials.tsv for each participant")
    names = [p.name for p in subjects_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not names:
        raise InputError(subjects_dir, "holds no subject folder",
                         "add subjects/SUBJ/ with mask.nii.gz, responses and trials.tsv for each participant")
    for name in meta.get("subjects") or []:
        if name not in names:
            raise InputError(subjects_dir / name, "subject listed in study.json has no folder",
                             "add the folder or remove the name from the subjects list of study.json")
    known = stimuli.index
    subjects = {name: _read_subject(subjects_dir / name, known, resample_anat)
                for name in _ordered(names, meta.get("subjects"))}
    _warn_unnamed_atlases(subjects_dir, subjects)
    truth = _read_truth(root / "truth")
    try:
        return Study(name=meta["name"], stimuli=stimuli, subjects=subjects, space=meta["space"], tr=meta["tr"],
                     truth=truth, path=root)
    except InputError as err:
        raise _rewhere(err, root) from err


def _read_study_json(root: Path) -> dict[str, Any]:
    path = root / "study.json"
    meta = _read_json(path, "study.json", 'write {"name": "...", "space": "native", "version": 1} there')
    version = meta.get("version", STUDY_FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version != STUDY_FORMAT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > STUDY_FORMAT_VERSION
        raise InputError(path, f"format version {version!r} is not supported (this reader reads version "
                         f"{STUDY_FORMAT_VERSION})",
                         "upgrade napari-brain-concepts" if newer else f'set "version": {STUDY_FORMAT_VERSION}')
    name = meta.get("name", root.name)
    if not isinstance(name, str) or not name.strip():
        raise InputError(path, f'"name" is {name!r}, expected a non-empty string', 'set "name" to the study\'s name')
    space = meta.get("space", "native")
    if not isinstance(space, str) or not space.strip():
        raise InputError(path, f'"space" is {space!r}, expected a string',
                         'set "space" to "native" or the name of the common template (e.g. "MNI152")')
    tr = meta.get("tr")
    if tr is not None and (isinstance(tr, bool) or not isinstance(tr, (int, float)) or not np.isfinite(tr) or tr <= 0):
        raise InputError(path, f'"tr" is {tr!r}, expected a positive number of seconds', 'fix "tr" or leave it out')
    for key in ("subjects", "embeddings"):
        order = meta.get(key)
        if order is not None and (not isinstance(order, list) or not all(isinstance(x, str) for x in order)):
            raise InputError(path, f'"{key}" is {order!r}, expected a list of names', f'fix "{key}" or leave it out')
    return {"name": name, "space": space, "tr": None if tr is None else float(tr),
            "subjects": meta.get("subjects"), "embeddings": meta.get("embeddings")}


def _read_stimuli(root: Path, embedding_order: list[str] | None) -> Stimuli:
    path = root / "stimuli.tsv"
    table = _read_tsv(path, "stimuli.tsv", ["stimulus_id"],
                      "write stimuli.tsv with columns stimulus_id, image, caption_1.., categories")
    if len(table) == 0:
        raise InputError(path, "lists no stimuli", "add one row per stimulus")
    ids = table["stimulus_id"].tolist()
    seen: dict[str, int] = {}
    for row, sid in enumerate(ids):
        if not sid.strip():
            raise InputError(path, f"row {row + 2} has an empty stimulus_id", "give every stimulus a non-empty id")
        if sid in seen:
            raise InputError(path, f"stimulus id {sid!r} appears twice (rows {seen[sid] + 2} and {row + 2})",
                             "give every stimulus a unique id")
        seen[sid] = row
    n = len(ids)
    _warn_unread_columns(table, path)
    caption_cols = sorted((c for c in table.columns if _CAPTION_COLUMN.match(c)),
                          key=lambda c: int(_CAPTION_COLUMN.match(c).group(1)))
    if "caption" in table.columns:
        caption_cols = ["caption", *caption_cols]
    captions = [[table[c].iloc[i] for c in caption_cols] for i in range(n)]
    categories = ([[c for c in cell.split(";")] for cell in table["categories"]]
                  if "categories" in table.columns else [])
    if "categories" in table.columns:
        cells = table["categories"]
        commas = cells.str.contains(",", regex=False).to_numpy()
        if commas.any() and not cells.str.contains(";", regex=False).any():
            row = int(np.flatnonzero(commas)[0])
            raise InputError(path, f"column 'categories' separates categories with ',' (row {row + 2}: "
                                   f"{cells.iloc[row]!r}), which would make each list one category",
                             "separate them with ';' (e.g. face;body)")
        for row, labels in enumerate(categories):
            bad = [c for c in labels if any(ch in c for ch in "/\\")]
            if bad:  # a category names the files of its maps (corr_CATEGORY.nii.gz)
                raise InputError(path, f"row {row + 2} has the category {bad[0].strip()!r}, which holds a "
                                 f"{'slash' if '/' in bad[0] else 'backslash'}: its maps could not be written",
                                 "name the category without '/' or '\\' (e.g. indoor-outdoor)")
    image_paths: list[str | None] = []
    if "image" in table.columns:
        for row, rel in enumerate(table["image"]):
            rel = rel.strip()
            if not rel:
                image_paths.append(None)
                continue
            if not (root / rel).is_file():
                raise InputError(root / rel, f"image file of stimulus {ids[row]!r} (stimuli.tsv row {row + 2}) is missing",
                                 "put the image there or fix the image column of stimuli.tsv (paths relative "
                                 "to the study folder)")
            _check_image_header(root / rel, ids[row], row)
            image_paths.append(rel)
    test = None
    if "test" in table.columns:
        flags = table["test"].str.strip().str.lower()
        valid = {"0": False, "1": True, "false": False, "true": True}
        bad = [i for i, v in enumerate(flags) if v not in valid]
        if bad:
            raise InputError(path, f"column 'test' holds {table['test'].iloc[bad[0]]!r} at row {bad[0] + 2}",
                             "write 1 for test stimuli and 0 for the others")
        test = np.array([valid[v] for v in flags], dtype=bool)
    embeddings = _read_embeddings(root / "embeddings", n, embedding_order)
    try:
        return Stimuli(ids=np.asarray(ids, dtype=object), captions=captions, categories=categories,
                       image_paths=image_paths, root=root, embeddings=embeddings, test=test)
    except InputError as err:
        raise _rewhere(err, path) from err


#: stimuli.tsv columns the reader reads (besides caption_N)
_STIMULI_COLUMNS = ("stimulus_id", "image", "caption", "categories", "test")
_CAPTION_LIKE = re.compile(r"caption|sentence|description|text", re.IGNORECASE)


def _warn_unread_columns(table: pd.DataFrame, path: Path) -> None:
    """Warn about stimuli.tsv columns the reader does not read, above all captions under another name
    (``sentence_1``, ``Caption_1``, ``caption 2``), which would otherwise be dropped without a word."""
    unread = [c for c in table.columns if c not in _STIMULI_COLUMNS and not _CAPTION_COLUMN.match(c)]
    if not unread:
        return
    captions = [c for c in unread if _CAPTION_LIKE.search(c)]
    message = f"{path}: columns {', '.join(repr(c) for c in unread)} are not read"
    if captions:
        which = "they" if captions == unread else ", ".join(repr(c) for c in captions)
        message += (f"; if {which} hold captions, rename them caption_1, caption_2, … (lower case, an underscore "
                    "and a number) or caption")
    message += f" (the columns read: {', '.join(_STIMULI_COLUMNS)}, caption_1..caption_k)"
    warnings.warn(message, UserWarning, stacklevel=4)


def _read_embeddings(folder: Path, n_stimuli: int, order: list[str] | None) -> dict[str, Embedding]:
    if not folder.is_dir():
        if order:
            raise InputError(folder, f"embeddings folder is missing but study.json lists {', '.join(order)}",
                             "add the embeddings or remove the list from study.json")
        return {}
    names = {p.name[:-4] for p in folder.glob("*.npy") if not p.name.startswith(".")}
    for side in folder.glob("*.json"):
        if not side.name.startswith(".") and side.stem not in names:
            raise InputError(side, f"has no matching {side.stem}.npy", f"add embeddings/{side.stem}.npy or remove it")
    for name in order or []:
        if name not in names:
            raise InputError(folder / f"{name}.npy", "embedding listed in study.json is missing",
                             "add the file or remove the name from the embeddings list of study.json")
    out: dict[str, Embedding] = {}
    for name in _ordered(names, order):
        path = folder / f"{name}.npy"
        values = _load_npy(path, "embedding")
        if values.ndim != 2:
            raise InputError(path, f"has shape {values.shape}, expected 2D (n_stimuli, d)",
                             "save one row per stimulus, one column per feature")
        if not np.issubdtype(values.dtype, np.floating):
            raise InputError(path, f"has dtype {values.dtype}, expected float", "save it as float32")
        if values.shape[0] != n_stimuli:
            raise InputError(path, f"has {values.shape[0]} rows but stimuli.tsv lists {n_stimuli} stimuli",
                             "save one row per stimulus, in stimuli.tsv order")
        if not np.all(np.isfinite(values)):
            row = int(np.argwhere(~np.isfinite(values))[0, 0])
            raise InputError(path, f"contains NaN or Inf (first in row {row})", "recompute the embedding")
        info: dict[str, Any] = {}
        side = folder / f"{name}.json"
        if side.is_file():
            info = _read_json(side, "embedding description", "")
            kind = info.get("kind", "features")
            if kind not in EMBEDDING_KINDS:
                raise InputError(side, f'"kind" is {kind!r}', f"use one of {', '.join(EMBEDDING_KINDS)}")
            if not isinstance(info.get("normalized", False), bool):
                raise InputError(side, f'"normalized" is {info["normalized"]!r}', "write true or false")
            if not isinstance(info.get("model", ""), str):
                raise InputError(side, f'"model" is {info["model"]!r}', "write the model's name as a string")
        try:
            out[name] = Embedding(name=name, values=values, model=info.get("model", ""),
                                  kind=info.get("kind", "features"), normalized=info.get("normalized", False))
        except InputError as err:
            raise _rewhere(err, path) from err
    return out


def _read_subject(folder: Path, known: dict[str, int], resample_anat: bool) -> Subject:
    name = folder.name
    mask_path = _find_nifti(folder, "mask")
    if mask_path is None:
        raise InputError(folder / "mask.nii.gz", "mask file is missing",
                         "put the 3D analysis mask there (nonzero = analysed voxels)")
    mask_data, mask_img = read_nifti(mask_path, ndim=3, what="mask")
    if not np.all(np.isfinite(mask_data)):
        raise InputError(mask_path, "mask contains NaN or Inf", "save the mask as 0/1 integers")
    mask = np.asarray(mask_data) != 0
    if not mask.any():
        raise InputError(mask_path, "mask is empty (no nonzero voxel)", "save a mask with the analysed voxels set to 1")
    affine = np.asarray(mask_img.affine, dtype=float)
    responses, resp_path = _read_responses(folder, mask, mask_path, affine)
    stimulus_ids, sessions = _read_trials(folder / "trials.tsv", responses.shape[0], resp_path, known)
    anat, anat_affine = _read_anat(folder, mask_img, resample_anat)
    rois = _read_rois(folder / "rois", mask.shape, affine, mask_path)
    to_common = _read_to_common(folder / "to_common.txt")
    ncsnr = _read_ncsnr(folder, mask, affine, mask_path)
    try:
        return Subject(name=name, responses=responses, mask=mask, affine=affine, stimulus_ids=stimulus_ids,
                       sessions=sessions, anat=anat, anat_affine=anat_affine, rois=rois, to_common=to_common,
                       ncsnr=ncsnr)
    except InputError as err:
        raise _rewhere(err, folder) from err


def _read_responses(folder: Path, mask: np.ndarray, mask_path: Path,
                    affine: np.ndarray) -> tuple[np.ndarray, Path]:
    nii = _find_nifti(folder, "responses")
    npy = folder / "responses.npy"
    if nii is not None and npy.is_file():
        raise InputError(folder, f"holds both {nii.name} and responses.npy", "keep one of them")
    if nii is None and not npy.is_file():
        raise InputError(folder / "responses.nii.gz", "responses are missing",
                         "save the single-trial responses as responses.nii.gz (4D) or responses.npy "
                         "(n_trials, n_voxels in mask order)")
    n_vox = int(mask.sum())
    if nii is not None:
        data, img = read_nifti(nii, ndim=4, what="responses volume")
        problem = _grid_problem(img, mask.shape, affine, mask_path)
        if problem and tuple(img.shape[1:4]) == tuple(mask.shape):
            raise InputError(nii, f"{problem}: the trials are on the first axis",
                             "save the responses as (x, y, z, n_trials), trials on the last axis (e.g. "
                             "numpy.moveaxis(data, 0, -1))")
        if problem:
            raise InputError(nii, problem, "save the responses and the mask on one grid (same shape and affine)")
        if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
            raise InputError(nii, f"has dtype {data.dtype}", "save the responses as float32")
        responses = np.ascontiguousarray(data[mask].T, dtype=np.float32)
        path = nii
    else:
        responses = _load_npy(npy, "responses")
        path = npy
        if responses.ndim != 2:
            raise InputError(npy, f"has shape {responses.shape}, expected (n_trials, n_voxels)",
                             "save a 2D array, one row per trial")
        if not (np.issubdtype(responses.dtype, np.floating) or np.issubdtype(responses.dtype, np.integer)):
            raise InputError(npy, f"has dtype {responses.dtype}", "save the responses as float32")
        if responses.shape[1] != n_vox and responses.shape[0] == n_vox:
            raise InputError(npy, f"has shape {responses.shape}: {n_vox} rows, as many as {mask_path.name} has "
                             "nonzero voxels; it looks transposed", "save it as (n_trials, n_voxels), e.g. "
                             "numpy.save(path, responses.T)")
        if responses.shape[1] != n_vox:
            raise InputError(npy, f"has {responses.shape[1]} voxel columns but {mask_path.name} has {n_vox} "
                             "nonzero voxels", "save the mask the responses were extracted with")
        responses = np.ascontiguousarray(responses, dtype=np.float32)
    if responses.shape[0] == 0:
        raise InputError(path, "holds no trials", "save at least one trial")
    finite = np.isfinite(responses)
    if not finite.all():
        trial, vox = np.argwhere(~finite)[0]
        ijk = tuple(int(v) for v in np.argwhere(mask)[vox])
        n_bad = int((~finite).sum())
        raise InputError(path, f"responses contain NaN or Inf ({n_bad} value{'s' if n_bad != 1 else ''}; first at trial "
                         f"{trial}, voxel {ijk})", "drop those voxels from the mask or fill them before loading")
    return responses, path


def _read_trials(path: Path, n_trials: int, resp_path: Path,
                 known: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    table = _read_tsv(path, "trials.tsv", ["stimulus_id"],
                      "write trials.tsv with columns trial, stimulus_id, session (one row per response trial)")
    if len(table) != n_trials:
        raise InputError(path, f"lists {len(table)} trials but {resp_path.name} holds {n_trials}",
                         "give one trials.tsv row per response trial, in order")
    if "trial" in table.columns:
        trial = _int_column(table, "trial", path)
        if not np.array_equal(np.sort(trial), np.arange(n_trials)):
            raise InputError(path, "column 'trial' is not 0..n_trials-1 (each trial once)",
                             "number the trials 0, 1, 2, ... in the order of the responses")
        table = table.iloc[np.argsort(trial)]
    ids = np.asarray(table["stimulus_id"].tolist(), dtype=object)
    for row, sid in zip(table.index, table["stimulus_id"]):  # index: the row in the file
        if sid not in known:
            raise InputError(path, f"row {row + 2} names stimulus {sid!r}, which stimuli.tsv does not list",
                             "list every shown stimulus in stimuli.tsv or fix the id")
    sessions = _int_column(table, "session", path) if "session" in table.columns else None
    return ids, sessions


def _read_anat(folder: Path, mask_img, resample: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    path = _find_nifti(folder, "anat")
    if path is None:
        return None, None
    data, img = read_nifti(path, ndim=3, what="anatomy")
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(path, f"has dtype {data.dtype}", "save the anatomy as a numeric image")
    finite = np.isfinite(data)
    if not finite.all():
        # display only: background NaN (as some pipelines write) is shown as 0 rather than refused
        warnings.warn(f"{path}: {int((~finite).sum())} NaN/Inf voxels of the anatomy are shown as 0",
                      stacklevel=3)
        data = np.where(finite, data, 0)
    if _same_grid(img, mask_img.shape, mask_img.affine) or not resample:
        return np.asarray(data, dtype=np.float32), np.asarray(img.affine, dtype=float)
    from nilearn.image import resample_to_img

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)
    out = resample_to_img(img, mask_img, interpolation="continuous", force_resample=True, copy_header=True)
    return np.asarray(out.get_fdata(), dtype=np.float32), np.asarray(mask_img.affine, dtype=float)


def _read_rois(folder: Path, shape: tuple[int, ...], affine: np.ndarray, mask_path: Path) -> dict[str, RoiAtlas]:
    if not folder.is_dir():
        return {}
    volumes = {}
    for p in sorted(folder.iterdir()):
        stem = _nifti_stem(p)
        if stem is not None and not p.name.startswith("."):
            volumes[stem] = p
    for side in sorted(folder.glob("*.tsv")):
        if side.stem not in volumes:
            raise InputError(side, f"has no matching {side.stem}.nii.gz", f"add rois/{side.stem}.nii.gz or remove it")
    rois = {}
    for name, path in volumes.items():
        data, img = read_nifti(path, ndim=3, what="ROI volume")
        problem = _grid_problem(img, shape, affine, mask_path)
        if problem:
            raise InputError(path, problem, f"resample it to the mask, e.g. nilearn.image.resample_to_img(roi, "
                             f"mask, interpolation='nearest'); or, if the other volumes share this grid, check "
                             f"{mask_path.name}")
        if not np.all(np.isfinite(data)) or not np.allclose(data, np.rint(data)):
            raise InputError(path, "holds non-integer labels", "save ROI volumes as integer labels (0 = none)")
        labels = np.rint(data).astype(np.int32)
        if labels.min() < 0:
            raise InputError(path, f"holds negative label {labels.min()}", "use labels 1, 2, ... (0 = none)")
        names: dict[int, str] = {}
        side = path.parent / f"{name}.tsv"
        if side.is_file():
            table = _read_tsv(side, "ROI names", ["label", "name"], "")
            for label, rname in zip(_int_column(table, "label", side), table["name"]):
                names[int(label)] = rname
            unnamed = sorted(set(np.unique(labels).tolist()) - {0} - set(names))
            if unnamed:  # "label 2" here and "FFA-1" elsewhere would be two regions of the group analysis
                warnings.warn(f"{side}: label(s) {', '.join(map(str, unnamed))} of {path.name} have no name, so "
                              "they are called 'label N' and are not grouped with the regions of that name in the "
                              "other participants; add a row 'LABEL<tab>NAME' for each", UserWarning, stacklevel=2)
        rois[name] = RoiAtlas(labels=labels, names=names)
    return rois


def _warn_unnamed_atlases(subjects_dir: Path, subjects: dict[str, Subject]) -> None:
    """Warn of an ROI volume without its ``.tsv`` where other participants name the labels of that atlas: its
    regions are called 'label N', so the group analysis keeps them apart from the named ones."""
    def named(atlas: RoiAtlas) -> bool:  # a names file gave at least one name (unnamed labels are "label N")
        return any(v != f"label {k}" for k, v in atlas.names.items())

    with_names = {r for subj in subjects.values() for r, atlas in subj.rois.items() if named(atlas)}
    for name, subj in subjects.items():
        for rname in sorted(r for r, atlas in subj.rois.items() if not named(atlas) and r in with_names):
            warnings.warn(f"{subjects_dir / name / 'rois'}: {rname} has no {rname}.tsv, while other participants "
                          f"name the labels of {rname}; its regions are called 'label N' and are not grouped with "
                          f"theirs. Fix: add rois/{rname}.tsv (columns label, name)", UserWarning, stacklevel=3)


def _read_to_common(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        matrix = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as err:
        raise InputError(path, f"cannot be read as a 4x4 matrix ({err})",
                         "write 4 rows of 4 numbers separated by spaces") from err
    fix = "write 4 rows of 4 numbers: the affine from the participant's native mm to the common space's mm"
    if matrix.shape != (4, 4):
        raise InputError(path, f"is not a 4x4 affine ({matrix.shape[0]} rows of {matrix.shape[1]} numbers)", fix)
    if not np.all(np.isfinite(matrix)):
        raise InputError(path, "holds NaN or Inf", fix)
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise InputError(path, f"is not an affine: its last row is {' '.join(f'{v:g}' for v in matrix[3])}, "
                         "not 0 0 0 1", fix)
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InputError(path, "is singular (it maps every point onto a plane, line or point; its upper-left "
                         "3x3 has determinant 0)", fix)
    return matrix


def _read_ncsnr(folder: Path, mask: np.ndarray, affine: np.ndarray, mask_path: Path) -> np.ndarray | None:
    nii = _find_nifti(folder, "ncsnr")
    npy = folder / "ncsnr.npy"
    if nii is not None:
        data, img = read_nifti(nii, ndim=3, what="ncsnr volume")
        problem = _grid_problem(img, mask.shape, affine, mask_path)
        if problem:
            raise InputError(nii, problem, "save ncsnr on the mask's grid")
        values, path = np.asarray(data, dtype=np.float32)[mask], nii
    elif npy.is_file():
        values, path = _load_npy(npy, "ncsnr").astype(np.float32).ravel(), npy
        if values.shape != (int(mask.sum()),):
            raise InputError(npy, f"has {values.size} values for {int(mask.sum())} mask voxels",
                             "save one value per mask voxel, in mask order")
    else:
        return None
    if not np.all(np.isfinite(values)):
        raise InputError(path, "ncsnr contains NaN or Inf inside the mask", "drop those voxels from the mask")
    return values


def _read_truth(folder: Path) -> dict[str, Any] | None:
    path = folder / "truth.json"
    if not path.is_file():
        return None
    packed = _read_json(path, "truth", "")
    arrays_path = folder / "arrays.npz"
    arrays: dict[str, np.ndarray] = {}
    if arrays_path.is_file():
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except MemoryError:
            raise
        except Exception as err:  # zipfile, zlib and numpy's header parser each raise their own types
            raise InputError(arrays_path, f"cannot be read ({type(err).__name__}: {err})",
                             "rewrite the study with write_study") from err
    return _unpack(packed, arrays, arrays_path)


def _unpack(obj: Any, arrays: dict[str, np.ndarray], where: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise InputError(where, f"array {key!r} referenced by truth.json is missing",
                                 "rewrite the study with write_study")
            return arrays[key]
        return {k: _unpack(v, arrays, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays, where) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------------
def _check_name(name: str, what: str) -> str:
    if (not isinstance(name, str) or not name.strip() or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name):
        raise InputError(f"{what} name {name!r}", "cannot be used as a file name",
                         "use letters, digits, '-', '_' and '.', not starting with '.'")
    return name


def write_study(study: Study, path: str | os.PathLike, *, overwrite: bool = False,
                responses_format: str = "npy") -> Path:
    """Write ``study`` as a study folder; :func:`read_study` reads it back equal.

    Parameters
    ----------
    study : Study
        In-memory pixels (and images of a lazy ``image_source``) are saved as images/ID.png; image files
        are copied into images/.
    path : path-like
        The folder to write. It must not exist or be empty unless ``overwrite`` is true.
    overwrite : bool
        Replace an existing folder. The new study is written beside it and swapped in at the end,
        so the old one stays intact if writing fails.
    responses_format : {"npy", "nifti"}
        ``"npy"``: responses.npy (n_trials, n_voxels), compact; ``"nifti"``: responses.nii.gz, 4D on the
        mask's grid, readable by any NIfTI tool.

    Returns
    -------
    Path
        The study folder.

    Notes
    -----
    Affines pass through the NIfTI header, which stores them as float32.
    """
    if responses_format not in ("npy", "nifti"):
        raise InputError("parameter responses_format", f"{responses_format!r} is unknown", 'use "npy" or "nifti"')
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(target, "exists and is not a folder", "choose a folder path for the study")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InputError(target, "already exists and is not empty",
                         "choose a new (or empty) folder for --write; in Python, overwrite=True replaces it")
    for name in study.subjects:
        _check_name(name, "subject")
        for rname in study.subjects[name].rois:
            _check_name(rname, "ROI")
    for ename in study.stimuli.embeddings:
        _check_name(ename, "embedding")
    target.parent.mkdir(parents=True, exist_ok=True)
    # a plain mkdir (not tempfile.mkdtemp, whose mode 0700 would stay with the study) beside the target
    staging = target.parent / f".{target.name}.writing-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        _write_study_files(study, staging, responses_format)
        if target.is_dir():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_tsv(path: Path, table: pd.DataFrame) -> None:
    # fields holding a tab, newline or quote are quoted; a carriage return is not (the csv module only
    # looks for the line terminator "\n"), so a table holding one is written with every field quoted
    has_cr = any(table[c].str.contains("\r", regex=False).any() for c in table.columns) if len(table) else False
    quoting = csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL
    write_atomic(path, lambda p: table.to_csv(p, sep="\t", index=False, lineterminator="\n", quoting=quoting))


def _write_study_files(study: Study, root: Path, responses_format: str) -> None:
    meta: dict[str, Any] = {"name": study.name, "space": study.space, "version": STUDY_FORMAT_VERSION}
    if study.tr is not None:
        meta["tr"] = float(study.tr)
    meta["subjects"] = list(study.subjects)
    if study.stimuli.embeddings:
        meta["embeddings"] = list(study.stimuli.embeddings)
    _write_json(root / "study.json", meta)
    _write_stimuli(study.stimuli, root)
    for name, subject in study.subjects.items():
        _write_subject(subject, root / "subjects" / name, responses_format)
    if study.truth is not None:
        arrays: dict[str, np.ndarray] = {}
        packed = _pack(study.truth, arrays, "truth")
        _write_json(root / "truth" / "truth.json", packed)
        if arrays:
            write_atomic(root / "truth" / "arrays.npz", lambda p: np.savez_compressed(p, **arrays))


def _image_names(ids: np.ndarray) -> list[str]:
    names, used = [], set()
    for i, sid in enumerate(ids):
        base = _UNSAFE.sub("_", str(sid)).strip("._") or f"stimulus{i}"
        name = base
        if name.lower() in used:
            name = f"{base}_{i}"
        used.add(name.lower())
        names.append(name)
    return names


def _write_stimuli(stimuli: Stimuli, root: Path) -> None:
    n = len(stimuli)
    table: dict[str, list[str]] = {"stimulus_id": [str(s) for s in stimuli.ids]}
    if stimuli.has_images:
        files = _image_names(stimuli.ids)
        column: list[str] = []
        for i in range(n):
            if stimuli.pixels is not None or stimuli.image_source is not None:
                rel = f"images/{files[i]}.png"
                image = stimuli.image(i)
                write_atomic(root / rel, lambda p, im=image: im.save(p, format="PNG"))
            elif stimuli.image_paths[i] is None:
                rel = ""
            else:
                src = Path(stimuli.image_paths[i])
                src = src if stimuli.root is None else Path(stimuli.root) / src
                if not src.is_file():
                    raise InputError(src, f"image of stimulus {stimuli.ids[i]!r} is missing",
                                     "put the image there or drop its path before writing")
                rel = f"images/{files[i]}{''.join(src.suffixes[-1:]).lower() or '.png'}"
                write_atomic(root / rel, lambda p, s=src: shutil.copyfile(s, p))
            column.append(rel)
        table["image"] = column
    k = max((len(c) for c in stimuli.captions), default=0)
    for j in range(k):
        table[f"caption_{j + 1}"] = [caps[j] if j < len(caps) else "" for caps in stimuli.captions]
    if any(stimuli.categories):
        for i, cats in enumerate(stimuli.categories):
            bad = [c for c in cats if ";" in c]
            if bad:
                raise InputError(f"stimulus {stimuli.ids[i]!r}", f"category {bad[0]!r} contains ';'",
                                 "categories are ';'-separated in stimuli.tsv: rename it")
            bad = [c for c in cats if "/" in c or "\\" in c]
            if bad:  # the reader refuses it: its maps are files named after it
                raise InputError(f"stimulus {stimuli.ids[i]!r}", f"category {bad[0]!r} contains '/' or '\\'",
                                 "its maps are files named after it: rename it without '/' or '\\'")
        table["categories"] = [";".join(cats) for cats in stimuli.categories]
    if stimuli.test is not None:
        table["test"] = ["1" if t else "0" for t in stimuli.test]
    _write_tsv(root / "stimuli.tsv", pd.DataFrame(table, dtype=str))
    for name, emb in stimuli.embeddings.items():
        values = np.asarray(emb.values, dtype=np.float32)
        write_atomic(root / "embeddings" / f"{name}.npy", lambda p, v=values: np.save(p, v, allow_pickle=False))
        _write_json(root / "embeddings" / f"{name}.json",
                    {"model": emb.model, "kind": emb.kind, "normalized": bool(emb.normalized)})


def _write_subject(subject: Subject, folder: Path, responses_format: str) -> None:
    affine = subject.affine
    save_nifti(subject.mask.astype(np.uint8), affine, folder / "mask.nii.gz")
    responses = np.asarray(subject.responses, dtype=np.float32)
    if responses_format == "npy":
        write_atomic(folder / "responses.npy", lambda p: np.save(p, responses, allow_pickle=False))
    else:
        volume = np.moveaxis(subject.to_volume(responses), 0, -1)
        save_nifti(volume, affine, folder / "responses.nii.gz")
    trials = pd.DataFrame({"trial": np.arange(subject.n_trials).astype(str),
                           "stimulus_id": [str(s) for s in subject.stimulus_ids],
                           "session": np.asarray(subject.sessions).astype(str)}, dtype=str)
    _write_tsv(folder / "trials.tsv", trials)
    if subject.anat is not None:
        anat_affine = affine if subject.anat_affine is None else subject.anat_affine
        save_nifti(np.asarray(subject.anat, dtype=np.float32), anat_affine, folder / "anat.nii.gz")
    for name, atlas in subject.rois.items():
        save_nifti(atlas.labels.astype(np.int32), affine, folder / "rois" / f"{name}.nii.gz")
        names = pd.DataFrame({"label": [str(k) for k in sorted(atlas.names)],
                              "name": [atlas.names[k] for k in sorted(atlas.names)]}, dtype=str)
        _write_tsv(folder / "rois" / f"{name}.tsv", names)
    if subject.to_common is not None:
        text = "\n".join(" ".join(f"{v:.17g}" for v in row) for row in np.asarray(subject.to_common)) + "\n"
        write_text_atomic(folder / "to_common.txt", text)
    if subject.ncsnr is not None:
        save_nifti(subject.to_volume(np.asarray(subject.ncsnr, dtype=np.float32)), affine, folder / "ncsnr.nii.gz")


def _pack(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """JSON-able structure of ``obj`` with every array moved to ``arrays`` (referenced by key)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise InputError(where, "is an array of Python objects", "store numbers, booleans or strings")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InputError(where, f"has key {k!r} of type {type(k).__name__}", "use string keys")
            out[str(k)] = _pack(v, arrays, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_pack(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted(_pack(v, arrays, where) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise InputError(where, f"holds a value of type {type(obj).__name__}, which the study folder cannot store",
                     "keep truth to numbers, strings, lists, dicts and numpy arrays")
