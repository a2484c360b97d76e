"""The one place where core results become napari layer data (results store and space mapping).

Every volume passes through :func:`napari_brain_concepts.core.space.nifti_to_layer`, so overlays line up
with the anatomy and the world coordinates are the subject's millimetres. This module builds layer-data
tuples only (``(data, kwargs, layer_type)``); it never touches a viewer, so it also serves the sample-data
contribution and the reader.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.space import nifti_to_layer, refine_layer
from ..core.study import RoiAtlas, Study, Subject

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: colormaps: a signed map (decoder weights, t, r) is shown as two layers over the same data, its positive
#: part (black-red-yellow over [0, top]) and its negative part (cyan-blue-black over [-top, 0]); each colormap
#: reaches black at zero and stays black past it, so with additive blending each part shows only its own
#: sign, and a threshold is one contrast limit per part (see ``threshold.py``). Unsigned maps (counts, r²) are
#: sequential from black.
POSITIVE_COLORMAP = {
    "name": "positive (red-yellow)",
    "colors": [[0.0, 0.0, 0.0, 1.0], [1.0, 0.2, 0.0, 1.0], [1.0, 0.85, 0.2, 1.0]],
    "controls": [0.0, 0.5, 1.0],
}
NEGATIVE_COLORMAP = {
    "name": "negative (cyan-blue)",
    "colors": [[0.2, 0.7, 1.0, 1.0], [0.0, 0.25, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]],
    "controls": [0.0, 0.5, 1.0],
}
NEGATIVE_SUFFIX = " negative"
UNSIGNED_COLORMAP = "inferno"
MASK_COLORS = {None: "transparent", 1: [0.75, 0.75, 0.75, 1.0]}
#: ROI outline tints, one per localizer family, away from the maps' colours (red-yellow, cyan-blue, inferno),
#: so that an outline is not read as a map's value: faces magenta, bodies green, places white, words mint
_ROI_TINTS = {"face": [1.0, 0.3, 1.0], "bod": [0.3, 1.0, 0.35], "place": [1.0, 1.0, 1.0],
              "word": [0.55, 1.0, 0.8]}


def plugin_tag(subject: str | None, role: str, **display: Any) -> dict[str, Any]:
    """Metadata that marks a layer as ours, so the Study widget can swap a participant's layers.

    ``display`` holds layer attributes that napari does not take in the constructor (e.g. ``contour`` of
    labels); :func:`napari_brain_concepts._napari.display.add_layer_data` applies them.
    """
    return {"brain_concepts": {"subject": subject, "role": role, "display": display}}


def volume_layer(volume: np.ndarray, affine: np.ndarray, name: str, layer_type: str = "image",
                 subject: str | None = None, role: str = "map", header=None, **kwargs: Any) -> LayerData:
    """Any 3D (or 4D) volume in a subject's grid → layer data through the space mapping."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume), np.asarray(affine, dtype=float), header=header)
    metadata = kwargs.pop("metadata", {}) or {}
    display = {k: kwargs.pop(k) for k in ("contour",) if k in kwargs}
    metadata.update(plugin_tag(subject, role, **display))
    data, layer_kwargs = nifti_to_layer(img, name=name, metadata=metadata)
    if layer_type == "labels" and display.get("contour"):  # a thin outline, not the coarse voxels
        data, layer_kwargs = refine_layer(data, layer_kwargs)
    layer_kwargs.update(kwargs)
    return data, layer_kwargs, layer_type


def map_kwargs(values: np.ndarray, signed: bool | None = None, percentile: float = 99.0) -> dict[str, Any]:
    """Colormap, contrast limits and blending for a float map over the anatomy.

    For a signed map these are the display of its positive part: pass the layer data through
    :func:`with_negative_parts` to add the negative part.
    """
    finite = np.asarray(values)[np.isfinite(values)]
    nonzero = finite[finite != 0]
    if signed is None:
        signed = bool(nonzero.size and nonzero.min() < 0)  # a map of negative values only too
    if nonzero.size == 0:
        top = 1.0
    else:
        top = float(np.percentile(np.abs(nonzero), percentile)) or float(np.abs(nonzero).max()) or 1.0
    if signed:  # the positive part; :func:`with_negative_parts` adds the negative one
        return dict(colormap=POSITIVE_COLORMAP, contrast_limits=(0.0, top), blending="additive", opacity=0.8)
    low = float(nonzero.min()) if nonzero.size else 0.0
    return dict(colormap=UNSIGNED_COLORMAP, contrast_limits=(min(low, top * 0.5), top), blending="additive",
                opacity=0.8)


