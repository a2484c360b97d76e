"""The docks and the results folder: an opened folder is continued and never overwritten, one step runs at a
time, a cancel keeps (and shows) what finished, and another study or results folder replaces what the docks
show."""

from __future__ import annotations

import hashlib
import json

from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_brain_concepts.cli import main

from .conftest import FAST, PLUGIN


def _errors() -> list[str]:
    return [str(n.message) for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


def _digest(root) -> dict[str, str]:
    """md5 of every file of a results folder (the manifest too)."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_opened_results_folder_is_continued_with_its_values_and_never_overwritten(make_napari_viewer, qtbot,
                                                                                       tmp_path):
    out = tmp_path / "results"
    fast = [a for k, v in FAST["decode"].items() for a in ("--param", f"decode.{k}={json.dumps(v)}")]
    # a test fraction the form's spin box shows rounded (0.13): continuing keeps the recorded value
    assert main(["decode", "--size", "tiny", "--out", str(out), "--param", "decode.protocol=sdc",
                 "--param", "decode.test_fraction=0.125", *fast]) == 0
    before = _digest(out)

    viewer = make_napari_viewer(show=True)
    _, study = viewer.window.add_plugin_dock_widget(PLUGIN, "Study")
    study.open_results(out)  # no study loaded: the results bring theirs
    qtbot.waitUntil(lambda: study.subject is not None, timeout=600_000)
    # a dock added once the folder is open: its form shows the values the folder was made with, and the dock
    # its results (only the docks present at loading did); the layers on show stay as they are
    anatomy = next(layer for layer in viewer.layers if layer.name.endswith("anatomy"))
    for layer in viewer.layers:
        layer.visible = layer is anatomy
    viewer.layers.selection.active = anatomy
    _, decode = viewer.window.add_plugin_dock_widget(PLUGIN, "Decode")
    assert viewer.layers.selection.active is anatomy
    assert [layer.name for layer in viewer.layers if layer.visible] == [anatomy.name]
    assert decode.protocol.currentText() == "sdc"
    assert decode.plot.figure.axes and decode.plot.figure.axes[0].lines

    # Run with those values: the finished step is kept, nothing is written
    decode.run()
    qtbot.waitUntil(lambda: decode.worker is None, timeout=300_000)
    assert "Kept" in decode.status.text() and "decode" in decode.status.text(), decode.status.text()
    assert _digest(out) == before

    # Run with another value of the finished step: one clear error, and the folder stays as it was
    decode.protocol.setCurrentText("mindeye")
    n = len(_errors())
    assert decode.run() is None
    errors = _errors()[n:]
    assert len(errors) == 1 and "decode.protocol='sdc' (now 'mindeye')" in errors[0] and "Fix:" in errors[0], errors
    assert str(out / "manifest.json") in errors[0]
    assert _digest(out) == before
    assert decode.run_button.isEnabled()

    # the refused values do not stay in the analysis: set back, the folder is continued again
    decode.protocol.setCurrentText("sdc")
    decode.run()
    qtbot.waitUntil(lambda: decode.worker is None, timeout=300_000)
    assert len(_errors()) == n + 1 and "Kept" in decode.status.text(), decode.status.text()
    assert _digest(out) == before


def test_one_step_at_a_time_a_cancel_keeps_what_finished_and_a_new_study_clears_the_docks(loaded, qtbot):
    viewer, study, session = loaded
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
             for name in ("Decode", "Concepts", "Captions")}
    concepts = docks["Concepts"]
    # the form cannot ask for more participants than the study has, and what the core says of a value names
    # the dock's field
    assert concepts.min_participants.maximum() == len(session.study.subject_names) - 1
    assert (concepts.in_form_words("it needs at least 5 participants (shared.min_participants=4) and")
            == "it needs at least 5 participants ('Shared by (others)' = 4) and")
    concepts.n_components.setValue(FAST["concepts"]["n_components"])
    concepts.mask_steps.setValue(20000)  # long enough to cancel in
    seen = []
    concepts.run()
    concepts.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any(p.step == "masks" for p in seen), timeout=600_000)

    # while it runs, no other step can start on the same results folder, nor another study open
    buttons = [docks["Decode"].run_button, docks["Captions"].run_button, concepts.run_button,
               concepts.basis_button, concepts.shared_button, study.open_button, study.results_button,
               study.sample_button]
    assert not any(b.isEnabled() for b in buttons)
    n = len(_errors())
    assert docks["Captions"].run() is None  # called from a script: refused with one error
    assert len(_errors()) == n + 1 and "another step of this analysis is running" in _errors()[-1]

    concepts.cancel()
    qtbot.waitUntil(lambda: concepts.worker is None, timeout=600_000)
    store = session.context.store
    assert store.is_done("decode") and store.is_done("concepts") and not store.is_done("masks")
    # what finished before the cancel is said and shown: the concept list and the decoder's map
    assert "decode, concepts had finished" in concepts.status.text(), concepts.status.text()
    assert concepts.concepts.count() == FAST["concepts"]["n_components"]
    assert "decoder_weight_norm" in [study.map_box.itemText(i) for i in range(study.map_box.count())]
    assert all(b.isEnabled() for b in buttons)

    docks["Decode"].run()  # the decode results are shown
    qtbot.waitUntil(lambda: docks["Decode"].worker is None, timeout=300_000)
    assert docks["Decode"].plot.figure.axes

    # another study: the docks no longer show the results of the first one
    study.load_synthetic(size="tiny", seed=1)
    qtbot.waitUntil(lambda: session.study is not None and session.study.truth["seed"] == 1, timeout=600_000)
    assert concepts.concepts.count() == 0 and concepts.words.text() == ""
    assert not docks["Decode"].plot.figure.axes
    assert docks["Captions"].stimulus.count() == 0
    assert session.context is None


def test_the_concepts_dock_on_participants_on_different_grids_finds_each_ones_concepts(make_napari_viewer, qtbot,
                                                                                      tmp_path):
    """On participants in no common space (NSD's own grids, no to_common.txt), "Find concepts" runs the basis
    and the masks of each participant and leaves out the shared concepts, saying why (it used to be refused
    before anything ran, as the shared step asked for by name); "Shared only" is refused with the step's
    error."""
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(size="tiny")
    study.stimuli.root = tmp_path / "study"  # as a study folder read from disk
    moved = study.subject(study.subject_names[1])
    moved.affine = moved.affine.copy()
    moved.affine[:3, 3] += 8.0  # another space, and no to_common.txt
    viewer = make_napari_viewer(show=True)
    _, study_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Study")
    _, concepts = viewer.window.add_plugin_dock_widget(PLUGIN, "Concepts")
    study_dock.set_study(study)
    session = study_dock.session
    session.ensure_context({k: dict(v) for k, v in FAST.items()})
    concepts.n_components.setValue(FAST["concepts"]["n_components"])
    concepts.mask_steps.setValue(FAST["masks"]["n_steps"])
    n = len(_errors())
    concepts.run()
    qtbot.waitUntil(lambda: concepts.worker is None, timeout=600_000)
    assert len(_errors()) == n, _errors()[n:]
    store = session.context.store
    assert store.is_done("concepts") and store.is_done("masks") and not store.is_done("shared")
    assert "Left out shared: the participants are not in one space" in concepts.status.text()
    assert f"{', '.join(study.subject_names)} have no to_common.txt" in concepts.status.text()
    assert concepts.concepts.count() == FAST["concepts"]["n_components"]
    assert all(store.masks(name) for name in study.subject_names)

    concepts.shared_button.click()
    qtbot.waitUntil(lambda: concepts.worker is None, timeout=60_000)
    assert len(_errors()) == n + 1 and "to_common.txt" in _errors()[-1]
    assert not store.is_done("shared")
