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
    return added