def with_negative_parts(layers: list[LayerData]) -> list[LayerData]:
    """``layers`` with, after each signed map, its negative part: a layer over the same data.

    The two parts share an id (``brain_concepts['pair']``) and are tagged with their ``part``
    (``"positive"``/``"negative"``), so the threshold, the colour bar and the visibility act on both, and the
    export writes the map once.
    """
    out: list[LayerData] = []
    for data, kwargs, layer_type in layers:
        out.append((data, kwargs, layer_type))
        if layer_type != "image" or (kwargs.get("colormap") or {}) != POSITIVE_COLORMAP:
            continue  # not a signed map (map_kwargs gives a signed map's positive part this colormap)
        tag = kwargs["metadata"]["brain_concepts"]
        if "pair" in tag:  # its negative part is there already
            continue
        pair = uuid.uuid4().hex  # names can clash (napari renames the second "X" to "X [1]"): an id cannot
        top = float(kwargs["contrast_limits"][1])
        negative = {**kwargs, "name": kwargs["name"] + NEGATIVE_SUFFIX, "colormap": NEGATIVE_COLORMAP,
                    "contrast_limits": (-top, 0.0),
                    "metadata": {**kwargs["metadata"],
                                 "brain_concepts": {**tag, "part": "negative", "pair": pair}}}
        tag.update(part="positive", pair=pair)
        out.append((data, negative, layer_type))
    return out


def anatomy_layer(subject: Subject) -> LayerData | None:
    if subject.anat is None:
        return None
    return volume_layer(subject.anat, subject.anat_affine, f"{subject.name} anatomy", subject=subject.name,
                        role="anatomy", **anatomy_kwargs(subject.anat))


def anatomy_kwargs(anat: np.ndarray) -> dict[str, Any]:
    """Grey, and darker than its full range: maps are blended additively on top and must stand out."""
    anat = np.asarray(anat)
    lo, hi = np.percentile(anat[anat > 0], [1, 99.5]) if np.any(anat > 0) else (0.0, 1.0)
    return {"colormap": "gray", "contrast_limits": (float(lo), float(lo + 2.2 * (hi - lo)))}


def mask_layer(subject: Subject) -> LayerData:
    return volume_layer(subject.mask.astype(np.uint8), subject.affine, f"{subject.name} mask", "labels",
                        subject=subject.name, role="mask", contour=1, opacity=0.35, colormap=MASK_COLORS)


def roi_colors(name: str, atlas: RoiAtlas) -> dict | None:
    """One tint per localizer family (faces magenta, bodies green, places white, words mint), shaded per region."""
    tint = next((np.array(c) for key, c in _ROI_TINTS.items() if key in name.lower()), None)
    if tint is None:
        return None
    labels = sorted(atlas.names)
    colors: dict = {None: "transparent"}
    for i, label in enumerate(labels):
        shade = 1.0 - 0.35 * i / max(1, len(labels) - 1)
        colors[label] = [*(tint * shade), 1.0]
    return colors


def roi_features(atlas: RoiAtlas) -> pd.DataFrame:
    """Label → name table, shown by napari in the status bar when hovering a region."""
    labels = [0, *sorted(atlas.names)]
    return pd.DataFrame({"index": labels, "name": ["none"] + [atlas.names[k] for k in labels[1:]]})


def roi_layers(subject: Subject) -> list[LayerData]:
    """One outlined labels layer per ROI atlas. The category localizers (faces, bodies, places, words: what the
    concepts are checked against) are shown; other atlases (NSD's nsdgeneral, prf-visualrois, streams, …) are
    added hidden, as their outlines at once would cover the maps. A study without localizers shows its first
    atlas."""
    out = []
    tinted = {rname: roi_colors(rname, atlas) for rname, atlas in subject.rois.items()}
    shown = {r for r, colors in tinted.items() if colors} or set(list(subject.rois)[:1])
    for rname, atlas in subject.rois.items():
        colors = tinted[rname]
        out.append(volume_layer(atlas.labels, subject.affine, f"{subject.name} {rname}", "labels",
                                subject=subject.name, role="roi", contour=1, opacity=0.9, visible=rname in shown,
                                features=roi_features(atlas), **({"colormap": colors} if colors else {})))
    return out


def values_map_layer(subject: Subject, values: np.ndarray, name: str, signed: bool | None = None,
                     role: str = "map", visible: bool = True) -> LayerData:
    """Per-voxel values (n_voxels,) of ``subject`` → a map layer on the subject's grid."""
    volume = subject.to_volume(np.asarray(values, dtype=np.float32))
    return volume_layer(volume, subject.affine, f"{subject.name} {name}", subject=subject.name, role=role,
                        visible=visible, **map_kwargs(values, signed))


