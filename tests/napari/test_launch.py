"""`brain-concepts view`: the viewer opens with the study loaded and the volumes fitted to the shown canvas."""

import pytest

from napari_brain_concepts._napari.launch import launch_viewer
from napari_brain_concepts._napari.study_widget import camera


def test_view_opens_loaded_and_fitted_to_the_canvas(qtbot):
    viewer = launch_viewer(None, block=False, size="tiny")
    try:
        assert any(layer.name.endswith("anatomy") for layer in viewer.layers)
        zoom = camera(viewer).zoom
        viewer.reset_view()  # already fitted to the shown canvas: fitting again changes nothing
        assert camera(viewer).zoom == pytest.approx(zoom, rel=1e-3)
    finally:
        viewer.close()


def test_view_screenshot_is_written(tmp_path, qtbot):
    png = tmp_path / "view.png"
    launch_viewer(None, screenshot=png, block=False, size="tiny")  # closes the viewer once saved
    assert png.stat().st_size > 10_000
