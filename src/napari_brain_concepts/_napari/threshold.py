"""Threshold and colour bar of the map on show, changed through contrast limits only.

A threshold ``t`` hides the voxels of a map whose value is below ``t`` (``|value| < t`` for a signed map) and
leaves the layer's data alone, so napari never re-slices or re-uploads the volume. The plugin's map colormaps
are black at the contrast limit next to zero and clamp to black beyond it, which additive blending over the
anatomy leaves invisible; a contrast limit is a shader uniform, the cheapest change napari has:

- unsigned map, and the positive part of a signed map: the low contrast limit becomes ``t``;
- the negative part of a signed map (a second layer over the same data, see
  :func:`napari_brain_concepts._napari.layers.with_negative_parts`): the high contrast limit becomes ``-t``.

The colour ramp then starts at ``t`` (a voxel just above the threshold is dark). The slider reaches the
map's largest ``|value|``: past the original limits (the 99th percentile) the far limit moves out to the
data's extreme, so the strongest voxels stay on show. The slider and the colour-bar switch act on both parts
of a signed map, whichever is selected; with colour bars on, the bar follows the selected map. The original
limits are kept in the layer's metadata (``brain_concepts.threshold``), so ``t = 0`` restores them. A colormap the user picks
from napari's list need not start at black: the voxels below ``t`` then show in its first colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel, QPushButton, QWidget

if TYPE_CHECKING:
    import napari

MAP_ROLES = ("map", "prediction")


def is_map_layer(layer: Any) -> bool:
    """An image layer of this plugin that shows a map (not the anatomy, a mask or labels)."""
    from napari.layers import Image

    if not isinstance(layer, Image) or layer.rgb or not isinstance(layer.metadata, dict):
        return False
    tag = layer.metadata.get("brain_concepts")
    return bool(tag) and tag.get("role") in MAP_ROLES


def _tag(layer: Any) -> dict:
    return layer.metadata["brain_concepts"]


def _state(layer: Any) -> dict:
    """The layer's contrast limits before any threshold (recorded on first use)."""
    tag = _tag(layer)
    state = tag.get("threshold")
    if state is None:
        lo, hi = (float(v) for v in layer.contrast_limits)
        state = {"value": 0.0, "low": lo, "high": hi}
        tag["threshold"] = state
    return state


def parts(viewer: Any, layer: Any) -> list:
    """``layer`` and, for a part of a signed map, the other part when the viewer holds it.

    The other part carries the same ``pair`` id, the other ``part`` tag and the very same data array (a
    duplicated layer, which copies the tags, is no part of the pair).
    """
    tag = _tag(layer)
    pair = tag.get("pair")
    if viewer is None or not pair:
        return [layer]
    others = [other for other in viewer.layers
              if other is not layer and isinstance(other.metadata, dict)
              and (other.metadata.get("brain_concepts") or {}).get("pair") == pair
              and other.metadata["brain_concepts"].get("part") != tag.get("part")
              and other.data is layer.data]
    return [layer, others[0]] if len(others) == 1 else [layer]


def link_parts(viewer: Any, layer: Any) -> None:
    """Tie the visibility, opacity and blending of a signed map's two parts (napari's ``link_layers``,
    which ignores links already made)."""
    from napari.experimental import link_layers

    if is_map_layer(layer):
        both = parts(viewer, layer)
        if len(both) == 2:
            link_layers(both, ("visible", "opacity", "blending"))


