"""npe2 writers: image and labels layers → NIfTI with the affine the data was read with."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from ..core.io.volumes import save_image
from ..core.space import layer_to_nifti


def _affine_from_layer(data: np.ndarray, attributes: dict[str, Any]) -> dict[str, Any]:
    """Metadata for a layer that did not come from a NIfTI file: axes (…, S, A, R), affine from scale/translate."""
    scale = np.asarray(attributes.get("scale", np.ones(data.ndim)), dtype=float)[-3:]
    translate = np.asarray(attributes.get("translate", np.zeros(data.ndim)), dtype=float)[-3:]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(scale[::-1])
    affine[:3, 3] = translate[::-1]
    return {"affine": affine, "ornt": nib.orientations.axcodes2ornt("RAS"), "header": None,
            "resampled": False}


def _write(path: str, data: Any, attributes: dict[str, Any], dtype=None) -> list[str]:
    path = str(path)
    if not path.endswith((".nii", ".nii.gz")):
        path += ".nii.gz"
    data = np.asarray(data)
    if data.ndim < 3:
        raise ValueError(f"{path}: layer has {data.ndim} dimensions; NIfTI needs a 3D volume. "
                         "Fix: save 3D (or 4D) layers only.")
    metadata = attributes.get("metadata") or {}
    if "ornt" not in metadata or "affine" not in metadata:
        metadata = {**metadata, **_affine_from_layer(data, attributes)}
    img = layer_to_nifti(data, metadata, dtype=dtype)
    save_image(img, path)
    return [path]


def write_image(path: str, data: Any, attributes: dict) -> list[str]:
    return _write(path, data, attributes)


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    data = np.asarray(data)
    dtype = np.uint8 if data.max(initial=0) < 256 and data.min(initial=0) >= 0 else np.int32
    return _write(path, data, attributes, dtype=dtype)

