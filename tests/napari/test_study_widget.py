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
    viewer.layers[f"{first} floc-faces"].visible = False  # what the user looks at stays so
    viewer.layers.selection.active = viewer.layers[f"{first} floc-bodies"]
    widget.subject_box.setCurrentText(second)
    assert not viewer.layers[f"{second} floc-faces"].visible and viewer.layers[f"{second} floc-places"].visible
    assert viewer.layers.selection.active is viewer.layers[f"{second} floc-bodies"]
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


def test_the_notification_of_a_bad_file_starts_with_its_name_and_the_problem(make_napari_viewer, tmp_path,
                                                                              monkeypatch):
    """napari's notification shows one line until it is expanded: for a file deep in a study folder that
    line was a piece of its absolute path. It starts with the file's folder and name and the problem; the
    full path follows."""
    from napari_brain_concepts._napari import workers

    folder = tmp_path / "projects" / "my-lab" / "studies" / "broken"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text("{not json")
    shown = []
    monkeypatch.setattr(workers, "show_error", shown.append)
    monkeypatch.setattr(workers, "SYNCHRONOUS", True)
    widget = StudyWidget(make_napari_viewer())
    widget.open_study(folder)
    assert len(shown) == 1, shown
    assert shown[0].startswith("broken/study.json: "), shown[0]
    assert shown[0].endswith(f"(Full path: {folder / 'study.json'})"), shown[0]
    # a parameter, a short path, or a path within words read as raised
    import pickle

    from napari_brain_concepts.core.errors import InputError

    for where in ("parameter sparsity", "/data/study/x.tsv rows 3/4", tmp_path.anchor + "study"):
        error = InputError(where, "is wrong", "mend it")
        assert workers._error_message(error) == f"{where}: is wrong. Fix: mend it."
    # a path survives pickling (as from a dask worker) and is shown the same
    error = InputError(folder / "study.json", "is wrong", "mend it")
    assert workers._error_message(pickle.loads(pickle.dumps(error))) == workers._error_message(error) == (
        f"broken/study.json: is wrong. Fix: mend it. (Full path: {folder / 'study.json'})")


def test_a_new_study_starts_a_new_analysis_and_results_of_another_study_are_refused(make_napari_viewer, qtbot,
                                                                                     tmp_path):
    """Opened results stay with their study: loading another study does not write into them, and results of
    another study cannot be shown over the one on show."""
    import pytest

    from napari_brain_concepts._napari.session import get_session
    from napari_brain_concepts.core.errors import InputError
    from napari_brain_concepts.core.io.results import ResultsStore

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    qtbot.addWidget(widget)
    other = ResultsStore.create(tmp_path / "other", study="synthetic-default-seed0")
    mine = ResultsStore.create(tmp_path / "mine", study="synthetic-tiny-seed0")
    mine.update(synthetic_size="tiny", synthetic_seed=0)
    widget.open_results(mine.root)  # no study yet: its own (synthetic tiny, seed 0) is built
    qtbot.waitUntil(lambda: widget.study is not None and widget.subject is not None, timeout=600_000)
    assert get_session(viewer).results_dir == mine.root
    with pytest.raises(InputError, match="holds the results of study 'synthetic-default-seed0', not of 'synthetic-tiny-seed0'"):
        widget.open_results(other.root)
    assert get_session(viewer).results_dir == mine.root
    same_name = ResultsStore.create(tmp_path / "same-name", study="synthetic-tiny-seed0", fingerprint="0123456789abcdef")
    with pytest.raises(InputError, match="'synthetic-tiny-seed0' made from other data"):
        widget.open_results(same_name.root)
    widget.load_synthetic(size="tiny", seed=1)  # another study: a new analysis, not the opened folder
    qtbot.waitUntil(lambda: widget.study is not None and widget.study.name.endswith("seed1"), timeout=600_000)
    assert get_session(viewer).results_dir is None
    context = get_session(viewer).ensure_context()
    assert context.store.root != mine.root
    assert ResultsStore.open(mine.root).manifest["study"] == "synthetic-tiny-seed0"


