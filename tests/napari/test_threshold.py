"""Map threshold: display attributes only, and the same voxels on screen as masking the data would show."""

import numpy as np
import pytest

from napari_brain_concepts._napari.layers import (
    NEGATIVE_COLORMAP,
    NEGATIVE_SUFFIX,
    POSITIVE_COLORMAP,
    map_kwargs,
    plugin_tag,
)
from napari_brain_concepts._napari.threshold import MapDisplay, set_threshold
from napari_brain_concepts.core.errors import InputError


def _map_data(data, name):
    """A map's layer data as the plugin makes them: one layer, or a signed map's two parts."""
    from napari_brain_concepts._napari.layers import with_negative_parts

    kwargs = dict(map_kwargs(data), name=name, metadata=plugin_tag("sub-01", "map"), interpolation2d="nearest")
    return with_negative_parts([(data, kwargs, "image")])


def _map_layers(viewer, data, name):
    from napari_brain_concepts._napari.display import add_layer_data

    return add_layer_data(viewer, _map_data(data, name))


def _map_layer(viewer, data, name):
    return _map_layers(viewer, data, name)[0]


def _visible(viewer, layers):
    for other in viewer.layers:
        other.visible = any(other is layer for layer in layers)
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)


def test_a_signed_map_comes_as_two_parts_over_the_same_data(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.linspace(-2, 2, 2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    positive, negative = _map_layers(viewer, data, "map")
    assert positive.name == "map" and negative.name == "map" + NEGATIVE_SUFFIX
    assert positive.data is data and negative.data is data
    assert positive.colormap.name == POSITIVE_COLORMAP["name"]
    assert negative.colormap.name == NEGATIVE_COLORMAP["name"]
    top = positive.contrast_limits[1]
    assert tuple(negative.contrast_limits) == pytest.approx((-top, 0.0)) and positive.contrast_limits[0] == 0
    # each colormap is black at zero: with additive blending a part shows only its own sign
    assert np.allclose(positive.colormap.map(np.array([0.0]))[0, :3], 0)
    assert np.allclose(negative.colormap.map(np.array([1.0]))[0, :3], 0)
    positive.visible = False  # the parts show and hide together
    assert not negative.visible
    negative.opacity = 0.5
    assert positive.opacity == pytest.approx(0.5)


def test_parts_pair_by_id_not_by_name(make_napari_viewer, qtbot):
    """Two maps of one name (napari renames the second "map [1]"): each part finds its own partner."""
    viewer = make_napari_viewer()
    data = np.linspace(-2, 2, 40, dtype=np.float32).reshape(2, 4, 5)
    first = _map_layers(viewer, data, "map")
    second = _map_layers(viewer, data.copy(), "map")
    assert second[0].name != "map"  # renamed by napari
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.layers.selection.active = second[0]
    display.slider.setValue(1.0)
    assert second[1].contrast_limits[1] == pytest.approx(-1.0)
    assert first[1].contrast_limits[1] == pytest.approx(0.0) and first[0].contrast_limits[0] == 0.0
    second[0].visible = False
    assert not second[1].visible and first[0].visible and first[1].visible


def test_a_map_of_negative_values_only_is_signed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data = -np.linspace(0.5, 2, 40, dtype=np.float32).reshape(2, 4, 5)
    layers = _map_layers(viewer, data, "map")
    assert len(layers) == 2
    set_threshold(layers[0], 1.0, viewer)
    assert layers[1].contrast_limits[1] == pytest.approx(-1.0)  # |value| ≥ 1 stays on show


@pytest.mark.parametrize("signed", [True, False])
def test_slider_shows_the_voxels_masking_would_show_without_touching_data(make_napari_viewer, qtbot, signed):
    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    levels = np.array([0.25, 0.75, 1.25, 1.75], dtype=np.float32)
    data = rng.choice(levels, size=(3, 24, 20)).astype(np.float32)
    if signed:
        data *= rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=data.shape)
    layers = _map_layers(viewer, data, "map")
    assert len(layers) == (2 if signed else 1)
    limits = [tuple(layer.contrast_limits) for layer in layers]
    colormaps = [layer.colormap.name for layer in layers]
    # the reference: the data masked at the threshold, shown with the map's display
    masked = np.where(np.abs(data) >= 1.0, data, 0).astype(np.float32)
    reference = _map_layers(viewer, masked, "masked")
    for ref, lim in zip(reference, limits):
        ref.contrast_limits = lim
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.layers.selection.active = layers[-1]  # for a signed map, its negative part: both follow
    top = max(abs(v) for lim in limits for v in lim)
    assert display.slider.isEnabled() and display.slider.maximum() == pytest.approx(top)

    display.slider.setValue(1.0)
    for layer in layers:
        assert layer.data is data and np.array_equal(layer.data, data)  # never re-set, never changed
    assert [layer.colormap.name for layer in layers] == colormaps
    assert layers[0].contrast_limits[0] == pytest.approx(1.0)
    if signed:
        assert layers[1].contrast_limits[1] == pytest.approx(-1.0)
    shown, expected = _visible(viewer, layers), _visible(viewer, reference)
    lit, lit_expected = shown.max(-1) > 24, expected.max(-1) > 24
    assert lit_expected.sum() > 1000  # the comparison covers many voxels
    assert np.mean(lit != lit_expected) < 0.002  # the same voxels (edge pixels may differ)
    if signed:  # both signs are on show, in their own colours (red for positive, blue for negative)
        assert (shown[lit][:, 0] > shown[lit][:, 2]).any() and (shown[lit][:, 2] > shown[lit][:, 0]).any()

    display.slider.setValue(0.0)  # back to the original display
    assert [tuple(layer.contrast_limits) for layer in layers] == [pytest.approx(lim) for lim in limits]


def test_new_data_in_a_map_keeps_its_threshold_and_the_slider_follows(make_napari_viewer, qtbot):
    """The phrase map's next phrase: new data in the same two parts, the threshold kept, the slider's range
    refreshed; a map that becomes unsigned loses its negative part."""
    from napari_brain_concepts._napari.display import replace_layer_data

    viewer = make_napari_viewer()
    data = np.linspace(-2, 2, 40, dtype=np.float32).reshape(2, 4, 5)
    layers = _map_layers(viewer, data, "phrase map")
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.layers.selection.active = layers[1]
    display.slider.setValue(1.0)
    assert display.slider.maximum() == pytest.approx(2.0)

    kept = replace_layer_data(viewer, _map_data(3 * data, "phrase map"))
    assert kept == layers and all(layer.data is kept[0].data for layer in kept)
    assert kept[0].data.max() == pytest.approx(6.0)
    assert kept[0].contrast_limits[0] == pytest.approx(1.0) and kept[1].contrast_limits[1] == pytest.approx(-1.0)
    qtbot.waitUntil(lambda: display.slider.maximum() == pytest.approx(6.0))
    assert display.slider.value() == pytest.approx(1.0)
    display.slider.setValue(0.0)  # the new map's own limits come back
    assert tuple(kept[0].contrast_limits) == pytest.approx((0.0, 6.0))
    assert tuple(kept[1].contrast_limits) == pytest.approx((-6.0, 0.0))

    (unsigned,) = replace_layer_data(viewer, _map_data(np.abs(data), "phrase map"))
    assert [layer.name for layer in viewer.layers] == ["phrase map"] and unsigned.data.min() >= 0


@pytest.mark.parametrize("signed", [True, False])
def test_the_slider_reaches_the_strongest_voxels(make_napari_viewer, qtbot, signed):
    """The limits stop at the 99th percentile; the slider goes on to the data's largest |value|, and past the
    limits the far limit follows, so the strongest voxels stay on show (not hidden, not a collapsed bar)."""
    viewer = make_napari_viewer()
    data = np.linspace(0.1, 1.0, 1000, dtype=np.float32).reshape(10, 10, 10)
    data[0, 0, :3] = [2.0, 3.0, 4.0]  # three strong voxels above the 99th percentile
    if signed:
        data[5] *= -1
        data[9, 9, :2] = [-5.0, -6.0]
    layers = _map_layers(viewer, data, "map")
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    viewer.layers.selection.active = layers[0]
    top = float(np.abs(data).max())
    assert layers[0].contrast_limits[1] < 1.5 and display.slider.maximum() == pytest.approx(top)
    display.slider.setValue(3.5)
    low, high = layers[0].contrast_limits
    assert low == pytest.approx(3.5) and high >= 4.0 and high - low > 0.01  # the 4.0 voxel stays on show
    if signed:
        low, high = layers[1].contrast_limits
        assert high == pytest.approx(-3.5) and low <= -6.0  # -5 and -6 stay on show
    display.slider.setValue(0.5)  # back inside the original limits: the original far limit again
    assert layers[0].contrast_limits[1] < 1.5


def test_a_map_is_shown_alone_and_the_colour_bar_follows_the_selection(make_napari_viewer, qtbot):
    from napari_brain_concepts._napari.display import show_alone

    viewer = make_napari_viewer()
    data = np.linspace(-2, 2, 40, dtype=np.float32).reshape(2, 4, 5)
    first = _map_layers(viewer, data, "first")
    second = _map_layers(viewer, np.abs(data) + 0.1, "second")
    outline = viewer.add_labels(np.ones((2, 4, 5), dtype=np.uint8), name="roi")
    display = MapDisplay(viewer)
    qtbot.addWidget(display)
    show_alone(viewer, first[1])  # a signed map's negative part: both parts on show, the other map hidden
    assert first[0].visible and first[1].visible and not second[0].visible and outline.visible
    display.colorbar.setChecked(True)
    assert first[0].colorbar.visible and first[1].colorbar.visible
    show_alone(viewer, second[0])
    assert second[0].visible and not first[0].visible and not first[1].visible
    # the colour bar went with the selection: no stale bar of a map not on show
    assert second[0].colorbar.visible and not first[0].colorbar.visible and not first[1].colorbar.visible
    assert display.colorbar.isChecked()


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
    positive, negative = _map_layers(viewer, np.array([[[-1.0, 1.0]]], dtype=np.float32), "signed")
    viewer.layers.selection.active = positive
    display.colorbar.setChecked(True)
    assert positive.colorbar.visible and negative.colorbar.visible
