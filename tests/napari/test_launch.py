"""`brain-concepts view`: the viewer opens with the study loaded and the volumes fitted to the shown canvas.

The tests that make a napari.Viewer themselves (launch_viewer) come before the one that uses make_napari_viewer: a
Viewer made after that fixture's teardown registered the plugin's commands a second time (app_model refused).
"""

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


def test_view_of_a_folder_that_cannot_be_read_says_why_and_saves_no_picture(tmp_path, qtbot, capsys):
    """`brain-concepts view BROKEN --screenshot` printed no error, exited 0 and saved an empty viewer."""
    import numpy as np

    from napari_brain_concepts.cli import main
    from napari_brain_concepts.core.io.study_folder import write_study
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    root = write_study(make_synthetic_study(seed=0, size="tiny", embedding="features", n_subjects=2), tmp_path / "s")
    responses = root / "subjects" / "sub-01" / "responses.npy"
    values = np.load(responses)
    values[0, 0] = np.nan
    np.save(responses, values)
    png = tmp_path / "view.png"
    assert main(["view", str(root), "--screenshot", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {responses}: responses contain NaN or Inf (1 value; first at trial 0"), err
    assert not png.exists()


def test_docks_stacked_in_one_column_fit_a_laptop_screen(make_napari_viewer):
    """The step docks scroll: six docks added from the Plugins menu need less than a 1080-px screen (they
    needed 2,054 px, the plot canvases' heights, with no way to reach the bottom ones)."""
    viewer = make_napari_viewer(show=True)
    docks = [viewer.window.add_plugin_dock_widget("napari-brain-concepts", name)
             for name in ("Study", "Decode", "Concepts", "Captions", "Alignment", "Export")]
    assert viewer.window._qt_window.minimumSizeHint().height() < 1000
    decode = docks[1][1]
    assert decode.minimumSizeHint().height() < decode.plot.minimumSizeHint().height()  # it scrolls
