"""npe2 reader for NIfTI volumes (``*.nii``, ``*.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

from .layers import nifti_file_layer, with_negative_parts

_EXTENSIONS = (".nii", ".nii.gz")


#: last words of anatomical image file names: the study folder's anat.nii.gz, BIDS *_T1w / *_T2w; and the
#: MNI152 templates (mni152*)
_ANATOMY = {"anat", "anatomy", "t1w", "t2w", "t1", "t2"}


def _role(path: Path) -> str:
    name = path.name.lower()
    if "mask" in name:
        return "mask"
    if "roi" in str(path.parent).lower() or name.startswith(("floc", "prf", "roi", "atlas", "label")):
        return "roi"
    stem = name.removesuffix(".gz").removesuffix(".nii")
    # the last word (BIDS: the suffix; "space-T1w" in the middle of a BOLD file's name is no anatomy)
    if stem.split("_")[-1] in _ANATOMY or stem.startswith("mni152"):
        return "anatomy"
    return "auto"


def get_reader(path):
    """Return a reader for one NIfTI path (or a list of them), or None for anything else."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(_EXTENSIONS) for p in paths):
        return None
    return read_nifti


def read_nifti(path):
    """NIfTI files → layer data (the space mapping of core.space; integer volumes open as labels)."""
    import nibabel as nib
    import numpy as np

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in map(Path, paths):
        role = _role(p)
        if role == "auto":
            dtype = nib.load(str(p)).get_data_dtype() if p.is_file() else np.dtype(float)
            role = "roi" if np.issubdtype(dtype, np.integer) else "map"
        layers.append(nifti_file_layer(p, role=role))
    return with_negative_parts(layers)
