"""Captions dock widget: pick a test stimulus and read its reconstructed captions beside the human ones."""

from __future__ import annotations

import textwrap

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel

from .concepts_widget import _pixmap
from .step_widget import StepWidget

#: characters per line of the caption written on the canvas
OVERLAY_WIDTH = 48


def text_overlay(viewer):
    """The canvas text overlay (``viewer.canvas.overlays.text`` since napari 0.9, ``viewer.text_overlay`` before)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None and hasattr(overlays, "text") else viewer.text_overlay


class CaptionsWidget(StepWidget):
    """Caption reconstruction from brain activity (the ``captions`` step), one stimulus at a time.

    The best reconstructed caption of the chosen stimulus is also written on the canvas (a text overlay),
    so it stays in view while one scrolls through the participant's slices.
    """

    steps = ("captions",)
    run_label = "Reconstruct captions"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.stimulus = QComboBox()
        form = QFormLayout()
        form.addRow("Test stimulus", self.stimulus)
        self.form.addLayout(form)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.body.addWidget(self.image)
        self.body.addWidget(self.text)
        self.stimulus.currentTextChanged.connect(self.show_stimulus)
        self._table = None
        self.join_session()

    def show_results(self, store) -> None:
        self.load_table(store)

    def clear_results(self) -> None:
        self._table = None
        self.stimulus.blockSignals(True)
        self.stimulus.clear()
        self.stimulus.blockSignals(False)
        self.image.clear()
        self.text.setText("")
        overlay = text_overlay(self.viewer)
        overlay.text = ""
        overlay.visible = False

    def event(self, event) -> bool:
        # the dock closed (napari takes the widget out of it): its caption leaves the canvas with it, as nothing
        # else in the viewer can remove it
        if event.type() == QEvent.Type.ParentChange and self.parentWidget() is None:
            overlay = text_overlay(self.viewer)
            overlay.text = ""
            overlay.visible = False
        return super().event(event)

    def on_subject_changed(self, name: str) -> None:
        store = self.results_store()
        if store is not None and store.is_done("captions"):
            self.load_table(store)

    def load_table(self, store) -> None:
        self._table = store.read_table(f"captions_{self.session.subject}")
        current = self.stimulus.currentText()
        self.stimulus.blockSignals(True)
        self.stimulus.clear()
        self.stimulus.addItems([str(s) for s in self._table["stimulus_id"]])
        self.stimulus.blockSignals(False)
        if current and current in set(self._table["stimulus_id"].astype(str)):
            self.stimulus.setCurrentText(current)
        self.show_stimulus(self.stimulus.currentText())

    def show_stimulus(self, stimulus_id: str) -> None:
        if self._table is None or not stimulus_id or self.session.study is None:
            return
        row = self._table[self._table["stimulus_id"].astype(str) == stimulus_id].iloc[0]
        stimuli = self.session.study.stimuli
        i = stimuli.index[stimulus_id]
        if stimuli.has_images:
            self.image.setPixmap(_pixmap(stimuli.image(i), 160))
        k = sorted(int(c.split("_")[1]) for c in self._table.columns
                   if c.startswith("caption_") and c.split("_")[1].isdigit())
        decoded = [f"{row[f'caption_{j}']} <i>(cos {row[f'score_{j}']:.2f})</i>" for j in k[:5]]
        human = stimuli.captions[i]
        self.text.setText(
            f"<b>rank of the true stimulus</b> among the {len(self._table)} test stimuli: {int(row['rank'])} "
            "(1 = best)<br><b>reconstructed</b> (the nearest captions of the corpus):<br>"
            + "<br>".join(f"{n}. {c}" for n, c in enumerate(decoded, 1))
            + "<br><b>human captions:</b><br>" + "<br>".join(f"– {c}" for c in human))
        overlay = text_overlay(self.viewer)
        # wrapped: one long line would run off a canvas narrowed by the docks
        caption = textwrap.fill(f"“{row[f'caption_{k[0]}']}”", OVERLAY_WIDTH)
        overlay.text = f"{self.session.subject} · {stimulus_id} · read out of the brain:\n{caption}"
        overlay.position = "top_center"
        overlay.font_size = 11
        overlay.visible = True
