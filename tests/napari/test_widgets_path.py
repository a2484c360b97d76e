"""The whole path through the dock widgets on the tiny synthetic study, and cancelling a long step."""

import nibabel as nib
import numpy as np

from napari_brain_concepts._napari.captions_widget import text_overlay

from .conftest import PLUGIN


def _wait(qtbot, widget, timeout=300_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _layer_names(viewer):
    return [layer.name for layer in viewer.layers]


def test_widgets_whole_path(loaded, qtbot, tmp_path):
    viewer, study_widget, session = loaded
    subject = session.study.subject(session.subject)

    _, decode = viewer.window.add_plugin_dock_widget(PLUGIN, "Decode")
    decode.run()
    _wait(qtbot, decode)
    assert session.done("decode"), decode.status.text()
    weight = viewer.layers[f"{subject.name} decoder_weight_norm"]
    np.testing.assert_allclose(weight.scale, subject.voxel_size[::-1])
    assert decode.plot.figure.axes and decode.plot.figure.axes[0].lines

    _, concepts = viewer.window.add_plugin_dock_widget(PLUGIN, "Concepts")
    concepts.run()
    _wait(qtbot, concepts)
    assert all(session.done(s) for s in ("concepts", "masks", "shared")), concepts.status.text()
    assert concepts.concepts.count() > 0
    concepts.concepts.setCurrentRow(0)
    assert concepts.gallery_layout.count() > 0
    assert any(name.startswith(f"{subject.name} mask_") for name in _layer_names(viewer))

    _, captions = viewer.window.add_plugin_dock_widget(PLUGIN, "Captions")
    captions.run()
    _wait(qtbot, captions)
    assert session.done("captions"), captions.status.text()
    assert captions.stimulus.count() > 0
    overlay = text_overlay(viewer)
    assert overlay.visible and "“" in overlay.text

    _, alignment = viewer.window.add_plugin_dock_widget(PLUGIN, "Alignment")
    alignment.run()
    _wait(qtbot, alignment)
    assert session.done("rsa") and session.done("encode"), alignment.status.text()
    assert alignment.plot.figure.axes[0].patches
    alignment.phrase.setText("a smiling face next to a house")
    alignment.predict()
    qtbot.waitUntil(lambda: f"{subject.name} phrase map" in viewer.layers, timeout=60_000)

    # switching participant keeps the derived layers of the new participant in view
    other = session.study.subject_names[1]
    study_widget.subject_box.setCurrentText(other)
    assert f"{other} decoder_weight_norm" in viewer.layers

    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    written = export.export(tmp_path / "export")
    niftis = [p for p in written if p.name.endswith(".nii.gz")]
    assert niftis and any(p.parent.name == "tables" for p in written)
    for path in niftis:
        subj = path.parent.name
        if subj in session.study.subjects:
            np.testing.assert_allclose(nib.load(path).affine, session.study.subject(subj).affine, atol=1e-5)


def test_cancel_leaves_no_partial_result(loaded, qtbot):
    viewer, _, session = loaded
    _, decode = viewer.window.add_plugin_dock_widget(PLUGIN, "Decode")
    decode.decoder.setCurrentText("contrastive")  # the form sets the step's parameters; a long fit
    seen = []
    decode.run()
    decode.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=600_000)
    decode.cancel()
    _wait(qtbot, decode, timeout=600_000)
    store = session.context.store
    assert not store.is_done("decode")
    assert not (store.root / "tables" / "decoding.tsv").exists()
    assert not (store.root / ".staging").exists()
    assert not any(store.root.glob("subjects/*/maps/*.nii.gz"))
    assert decode.run_button.isEnabled()
    # the viewer is still usable: another step runs to the end
    decode.decoder.setCurrentText("ridge")
    decode.run()
    _wait(qtbot, decode)
    assert store.is_done("decode")
