"""Alignment dock widget: RSA of language-model embeddings with every ROI, searchlight and encoding maps, and
the encoding model's predicted brain map for any phrase."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton

from . import workers
from .plots import PlotCanvas
from .step_widget import StepWidget


class AlignmentWidget(StepWidget):
    """Run ``embed`` → ``rsa`` → ``encode``; show the group's RSA per ROI and model beside the noise ceilings.

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
        """Heat map of the group's RSA: r per ROI (rows) and model (columns) on a diverging scale centred on 0
        and as wide as the largest |r|, * where FDR-significant; each ROI's noise ceiling (the
        leave-one-subject-out lower bound) written on the right (a negative one: the participants' RDMs of
        that ROI do not agree).

        A heat map rather than bars: 13 ROIs × 8 models made 104 bars, whose ROI names fitted a dock's width
        only upright at 6 pt. The ceilings as numbers, not on the colour scale: at 0.4–0.5 they would set it
        and leave the models' r (mostly below 0.2) pale. Raw r beside the ceiling rather than r / ceiling: in
        small, noisy ROIs the lower-bound ceiling is near zero and the ratio runs far above 1 without meaning
        anything.
        """
        import matplotlib

        if summary is None or len(summary) == 0:  # no ROI had enough voxels and stimuli: nothing to draw
            self.plot.clear()
            return
        ax = self.plot.axes()
        rois = list(dict.fromkeys(summary["roi"]))
        models = list(dict.fromkeys(summary["model"]))
        cells = summary.groupby(["roi", "model"], sort=False)
        r = cells["r"].mean().unstack().reindex(index=rois, columns=models).to_numpy(dtype=float)
        significant = np.zeros(r.shape, dtype=bool)
        if "significant" in summary:
            significant = (cells["significant"].any().unstack(fill_value=False)
                           .reindex(index=rois, columns=models, fill_value=False).to_numpy(dtype=bool))
        finite = np.abs(r[np.isfinite(r)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#262930")  # no value: the background
        image = ax.imshow(np.ma.masked_invalid(r), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        for i, j in zip(*np.nonzero(significant & np.isfinite(r))):
            # dark on the light middle of the scale, light on its dark ends
            ax.text(j, i, "*", ha="center", va="center", fontsize=9,
                    color="#000000" if abs(r[i, j]) < 0.6 * vmax else "#ffffff")
        ax.set_xticks(np.arange(len(models)), models, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(len(rois)), rois, fontsize=7)
        ax.tick_params(length=0)
        if "noise_ceiling" in summary:
            ceiling = summary.groupby("roi", sort=False)["noise_ceiling"].mean().reindex(rois).to_numpy(dtype=float)
            right = ax.twinx()
            right.set_ylim(ax.get_ylim())
            right.set_yticks(np.arange(len(rois)), [_ceiling_text(v) for v in ceiling], fontsize=7)
            right.tick_params(length=0, colors="#dddddd")
            right.set_ylabel("noise ceiling", color="#dddddd", fontsize=7)
            for side in right.spines.values():
                side.set_visible(False)
        bar = self.plot.figure.colorbar(image, ax=ax, location="top", fraction=0.05, pad=0.02, aspect=30)
        bar.set_label("RSA r (* FDR-significant)", color="#dddddd", fontsize=7)
        bar.ax.tick_params(colors="#dddddd", labelsize=7)
        bar.outline.set_edgecolor("#aaaaaa")
        # the group result (it stays on a participant switch): the mean over the participants that have each ROI
        n = summary["n_subjects"].max() if "n_subjects" in summary else np.nan
        self.plot.figure.suptitle(f"group mean over {int(n)} participant{'s' if n != 1 else ''}"
                                  if np.isfinite(n) and n else "group mean", fontsize=8, color="#ffffff")
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


def _ceiling_text(value: float) -> str:
    """A noise ceiling as the plot writes it: two decimals, a true minus sign, never "-0.00"; "–" for none."""
    if not np.isfinite(value):
        return "\u2013"
    said = f"{value:.2f}" if round(value, 2) != 0 else "0.00"
    return said.replace("-", "\u2212")
