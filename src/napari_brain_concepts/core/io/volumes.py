"""NIfTI volumes: read with clear errors, write atomically keeping affine and header."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .atomic import write_atomic


def _nifti_header(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, uncompressed) starts like a NIfTI-1 or NIfTI-2 header."""
    return len(head) >= 4 and any(int.from_bytes(head[:4], order) in (348, 540) for order in ("little", "big"))


def _misnamed(path: Path) -> str | None:
    """The fix for a NIfTI file whose name says the wrong compression (None when the name fits, or the
    file is no NIfTI image either way)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        gzipped = head[:2] == b"\x1f\x8b"
        if gzipped:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    if not _nifti_header(head):
        return None
    if gzipped and not path.name.endswith(".gz"):
        return f"the file is gzip-compressed: name it {path.name}.gz"
    if not gzipped and path.name.endswith(".gz"):
        return f"the file is not gzip-compressed: name it {path.name[:-3]}"
    return None


def read_nifti(path: str | os.PathLike, *, ndim: int | None = None,
               what: str = "volume") -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a NIfTI file once and return ``(data, image)``, checked like :func:`load_nifti`.

    Use it where the data are needed right away (large 4D responses), so a compressed file is
    decompressed once, not twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file is missing", f"put the {what} there (NIfTI .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error,
            gzip.BadGzipFile) as err:
        detail = " ".join(str(err).split())
        raise InputError(path, f"cannot be read as NIfTI ({type(err).__name__}: {detail})",
                         _misnamed(path) or "re-export the file; it may be truncated or not a NIfTI image") from err
    if ndim is not None and data.ndim != ndim:
        if ndim == 3 and data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
            img = nib.Nifti1Image(data, img.affine, img.header)
        else:
            raise InputError(path, f"{what} has {data.ndim} dimensions {data.shape}, expected {ndim}",
                             f"give a {ndim}D {what}")
    if not np.all(np.isfinite(img.affine)):
        raise InputError(path, "affine contains NaN or Inf", "fix the header's sform/qform")
    return data, img


def load_nifti(path: str | os.PathLike, *, ndim: int | None = None, what: str = "volume") -> nib.Nifti1Image:
    """Load a NIfTI image and check it can be read and has ``ndim`` dimensions.

    The data are read once here so that a truncated or corrupt file fails now, with its name, not later
    in the middle of an analysis.
    """
    return read_nifti(path, ndim=ndim, what=what)[1]


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               header: nib.Nifti1Header | None = None, dtype=None) -> Path:
    """Write ``data`` with ``affine`` (and ``header``) to ``path`` atomically."""
    data = np.asarray(data)
    if dtype is not None:
        if np.issubdtype(np.dtype(dtype), np.integer) and data.size and data.dtype != np.bool_:
            info = np.iinfo(dtype)
            low, high = np.min(data), np.max(data)
            if not (np.isfinite(low) and np.isfinite(high)) or low < info.min or high > info.max:
                worst = high if not np.isfinite(low) or high > info.max else low
                raise InputError(path, f"values up to {worst} do not fit {np.dtype(dtype).name} "
                                 f"({info.min}..{info.max}); writing them would wrap around",
                                 f"scale or clip the values to {info.min}..{info.max}, or save as float32")
        data = data.astype(dtype)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=float), header=header.copy() if header is not None else None)
    img.set_data_dtype(data.dtype)
    img.set_sform(np.asarray(affine, dtype=float), code=1)
    img.set_qform(np.asarray(affine, dtype=float), code=1)
    img.header["scl_slope"] = np.nan
    img.header["scl_inter"] = np.nan
    return write_atomic(path, lambda tmp: nib.save(img, str(tmp)))


def save_image(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Write a ready NIfTI image atomically."""
    return write_atomic(path, lambda tmp: nib.save(img, str(tmp)))
