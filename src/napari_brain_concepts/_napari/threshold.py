"""Threshold and colour bar of the map on show, changed through display attributes only.

A threshold ``t`` hides the voxels of a map whose value is below ``t`` (``|value| < t`` for a signed map) and
leaves the layer's data alone, so napari never re-slices or re-uploads the volume:

- unsigned map: the low contrast limit becomes ``t`` (a shader uniform, the cheapest change napari has). The
  map colormaps start at black, which additive blending over the anatomy leaves invisible.
- signed map: the layer gets the map's own colormap with a transparent band over ``(-t, t)`` (in the layer's
  contrast limits), and the colours outside the band unchanged. napari has no uniform for a two-sided cut, so
  this swaps the colour lookup table (vispy relinks the layer's shader; no voxel data moves).

The original display is kept in the layer's metadata (``brain_concepts.threshold``), so ``t = 0`` restores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel, QWidget

if TYPE_CHECKING:
    import napari

MAP_ROLES = ("map", "prediction")
TRANSPARENT = np.zeros(4, dtype=np.float32)


def is_map_layer(layer: Any) -> bool:
    """An image layer of this plugin that shows a map (not the anatomy, a mask or labels)."""
    from napari.layers import Image

    if not isinstance(layer, Image) or layer.rgb or not isinstance(layer.metadata, dict):
        return False
    tag = layer.metadata.get("brain_concepts")
    return bool(tag) and tag.get("role") in MAP_ROLES


def _state(layer: Any) -> dict:
    """The layer's display before any threshold (recorded on first use)."""
    tag = layer.metadata["brain_concepts"]
    state = tag.get("threshold")
    if state is None:
        lo, hi = (float(v) for v in layer.contrast_limits)
        state = {"value": 0.0, "signed": lo < 0.0 < hi, "low": lo, "colormap": layer.colormap.name}
        tag["threshold"] = state
    return state


def threshold_range(layer: Any) -> float:
    """Largest useful threshold of a map layer: the largest absolute value its contrast limits reach."""
    state = _state(layer)
    lo, hi = (float(v) for v in layer.contrast_limits)
    return max(abs(state["low"]), abs(lo), abs(hi))


def threshold_colormap(base: Any, limits: tuple[float, float], threshold: float, name: str) -> Any:
    """``base`` (a napari Colormap) made transparent where ``|value| < threshold`` under ``limits``.

    The control points of ``base`` are kept and the two band edges are added twice (a step), so every value
    outside the band keeps exactly the colour ``base`` gives it.
    """
    from napari.utils.colormaps import Colormap

    lo, hi = (float(v) for v in limits)
    span = hi - lo if hi > lo else 1.0
    a, b = (np.clip(np.array([-threshold, threshold]) - lo, 0.0, span) / span).tolist()
    controls = np.asarray(base.controls, dtype=np.float64)
    below, above = controls[controls < a], controls[controls > b]
    new = np.concatenate([below, [a, a, b, b], above])
    colors = np.asarray(base.map(new), dtype=np.float32).reshape(len(new), 4)
    colors[len(below) + 1: len(below) + 3] = TRANSPARENT  # the band: from just after a to just before b
    # a band that reaches an end of the range needs no step on that side
    start = len(below) + 1 if a <= 0.0 else 0
    stop = len(below) + 3 if b >= 1.0 else len(new)
    new, colors = new[start:stop], colors[start:stop]
    new[0], new[-1] = 0.0, 1.0
    return Colormap(colors=colors, controls=new, name=name, interpolation="linear")


def set_threshold(layer: Any, threshold: float) -> None:
    """Hide the voxels of map ``layer`` below ``threshold`` (in absolute value for a signed map)."""
    from napari.utils.colormaps.colormap_utils import AVAILABLE_COLORMAPS, ensure_colormap

    from ..core.errors import InputError

    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise InputError("threshold", f"{threshold} is not a finite value ≥ 0", "give a threshold ≥ 0")
    state = _state(layer)
    state["value"] = threshold
    if not state["signed"]:
        hi = float(layer.contrast_limits[1])
        low = max(state["low"], min(threshold, float(np.nextafter(hi, -np.inf))))
        if layer.contrast_limits[0] != low:
            layer.contrast_limits = (low, hi)
        return
    name = f"{layer.name} |value| ≥ threshold"
    if layer.colormap.name not in (state["colormap"], name):  # the user chose another colormap since
        state["colormap"] = layer.colormap.name
    base = ensure_colormap(state["colormap"])
    if threshold == 0.0:
        cmap = base
    else:
        cmap = threshold_colormap(base, tuple(layer.contrast_limits), threshold, name)
        # one registry entry per layer, replaced at each change (napari keeps every named colormap)
        AVAILABLE_COLORMAPS.pop(name, None)
        AVAILABLE_COLORMAPS[name] = cmap
    layer.colormap = cmap


class MapDisplay(QWidget):
    """Threshold slider (superqt) and colour-bar switch for the selected map layer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from superqt import QLabeledDoubleSlider

        self.viewer = viewer
        self.layer = None
        self.name = QLabel("Select a map layer.")
        self.name.setWordWrap(True)
        self.slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.slider.setDecimals(3)
        self.slider.setToolTip("hide the voxels below this value (|value| for signed maps)")
        self.colorbar = QCheckBox("Colour bar")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Map", self.name)
        form.addRow("Threshold", self.slider)
        form.addRow(self.colorbar)
        self.slider.valueChanged.connect(self._on_slider)
        self.colorbar.toggled.connect(self._on_colorbar)
        viewer.layers.selection.events.active.connect(self._on_active)
        self._on_active()

    def _on_active(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        self.layer = layer if layer is not None and is_map_layer(layer) else None
        enabled = self.layer is not None
        for w in (self.slider, self.colorbar):
            w.setEnabled(enabled)
        if not enabled:
            self.name.setText("Select a map layer.")
            return
        self.name.setText(self.layer.name)
        top = threshold_range(self.layer)
        value = _state(self.layer)["value"]
        self.slider.blockSignals(True)
        self.slider.setRange(0.0, top)
        self.slider.setSingleStep(top / 100 if top > 0 else 0.01)
        self.slider.setValue(value)
        self.slider.blockSignals(False)
        self.colorbar.blockSignals(True)
        self.colorbar.setChecked(bool(self.layer.colorbar.visible))
        self.colorbar.blockSignals(False)

    def _on_slider(self, value: float) -> None:
        if self.layer is not None:
            set_threshold(self.layer, value)

    def _on_colorbar(self, shown: bool) -> None:
        if self.layer is not None:
            self.layer.colorbar.visible = shown
