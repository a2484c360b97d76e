"""Space mapping NIfTI → napari layer data, and back.

Every volume reaches napari through :func:`nifti_to_layer`: the image is reoriented to the closest
canonical (RAS+) orientation with flips and permutations only, its axes moved to (S, A, R) so that napari's
slider runs inferior→superior and each slice shows anterior/right in-plane, ``scale`` is set from the voxel
sizes and ``translate`` from the affine. A layer's world coordinate (napari's order (z, y, x)) is then the
NIfTI millimetre coordinate of the voxel. The original affine, header and orientation are kept in
``metadata`` so that :func:`layer_to_nifti` writes back exactly what was read.

Oblique affines (rotations or shears that no flip/permutation removes) cannot be shown with scale and
translate; they are resampled with nilearn to the nearest axis-aligned grid, with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import nibabel as nib
import numpy as np

from .errors import InputError

#: napari axis order of every volume layer (world coordinates are NIfTI mm in this order).
AXIS_LABELS = ("S", "A", "R")
#: position of each RAS axis in the layer array: layer axis k holds RAS axis _TO_LAYER[k].
_TO_LAYER = (2, 1, 0)
OBLIQUE_TOLERANCE = 1e-3
#: side (mm) of the sub-voxels that outline layers are drawn on (:func:`refine_layer`)
OUTLINE_MM = 1.0
#: the most voxels a refined layer may hold (a coarser refinement is taken beyond it)
MAX_REFINED_VOXELS = 40_000_000


def is_oblique(affine: np.ndarray, tol: float = OBLIQUE_TOLERANCE) -> bool:
    """True when the 3x3 part is not a scaled permutation with flips."""
    rzs = np.asarray(affine, dtype=float)[:3, :3]
    sizes = np.sqrt((rzs ** 2).sum(axis=0))
    cosines = np.abs(rzs / sizes)
    return bool(np.any((cosines > tol) & (cosines < 1 - tol)))


def _as_image(img_or_data, affine=None) -> nib.Nifti1Image:
    if isinstance(img_or_data, nib.spatialimages.SpatialImage):
        return img_or_data
    if affine is None:
        raise InputError("volume", "an array was given without its affine", "pass the voxel-to-mm affine too")
    data = np.asarray(img_or_data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)  # NIfTI has no boolean type; nifti_to_layer gives bool back
    # nibabel refuses 64-bit integers unless the type is named explicitly
    dtype = data.dtype if data.dtype in (np.int64, np.uint64) else None
    return nib.Nifti1Image(data, np.asarray(affine, dtype=float), dtype=dtype)


def nifti_to_layer(img_or_data, affine: np.ndarray | None = None, *, name: str | None = None,
                   resample_oblique: bool = True, **layer_kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Map a NIfTI image (or array + affine) to napari layer data and keyword arguments.

    Extra dimensions after the third (e.g. time, or a stack of maps) are kept and put first.
    Returns ``(data, kwargs)`` with ``scale``, ``translate``, ``units``, ``axis_labels``, ``name`` and
    ``metadata`` (``affine``, ``header``, ``ornt``, ``shape``, ``resampled``).
    """
    img = _as_image(img_or_data, affine)
    original_affine = np.asarray(img.affine, dtype=float).copy()
    original_shape = tuple(int(s) for s in img.shape)
    header = img.header.copy() if hasattr(img, "header") else None
    resampled = False
    if is_oblique(img.affine):
        if not resample_oblique:
            raise InputError(name or "volume", "affine is oblique (rotated); napari can only show axis-aligned grids",
                             "resample it to an axis-aligned grid, or pass resample_oblique=True")
        warnings.warn(f"{name or 'volume'}: oblique affine, resampled to the nearest axis-aligned grid "
                      "for display; the written file keeps the resampled grid.", stacklevel=2)
        img = _deoblique(img)
        resampled = True
    ornt = nib.orientations.io_orientation(img.affine)
    canonical = nib.as_closest_canonical(img)
    data = np.asanyarray(canonical.dataobj)
    can_aff = np.asarray(canonical.affine, dtype=float)
    extra = data.ndim - 3
    # RAS (x, y, z, *extra) → (*extra, S, A, R)
    data = np.moveaxis(data, [2, 1, 0, *range(3, data.ndim)], [*range(extra, extra + 3), *range(extra)])
    data = np.ascontiguousarray(data)
    if getattr(img_or_data, "dtype", None) == np.bool_:
        data = data.astype(bool)
    vox = np.diag(can_aff)[:3]
    scale = tuple([1.0] * extra + [float(vox[k]) for k in _TO_LAYER])
    translate = tuple([0.0] * extra + [float(can_aff[k, 3]) for k in _TO_LAYER])
    labels = tuple([f"dim{i}" for i in range(extra)] + list(AXIS_LABELS))
    metadata = dict(layer_kwargs.pop("metadata", {}) or {})
    metadata.update(affine=original_affine, header=header, ornt=ornt, shape=original_shape,
                    resampled=resampled, resampled_affine=np.asarray(img.affine, dtype=float))
    kwargs: dict[str, Any] = dict(scale=scale, translate=translate, units=("mm",) * data.ndim if extra == 0
                                  else ("pixel",) * extra + ("mm",) * 3,
                                  axis_labels=labels, metadata=metadata)
    if name is not None:
        kwargs["name"] = name
    kwargs.update(layer_kwargs)
    return data, kwargs