def region_layer(subject: Subject, regions: dict[str, np.ndarray], name: str = "planted regions") -> LayerData:
    """Several boolean volumes as one labels layer with names (e.g. the synthetic study's planted truth)."""
    labels = np.zeros(subject.mask.shape, dtype=np.int32)
    names = {}
    for i, (cname, vol) in enumerate(regions.items(), start=1):
        labels[np.asarray(vol, dtype=bool) & (labels == 0)] = i
        names[i] = cname
    # one colour per concept, the same in every participant (napari's random label colours changed with the
    # participant's set of regions); the name shows in the status bar on hover
    colors = {None: "transparent", **{i: region_color(c) for i, c in names.items()}}
    return volume_layer(labels, subject.affine, f"{subject.name} {name}", "labels", subject=subject.name,
                        role="truth", contour=1, opacity=0.9, features=roi_features(RoiAtlas(labels, names)),
                        colormap=colors)


def region_color(concept: str) -> list[float]:
    """A fixed colour per concept: matplotlib's tab10 in the order of the synthetic study's concepts (all ten
    distinct); another name gets one of tab20 by a stable hash of the name."""
    import zlib

    from matplotlib import colormaps

    from ..core.synthetic import CONCEPTS

    rgba = (colormaps["tab10"](CONCEPTS.index(concept)) if concept in CONCEPTS
            else colormaps["tab20"](zlib.crc32(concept.encode()) % 20))
    return [*map(float, rgba[:3]), 1.0]


def study_layers(study: Study, subject_name: str | None = None, maps: dict[str, np.ndarray] | None = None
                 ) -> list[LayerData]:
    """Anatomy, mask outline, ROIs, planted regions (synthetic) and ``maps`` of one subject."""
    subject = study.subject(subject_name)
    layers: list[LayerData] = []
    anat = anatomy_layer(subject)
    if anat is not None:
        layers.append(anat)
    for i, (name, values) in enumerate((maps or {}).items()):
        layers.append(values_map_layer(subject, values, name, visible=i == 0))
    layers.append(mask_layer(subject))
    layers.extend(roi_layers(subject))
    truth = (study.truth or {}).get("regions", {}).get(subject.name)
    if truth:
        layers.append(region_layer(subject, truth))
    return with_negative_parts(layers)


def nifti_file_layer(path: str | Path, subject: str | None = None, role: str = "map",
                     name: str | None = None) -> LayerData:
    """A NIfTI file → layer data: integer volumes become labels, float volumes images with a map colormap."""
    from ..core.io.volumes import load_nifti

    path = Path(path)
    img = load_nifti(path, what="volume")
    raw = np.asanyarray(img.dataobj)
    base = name or path.name.removesuffix(".gz").removesuffix(".nii")
    if np.issubdtype(raw.dtype, np.integer) and role not in ("map", "anatomy"):
        metadata = plugin_tag(subject, role, **({"contour": 1} if role in ("mask", "roi") else {}))
        data, kwargs = nifti_to_layer(img, name=base, metadata=metadata)
        if role in ("mask", "roi"):  # outlines: thin lines, not the coarse voxels
            data, kwargs = refine_layer(data, kwargs)
        kwargs.update(opacity=0.7)
        return data, kwargs, "labels"
    metadata = plugin_tag(subject, role)
    data, kwargs = nifti_to_layer(img, name=base, metadata=metadata)
    if role == "anatomy":
        kwargs.update(anatomy_kwargs(data))
    elif data.ndim == 3:
        kwargs.update(map_kwargs(data))
    return data, kwargs, "image"


def basis_concepts(store) -> set[str]:
    """Ids of the concept basis' components in a results store (empty before the concepts step)."""
    if not store.array_path("concept_basis", ".npz").is_file():
        return set()
    return {str(c) for c in store.read_arrays("concept_basis")["concept_ids"]}


def _concept_masks(store, subject: str, concept: str) -> list[LayerData]:
    """The soft and hard mask of one basis concept, tagged with the concept."""
    layers = []
    soft, hard = store.maps(subject).get(f"mask_{concept}"), store.masks(subject).get(concept)
    if soft is not None:
        layers.append(nifti_file_layer(soft, subject, "map", f"{subject} mask_{concept}"))
    if hard is not None:
        layers.append(nifti_file_layer(hard, subject, "mask", f"{subject} mask {concept}"))
    for _, kwargs, _ in layers:
        kwargs["metadata"]["brain_concepts"]["concept"] = concept
    return layers


def concept_layers(results_root: str | Path, subject: str, concept: str) -> list[LayerData]:
    """The soft and hard mask of basis concept ``concept`` for ``subject`` (visible), from a results store."""
    from ..core.io.results import ResultsStore

    layers = _concept_masks(ResultsStore.open(results_root), subject, concept)
    for _, kwargs, _ in layers:
        kwargs["visible"] = True
    return with_negative_parts(layers)