def test_results_bring_their_own_study_or_say_why_they_cannot(make_napari_viewer, qtbot, tmp_path):
    """Opened with no study loaded, results load the study their manifest names: an NSD copy (not the
    synthetic study in its place), or a clear error when the study folder has moved."""
    import pytest

    from napari_brain_concepts.core.errors import InputError
    from napari_brain_concepts.core.io.results import ResultsStore

    from ..core.nsd_fixture import make_nsd_tree

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    qtbot.addWidget(widget)
    moved = ResultsStore.create(tmp_path / "moved", study="my-study")
    moved.update(study_path=str(tmp_path / "gone"))
    with pytest.raises(InputError, match=r"manifest\.json: was made from the study folder .*gone, which is missing"):
        widget.open_results(moved.root)
    unknown = ResultsStore.create(tmp_path / "unknown", study="my-study")
    with pytest.raises(InputError, match="does not say which study the results were made from"):
        widget.open_results(unknown.root)
    assert widget.study is None and len(viewer.layers) == 0

    make_nsd_tree(tmp_path / "nsd", subjects=(1,))
    nsd = ResultsStore.create(tmp_path / "nsd-results", study="nsd")
    nsd.update(nsd_root=str(tmp_path / "nsd"), nsd_subjects=[1], nsd_sessions=None)
    widget.open_results(nsd.root)
    qtbot.waitUntil(lambda: widget.study is not None and widget.subject is not None, timeout=600_000)
    assert widget.study.subject_names == ["subj01"]


def _tiny_study_shown(make_napari_viewer, qtbot):
    """A viewer with the Study widget showing the tiny synthetic study (seed 0)."""
    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    qtbot.addWidget(widget)
    widget.load_synthetic(size="tiny", seed=0)
    qtbot.waitUntil(lambda: widget.subject is not None, timeout=600_000)
    return viewer, widget


def test_opened_results_load_one_map_and_the_rest_when_chosen(make_napari_viewer, qtbot, tmp_path):
    """A results folder's maps are listed in the Map box; only the default one is loaded at first, a chosen
    one is loaded and shown alone, and a participant switch loads the counterparts of the loaded ones only."""
    import numpy as np

    from napari_brain_concepts._napari.threshold import is_map_layer
    from napari_brain_concepts.core.io.results import ResultsStore

    viewer, widget = _tiny_study_shown(make_napari_viewer, qtbot)
    study = widget.study
    store = ResultsStore.create(tmp_path / "results", study=study.name)
    rng = np.random.default_rng(0)
    concepts = ["body", "face", "place"]
    for name in study.subject_names:
        sub = study.subject(name)
        for c in concepts:
            store.write_map(name, f"corr_{c}", sub.to_volume(rng.standard_normal(sub.n_voxels)), sub.affine)
        store.write_map(name, "decoder_weight_norm", sub.to_volume(rng.random(sub.n_voxels)), sub.affine)
    base = len(viewer.layers)
    widget.open_results(store.root)
    items = [widget.map_box.itemText(i) for i in range(widget.map_box.count())]
    assert items == ["corr_body", "corr_face", "corr_place", "decoder_weight_norm"]
    from qtpy.QtCore import Qt

    tip = widget.map_box.itemData(items.index("corr_face"), Qt.ItemDataRole.ToolTipRole)
    assert tip == "Pearson r of each voxel's response with the presence of face"  # what each map shows
    first, second = study.subject_names[:2]
    # the default map only (a signed map: its two parts), selected and named in the box
    assert len(viewer.layers) == base + 2
    assert viewer.layers.selection.active is viewer.layers[f"{first} corr_face"]
    assert widget.map_box.currentText() == "corr_face"
    widget.show_map("decoder_weight_norm")
    norm = viewer.layers[f"{first} decoder_weight_norm"]
    assert norm.visible and viewer.layers.selection.active is norm
    assert [layer.name for layer in viewer.layers if is_map_layer(layer) and layer.visible] == [norm.name]
    assert len(viewer.layers) == base + 3
    widget.display.slider.setValue(0.5)
    widget.display.colorbar.setChecked(True)
    widget.subject_box.setCurrentText(second)
    names = [layer.name for layer in viewer.layers]
    assert f"{second} decoder_weight_norm" in names and f"{second} corr_face" in names
    assert f"{second} corr_body" not in names and not any(n.startswith(f"{first} ") for n in names)
    now = viewer.layers[f"{second} decoder_weight_norm"]
    assert now.visible  # what the user looked at, again
    assert widget.map_box.currentText() == "decoder_weight_norm"
    # at the same threshold, with its colour bar: participants are compared at one threshold
    assert now.contrast_limits[0] == 0.5 and now.colorbar.visible
    assert widget.display.slider.value() == 0.5 and widget.display.colorbar.isChecked()


