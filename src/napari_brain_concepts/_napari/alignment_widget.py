"""Alignment dock widget: RSA of language-model embeddings with every ROI, searchlight and encoding maps, and
the encoding model's predicted brain map for any phrase."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton

from . import workers
from .plots import PlotCanvas
from .step_widget import StepWidget


class AlignmentWidget(StepWidget):
    """Run ``embed`` → ``rsa`` → ``encode``; plot noise-ceiling-normalised RSA per ROI and model.

    Type a phrase and press Enter: the caption encoding model of the participant on show predicts its brain
    map, which appears (and is replaced at each new phrase) as the layer ``SUBJ phrase map``. On results opened
    from disk, the model is the one the encode step saved (``arrays/encoding_SUBJ_captions.npz``).
    """

    steps = ("embed", "rsa", "encode")
    shows = ("rsa",)  # a study with its own caption embedding may have no embed step
    run_label = "Compare models with the brain"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.plot = PlotCanvas(height=4.0)
        self.phrase = QLineEdit()
        self.phrase.setPlaceholderText("type a phrase, e.g. a smiling face next to a house")
        self.predict_button = QPushButton("Predict map")
        row = QHBoxLayout()
        row.addWidget(self.phrase)
        row.addWidget(self.predict_button)
        self.body.addWidget(self.plot)
        hint = QLabel("Phrase → predicted brain map (encoding model):")
        hint.setWordWrap(True)
        self.body.addWidget(hint)
        self.body.addLayout(row)
        self._saved = {}  # (results folder, participant) → encoding model read from the folder
        self._phrase = None  # the phrase whose map is on show
        self.phrase.returnPressed.connect(lambda: self.predict())
        self.predict_button.clicked.connect(lambda: self.predict())
        self.join_session()

    def on_study_changed(self, study) -> None:
        self._saved.clear()

    def clear_results(self) -> None:
        self._saved.clear()
        self._phrase = None
        self.plot.clear()

    def on_subject_changed(self, name: str) -> None:
        """The phrase map on show is predicted again for the new participant (its own encoding model)."""
        if self._phrase is not None:
            self.status.setText("")
            self.predict(self._phrase)

    def on_finished(self, ctx) -> None:
        self._saved.clear()  # the folder's saved models were just rewritten
        super().on_finished(ctx)

    def show_results(self, store) -> None:
        self.plot_rsa(store.read_table("rsa_summary"))
        # the map of the caption embedding whose encoding model "Predict map" uses (captions-MODEL beside a
        # study's own caption embedding from another model)
        reference = (store.manifest.get("steps", {}).get("encode") or {}).get("reference", "captions")
        self.show_layer(f"encoding_r_{reference}")

    def plot_rsa(self, summary) -> None:
        """Bars: RSA r per ROI (groups) and model (bars), * where FDR-significant; a grey line over each ROI
        marks its noise ceiling (the leave-one-subject-out lower bound), as rsatoolbox draws it.

        Raw r against the ceiling rather than r / ceiling: in small, noisy ROIs the lower-bound ceiling is
        near zero and the ratio runs far above 1 without meaning anything.
        """
        ax = self.plot.axes()
        rois = list(dict.fromkeys(summary["roi"]))
        models = list(dict.fromkeys(summary["model"]))
        width = 0.8 / max(1, len(models))
        for j, model in enumerate(models):
            df = summary[summary["model"] == model].set_index("roi").reindex(rois)
            x = np.arange(len(rois)) + j * width
            ax.bar(x, df["r"].to_numpy(dtype=float), width, label=model)
            for xi, (v, sig) in enumerate(zip(df["r"], df.get("significant", [False] * len(df)))):
                if bool(sig) and np.isfinite(v):
                    ax.text(x[xi], v, "*", ha="center", va="bottom", color="#ffffff", fontsize=8)
        if "noise_ceiling" in summary:
            ceiling = summary.groupby("roi", sort=False)["noise_ceiling"].mean().reindex(rois).to_numpy(dtype=float)
            left = np.arange(len(rois)) - width / 2
            ax.hlines(ceiling, left, left + 0.8, colors="#aaaaaa", linewidth=1.5, label="noise ceiling")
        # upright names: 13 ROI names at 30° ran into one another in a dock's width
        ax.set_xticks(np.arange(len(rois)) + 0.4 - width / 2, rois, rotation=90, fontsize=6)
        ax.set_ylabel("RSA r")
        # the group result (it stays on a participant switch): the mean over the participants that have each ROI
        n = summary["n_subjects"].max() if "n_subjects" in summary and len(summary) else np.nan
        ax.set_title(f"group mean over {int(n)} participant{'s' if n != 1 else ''}" if np.isfinite(n) and n
                     else "group mean", fontsize=8)
        self.plot.legend(ax, ncol=2)
        self.plot.draw()

    def predict(self, text: str | None = None) -> None:
        """Predicted map of ``text`` (default: the phrase typed) for the participant on show (runs the sentence
        model in a worker)."""
        from ..core.errors import InputError

        text = self.phrase.text().strip() if text is None else text
        ctx = self.session.context
        subject_name = self.session.subject
        model = (ctx.state.get("encoding_models", {}) if ctx is not None else {}).get(subject_name)
        store = self.results_store()
        try:
            if not text:
                raise InputError("Phrase", "is empty", "type a sentence or a few words in the Phrase box, then "
                                 "press Predict map")
            if model is None and (store is None or not store.is_done("encode")):
                raise InputError("Alignment widget", "no encoding model is fitted for this participant",
                                 "press 'Compare models with the brain' first")
            subject = self.session.study.subject(subject_name)
        except InputError as exc:
            workers.notify_error(exc)
            return
        if model is None:  # results opened from disk: the saved model (its sentence model loads once)
            key = (str(store.root), subject_name)
            workers.start(self._saved_prediction, store, key, text,
                          on_return=lambda values: self._show_prediction(values, subject, text))
            return
        workers.start(model.predict_map, text,
                      on_return=lambda values: self._show_prediction(values, subject, text))

    def _saved_prediction(self, store, key, text):
        """Runs in a worker: the map of ``text`` by the encoding model saved in ``store``."""
        from ..core.alignment.steps import saved_encoding_model

        if key not in self._saved:
            self._saved[key] = saved_encoding_model(store, key[1], device=self.session.device)
        return self._saved[key].predict_map(text)

    def _show_prediction(self, values, subject, text: str) -> None:
        from .display import below_outlines, replace_layer_data, show_alone
        from .layers import values_map_layer, with_negative_parts

        # the same layers get the new data (display and threshold kept) unless the map changed sign
        layers = replace_layer_data(
            self.viewer, with_negative_parts([values_map_layer(subject, values, "phrase map", role="prediction")]))
        below_outlines(self.viewer, layers)
        show_alone(self.viewer, layers[0])  # the map itself (its positive part) selected, other maps hidden
        self._phrase = text
        self.status.setText(f"Predicted map of “{text}” for {subject.name}.")
