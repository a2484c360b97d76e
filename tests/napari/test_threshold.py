"""Map threshold: display attributes only, and the same voxels on screen as masking the data would show."""

import numpy as np
import pytest
from napari.utils.colormaps import ensure_colormap

from napari_brain_concepts._napari.layers import SIGNED_COLORMAP, map_kwargs, plugin_tag
from napari_brain_concepts._napari.threshold import MapDisplay, set_threshold, threshold_colormap
from napari_brain_concepts.core.errors import InputError


@pytest.mark.parametrize("limits, t", [((-2.0, 2.0), 0.5), ((-1.0, 3.0), 1.5), ((-2.0, 2.0), 2.5),
                                       ((-2.0, 2.0), 1e-3)])
def test_threshold_colormap_cuts_a_band_and_keeps_every_other_colour(limits, t):
    base = ensure_colormap(SIGNED_COLORMAP)
    cut = threshold_colormap(base, limits, t, "test cut")
    lo, hi = limits
    v = np.linspace(lo, hi, 801)
    x = (v - lo) / (hi - lo)
    inside, outside = np.abs(v) < t * 0.999, np.abs(v) > t * 1.001
    got, want = cut.map(x), base.map(x)
    assert np.all(got[inside, 3] == 0)
    np.testing.assert_allclose(got[outside], want[outside], atol=1e-6)
    assert cut.controls[0] == 0 and cut.controls[-1] == 1


def _map_layer(viewer, data, name):
    kwargs = map_kwargs(data)
    return viewer.add_image(data, name=name, metadata=plugin_tag("sub-01", "map"), interpolation2d="nearest",
                            **kwargs)


def _visible(viewer, layer):
    for other in viewer.layers:
        other.visible = other is layer
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)


@pytest.mark.parametrize("signed", [True, False])
def test_slider_shows_the_voxels_masking_would_show_without_touching_data(make_napari_viewer, qtbot, signed):
    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    levels = np.array([0.25, 0.75, 1.25, 1.75], dtype=np.float32)
    data = rng.choice(levels, size=(3, 24, 20)).astype(np.float32)
    if signed:
        data *= rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=data.shape)
    layer = _map_layer(viewer, data, "map")
    limits, colormap = tuple(layer.contrast_limits), layer.colormap.name
    # the reference: the data masked at the threshold, shown with the map's display
    masked = np.where(np.abs(data) >= 1.0, data, 0).astype(np.float32)
    reference = _map_layer(viewer, masked, "masked")
    reference.contrast_limits, reference.colormap = limits, colormap
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.layers.selection.active = layer
    assert display.slider.isEnabled() and display.slider.maximum() == pytest.approx(max(map(abs, limits)))

    display.slider.setValue(1.0)
    assert layer.data is data and np.array_equal(layer.data, data)  # never re-set, never changed
    if signed:
        assert tuple(layer.contrast_limits) == pytest.approx(limits) and layer.colormap.name != colormap
    else:
        assert layer.contrast_limits[0] == pytest.approx(1.0)
    shown, expected = _visible(viewer, layer), _visible(viewer, reference)
    lit, lit_expected = shown.max(-1) > 24, expected.max(-1) > 24
    assert lit_expected.sum() > 1000  # the comparison covers many voxels
    assert np.mean(lit != lit_expected) < 0.002  # the same voxels (edge pixels may differ)
    if signed:  # the colours too: outside the band the colormap is the map's own
        both = lit & lit_expected
        assert np.percentile(np.abs(shown[both] - expected[both]), 99) <= 3

    display.slider.setValue(0.0)  # back to the original display
    assert tuple(layer.contrast_limits) == pytest.approx(limits) and layer.colormap.name == colormap


def test_threshold_rejects_a_negative_value(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _map_layer(viewer, np.ones((2, 4, 4), dtype=np.float32), "map")
    with pytest.raises(InputError, match="threshold"):
        set_threshold(layer, -1.0)


def test_display_ignores_layers_that_are_not_maps(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.add_image(np.ones((2, 4, 4), dtype=np.float32), name="anatomy",
                     metadata=plugin_tag("sub-01", "anatomy"))
    assert not display.slider.isEnabled()
    layer = _map_layer(viewer, np.ones((2, 4, 4), dtype=np.float32), "map")
    viewer.layers.selection.active = layer
    assert display.slider.isEnabled() and display.name.text() == "map"
    display.colorbar.setChecked(True)
    assert layer.colorbar.visible
