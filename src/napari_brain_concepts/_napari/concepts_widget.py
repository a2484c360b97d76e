"""Concepts dock widget: the concept basis with names, a gallery of top and bottom images, voxel masks, and the
concepts shared across participants."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from .step_widget import StepWidget

THUMBNAILS = 6
THUMB_SIZE = 64


def _pixmap(image, size: int = THUMB_SIZE) -> QPixmap:
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB").resize((size, size))))
    qimage = QImage(rgb.data, size, size, 3 * size, QImage.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


class ConceptsWidget(StepWidget):
    """Run the concept basis, the voxel masks and the shared concepts; pick a concept to see it.

    Selecting a concept lists its words, shows its most (top row) and least (bottom row, the "negation")
    associated stimuli, and makes its soft and hard mask of the participant on show and, for a shared
    concept, the n-of-N overlap map visible.
    """

    steps = ("concepts", "masks", "shared")
    run_label = "Find concepts"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.basis_button = QPushButton("Concept basis only")
        self.shared_button = QPushButton("Shared concepts only")
        row = QHBoxLayout()
        row.addWidget(self.basis_button)
        row.addWidget(self.shared_button)
        self.form.addLayout(row)
        self.basis_button.clicked.connect(lambda: self.run(("concepts",)))
        self.shared_button.clicked.connect(lambda: self.run(("shared",)))
        self.concepts = QListWidget()
        self.concepts.setMinimumHeight(140)
        self.words = QLabel("")
        self.words.setWordWrap(True)
        self.gallery = QWidget()
        self.gallery_layout = QGridLayout(self.gallery)
        self.gallery_layout.setSpacing(2)
        self.body.addWidget(QLabel("Concepts (select one):"))
        self.body.addWidget(self.concepts)
        self.body.addWidget(self.words)
        self.body.addWidget(self.gallery)
        self.concepts.currentItemChanged.connect(lambda item, _: self.select(item))
        self._names = None

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
            item.setData(Qt.UserRole, concept)
            self.concepts.addItem(item)

    def select(self, item) -> None:
        if item is None or self._names is None or self.session.study is None:
            return
        concept = item.data(Qt.UserRole)
        rows = self._names[self._names["concept"] == concept]
        text = []
        for end, title in (("positive", "most"), ("negative", "least")):
            r = rows[rows["end"] == end]
            if len(r):
                text.append(f"<b>{title}:</b> {str(r['words'].iloc[0]).replace(';', ', ')}")
        self.words.setText("<br>".join(text))
        self._fill_gallery(rows)
        for name in (f"mask_{concept}", f"mask {concept}", concept, f"shared {concept}"):
            self.show_layer(name)

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
