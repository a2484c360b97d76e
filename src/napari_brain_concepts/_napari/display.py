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