def _deoblique(img: nib.Nifti1Image) -> nib.Nifti1Image:
    from nilearn.image import resample_img

    rzs = np.asarray(img.affine)[:3, :3]
    sizes = np.sqrt((rzs ** 2).sum(axis=0))
    target = np.diag(np.r_[sizes.min().repeat(3), 1.0])
    interp = "nearest" if np.issubdtype(np.asarray(img.dataobj).dtype, np.integer) else "continuous"
    # resample into an axis-aligned box covering the image
    out = resample_img(img, target_affine=target[:3, :3], interpolation=interp, force_resample=True,
                       copy_header=True)
    return out


def refine_layer(data: np.ndarray, kwargs: dict[str, Any], target_mm: float = OUTLINE_MM
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """A labels layer (from :func:`nifti_to_layer`) on a finer grid, for display as outlines.

    napari draws a labels contour one layer pixel wide, so on a coarse grid (4-8 mm) the outline of a small
    region is the whole region, and hides the map under it. Each voxel is split into ``u × u × u``
    sub-voxels of about ``target_mm`` (``u`` rounded; none below 1.5 mm voxels), with ``scale`` and
    ``translate`` set so that every sub-voxel lies inside its voxel: world coordinates, and so overlays, are
    unchanged. ``metadata['refine'] = u``; :func:`layer_to_volume` takes each voxel's centre sub-voxel back,
    so the written file has the original grid.
    """
    scale = np.asarray(kwargs["scale"], dtype=float)
    u = int(np.clip(round(float(scale[-3:].min()) / target_mm), 1, 16))
    while u > 1 and np.prod(data.shape, dtype=float) * u ** 3 > MAX_REFINED_VOXELS:
        u -= 1
    if u == 1:
        return data, kwargs
    fine = np.asarray(data)
    if np.issubdtype(fine.dtype, np.integer) and fine.size and 0 <= fine.min() and fine.max() < 256:
        fine = fine.astype(np.uint8)  # u³ times the voxels: the smallest type that holds the labels
    for axis in range(data.ndim - 3, data.ndim):
        fine = np.repeat(fine, u, axis=axis)
    new_scale = scale.copy()
    new_scale[-3:] /= u
    translate = np.asarray(kwargs["translate"], dtype=float).copy()
    translate[-3:] += (new_scale[-3:] - scale[-3:]) / 2  # sub-voxel 0's centre, half a voxel less a sub-voxel
    metadata = {**kwargs.get("metadata", {}), "refine": u}
    return fine, {**kwargs, "scale": tuple(new_scale), "translate": tuple(translate), "metadata": metadata}


def layer_to_volume(data: np.ndarray, metadata: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`nifti_to_layer` (and :func:`refine_layer`): layer data → (array in the original voxel
    order, affine)."""
    data = np.asarray(data)
    u = int(metadata.get("refine", 1))
    if u > 1:  # each voxel's centre sub-voxel
        data = data[(Ellipsis, *[slice(u // 2, None, u)] * 3)]
    extra = data.ndim - 3
    ras = np.moveaxis(data, [*range(extra, extra + 3), *range(extra)], [2, 1, 0, *range(3, data.ndim)])
    ornt = np.asarray(metadata["ornt"])
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    vol = nib.orientations.apply_orientation(ras, inverse)
    affine = metadata["resampled_affine"] if metadata.get("resampled") else metadata["affine"]
    return np.ascontiguousarray(vol), np.asarray(affine, dtype=float)


def layer_to_nifti(data: np.ndarray, metadata: dict[str, Any], dtype=None) -> nib.Nifti1Image:
    """A NIfTI image of layer ``data`` with the affine (and header) the layer was read with.

    Boolean layers (masks) are written as uint8 0/1.
    """
    vol, affine = layer_to_volume(data, metadata)
    if dtype is not None:
        vol = vol.astype(dtype)
    if vol.dtype == np.bool_:
        vol = vol.astype(np.uint8)  # NIfTI has no boolean type
    header = metadata.get("header")
    img = nib.Nifti1Image(vol, affine, header=header.copy() if header is not None else None)
    img.set_data_dtype(vol.dtype)
    img.set_sform(affine, code=int(header["sform_code"]) if header is not None and int(header["sform_code"]) else 1)
    img.set_qform(affine, code=int(header["qform_code"]) if header is not None and int(header["qform_code"]) else 1)
    return img


def world_of_voxel(ijk, affine: np.ndarray) -> np.ndarray:
    """NIfTI mm coordinate of voxel ``ijk`` in napari order (z, y, x)."""
    xyz = nib.affines.apply_affine(np.asarray(affine, dtype=float), np.asarray(ijk, dtype=float))
    return np.asarray(xyz)[..., ::-1]


def peak_point(img: nib.Nifti1Image) -> np.ndarray:
    """Where a viewer should cut to show map ``img``: NIfTI mm coordinate in napari order (z, y, x).

    The voxel whose 3 × 3 × 3 neighbourhood has the largest mean ``|value|`` (zero outside the grid): the
    strongest region of the map, positive or negative. The neighbourhood keeps one strong stray voxel from
    drawing the view away from a region, and, unlike the largest cluster above a percentile (nilearn's
    ``find_xyz_cut_coords``), a wide weak region of a dense map (an r map is non-zero everywhere) from
    drawing it away from a smaller, stronger one. A map with no non-zero voxel gives the centre of its grid.
    """
    from scipy.ndimage import uniform_filter

    img = _as_image(img)
    data = np.abs(np.nan_to_num(np.asarray(img.dataobj, dtype=np.float64)))
    if not np.any(data):
        return world_of_voxel((np.asarray(data.shape[:3], dtype=float) - 1) / 2, img.affine)
    local = uniform_filter(data, size=3, mode="constant")
    return world_of_voxel(np.unravel_index(int(np.argmax(local)), local.shape), img.affine)
