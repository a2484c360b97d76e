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


def sync_results(viewer, session) -> list:
    """Add the layers of the session's results folder, for the participant on show, that are not shown yet."""
    from ..core.io.results import ResultsStore
    from .layers import results_layers

    root = session.results_dir
    if session.subject is None or root is None or not ResultsStore.is_results(root):
        return []
    present = {layer.name for layer in viewer.layers}
    new = [t for t in results_layers(root, session.subject, session.concept) if t[1]["name"] not in present]
    for _, kwargs, _ in new:
        kwargs["visible"] = False
    return add_layer_data(viewer, new)
