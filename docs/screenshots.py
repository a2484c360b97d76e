"""Make the README screenshots: every dock widget in use on the synthetic study.

Run under an X server: ``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py [--size small]``.
Runs every step from its widget (as a user would, with the steps' default parameters), then for each widget
shows the layers it produced over the anatomy and writes ``resources/widget_*.png`` (``widget_study.png``:
the Study widget with a thresholded map and its colour bar). Each PNG is the whole napari window, scaled to
``--width`` pixels and reduced to 256 colours.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

PLUGIN = "napari-brain-concepts"
OUT = Path(__file__).resolve().parents[1] / "resources"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "default"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--width", type=int, default=1200, help="width of the written PNGs in pixels")
    args = parser.parse_args()

    from napari_brain_concepts.core.compat import preload_triton

    preload_triton()
    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_brain_concepts._napari import workers
    from napari_brain_concepts._napari.captions_widget import text_overlay
    from napari_brain_concepts._napari.layers import NEGATIVE_SUFFIX
    from napari_brain_concepts._napari.session import get_session
    from napari_brain_concepts._napari.threshold import is_map_layer

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
    subject = session.subject
    session.ensure_context({"rsa": {"radius": 3}})

    def settle():
        for _ in range(10):
            app.processEvents()

    def layer(suffix: str):
        for lay in viewer.layers:
            if lay.name in (f"{subject} {suffix}", suffix):
                return lay
        raise KeyError(f"no layer {suffix!r} among {[lay.name for lay in viewer.layers]}")

    def show_only(*names: str, select: str | None = None, outlines: bool = True):
        """The anatomy, the fLoc ROI outlines (if ``outlines``) and the layers ``names``; the rest hidden."""
        keep = {layer("anatomy").name} | {layer(n).name for n in names}
        keep |= {name + NEGATIVE_SUFFIX for name in keep}  # a signed map's negative part shows with it
        for lay in viewer.layers:
            tag = lay.metadata.get("brain_concepts", {}) if isinstance(lay.metadata, dict) else {}
            lay.visible = lay.name in keep or (outlines and tag.get("role") == "roi")
        if select is not None:
            viewer.layers.selection.active = layer(select)

    def threshold(name: str, fraction: float, colorbar: bool = True):
        """Select map ``name`` and set the Study widget's threshold slider to ``fraction`` of its range."""
        viewer.layers.selection.active = layer(name)
        display = study_widget.display
        display.slider.setValue(fraction * display.slider.maximum())
        display.colorbar.setChecked(colorbar)

    def shot(name: str, dock: str):
        docks[dock][0].show()
        docks[dock][0].raise_()
        settle()
        path = args.out / f"{name}.png"
        rgba = viewer.screenshot(canvas_only=False, flash=False)
        image = Image.fromarray(np.asarray(rgba)).convert("RGB")
        height = round(image.height * args.width / image.width)
        image = image.resize((args.width, height), Image.LANCZOS)
        # 256 colours: a quarter of the bytes, no visible loss on napari's flat theme and colormaps
        image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")

    truth = session.study.truth or {}
    centres = truth.get("region_centres_mm", {}).get(subject, {})
    if "face" in centres:  # the axial slice through the planted face region
        viewer.dims.set_point(0, float(np.asarray(centres["face"]).reshape(-1, 3)[0][2]))
    args.out.mkdir(parents=True, exist_ok=True)

    decode, concepts, captions, alignment = (docks[d][1] for d in ("Decode", "Concepts", "Captions", "Alignment"))
    decode.run()
    concepts.run()
    captions.run()
    alignment.run()
    print("layers:", ", ".join(lay.name for lay in viewer.layers))
    overlay = text_overlay(viewer)

    overlay.visible = False
    show_only("decoder_weight_norm", select="decoder_weight_norm")
    threshold("decoder_weight_norm", 0.3, colorbar=False)
    shot("widget_decode", "Decode")

    # the concept named by a face word, else the first one
    names = [concepts.concepts.item(i).text() for i in range(concepts.concepts.count())]
    row = next((i for i, n in enumerate(names) if "face" in n.split(None, 1)[-1]), 0)
    concepts.concepts.setCurrentRow(row)
    cid = names[row].split()[0]
    soft = f"mask_{cid}"
    shown = [soft] + [n for n in (f"mask {cid}",) if any(lay.name.endswith(n) for lay in viewer.layers)]
    show_only(*shown, select=soft, outlines=False)
    threshold(soft, 0.0, colorbar=True)
    if "face" in centres:  # a click on the planted face region: the voxel's concepts and images
        concepts.show_voxel(np.asarray(centres["face"], dtype=float).reshape(-1, 3)[0][::-1])
    shot("widget_concepts", "Concepts")

    if captions.stimulus.count() > 1:
        captions.stimulus.setCurrentIndex(1)
    show_only("decoder_weight_norm", select="decoder_weight_norm")
    shot("widget_captions", "Captions")
    overlay.visible = False

    alignment.phrase.setText("a smiling face next to a house")
    alignment.predict()
    show_only("phrase map", select="phrase map")
    threshold("phrase map", 0.35)
    shot("widget_alignment", "Alignment")

    export = docks["Export"][1]
    with tempfile.TemporaryDirectory(prefix="brain-concepts-export-") as tmp:
        folder = Path(tmp) / "export"
        export.folder.setText(str(folder))
        export.export(folder)
        shot("widget_export", "Export")

    maps = [lay.name for lay in viewer.layers if is_map_layer(lay) and not lay.name.endswith(NEGATIVE_SUFFIX)]
    face_map = next((n for n in maps if n.endswith("encoding_r_captions")), maps[0])
    show_only(face_map, select=face_map)
    threshold(face_map, 0.25)
    shot("widget_study", "Study")
    viewer.close()


if __name__ == "__main__":
    main()
