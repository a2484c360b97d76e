"""Add layer data to a viewer and apply the display attributes napari sets only after construction."""

from __future__ import annotations

from collections.abc import Iterable


def add_layer_data(viewer, layer_data: Iterable[tuple]) -> list:
    """Add ``(data, kwargs, layer_type)`` tuples; apply ``metadata['brain_concepts']['display']``."""
    added = []
    for data, kwargs, layer_type in layer_data:
        layer = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
        tag = layer.metadata.get("brain_concepts") or {}
        for attr, value in (tag.get("display") or {}).items():
            setattr(layer, attr, value)
        added.append(layer)
    from .threshold import link_parts

    for layer in added:
        link_parts(viewer, layer)
    return added


def replace_layer_data(viewer, layer_data: list[tuple]) -> list:
    """Show ``layer_data`` in place of the layers of the same names (a map's two parts count as one).

    When the viewer holds exactly these layers, the new data go into them and their display (colormap,
    opacity, a threshold) is kept; otherwise (a first showing, or a map that became signed or unsigned) the
    old layers are removed and the new ones added.
    """
    from .layers import NEGATIVE_SUFFIX
    from .threshold import forget_threshold, is_map_layer, set_threshold

    names = [kwargs["name"] for _, kwargs, _ in layer_data]
    family = {n.removesuffix(NEGATIVE_SUFFIX) for n in names}
    family |= {n + NEGATIVE_SUFFIX for n in family}
    old = [layer for layer in viewer.layers if layer.name in family]
    if sorted(layer.name for layer in old) != sorted(names):
        for layer in old:
            viewer.layers.remove(layer)
        return add_layer_data(viewer, layer_data)
    kept = []
    for data, kwargs, _ in layer_data:
        layer = viewer.layers[kwargs["name"]]
        value = 0.0
        if is_map_layer(layer):
            value = (layer.metadata["brain_concepts"].get("threshold") or {}).get("value", 0.0)
            forget_threshold(layer)
        layer.data = data
        if "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
        if value:
            set_threshold(layer, value)
        kept.append(layer)
    return kept


def show_alone(viewer, layer) -> None:
    """Show map ``layer`` (both parts of a signed map) over the anatomy and select it; other maps are hidden,
    since additive maps over one another give colours that no colour bar explains."""
    from .threshold import is_map_layer, parts

    shown = parts(viewer, layer) if is_map_layer(layer) else [layer]
    if is_map_layer(layer):
        for other in viewer.layers:
            if is_map_layer(other) and other.visible and not any(other is p for p in shown):
                other.visible = False
    for part in shown:
        part.visible = True
    viewer.layers.selection.active = layer


def go_to_peak(viewer, layer) -> None:
    """Move the viewer's slices to the peak of map ``layer``, the centre of its strongest region
    (:func:`napari_brain_concepts.core.space.peak_point`)."""
    from ..core.space import layer_to_nifti, peak_point

    if "ornt" not in layer.metadata:  # not read through nifti_to_layer: no NIfTI space to find a peak in
        return
    point = peak_point(layer_to_nifti(layer.data, layer.metadata))
    ndim = viewer.dims.ndim
    viewer.dims.set_point(list(range(ndim - 3, ndim)), tuple(float(v) for v in point))


def _results_root(session):
    from ..core.io.results import ResultsStore

    root = session.results_dir
    if session.subject is None or root is None or not ResultsStore.is_results(root):
        return None
    return root


def load_results_layers(viewer, session, entries) -> list:
    """The layers of results ``entries`` (see :func:`~napari_brain_concepts._napari.layers.results_entries`)
    of the participant on show, loaded now where the viewer does not hold them yet.

    New layers come hidden, below the outlines (mask, ROIs, planted regions), so that the outlines stay on
    top of every map. Returns the layers of those entries (both parts of a signed map), old and new.
    """
    from .layers import results_layers

    root = _results_root(session)
    if root is None:
        return []
    wanted = set(entries)
    present = [layer for layer in viewer.layers if _entry(layer) in wanted]
    missing = results_layers(root, session.subject, names=wanted - {_entry(layer) for layer in present})
    # a layer of the same name that came another way is that entry already (a shared concept's hard mask,
    # loaded with the concept when it was picked): not loaded twice
    names = {t[1]["name"] for t in missing}
    present += [layer for layer in viewer.layers if layer.name in names]
    have = {layer.name for layer in present}
    new = [t for t in missing if t[1]["name"] not in have]
    for _, kwargs, _ in new:
        kwargs["visible"] = False
    added = add_layer_data(viewer, new)
    below_outlines(viewer, added)
    return present + added


def results_entries(session) -> dict:
    """The results entries of the participant on show (empty without results)."""
    from ..core.io.results import ResultsStore
    from .layers import results_entries as entries

    root = _results_root(session)
    return {} if root is None else entries(ResultsStore.open(root), session.subject)


def refresh_results(viewer, session) -> list:
    """Reload the results layers on show from their files (a step run again rewrites them)."""
    from .layers import results_layers

    root = _results_root(session)
    if root is None:
        return []
    shown = {_entry(layer) for layer in viewer.layers} - {None}
    groups: dict[str, list] = {}
    for data in results_layers(root, session.subject, names=shown):
        groups.setdefault(data[1]["metadata"]["brain_concepts"]["entry"], []).append(data)
    out = []
    for group in groups.values():  # a signed map's two parts together
        visible = [viewer.layers[t[1]["name"]].visible for t in group if t[1]["name"] in viewer.layers]
        layers = replace_layer_data(viewer, group)
        below_outlines(viewer, layers)
        for layer in layers:
            layer.visible = any(visible)
        out += layers
    return out


def _entry(layer) -> str | None:
    tag = layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None
    return tag.get("entry") if tag else None


def below_outlines(viewer, layers) -> None:
    """Move ``layers`` under the lowest of the plugin's outline layers (mask, ROIs, planted regions)."""
    roles = ("mask", "roi", "truth")
    outlines = [i for i, layer in enumerate(viewer.layers)
                if isinstance(layer.metadata, dict) and (layer.metadata.get("brain_concepts") or {}).get("role")
                in roles and _entry(layer) is None and "concept" not in layer.metadata["brain_concepts"]]
    if not outlines or not layers:
        return
    first = outlines[0]
    names = {layer.name for layer in layers}  # not ids: a plugin's viewer hands out a new proxy each time
    moving = [i for i, layer in enumerate(viewer.layers) if layer.name in names and i > first]
    if moving:
        viewer.layers.move_multiple(moving, first)