def test_opened_results_show_the_slice_through_the_maps_peak(make_napari_viewer, qtbot, tmp_path):
    """Opening results moves the slices to the default map's strongest region (not the middle slice, where the
    region may not be), and *Go to peak* does the same for the map selected later."""
    import numpy as np

    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.space import world_of_voxel

    viewer, widget = _tiny_study_shown(make_napari_viewer, qtbot)
    study = widget.study
    sub = study.subject(widget.subject)
    ijk = np.argwhere(sub.mask)
    # two voxels deep inside the mask (all 26 neighbours in it), far apart: a region around each
    inner = [v for v in ijk if sub.mask[tuple(slice(c - 1, c + 2) for c in v)].all()]
    low, high = min(inner, key=lambda v: v[2]), max(inner, key=lambda v: v[2])
    rng = np.random.default_rng(0)

    def region_map(centre, value):
        values = rng.normal(0, 0.1, sub.n_voxels)
        values[np.abs(ijk - centre).max(axis=1) <= 1] = value
        return sub.to_volume(values)

    store = ResultsStore.create(tmp_path / "results", study=study.name)
    for name in study.subject_names:
        store.write_map(name, "corr_face", region_map(low, -0.8), sub.affine)  # a negative region
        store.write_map(name, "decoder_weight_norm", np.abs(region_map(high, 3.0)), sub.affine)
    voxel = float(np.abs(np.diag(sub.affine)[:3]).max())
    widget.open_results(store.root)
    assert viewer.layers.selection.active.name == f"{widget.subject} corr_face"
    np.testing.assert_allclose(viewer.dims.point[-3:], world_of_voxel(low, sub.affine), atol=voxel / 2)
    widget.show_map("decoder_weight_norm")
    np.testing.assert_allclose(viewer.dims.point[-3:], world_of_voxel(low, sub.affine), atol=voxel / 2)  # kept
    assert widget.display.peak_button.isEnabled()
    widget.display.peak_button.click()
    np.testing.assert_allclose(viewer.dims.point[-3:], world_of_voxel(high, sub.affine), atol=voxel / 2)


