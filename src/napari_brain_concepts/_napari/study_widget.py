"""Study dock widget: open a study folder, a results folder or the synthetic study; switch participant."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from . import workers
from .session import get_session
from .step_widget import scrolling_layout
from .threshold import MapDisplay, is_map_layer

if TYPE_CHECKING:
    import napari

    from ..core.study import Study


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _tag(layer) -> dict | None:
    return layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None


class StudyWidget(QWidget):
    """Loads a study and shows one participant at a time, aligned in millimetres.

    Layers of a participant: anatomy, analysed-mask outline, ROI outlines with names, planted regions
    (synthetic study), and the maps and masks of a results folder when one is open. Switching participant
    swaps these layers and keeps the camera and the current slice. Below, a threshold slider and a colour-bar
    switch act on the selected map layer (:class:`~napari_brain_concepts._napari.threshold.MapDisplay`).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.study: Study | None = None
        self.results: Path | None = None
        self.subject: str | None = None
        self._about = ""  # what the status says of the study on show
        self._origin: dict = {}  # how the study being loaded can be found again (session.set_study)
        self._worker = None

        self.open_button = QPushButton("Open study folder…")
        self.open_button.setToolTip("a study folder (holding study.json), or an NSD copy (holding nsddata/ and "
                                    "nsddata_betas/): then which participants, sessions and betas to read")
        self.results_button = QPushButton("Open results…")
        self.sample_button = QPushButton("Synthetic study")
        self.subject_box = QComboBox()
        self.subject_box.setEnabled(False)
        self.map_box = QComboBox()
        self.map_box.setEnabled(False)
        self.map_box.setToolTip("the results' maps and masks of this participant: the chosen one is loaded "
                                "and shown alone over the anatomy (loaded ones stay in the layer list)")
        self.radiological = QCheckBox("Radiological view")
        self.radiological.setToolTip("right hemisphere on the left of the screen (neurological: on the right)")
        self.status = QLabel("No study loaded.")
        self.status.setWordWrap(True)
        self.display = MapDisplay(napari_viewer)

        # two buttons a row keeps the dock narrow, so the canvas keeps its width
        buttons = QGridLayout()
        buttons.addWidget(self.open_button, 0, 0)
        buttons.addWidget(self.results_button, 0, 1)
        buttons.addWidget(self.sample_button, 1, 0, 1, 2)
        # the combo boxes show what fits and elide the rest (their lists show whole names): a long map name
        # wrapped the Map row onto two lines, or widened the dock, and hid the map display under the fold
        for box in (self.subject_box, self.map_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(12)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Participant", self.subject_box)
        form.addRow("Map", self.map_box)
        form.addRow(self.radiological)
        layout = scrolling_layout(self, first=True)  # the dock in use all the time
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("<b>Map display</b> (the selected map layer)"))
        layout.addWidget(self.display)
        layout.addStretch(1)

        self.open_button.clicked.connect(self._choose_study)
        self.results_button.clicked.connect(self._choose_results)
        self.sample_button.clicked.connect(lambda: self.load_synthetic())
        self.subject_box.currentTextChanged.connect(self._on_subject_chosen)
        self.map_box.textActivated.connect(self.show_map)
        napari_viewer.layers.selection.events.active.connect(self._on_active_layer)
        self.radiological.toggled.connect(self.set_radiological)
        self.session = get_session(napari_viewer)
        self.session.step_finished.connect(self._on_step_finished)
        # another study or results folder while a step runs would pull the analysis from under it
        self.session.busy_changed.connect(self._on_busy)

    # -- actions (also the widget's API for scripts and tests) -----------------------------------------
    def open_study(self, path: str | Path, results: str | Path | None = None):
        """Read a study folder in the background, then show its first participant.

        A new study starts a new analysis (in a temporary folder) unless ``results`` names its results folder.
        """
        from ..core.io.study_folder import read_study

        self._check_idle()
        self.results = Path(results) if results is not None else None
        self._origin = {"study_path": str(Path(path).resolve())}
        self.status.setText(f"Reading {path} …")
        return self._start(read_study, Path(path))

    def open_nsd(self, root: str | Path, subjects=(1,), sessions=None, betas: str | None = None,
                 to_common: str | Path | None = None):
        """Read NSD participants from the NSD copy at ``root`` in the background, as the command line's
        ``--nsd ROOT --subject … --sessions … --betas … --to-common …`` does (a new analysis), then show the
        first. ``to_common``: ``"identity"`` or a folder of ``subjXX.txt`` affines, for the shared concepts;
        it is checked before the betas are read."""
        from ..core.io.nsd import DEFAULT_BETAS, load_nsd, to_common_folder

        self._check_idle()
        subjects = [int(k) for k in ([subjects] if isinstance(subjects, (int, str)) else subjects)]
        common = to_common_folder(None if to_common is None else str(to_common), subjects, "Common space")
        self.results = None
        self._origin = {"nsd": (root, subjects, sessions, betas, to_common)}  # recorded once read (set_study)
        self.status.setText(f"Reading NSD at {root} …")
        return self._start(load_nsd, Path(root), subjects, sessions, betas=betas or DEFAULT_BETAS, to_common=common,
                           embed_captions=True, on_yield=self._reading)

    def _reading(self, progress) -> None:
        self.status.setText(f"Reading NSD: {progress.message} ({progress.fraction:.0%})")

    def load_synthetic(self, size: str = "tiny", seed: int = 0, results: str | Path | None = None):
        """Build the synthetic study in the background (a new analysis unless ``results`` is its results folder)."""
        from ..core.synthetic import make_synthetic_study

        self._check_idle()
        self.results = Path(results) if results is not None else None
        self._origin = {"synthetic_size": size, "synthetic_seed": int(seed)}
        self.status.setText("Building the synthetic study …")
        return self._start(make_synthetic_study, seed=seed, size=size)

    def open_results(self, path: str | Path):
        """Show the maps and masks of a results folder over the current study (with none loaded, its own)."""
        from ..core.io.results import ResultsStore

        self._check_idle()
        store = ResultsStore.open(path)  # validates before anything changes
        if self.study is None:
            return self._open_study_of(store)
        store.check_made_from(self.study.name, self.study.fingerprint(), "open the results of the study on "
                              "show, or open them in a new viewer, where they bring their own study")
        self.results = Path(path)
        earlier = len(self.session.earlier_results)
        self.session.open_results(self.results)  # the docks show the folder's results
        kept = (f" The results of the analysis before stay in {self.session.earlier_results[-1]} until napari "
                "closes (copy that folder to keep them)." if len(self.session.earlier_results) > earlier else "")
        self.status.setText(f"{self._about} {self._results_note()}{kept}")
        self.viewer.layers.selection.active = None  # the results' map on show gets selected
        self.show_subject(self.subject)
        self.display.go_to_peak()  # the slice through the default map's strongest region
        return None

    def set_study(self, study: Study) -> None:
        """Show ``study`` (already in memory)."""
        self.study = study
        names = study.subject_names
        self.subject_box.blockSignals(True)
        self.subject_box.clear()
        self.subject_box.addItems(names)
        self.subject_box.setEnabled(True)
        self.subject_box.blockSignals(False)
        self.subject = None
        earlier = len(self.session.earlier_results)
        origin, self._origin = self._origin, {}  # the loader's; a study set from a script has none
        if "nsd" in origin:  # with the sessions each participant was read with
            from ..core.io.nsd import nsd_origin

            origin = nsd_origin(*origin["nsd"], study=study)
        self.session.set_study(study, results_dir=self.results, origin=origin)
        self.show_subject(names[0])
        self.viewer.reset_view()
        if self.results is not None:  # opened with its results: the slice through the default map's peak
            self.display.go_to_peak()
        self.set_radiological(self.radiological.isChecked())
        n_stim = len(study.stimuli)
        kept = ""
        if len(self.session.earlier_results) > earlier:  # the analysis before this study finished steps
            kept = (f" The results of the analysis before stay in {self.session.earlier_results[-1]} until napari "
                    "closes (copy that folder to keep them).")
        self._about = (f"{study.name}: {len(names)} participant{'s' if len(names) != 1 else ''}, {n_stim} "
                       f"stimuli.{kept}")
        self.status.setText(self._about)

    def show_subject(self, name: str | None) -> None:
        """Swap this widget's layers to participant ``name``, keeping camera and slice."""
        from ..core.io.results import ResultsStore
        from .display import add_layer_data
        from .layers import default_entry, results_entries, results_layers, study_layers

        if self.study is None or name is None:
            return
        cam = camera(self.viewer)
        view = (tuple(cam.center), cam.zoom)
        point = tuple(self.viewer.dims.point)
        had_layers = any(_tag(layer) for layer in self.viewer.layers)
        # what the user was looking at, by name without the participant: shown again for the new participant
        def own(layer):
            return layer.name.removeprefix(f"{self.subject} ") if self.subject else layer.name

        seen = {own(layer): layer.visible for layer in self.viewer.layers if _tag(layer)}
        # the threshold and colour bar of each map, set again on the new participant's map of that name
        display = {own(layer): ((_tag(layer).get("threshold") or {}).get("value", 0.0), layer.colorbar.visible)
                   for layer in self.viewer.layers if is_map_layer(layer)}
        active = self.viewer.layers.selection.active
        active = own(active) if active is not None and _tag(active) else None
        layer_data = study_layers(self.study, name)
        results = self.session.results_dir
        if results is not None and ResultsStore.is_results(results):
            # the maps loaded for the previous participant (the default map at first); they go between
            # anatomy and outlines
            loaded = {_tag(layer).get("entry") for layer in self.viewer.layers if _tag(layer)} - {None}
            if not loaded:
                loaded = {default_entry(results_entries(ResultsStore.open(results), name))}
            layer_data[1:1] = results_layers(results, name, self.session.concept, names=loaded)
        # one batch: napari cleans its scene graph (a full garbage collection) once, not once per removed layer
        # (a switch on the demo's results took 91-107 s, most of it in those collections)
        with self.viewer.layers.batched_update():
            for layer in [layer for layer in self.viewer.layers if _tag(layer)]:
                self.viewer.layers.remove(layer)
            added = add_layer_data(self.viewer, layer_data)
        self._keep_view(added, name, seen, active, display)
        if had_layers:
            cam.center = view[0]
            cam.zoom = view[1]
            self.viewer.dims.point = point
        self.subject = name
        self.session.set_subject(name)
        if self.subject_box.currentText() != name:
            self.subject_box.blockSignals(True)
            self.subject_box.setCurrentText(name)
            self.subject_box.blockSignals(False)
        self.refresh_maps()

    def refresh_maps(self) -> None:
        """List the results' maps and masks of the participant on show in the Map box."""
        from qtpy.QtCore import Qt

        from .display import results_entries
        from .layers import describe_entry

        entries = list(results_entries(self.session)) if self.study is not None else []
        self.map_box.blockSignals(True)
        self.map_box.clear()
        self.map_box.addItems(entries)
        for i, entry in enumerate(entries):
            self.map_box.setItemData(i, describe_entry(entry), Qt.ItemDataRole.ToolTipRole)
        self.map_box.setEnabled(bool(entries))
        self.map_box.setCurrentIndex(-1)
        self.map_box.blockSignals(False)
        self._on_active_layer()

    def show_map(self, entry: str) -> None:
        """Load results map ``entry`` of the participant on show, if not loaded yet, and show it alone."""
        from .display import load_results_layers, show_alone

        layers = [layer for layer in load_results_layers(self.viewer, self.session, [entry])
                  if _tag(layer).get("part") != "negative"]
        if layers:
            show_alone(self.viewer, layers[0])

    def _on_step_finished(self, step: str) -> None:
        self.refresh_maps()
        if self.session.temporary_results is not None and self.study is not None:
            self.status.setText(f"{self._about} {self._results_note()}")

    def _results_note(self) -> str:
        """Where the analysis's results are, and for how long when napari removes them on closing."""
        temporary = self.session.temporary_results
        if temporary is not None:
            return f"Results in {temporary}, removed when napari closes: Export (Whole results folder) keeps them."
        return f"Results: {self.session.results_dir}." if self.session.results_dir is not None else ""

    def _on_busy(self, busy: bool) -> None:
        for button in (self.open_button, self.results_button, self.sample_button):
            button.setEnabled(not busy)

    def _on_active_layer(self, event=None) -> None:
        """The Map box names the selected layer when it is a results map or mask (else it is empty)."""
        active = self.viewer.layers.selection.active
        entry = (_tag(active) or {}).get("entry") if active is not None else None
        index = self.map_box.findText(entry) if entry else -1
        if self.map_box.currentIndex() != index:
            self.map_box.blockSignals(True)
            self.map_box.setCurrentIndex(index)
            self.map_box.blockSignals(False)

    def _keep_view(self, layers: list, subject: str, seen: dict, active: str | None,
                   display: dict | None = None) -> None:
        """Show and select the new participant's layers as the previous participant's were (a layer the
        previous one did not have keeps its default), each map with the threshold and colour bar it had
        (``display``: name → (threshold, colour bar)); with none selected, select the map on show (so the
        Study dock's threshold acts on it)."""
        from .threshold import set_threshold

        by_name = {layer.name.removeprefix(f"{subject} "): layer for layer in layers}
        default = [layer for layer in layers if is_map_layer(layer) and layer.visible]
        for own, layer in by_name.items():
            if own in seen:
                layer.visible = seen[own]
            if own in (display or {}) and is_map_layer(layer):
                value, bar = display[own]
                if value:
                    set_threshold(layer, value)  # each part had its own (the same) value
                layer.colorbar.visible = bar
        if not any(is_map_layer(layer) and layer.visible for layer in layers):
            for layer in default:  # the map on show has no counterpart here (e.g. a phrase map): the default
                layer.visible = True
        chosen = by_name.get(active) if active else None
        if chosen is None:
            chosen = next((layer for layer in layers if is_map_layer(layer) and layer.visible), None)
        if chosen is not None:
            self.viewer.layers.selection.active = chosen

    def set_radiological(self, radiological: bool) -> None:
        """Flip the camera, never the data: anterior up; the right hemisphere right (neurological) or left."""
        camera(self.viewer).orientation2d = ("up", "left" if radiological else "right")
        if self.radiological.isChecked() != radiological:
            self.radiological.setChecked(radiological)

    # -- plumbing ----------------------------------------------------------------------------------
    def _start(self, function, *args, on_yield=None, **kwargs):
        """Read a study in a worker. The session is busy meanwhile (an NSD read takes minutes to hours): no
        step starts on the study on show, to have it replaced under it, and no other study is opened."""
        self._check_idle()
        self.session.set_busy(True)

        def read(study) -> None:
            self.session.set_busy(False)
            self.set_study(study)

        def failed(exc) -> None:
            self.session.set_busy(False)
            self._failed(exc)

        self._worker = workers.start(function, *args, on_yield=on_yield, on_return=read, on_error=failed, **kwargs)
        return self._worker

    def _check_idle(self) -> None:
        """Refuse to change the study or the results folder while a step runs or a study is read."""
        if self.session.busy:
            from ..core.errors import InputError

            raise InputError("Study dock", "a step of the analysis, or the reading of a study, is under way",
                             "wait for it to finish, or cancel the step, then open the study or the results")

    def _failed(self, exc: BaseException) -> None:
        self._origin = {}
        self.status.setText("Could not load: see the notification.")
        workers.notify_error(exc)

    def _on_subject_chosen(self, name: str) -> None:
        if name and name != self.subject:
            self.show_subject(name)

    def _choose_study(self) -> None:
        from ..core.io.nsd import is_nsd_root

        path = QFileDialog.getExistingDirectory(self, "Open a study folder or an NSD copy")
        if not path:
            return
        from ..core.io.results import ResultsStore

        if ResultsStore.is_results(path):  # a results folder: opened with its own study, as `brain-concepts view` does
            try:
                self._check_idle()
                self._open_study_of(ResultsStore.open(path))
            except Exception as exc:  # one notification with the core's message
                workers.notify_error(exc)
            return
        if not is_nsd_root(path):
            self.open_study(path)
            return
        from .nsd_dialog import NsdDialog

        dialog = NsdDialog(path, self)  # which participants, sessions, betas and common space
        if dialog.exec() and dialog.chosen is not None:
            try:
                self.open_nsd(path, **dialog.chosen)
            except Exception as exc:  # one notification with the core's message
                workers.notify_error(exc)

    def _choose_results(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open results folder")
        if path:
            try:
                self.open_results(path)
            except Exception as exc:  # one notification with the core's message
                workers.notify_error(exc)

    def _open_study_of(self, store):
        """Load the study a results folder was made from (its manifest says where), then show the results."""
        from ..core.errors import InputError

        m = store.manifest
        where = store.root / "manifest.json"
        if m.get("study_path"):
            if not Path(m["study_path"]).is_dir():
                raise InputError(where, f"was made from the study folder {m['study_path']}, which is missing",
                                 "move the study back there, or open it (Open study folder…) and then its results")
            return self.open_study(m["study_path"], results=store.root)
        if m.get("nsd_root"):
            if not Path(m["nsd_root"]).is_dir():
                raise InputError(where, f"was made from the NSD copy at {m['nsd_root']}, which is missing",
                                 "mount or move the NSD copy back there")
            from ..core.io.nsd import read_nsd, recorded_reading

            self.results = store.root
            self._origin = {}  # the folder records it
            self.status.setText(f"Reading NSD at {m['nsd_root']} …")
            reading = recorded_reading(m)  # the betas, sessions, common space and model the results were made with
            return self._start(read_nsd, reading.pop("root"), **reading)
        if "synthetic_size" in m:
            return self.load_synthetic(m["synthetic_size"], int(m.get("synthetic_seed", 0)), results=store.root)
        raise InputError(where, "does not say which study the results were made from",
                         "open the study first (Open study folder…), then Open results…")