def _data_extent(layer: Any) -> tuple[float, float]:
    """Smallest and largest finite value of the layer's data (0, 0 when it has none)."""
    data = np.asarray(layer.data)
    finite = data[np.isfinite(data)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def threshold_range(layer: Any) -> float:
    """Largest useful threshold of a map layer: the largest absolute value of its data or its limits (the
    limits stop at the 99th percentile, the data go on to the strongest voxels)."""
    state = _state(layer)
    lo, hi = (float(v) for v in layer.contrast_limits)
    return max(abs(state["low"]), abs(state["high"]), abs(lo), abs(hi), *(abs(v) for v in _data_extent(layer)))


def _apply(layer: Any, threshold: float) -> None:
    """Set the contrast limits of one part for ``threshold``. Past the original limits (they stop at the 99th
    percentile), the far limit moves out to the data's extreme, so the strongest voxels stay on show."""
    state = _state(layer)
    state["value"] = threshold
    lo, hi = (float(v) for v in layer.contrast_limits)
    if _tag(layer).get("part") == "negative":
        if -threshold > state["low"]:
            limits = (state["low"], min(state["high"], -threshold))
        else:
            far = min(_data_extent(layer)[0], -threshold)
            limits = (far - 0.01 * max(abs(far), 1e-12), -threshold)
    elif threshold < state["high"]:
        limits = (max(state["low"], threshold), state["high"])
    else:
        far = max(_data_extent(layer)[1], threshold)
        limits = (threshold, far + 0.01 * max(abs(far), 1e-12))
    if (lo, hi) != limits:
        layer.contrast_limits = limits


def set_threshold(layer: Any, threshold: float, viewer: Any = None) -> None:
    """Hide the voxels of map ``layer`` below ``threshold``; with ``viewer``, both parts of a signed map."""
    from ..core.errors import InputError

    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise InputError("threshold", f"{threshold} is not a finite value ≥ 0", "give a threshold ≥ 0")
    for part in parts(viewer, layer):
        _apply(part, threshold)


def forget_threshold(layer: Any) -> None:
    """Drop the recorded display (after the layer's data and limits were replaced)."""
    _tag(layer).pop("threshold", None)


class MapDisplay(QWidget):
    """Threshold slider (superqt) and colour-bar switch for the selected map layer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from superqt import QLabeledDoubleSlider

        self.viewer = viewer
        self.layer = None
        self._watched = None  # the layer whose data changes refresh the slider's range
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.timeout.connect(self._on_active)
        self.name = QLabel("Select a map layer.")
        self.name.setWordWrap(True)
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setDecimals(3)
        self.slider.setToolTip("hide the voxels below this value (|value| for signed maps)")
        self.colorbar = QCheckBox("Colour bar")
        self.peak_button = QPushButton("Go to peak")
        self.peak_button.setToolTip("move the slices to the map's strongest region: the voxel whose 3×3×3 "
                                    "neighbourhood has the largest mean |value|")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Map", self.name)
        form.addRow("Threshold", self.slider)
        form.addRow(self.colorbar, self.peak_button)
        self.slider.valueChanged.connect(self._on_slider)
        self.peak_button.clicked.connect(self.go_to_peak)
        self.colorbar.toggled.connect(self._on_colorbar)
        viewer.layers.selection.events.active.connect(self._on_active)
        # the parts of maps added by napari itself (reader, sample) are tied here
        viewer.layers.events.inserted.connect(lambda event: link_parts(self.viewer, event.value))
        for layer in list(viewer.layers):
            link_parts(viewer, layer)
        self._on_active()

    def _on_active(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        self.layer = layer if layer is not None and is_map_layer(layer) else None
        if self._watched is not self.layer:
            if self._watched is not None:
                self._watched.events.data.disconnect(self._on_data)
            self._watched = self.layer
            if self.layer is not None:
                self.layer.events.data.connect(self._on_data)
        enabled = self.layer is not None
        for w in (self.slider, self.colorbar, self.peak_button):
            w.setEnabled(enabled)
        if not enabled:
            self.name.setText("Select a map layer.")
            return
        self.name.setText(self.layer.name)
        both = parts(self.viewer, self.layer)
        bars = [layer for layer in self.viewer.layers if is_map_layer(layer) and layer.colorbar.visible]
        if bars:  # colour bars on: they follow the selected map (a bar of a map not selected goes stale)
            for layer in bars:
                if not any(layer is p for p in both):
                    layer.colorbar.visible = False
            for part in both:
                part.colorbar.visible = True
        top = max(threshold_range(p) for p in both)
        value = _state(self.layer)["value"]
        self.slider.blockSignals(True)
        self.slider.setRange(0.0, top)
        self.slider.setSingleStep(top / 100 if top > 0 else 0.01)
        self.slider.setValue(value)
        self.slider.blockSignals(False)
        self.colorbar.blockSignals(True)
        self.colorbar.setChecked(bool(self.layer.colorbar.visible))
        self.colorbar.blockSignals(False)

    def go_to_peak(self) -> None:
        """Move the slices to the selected map's peak."""
        from .display import go_to_peak

        if self.layer is not None:
            go_to_peak(self.viewer, self.layer)

    def _on_data(self, event=None) -> None:
        """New data in the selected map (e.g. the next phrase map): refresh the range once the change is done
        (the code that sets the data sets the contrast limits and the threshold right after)."""
        self._refresh.start(0)

    def _on_slider(self, value: float) -> None:
        if self.layer is not None:
            set_threshold(self.layer, value, self.viewer)

    def _on_colorbar(self, shown: bool) -> None:
        if self.layer is not None:
            for part in parts(self.viewer, self.layer):
                part.colorbar.visible = shown
