"""The Study dock widget: load the synthetic study in a worker, switch participant, keep camera and slice."""

import numpy as np

from napari_brain_concepts._napari.study_widget import StudyWidget, camera


def _ours(viewer):
    return [layer for layer in viewer.layers if layer.metadata.get("brain_concepts")]


def test_study_widget_loads_and_switches_participant(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-brain-concepts", "Study")
    assert isinstance(widget, StudyWidget)
    widget.load_synthetic(size="tiny", seed=0)
    qtbot.waitUntil(lambda: widget.study is not None and widget.subject is not None, timeout=600_000)
    first = widget.study.subject_names[0]
    assert widget.subject_box.count() == len(widget.study.subject_names)
    assert all(layer.metadata["brain_concepts"]["subject"] == first for layer in _ours(viewer)
               if layer.metadata["brain_concepts"]["subject"] is not None)

    viewer.dims.set_point(0, viewer.dims.point[0] + 8)
    camera(viewer).zoom = camera(viewer).zoom * 1.7
    point, zoom = tuple(viewer.dims.point), camera(viewer).zoom
    second = widget.study.subject_names[1]
    widget.subject_box.setCurrentText(second)
    subjects = {layer.metadata["brain_concepts"]["subject"] for layer in _ours(viewer)}
    assert subjects == {second}
    assert np.allclose(viewer.dims.point, point)
    assert np.isclose(camera(viewer).zoom, zoom)
    # ROI outlines carry their names
    rois = [layer for layer in _ours(viewer) if layer.metadata["brain_concepts"]["role"] == "roi"]
    assert rois and all("name" in layer.features.columns for layer in rois)


def test_study_widget_reports_a_bad_folder(make_napari_viewer, qtbot, tmp_path):
    from napari_brain_concepts._napari import workers

    viewer = make_napari_viewer(show=True)
    widget = StudyWidget(viewer)
    messages = []
    widget._failed = messages.append
    workers.SYNCHRONOUS = True
    try:
        widget.open_study(tmp_path)
    finally:
        workers.SYNCHRONOUS = False
    assert len(messages) == 1
    assert "study.json" in str(messages[0])
    assert widget.study is None and len(viewer.layers) == 0
