"""Open napari with a study, a results folder or the synthetic study loaded (``brain-concepts view``)."""

from __future__ import annotations

from pathlib import Path


def launch_viewer(path: str | Path | None = None, screenshot: str | Path | None = None, block: bool = True,
                  size: str = "tiny"):
    """Start napari with the Study widget docked and ``path`` loaded.

    ``path`` may be a study folder, a results folder (its study is loaded with it) or ``None`` for the
    synthetic study. With ``screenshot`` the shown viewer is saved to that PNG once loaded.
    """
    import napari

    from ..core.errors import InputError
    from ..core.io.results import ResultsStore
    from . import workers

    viewer = napari.Viewer(title="napari-brain-concepts")
    for name in ("Decode", "Concepts", "Captions", "Alignment", "Export"):
        viewer.window.add_plugin_dock_widget("napari-brain-concepts", name, tabify=True)
    # added last, the Study widget is the tab on show
    _, widget = viewer.window.add_plugin_dock_widget("napari-brain-concepts", "Study", tabify=True)
    workers.SYNCHRONOUS = True  # load before the event loop starts: the viewer opens ready
    failures: list[BaseException] = []
    widget._failed = failures.append  # a folder that cannot be read ends the command with its error
    try:
        if path is None:
            widget.load_synthetic(size=size)
        elif ResultsStore.is_results(path):
            widget.open_results(path)
        elif Path(path).is_dir():
            widget.open_study(path)
        else:
            raise InputError(path, "is neither a study folder nor a results folder",
                             "give a folder with study.json or manifest.json")
    finally:
        workers.SYNCHRONOUS = False
        del widget._failed
    if failures:  # `brain-concepts view BROKEN` printed no error, exited 0 and saved an empty viewer
        viewer.close()
        raise failures[0]
    from qtpy.QtWidgets import QApplication

    if screenshot is not None:
        viewer.window.resize(1500, 950)
    viewer.window.show()
    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()  # fit the volumes to the canvas at its shown size (it was loaded before the window showed)
    if screenshot is not None:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            QApplication.processEvents()
        viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
        if not block:
            viewer.close()
            return viewer
    if block:
        napari.run()
    return viewer
