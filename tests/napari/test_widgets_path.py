"""The whole path through the dock widgets on the tiny synthetic study, and cancelling a long step."""

import re
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_brain_concepts._napari.captions_widget import text_overlay
from napari_brain_concepts._napari.threshold import is_map_layer

from .conftest import FAST, PLUGIN


def _wait(qtbot, widget, timeout=300_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _layer_names(viewer):
    return [layer.name for layer in viewer.layers]


def _click_a_voxel(viewer, concepts, session, subject):
    """A click on the planted face region lists the voxel's preferred stimuli and concepts."""
    centre = np.asarray(session.study.truth["region_centres_mm"][subject.name]["face"], dtype=float).reshape(-1, 3)[0]
    point = centre[::-1]  # napari world order (S, A, R)
    event = SimpleNamespace(type="mouse_press", position=point, button=1)
    gen = concepts._on_click(viewer, event)
    next(gen)
    event.type = "mouse_release"  # napari updates the same event object
    with pytest.raises(StopIteration):
        next(gen)
    profile = concepts.profile
    assert profile is not None and profile.in_mask, concepts.voxel.text()
    ijk = profile.ijk
    np.testing.assert_allclose(nib.affines.apply_affine(subject.affine, ijk), centre, atol=subject.voxel_size.max())
    # the voxel's mean response to each stimulus it saw, computed here from the responses
    column = int(np.flatnonzero(subject.mask.ravel()).searchsorted(np.ravel_multi_index(ijk, subject.mask.shape)))
    rows = session.study.trial_rows(subject)
    seen = np.unique(rows)
    means = np.array([subject.responses[rows == r, column].astype(np.float64).mean() for r in seen])
    assert [r for r, _ in profile.stimuli] == list(seen[np.argsort(-means, kind="stable")][:len(profile.stimuli)])
    # concepts: Pearson r of those means with the concept scores of the concepts step, largest first
    names = session.context.state["concept_names"]
    r = {c: np.corrcoef(means, names.scores[seen, k])[0, 1] for k, c in enumerate(names.concepts)}
    best = sorted(r, key=lambda c: -r[c])[:len(profile.concepts)]
    assert [c for c, _ in profile.concepts] == best
    np.testing.assert_allclose([v for _, v in profile.concepts], [r[c] for c in best], atol=1e-6)
    # the planted face region prefers the face stimuli
    face = [i for i, cats in enumerate(session.study.stimuli.categories) if "face" in cats]
    assert len(set(r for r, _ in profile.stimuli) & set(face)) >= 3, concepts.voxel.text()
    assert "preferred concepts" in concepts.voxel.text() and concepts.voxel_layout.count() > 1


def test_widgets_whole_path(loaded, qtbot, tmp_path, make_napari_viewer):
    viewer, study_widget, session = loaded
    subject = session.study.subject(session.subject)

    _, decode = viewer.window.add_plugin_dock_widget(PLUGIN, "Decode")
    assert not decode.test_fraction.isEnabled()  # the study's shared test set is used
    decode.run()
    _wait(qtbot, decode)
    assert session.done("decode"), decode.status.text()
    weight = viewer.layers[f"{subject.name} decoder_weight_norm"]
    np.testing.assert_allclose(weight.scale, subject.voxel_size[::-1])
    assert decode.plot.figure.axes and decode.plot.figure.axes[0].lines

    _, concepts = viewer.window.add_plugin_dock_widget(PLUGIN, "Concepts")
    # the form sets the values it shows; FAST's other values (iterations, no contact sheets) stay
    concepts.n_components.setValue(FAST["concepts"]["n_components"])
    concepts.mask_steps.setValue(FAST["masks"]["n_steps"])
    concepts.min_participants.setValue(2)
    concepts.run()
    _wait(qtbot, concepts)
    assert all(session.done(s) for s in ("concepts", "masks", "shared")), concepts.status.text()
    assert re.match(r"Done\. \d+ shared concepts?\.", concepts.status.text())  # the shared step's count too
    params = session.context.params
    assert params["concepts"]["n_components"] == 8 and params["concepts"]["n_iter"] == FAST["concepts"]["n_iter"]
    # the form shows no burn-in: the analysis' own is kept for its number of steps (35% of them for another)
    assert params["masks"] == {**FAST["masks"], "sparsity": 5.0, "n_steps": 60, "burn_in": 20}
    assert params["shared"]["min_participants"] == 2
    assert concepts.concepts.count() > 1
    ids = [concepts.concepts.item(i).data(Qt.ItemDataRole.UserRole) for i in range(2)]

    def concept_masks():
        return {n for n in _layer_names(viewer) if any(n.endswith((f" mask_{c}", f" mask {c}")) for c in ids)}

    assert not concept_masks()  # the basis concepts' masks come one concept at a time, when selected
    # the results' maps are listed in the Study dock and loaded when chosen, not all at once
    entries = [study_widget.map_box.itemText(i) for i in range(study_widget.map_box.count())]
    own = [e for e in entries if e.startswith("shared-") and not e.endswith(")")]  # the participant's
    assert "decoder_weight_norm" in entries and own
    assert not any(f"{subject.name} {e}" in viewer.layers for e in own)
    shared = [e for e in entries if e.endswith("(all participants)")]
    assert shared and all(e.startswith("shared-") for e in shared)  # the n-of-N maps, named once
    study_widget.show_map(shared[0])
    count = viewer.layers[shared[0].removesuffix(" (all participants)")]
    assert count.visible and viewer.layers.selection.active is count
    assert not viewer.layers[f"{subject.name} decoder_weight_norm"].visible  # one map at a time
    assert study_widget.map_box.currentText() == shared[0]  # the box names the selected map
    names = _layer_names(viewer)
    assert names.index(count.name) < names.index(f"{subject.name} mask")  # under the outlines
    study_widget.show_map(shared[0])  # loaded once
    assert len(_layer_names(viewer)) == len(names)
    concepts.concepts.setCurrentRow(0)
    assert concepts.gallery_layout.count() > 0
    assert concept_masks() == {f"{subject.name} mask_{ids[0]}", f"{subject.name} mask {ids[0]}"}
    assert viewer.layers[f"{subject.name} mask_{ids[0]}"].visible
    # the soft mask (a map) is the layer selected, so the Study dock's threshold acts on it
    assert viewer.layers.selection.active.name == f"{subject.name} mask_{ids[0]}"
    assert study_widget.display.layer.name == f"{subject.name} mask_{ids[0]}"
    # a shared concept: the participant's map of it selected, and the participant's mask loaded once
    rows = [i for i in range(concepts.concepts.count())
            if str(concepts.concepts.item(i).data(Qt.ItemDataRole.UserRole)).startswith("shared-")]
    assert rows
    concepts.concepts.setCurrentRow(rows[0])
    picked = concepts.concepts.item(rows[0]).data(Qt.ItemDataRole.UserRole)
    assert viewer.layers.selection.active.name == f"{subject.name} {picked}"
    assert is_map_layer(viewer.layers.selection.active)
    assert sum(n.startswith(f"{subject.name} mask {picked}") for n in _layer_names(viewer)) == 1
    concepts.concepts.setCurrentRow(1)
    assert concept_masks() == {f"{subject.name} mask_{ids[1]}", f"{subject.name} mask {ids[1]}"}
    _click_a_voxel(viewer, concepts, session, subject)
    live = concepts.profile

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
    summary = session.context.state["rsa_summary"]
    rsa_image = alignment.plot.figure.axes[0].images[0].get_array()  # ROIs × models
    assert rsa_image.shape == (summary["roi"].nunique(), summary["model"].nunique())
    # the encoding map of the caption embedding whose model "Predict map" uses (the manifest's reference)
    assert viewer.layers.selection.active.name == f"{subject.name} encoding_r_captions"
    alignment.phrase.setText("a smiling face next to a house")
    alignment.predict()
    qtbot.waitUntil(lambda: f"{subject.name} phrase map" in viewer.layers, timeout=60_000)
    phrase_map = viewer.layers[f"{subject.name} phrase map"]
    assert phrase_map.data.min() < 0 < phrase_map.data.max()  # a predicted response: signed, in two parts
    assert viewer.layers[f"{subject.name} phrase map negative"].data is phrase_map.data
    below = _layer_names(viewer).index(f"{subject.name} mask")  # maps under the outlines, as at load
    assert _layer_names(viewer).index(phrase_map.name) < below
    assert _layer_names(viewer).index(f"{subject.name} mask_{ids[1]}") < below
    first = phrase_map.data.copy()
    # the same results opened from disk (no fitted objects in memory): the saved encoding model predicts
    study_widget.open_results(session.results_dir)
    assert session.context is None
    # the session's own temporary folder, opened again: still said to be temporary
    assert f"Results in {session.results_dir}, removed when napari closes" in study_widget.status.text()
    # the docks show the folder opened: the concept list is filled again, with no concept picked yet
    assert not concept_masks() and concepts.concepts.count() > 1
    concepts.concepts.setCurrentRow(1)
    alignment.phrase.setText("a house")
    alignment.predict()
    qtbot.waitUntil(lambda: f"{subject.name} phrase map" in viewer.layers, timeout=60_000)
    reopened = viewer.layers[f"{subject.name} phrase map"].data
    assert reopened.shape == first.shape and not np.allclose(reopened, first)
    # and a voxel click ranks the concepts by the saved basis' scores, as in the live session
    centre = np.asarray(session.study.truth["region_centres_mm"][subject.name]["face"], dtype=float)
    concepts.show_voxel(centre.reshape(-1, 3)[0][::-1])
    assert [c for c, _ in concepts.profile.concepts] == [c for c, _ in live.concepts]
    np.testing.assert_allclose([v for _, v in concepts.profile.concepts], [v for _, v in live.concepts], atol=1e-5)
    assert "r with the concept's stimulus scores" in concepts.voxel.text()
    session.ensure_context()  # the rest of the path goes on in the reopened folder

    # switching participant keeps the derived layers of the new participant in view
    other = session.study.subject_names[1]
    alignment.predict()  # the phrase map on show when the participant changes
    qtbot.waitUntil(lambda: alignment.status.text().startswith("Predicted"), timeout=60_000)
    study_widget.subject_box.setCurrentText(other)
    assert concepts.profile is None and concepts.voxel.text().startswith("Click a voxel")  # not the old one
    assert f"{other} decoder_weight_norm" in viewer.layers
    # the phrase map on show has no counterpart: the participant's default map is on show and selected
    shown = [layer for layer in viewer.layers if layer.visible and is_map_layer(layer)]
    assert shown and viewer.layers.selection.active in shown
    assert f"{other} mask_{ids[1]}" in viewer.layers  # the selected concept's masks, for the new participant
    assert shared[0].removesuffix(" (all participants)") in viewer.layers  # the maps loaded before, again
    assert not any(f"{other} {e}" in viewer.layers for e in own[1:])
    assert not any(n.startswith(f"{subject.name} ") for n in _layer_names(viewer))
    # the phrase map comes again, predicted by the new participant's own encoding model
    qtbot.waitUntil(lambda: f"{other} phrase map" in viewer.layers, timeout=60_000)
    assert alignment.status.text() == f"Predicted map of “a house” for {other}."

    # the analysis is in the session's temporary folder, and the Study dock says so and how to keep it
    assert "removed when napari closes" in study_widget.status.text(), study_widget.status.text()
    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    messages = []
    with pytest.MonkeyPatch.context() as mp:  # the export folder inside the results folder: refused, nothing written
        mp.setattr("napari_brain_concepts._napari.workers.show_error", messages.append)
        inside = session.results_dir / "mine"
        assert export.export(inside) == [] and not inside.exists()
    assert len(messages) == 1 and "is inside the results folder" in messages[0] and "Fix:" in messages[0], messages
    assert export.status.text() == "Export failed: see the notification."
    (tmp_path / "export" / "tables").mkdir(parents=True)
    (tmp_path / "export" / "tables" / "my_notes.txt").write_text("mine")
    written = export.export(tmp_path / "export")
    # the whole results folder follows in a worker: every participant's maps, and where the study comes from
    qtbot.waitUntil(lambda: "whole results folder" in export.status.text(), timeout=120_000)
    assert export.status.text().startswith(f"Wrote {len(written)} files to ") and not session.busy
    niftis = [p for p in written if p.name.endswith(".nii.gz")]
    from napari_brain_concepts.core.io.results import ResultsStore

    copy = ResultsStore.open(tmp_path / "export" / "results")
    # the tables and figures are in the copy, once: not beside it as well
    assert niftis and not any(p.parent.name in ("tables", "figures") for p in written)
    assert (copy.root / "tables" / "decoding.tsv").is_file() and not (tmp_path / "export" / "figures").exists()
    assert sorted(p.name for p in (tmp_path / "export" / "tables").iterdir()) == ["my_notes.txt"]
    assert copy.is_done("captions") and all(copy.maps(name) for name in session.study.subject_names)
    assert sorted(p.relative_to(copy.root) for p in copy.root.rglob("*") if p.is_file() and p.name != ".copied-from"
                  ) == sorted(p.relative_to(session.results_dir) for p in session.results_dir.rglob("*") if p.is_file())
    assert (copy.manifest["synthetic_size"], copy.manifest["synthetic_seed"]) == ("tiny", 0)
    # a signed map is written once, whole (from its positive part's layer, which holds the data)
    assert not any(p.name.endswith("_negative.nii.gz") for p in niftis)
    signed = [layer for layer in viewer.layers
              if (layer.metadata.get("brain_concepts") or {}).get("part") == "positive"]
    assert signed
    for layer in signed:
        subj = layer.metadata["brain_concepts"]["subject"] or "shared"
        name = layer.name.removeprefix(f"{subj} ").replace(" ", "_")
        exported = nib.load(tmp_path / "export" / subj / f"{name}.nii.gz").get_fdata()
        assert exported.min() < 0 < exported.max(), layer.name
    # the selected concept's soft mask (a map) and hard mask (labels) are two files
    soft = nib.load(tmp_path / "export" / other / f"mask_{ids[1]}.nii.gz").get_fdata()
    hard = nib.load(tmp_path / "export" / other / f"mask_{ids[1]}_hard.nii.gz").get_fdata()
    assert set(np.unique(hard)) <= {0, 1} and not np.array_equal(soft, hard)
    assert len(set(niftis)) == len(niftis)
    for path in niftis:
        subj = path.parent.name
        if subj in session.study.subjects:
            np.testing.assert_allclose(nib.load(path).affine, session.study.subject(subj).affine, atol=1e-5)
    assert not (tmp_path / "export" / other / "mask.nii.gz").exists()  # the analysed mask is the study's input
    # without the whole folder: the layers and, beside them, the tables and figures
    export.whole.setChecked(False)
    (tmp_path / "alone" / "tables").mkdir(parents=True)
    (tmp_path / "alone" / "tables" / "my_notes.txt").write_text("mine")
    alone = export.export(tmp_path / "alone")
    assert tmp_path / "alone" / "tables" / "my_notes.txt" not in alone  # counted: what the export wrote
    assert export.status.text() == f"Wrote {len(alone)} files to {tmp_path / 'alone'}." and not session.busy
    assert (tmp_path / "alone" / "tables" / "decoding.tsv").is_file() and (tmp_path / "alone" / "figures").is_dir()
    assert not (tmp_path / "alone" / "results").exists()
    assert {p.relative_to(tmp_path / "alone") for p in alone if p.name.endswith(".nii.gz")} == {
        p.relative_to(tmp_path / "export") for p in niftis}

    # the exported copy opened in another viewer, on its own (made in napari, it records its study): every
    # dock shows its results
    second = make_napari_viewer(show=True)
    _, study2 = second.window.add_plugin_dock_widget(PLUGIN, "Study")
    docks = {name: second.window.add_plugin_dock_widget(PLUGIN, name)[1]
             for name in ("Decode", "Concepts", "Captions", "Alignment")}
    study2.open_results(copy.root)
    qtbot.waitUntil(lambda: study2.subject is not None, timeout=600_000)
    assert docks["Decode"].plot.figure.axes and docks["Alignment"].plot.figure.axes
    assert docks["Concepts"].concepts.count() == concepts.concepts.count()
    assert docks["Captions"].stimulus.count() == captions.stimulus.count()
    # the caption on the canvas goes with the Captions dock (nothing else could remove it)
    assert text_overlay(second).visible
    second.window.remove_dock_widget(docks["Captions"])
    assert not text_overlay(second).visible and not text_overlay(second).text


def test_a_failed_copy_of_the_results_folder_leaves_the_tables_beside_the_layers(loaded, qtbot, tmp_path,
                                                                                 monkeypatch):
    """With *Whole results folder* the tables and figures go into the copy only; when the copy fails (a full
    disk), they are copied beside the layers, and the status says so."""
    from napari_brain_concepts._napari import workers

    viewer, _, session = loaded
    _, decode = viewer.window.add_plugin_dock_widget(PLUGIN, "Decode")
    decode.run()
    _wait(qtbot, decode)
    assert session.done("decode"), decode.status.text()
    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    assert export.whole.isChecked()

    def full_disk(results, target):
        raise OSError(28, "No space left on device", str(target))

    shown = []
    monkeypatch.setattr("napari_brain_concepts.core.io.results.copy_results", full_disk)
    monkeypatch.setattr(workers, "show_error", shown.append)
    written = export.export(tmp_path / "export")
    qtbot.waitUntil(lambda: not session.busy and "failed" in export.status.text(), timeout=60_000)
    assert len(shown) == 1 and "No space left on device" in shown[0], shown
    tables = sorted(p.name for p in (tmp_path / "export" / "tables").iterdir())
    assert "decoding.tsv" in tables and (tmp_path / "export" / "figures").is_dir()
    n_tables = sum(1 for p in (tmp_path / "export").rglob("*") if p.is_file() and p.parent.name in ("tables", "figures"))
    assert export.status.text() == (
        f"Wrote {len(written)} file{'s' * (len(written) != 1)} to {tmp_path / 'export'}; the copy of the results "
        f"folder failed (see the notification); the tables and figures are beside the layers ({n_tables} files).")
    assert not (tmp_path / "export" / "results").exists()


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
    # run again with other values and cancelled: the status says that the results on show are the earlier run's
    decode.decoder.setCurrentText("contrastive")
    decode.run()
    decode.cancel()
    _wait(qtbot, decode, timeout=600_000)
    assert decode.status.text().startswith("Cancelled; nothing of the step was written.")
    assert decode.status.text().endswith(" The decode results on show are those of the run before, with the values "
                                         "it had.")
    assert store.is_done("decode") and session.context.state["decoders"]["sub-01"].best_alphas_ is not None
