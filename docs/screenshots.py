"""Make the README screenshots: every dock widget in use on the synthetic study.

Run under an X server: ``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py [--size tiny]``.
Writes ``resources/viewer.png`` and ``resources/widget_*.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PLUGIN = "napari-brain-concepts"
OUT = Path(__file__).resolve().parents[1] / "resources"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "default"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from napari_brain_concepts.core.compat import preload_triton

    preload_triton()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_brain_concepts._napari import workers
    from napari_brain_concepts._napari.session import get_session

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(title="napari-brain-concepts")
    viewer.window.resize(1500, 950)
    docks = {}
    for name in ("Decode", "Concepts", "Captions", "Alignment", "Export", "Study"):
        docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    workers.SYNCHRONOUS = True
    study_widget = docks["Study"][1]
    study_widget.load_synthetic(size=args.size, seed=0)
    session = get_session(viewer)
    session.ensure_context({"rsa": {"radius": 3}})

    def settle():
        for _ in range(10):
            app.processEvents()

    def shot(name: str, dock: str | None = None, slice_mm: float | None = None):
        if dock is not None:
            docks[dock][0].show()
            docks[dock][0].raise_()
        if slice_mm is not None:
            viewer.dims.set_point(0, slice_mm)
        settle()
        path = args.out / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"wrote {path}")

    face_z = float(session.study.truth["region_centres_mm"][session.subject]["face"][0][2]) \
        if session.study.truth and "region_centres_mm" in session.study.truth else None
    args.out.mkdir(parents=True, exist_ok=True)
    shot("viewer", "Study", face_z)
    for dock, name in (("Decode", "widget_decode"), ("Concepts", "widget_concepts"),
                       ("Captions", "widget_captions"), ("Alignment", "widget_alignment")):
        widget = docks[dock][1]
        widget.run()
        if dock == "Concepts" and widget.concepts.count():
            widget.concepts.setCurrentRow(0)
        if dock == "Alignment":
            widget.phrase.setText("a smiling face next to a house")
            widget.predict()
        shot(name, dock, face_z)
    docks["Export"][1].folder.setText(str(Path.home() / "brain-concepts-export"))
    shot("widget_export", "Export")
    viewer.close()


if __name__ == "__main__":
    main()
