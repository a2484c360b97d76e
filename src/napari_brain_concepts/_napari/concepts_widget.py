"""Concepts dock widget: the concept basis with names, a gallery of top and bottom images, voxel masks, and the
concepts shared across participants."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .step_widget import StepWidget

THUMBNAILS = 6
VOXEL_HINT = "Click a voxel on the canvas: its preferred concepts and images appear here."
#: six in a row (6 × 40 px with their frames, 2 px apart, no grid margins) fit the column napari gives the
#: plugin's docks (a 280 px scroll viewport at 1,400 px of window); 40 px thumbnails with the grid's default
#: margins made the dock 18 px wider than that, and it scrolled sideways
THUMB_SIZE = 38


def _pixmap(image, size: int = THUMB_SIZE) -> QPixmap:
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB").resize((size, size))))
    qimage = QImage(rgb.data, size, size, 3 * size, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


class ConceptsWidget(StepWidget):
    """Run the concept basis, the voxel masks and the shared concepts; pick a concept to see it.

    Selecting a concept lists its words, shows its most (top row) and least (bottom row, the "negation")
    associated stimuli, and loads its soft and hard mask of the participant on show in place of the previous
    concept's (a basis has up to hundreds of components: the viewer holds one concept's masks at a time)
    and, for a shared concept, makes the n-of-N overlap map visible. Clicking a voxel on the canvas lists
    its preferred concepts and images (:mod:`napari_brain_concepts._napari.voxel`).
    """

    field_labels = {"concepts.n_components": "Components", "masks.sparsity": "Mask sparsity λ",
                    "masks.n_steps": "Mask steps", "shared.min_participants": "Shared by (others)"}

    steps = ("concepts", "masks", "shared")
    shows = ("concepts",)  # the basis is listed once it is there, with or without masks and shared concepts
    run_label = "Find concepts"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.n_components = QSpinBox()
        self.n_components.setRange(0, 4096)
        self.n_components.setSpecialValueText("auto")
        self.n_components.setToolTip("concept directions K of the basis; auto: min(128, embedding dimension) "
                                     "(the demo uses 256)")
        self.sparsity = QDoubleSpinBox()
        self.sparsity.setRange(0.0, 1000.0)
        self.sparsity.setValue(5.0)
        self.sparsity.setToolTip("λ, the price of each voxel a mask keeps: higher keeps fewer voxels "
                                 "(paper 5; the demo uses 20)")
        self.mask_steps = QSpinBox()
        self.mask_steps.setRange(20, 20000)
        self.mask_steps.setSingleStep(100)
        self.mask_steps.setValue(1000)
        self.mask_steps.setToolTip("optimisation steps of the voxel masks; the best validation mask after the "
                                   "first 35% of them is kept (the paper: 1000 steps, from step 350)")
        self.min_participants = QSpinBox()
        self.min_participants.setRange(1, 64)
        self.min_participants.setValue(3)
        self.min_participants.setToolTip("a concept is shared when this many other participants carry it")
        form = QFormLayout()
        labels = self.field_labels
        form.addRow(labels["concepts.n_components"], self.n_components)
        form.addRow(labels["masks.sparsity"], self.sparsity)
        form.addRow(labels["masks.n_steps"], self.mask_steps)
        form.addRow(labels["shared.min_participants"], self.min_participants)
        self.form.addLayout(form)
        # short labels: with Run and Cancel, two buttons a row fit a dock of napari's default width
        self.basis_button = QPushButton("Basis only")
        self.basis_button.setToolTip("run the concept basis only (and the decoders it needs)")
        self.shared_button = QPushButton("Shared only")
        self.shared_button.setToolTip("run the concepts shared across participants only (and what they need)")
        row = QHBoxLayout()
        row.addWidget(self.basis_button)
        row.addWidget(self.shared_button)
        self.form.addLayout(row)
        self.run_buttons += [self.basis_button, self.shared_button]
        self.basis_button.clicked.connect(lambda: self.run(("concepts",)))
        self.shared_button.clicked.connect(lambda: self.run(("shared",)))
        self.concepts = QListWidget()
        self.concepts.setMinimumHeight(140)
        self.words = QLabel("")
        self.words.setWordWrap(True)
        self.gallery = QWidget()
        self.gallery_layout = QGridLayout(self.gallery)
        self.gallery_layout.setSpacing(2)
        self.gallery_layout.setContentsMargins(0, 0, 0, 0)
        self.body.addWidget(QLabel("Concepts (select one):"))
        self.body.addWidget(self.concepts)
        self.body.addWidget(self.words)
        self.body.addWidget(self.gallery)
        self.voxel = QLabel(VOXEL_HINT)
        self.voxel.setWordWrap(True)
        self.voxel_images = QWidget()
        self.voxel_layout = QHBoxLayout(self.voxel_images)
        self.voxel_layout.setSpacing(2)
        self.voxel_layout.setContentsMargins(0, 0, 0, 0)
        self.body.addWidget(self.voxel)
        self.body.addWidget(self.voxel_images)
        self.concepts.currentItemChanged.connect(lambda item, _: self.select(item))
        self._names = None
        self._saved = {}  # results folder → its basis concepts' stimulus scores
        self.profile = None
        napari_viewer.mouse_drag_callbacks.append(self._on_click)
        self.join_session()

    def parameters(self) -> dict:
        k = int(self.n_components.value())
        steps = int(self.mask_steps.value())
        # the best mask is kept after the first 35% of the steps, unless the analysis has its own start for
        # these steps (its values with the defaults filled in: results made with --param masks.burn_in=…)
        from ..core.pipeline import step_values

        masks = step_values("masks", self.session.current_params().get("masks"))
        burn_in = masks["burn_in"] if masks["n_steps"] == steps else int(round(0.35 * steps))
        return {"concepts": {"n_components": k or None},
                "masks": {"sparsity": float(self.sparsity.value()), "n_steps": steps, "burn_in": burn_in},
                "shared": {"min_participants": int(self.min_participants.value())}}

    def set_form(self, params) -> None:
        self.n_components.setValue(int(params["concepts"]["n_components"] or 0))
        self.sparsity.setValue(float(params["masks"]["sparsity"]))
        self.mask_steps.setValue(int(params["masks"]["n_steps"]))
        self.min_participants.setValue(int(params["shared"]["min_participants"]))

    def clear_results(self) -> None:
        for layer in list(self.viewer.layers):  # the masks of the concept picked in the results on show
            tag = layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None
            if tag and tag.get("concept") is not None:
                self.viewer.layers.remove(layer)
        self._names = None
        self.concepts.clear()
        self.words.setText("")
        while self.gallery_layout.count():
            self.gallery_layout.takeAt(0).widget().deleteLater()
        self.clear_voxel()

    def show_results(self, store) -> None:
        self.refresh(store)

    def refresh(self, store) -> None:
        """Fill the list from the results: basis concepts (with their names) and shared concepts."""
        import pandas as pd

        from ..core.errors import InputError

        frames = []
        for table in ("concept_names", "shared_concept_names"):
            try:
                frames.append(store.read_table(table))
            except InputError:
                continue
        self._names = pd.concat(frames, ignore_index=True) if frames else None
        self.concepts.clear()
        if self._names is None:
            return
        for concept, df in self._names.groupby("concept", sort=False):
            pos = df[df["end"] == "positive"]["label"]
            label = pos.iloc[0] if len(pos) else ""
            item = QListWidgetItem(f"{concept}  {label}")
            item.setData(Qt.ItemDataRole.UserRole, concept)
            self.concepts.addItem(item)

    def select(self, item) -> None:
        if item is None or self._names is None or self.session.study is None:
            return
        concept = item.data(Qt.ItemDataRole.UserRole)
        rows = self._names[self._names["concept"] == concept]
        text = []
        for end, title in (("positive", "most"), ("negative", "least")):
            r = rows[rows["end"] == end]
            if len(r):
                text.append(f"<b>{title}:</b> {str(r['words'].iloc[0]).replace(';', ', ')}")
        self.words.setText("<br>".join(text))
        self._fill_gallery(rows)
        self._load_masks(concept)
        # the hard mask (labels) first and the maps after it, so that a map is the layer selected, which the
        # Study dock's threshold acts on: the soft mask of a basis concept, the participant's map of a shared one
        for name in (f"mask {concept}", f"shared {concept}", concept, f"mask_{concept}"):
            self.show_layer(name)

    def _load_masks(self, concept: str) -> None:
        """Swap the basis concept masks on show for ``concept``'s (the viewer holds one concept's at a time)."""
        from ..core.io.results import ResultsStore
        from .display import add_layer_data, below_outlines
        from .layers import concept_layers

        self.session.concept = concept
        for layer in list(self.viewer.layers):
            tag = layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None
            if tag and tag.get("concept") not in (None, concept):
                self.viewer.layers.remove(layer)
        root, subject = self.session.results_dir, self.session.subject
        if root is None or subject is None or not ResultsStore.is_results(root):
            return
        present = {layer.name for layer in self.viewer.layers}
        added = add_layer_data(self.viewer, [t for t in concept_layers(root, subject, concept)
                                             if t[1]["name"] not in present])
        below_outlines(self.viewer, added)

    def _on_click(self, viewer, event):
        """A click (a press and release without moving: a drag pans the view) shows the voxel under it."""
        if event.button != 1:
            return
        start = np.asarray(event.position, dtype=float)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or not np.allclose(event.position, start)
            yield
        if not moved:
            self.show_voxel(event.position)

    def show_voxel(self, point) -> None:
        """List the preferred concepts and stimuli (by mean response) of the voxel at world ``point``."""
        from .voxel import voxel_profile

        study, subject = self.session.study, self.session.subject
        if study is None or subject is None:
            return
        ctx = self.session.context
        names = ctx.state.get("concept_names") if ctx is not None else None
        if names is None:  # results opened from disk: the scores from the saved basis
            names = self._saved_scores()
        profile = voxel_profile(study, subject, point, concept_names=names, table=self._names)
        self.profile = profile
        while self.voxel_layout.count():
            item = self.voxel_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        if profile is None:
            self.voxel.setText("Outside the participant's grid.")
            return
        where = f"<b>voxel {profile.ijk}</b> of {subject}"
        if not profile.in_mask:
            self.voxel.setText(f"{where}: not analysed (outside the mask).")
            return
        labels = self._labels()
        concepts = "; ".join(f"{c} {labels.get(c, '')} ({v:+.2f})".replace("  ", " ") for c, v in profile.concepts)
        if concepts:
            concepts += f" <i>[{profile.measure}]</i>"
        stimuli = study.stimuli
        captions = "<br>".join(f"{n}. {stimuli.captions[r][0] if stimuli.captions[r] else stimuli.ids[r]} "
                               f"<i>({v:+.2f})</i>" for n, (r, v) in enumerate(profile.stimuli, 1))
        if not concepts:
            concepts = (f"none (no concept's preference is above 0) <i>[{profile.measure}]</i>" if profile.measure
                        else "none (run the concept basis)")
        self.voxel.setText(f"{where}<br><b>preferred concepts:</b> {concepts}"
                           f"<br><b>preferred images</b> (mean response):<br>{captions}")
        if stimuli.has_images:
            for r, _ in profile.stimuli:
                label = QLabel()
                label.setPixmap(_pixmap(stimuli.image(r), 48))
                label.setToolTip(str(stimuli.ids[r]))
                self.voxel_layout.addWidget(label)
        self.voxel_layout.addStretch(1)

    def _saved_scores(self):
        """The basis concepts' stimulus scores of the results folder on show (read once per folder)."""
        from types import SimpleNamespace

        from ..core.concepts.steps import saved_concept_scores

        store = self.results_store()
        if store is None:
            return None
        key = str(store.root)
        if key not in self._saved:
            found = saved_concept_scores(store, self.session.study)
            self._saved[key] = None if found is None else SimpleNamespace(concepts=found[0], scores=found[1])
        return self._saved[key]

    def on_study_changed(self, study) -> None:
        self._saved.clear()
        self.clear_voxel()
        self._fit_to_study(study)

    def _fit_to_study(self, study) -> None:
        """The paper's 3 other participants, or as many as the study has: two NSD participants read with a common
        space find their shared concepts with the form as it comes (an opened folder's value follows it)."""
        others = max(1, len(study.subject_names) - 1)
        self.min_participants.setMaximum(others)  # more than the study has would leave the step out
        self.min_participants.setValue(min(3, others))
        self._on_busy(self.session.busy)

    def _on_busy(self, busy: bool) -> None:
        super()._on_busy(busy)
        study = self.session.study
        if study is not None and len(study.subject_names) < 2:  # nothing can be shared: the button says so
            self.shared_button.setEnabled(False)
        self.shared_button.setToolTip("shared concepts need at least two participants in one space"
                                      if study is not None and len(study.subject_names) < 2 else
                                      "run the concepts shared across participants only (and what they need)")

    def on_subject_changed(self, name: str) -> None:
        self.clear_voxel()  # the voxel shown was the previous participant's

    def on_finished(self, ctx) -> None:
        self._saved.clear()
        super().on_finished(ctx)

    def outcome(self, ctx) -> str:
        """How many shared concepts the shared step found, when it ran (none leaves the list as it was)."""
        if "shared" not in self._todo or "shared" in ctx.state.get("skipped_steps", {}):
            return ""
        try:
            n = len(ctx.store.read_table("shared_concepts"))
        except Exception:  # no table: nothing to say
            return ""
        if n:
            return f" {n} shared concept{'s' if n != 1 else ''}."
        return (" No shared concept: no cluster of voxels reaches the participants asked for; a lower 'Shared by "
                "(others)' (or shared.eps) finds more.")

    def clear_voxel(self) -> None:
        self.profile = None
        while self.voxel_layout.count():
            item = self.voxel_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.voxel.setText(VOXEL_HINT)

    def _labels(self) -> dict[str, str]:
        """Concept id → its label (the first words of its positive end)."""
        if self._names is None:
            return {}
        pos = self._names[self._names["end"] == "positive"]
        return dict(zip(pos["concept"].astype(str), pos["label"].astype(str)))

    def _fill_gallery(self, rows) -> None:
        while self.gallery_layout.count():
            self.gallery_layout.takeAt(0).widget().deleteLater()
        stimuli = self.session.study.stimuli
        if not stimuli.has_images:
            return
        index = stimuli.index
        for r, end in enumerate(("positive", "negative")):
            ids = rows[rows["end"] == end]["stimulus_ids"]
            if not len(ids):
                continue
            for c, sid in enumerate(str(ids.iloc[0]).split(";")[:THUMBNAILS]):
                if sid not in index:
                    continue
                label = QLabel()
                label.setPixmap(_pixmap(stimuli.image(index[sid])))
                label.setToolTip(f"{sid}: {stimuli.captions[index[sid]][0] if stimuli.captions[index[sid]] else ''}")
                self.gallery_layout.addWidget(label, r, c)