def test_an_nsd_copy_opens_with_the_participants_sessions_and_betas_chosen(make_napari_viewer, qtbot, tmp_path,
                                                                          monkeypatch):
    """The twelfth note: napari had no way to set the NSD reader's options, and an NSD copy chosen with "Open
    study folder…" failed for want of a study.json. A dialog now asks which participants, sessions, betas and
    common space to read (the command line's --subject, --sessions, --betas, --to-common), and says what it
    cannot take before it closes."""
    import shutil

    import pytest
    from qtpy.QtWidgets import QDialogButtonBox, QFileDialog

    from napari_brain_concepts._napari.concepts_widget import ConceptsWidget
    from napari_brain_concepts._napari.nsd_dialog import NsdDialog
    from napari_brain_concepts._napari.session import get_session
    from napari_brain_concepts.core.errors import InputError
    from napari_brain_concepts.core.io.nsd import DEFAULT_BETAS
    from napari_brain_concepts.core.pipeline import run_analysis
    from napari_brain_concepts.core.progress import run_to_end

    from ..core.nsd_fixture import make_nsd_tree

    root = tmp_path / "nsd"
    make_nsd_tree(root, subjects=(1, 2), n_sessions=3)
    other = root / "nsddata_betas" / "ppdata" / "subj02" / "func1pt8mm" / "betas_fithrf"  # subj02 only
    other.mkdir()
    shutil.copy(other.parent / DEFAULT_BETAS / "betas_session01.hdf5", other)
    dialog = NsdDialog(root)
    qtbot.addWidget(dialog)
    assert [dialog.subjects.item(i).text() for i in range(dialog.subjects.count())] == ["subj01", "subj02"]
    assert dialog.checked() == [1] and dialog.betas.currentText() == DEFAULT_BETAS
    assert dialog.on_disk.text() == "subj01: sessions 1–3 on disk"
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    dialog.check(1, 2)
    for sessions, error in [("2-1", "Sessions '2-1': '2-1' runs backwards. Fix: write it 1-2"),
                            ("1-100", "Sessions '1-100': '1-100' goes beyond session 40"),
                            ("2-5", "Sessions: subj01 has no session 4–5 of betas_fithrf_GLMdenoise_RR on disk "
                                    "(it has 1–3)")]:
        dialog.sessions.setText(sessions)
        ok.click()
        assert dialog.chosen is None and error in dialog.error.text()
    dialog.sessions.setText("1-2")
    dialog.betas.setCurrentText("betas_fithrf")
    ok.click()
    assert "Betas: subj01 has no sessions of betas_fithrf on disk (it has betas_fithrf_GLMdenoise_RR)" in \
        dialog.error.text()
    dialog.betas.setCurrentText(DEFAULT_BETAS)
    dialog.common.setCurrentIndex(2)  # a folder of affines
    ok.click()
    assert dialog.chosen is None and "Common space: no folder is given" in dialog.error.text()
    dialog.common_folder.setText(str(tmp_path))
    ok.click()
    assert dialog.chosen is None and "has no subj01.txt, subj02.txt" in dialog.error.text()
    dialog.common.setCurrentIndex(1)
    ok.click()
    assert dialog.chosen == {"subjects": [1, 2], "sessions": [1, 2], "betas": DEFAULT_BETAS, "to_common": "identity"}

    empty = tmp_path / "empty"  # an NSD copy without betas: nothing to tick, only Cancel
    (empty / "nsddata").mkdir(parents=True)
    (empty / "nsddata_betas").mkdir()
    nothing = NsdDialog(empty)
    qtbot.addWidget(nothing)
    assert not nothing.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    qtbot.addWidget(widget)
    concepts = ConceptsWidget(viewer)
    qtbot.addWidget(concepts)
    session = get_session(viewer)
    session.set_busy(True)  # a step runs: the study is not replaced under it
    with pytest.raises(InputError, match="Study dock: a step of the analysis, or the reading of a study, is under way"):
        widget.open_nsd(root, subjects=[1])
    session.set_busy(False)
    with pytest.raises(InputError, match=r"has no subj01\.txt, subj02\.txt"):  # checked before the betas are read
        widget.open_nsd(root, subjects=[1, 2], to_common=tmp_path)
    with pytest.raises(InputError, match=r"^Common space .*gone: is neither 'identity' nor a folder"):
        widget.open_nsd(root, subjects=[1], to_common=tmp_path / "gone")
    # the Study dock's button: the folder chosen is an NSD copy, so the dialog asks, and its choice is read
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(root))

    def exec_(self):
        self.check(1, 2)
        self.sessions.setText("1-2")
        self.common.setCurrentIndex(1)
        self._on_ok()
        return self.result()

    monkeypatch.setattr(NsdDialog, "exec", exec_)
    widget.open_button.click()
    assert session.busy and not widget.open_button.isEnabled()  # while NSD is read, no step starts
    qtbot.waitUntil(lambda: widget.study is not None and widget.subject is not None, timeout=600_000)
    assert widget.study.subject_names == ["subj01", "subj02"] and widget.subject_box.count() == 2
    assert all(sub.session_numbers == [1, 2] for sub in widget.study.subjects.values())
    assert all(sub.to_common is not None for sub in widget.study.subjects.values())
    assert "captions" in widget.study.stimuli.embeddings
    assert not session.busy and widget.open_button.isEnabled()
    # two participants: a concept carried by the other one is shared (the form's 3 others would find none)
    assert concepts.min_participants.value() == 1 and concepts.shared_button.isEnabled()
    # a study opened after an analysis that finished steps: its temporary results stay, and where is said
    session.ensure_context({"decode": {"cv": 3, "alphas": [1.0, 100.0]}})
    earlier = session.context.store.root
    run_to_end(run_analysis(session.context, ["decode"]))
    widget.open_nsd(root, subjects=[2])
    qtbot.waitUntil(lambda: widget.study.subject_names == ["subj02"], timeout=600_000)
    assert (earlier / "tables" / "decoding.tsv").is_file()
    assert widget.status.text() == (f"NSD: 1 participant, {len(widget.study.stimuli)} stimuli. The results of the "
                                    f"analysis before stay in {earlier} until napari closes (copy that folder to "
                                    "keep them).")
    assert concepts.min_participants.value() == 1 and not concepts.shared_button.isEnabled()


def test_open_study_folder_on_a_results_folder_opens_it_as_results(make_napari_viewer, qtbot, tmp_path,
                                                                  monkeypatch):
    """The folder picker of "Open study folder…" on a results folder: it was told to write a study.json there."""
    from napari_brain_concepts._napari import study_widget
    from napari_brain_concepts._napari.session import get_session
    from napari_brain_concepts.core.io.results import ResultsStore

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    qtbot.addWidget(widget)
    mine = ResultsStore.create(tmp_path / "mine", study="synthetic-tiny-seed0")
    mine.update(synthetic_size="tiny", synthetic_seed=0)
    monkeypatch.setattr(study_widget.QFileDialog, "getExistingDirectory", lambda *a, **k: str(mine.root))
    widget.open_button.click()
    qtbot.waitUntil(lambda: widget.study is not None and widget.subject is not None, timeout=600_000)
    assert get_session(viewer).results_dir == mine.root and widget.study.name == "synthetic-tiny-seed0"
    widget.open_button.click()  # again, with its study on show: opened again with its own study, no error
    qtbot.waitUntil(lambda: not get_session(viewer).busy and widget.subject is not None, timeout=600_000)
    assert get_session(viewer).results_dir == mine.root