def results_entries(store, subject: str) -> dict[str, tuple[Path, str, str | None, str]]:
    """The maps and masks a results store holds for ``subject``, without loading them.

    Returns ``{entry: (path, role, subject or None, layer name)}`` in display order: the participant's maps,
    its masks, then the maps shared by all participants. ``entry`` is the layer name without the participant
    (``corr_face``, ``mask shared-00``, ``shared-00``); a map of all participants has no participant in its
    layer name, and its entry says so (``shared-00 (all participants)``). The basis concepts' soft and hard
    masks are not entries: they come one concept at a time (:func:`concept_layers`).
    """
    basis = basis_concepts(store)
    entries: dict[str, tuple[Path, str, str | None, str]] = {}
    for n, p in store.maps(subject).items():
        if not (n.startswith("mask_") and n[len("mask_"):] in basis):
            entries[n] = (p, "map", subject, f"{subject} {n}")
    for n, p in store.masks(subject).items():
        if n not in basis:
            entries[f"mask {n}"] = (p, "mask", subject, f"{subject} mask {n}")
    for n, p in store.shared_maps().items():
        # the shared step names its concepts "shared-00"…: no second "shared" in front
        name = n if n.startswith("shared") else f"shared {n}"
        entries[f"{name} (all participants)"] = (p, "map", None, name)
    return entries


def describe_entry(entry: str) -> str:
    """What a results map or mask shows, in a line (the Map box's tooltip)."""
    if entry.endswith(" (all participants)"):
        return "how many participants' masks of this shared concept hold each voxel (common space)"
    rules = [
        ("corr_", "Pearson r of each voxel's response with the presence of {}"),
        ("decoder_weight_norm", "how much the decoder uses each voxel (norm of its weights)"),
        ("decoder_", "the decoder's voxel weights projected on the embedding direction of {}"),
        ("encoding_noise_ceiling", "the noise ceiling of each voxel's r (from the repeats)"),
        ("encoding_r_", "held-out r of the encoding model of the {} embedding"),
        ("searchlight_rsa_", "searchlight RSA r of the {} embedding"),
        ("mask_", "soft voxel mask of concept {} (the decoder reads it out through these voxels)"),
        ("mask shared-", "this participant's voxels in shared concept shared-{}"),
        ("mask searchlight_centres", "the voxels that are searchlight sphere centres (the searchlight maps are 0 "
                                     "elsewhere){}"),
        ("mask ", "hard voxel mask of concept {} (soft mask ≥ threshold)"),
        ("shared-", "each voxel's similarity to shared concept shared-{} (its decoder weights vs the centroid)"),
    ]
    for prefix, text in rules:
        if entry.startswith(prefix):
            return text.format(entry[len(prefix):]) if "{}" in text else text
    return entry


def default_entry(entries) -> str | None:
    """The map shown first: the face concept's map, else the first concept map, else the first map."""
    names = list(entries)
    return next((n for n in names if n == "corr_face"),
                next((n for n in names if n.startswith("corr_")), names[0] if names else None))


def results_layers(results_root: str | Path, subject: str, concept: str | None = None,
                   names=None) -> list[LayerData]:
    """Maps, masks and shared overlap counts of ``subject`` from a results store, as layer data.

    ``names`` picks entries of :func:`results_entries` (default: all). napari adds about three layers a
    second, and a full analysis holds about 45 maps and masks per participant (97 layers with the signed
    maps' two parts): the Study widget loads only the maps the user picks. The basis concepts' soft and hard
    masks come only for ``concept`` (the one selected in the Concepts widget). Each layer's tag names its
    ``entry``. Only the default entry (:func:`default_entry`) among those loaded starts visible.
    """
    from ..core.io.results import ResultsStore

    store = ResultsStore.open(results_root)
    entries = results_entries(store, subject)
    chosen = list(entries) if names is None else [n for n in entries if n in set(names)]
    layers = []
    for own in chosen:
        path, role, subj, name = entries[own]
        data, kwargs, layer_type = nifti_file_layer(path, subj, role, name)
        if subj is None:  # a count from 0: a colormap from black, which additive blending and the threshold hide
            kwargs.update(colormap=UNSIGNED_COLORMAP, contrast_limits=(0, max(1.0, float(np.max(data)))))
        kwargs["metadata"]["brain_concepts"]["entry"] = own
        layers.append((data, kwargs, layer_type))
    if concept in basis_concepts(store):
        layers += _concept_masks(store, subject, concept)
    # one map at a time over the anatomy
    shown = default_entry(chosen)
    for _, kwargs, _ in layers:
        kwargs["visible"] = kwargs["metadata"]["brain_concepts"].get("entry") == shown
    return with_negative_parts(layers)
