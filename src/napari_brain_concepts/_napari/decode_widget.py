"""Decode dock widget: fit a brain→embedding decoder per participant and plot its retrieval."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout

from .plots import PlotCanvas
from .step_widget import StepWidget


class DecodeWidget(StepWidget):
    """Embedding space, decoder kind, protocol, device and test split → the ``decode`` step."""

    steps = ("decode",)
    run_label = "Fit decoders"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.embedding = QComboBox()
        self.decoder = QComboBox()
        self.decoder.addItems(["ridge", "contrastive"])
        self.protocol = QComboBox()
        self.protocol.addItems(["mindeye", "sdc"])
        self.protocol.setToolTip("mindeye: average the repeats of a stimulus; sdc: single trials")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.test_fraction = QDoubleSpinBox()
        self.test_fraction.setRange(0.05, 0.5)
        self.test_fraction.setSingleStep(0.05)
        self.test_fraction.setValue(0.15)
        self.test_fraction.setToolTip("used only when the study has no shared test set")
        form = QFormLayout()
        form.addRow("Embedding", self.embedding)
        form.addRow("Decoder", self.decoder)
        form.addRow("Protocol", self.protocol)
        form.addRow("Device", self.device)
        form.addRow("Test fraction", self.test_fraction)
        self.form.addLayout(form)
        self.plot = PlotCanvas()
        self.body.addWidget(self.plot)
        self.join_session()

    def on_study_changed(self, study) -> None:
        self.embedding.clear()
        names = list(study.stimuli.embeddings)
        if "captions" not in names and any(study.stimuli.captions):
            names.append("captions")  # computed from the captions by the embed step, which runs first
        self.embedding.addItems(names)
        shared = study.stimuli.test is not None
        self.test_fraction.setEnabled(not shared)  # the study's own test set is used
        self.test_fraction.setToolTip("this study has a shared test set (stimuli.tsv's test column), used instead"
                                      if shared else "fraction of the stimuli held out for testing")

    def set_form(self, params) -> None:
        values = params["decode"]
        if self.embedding.findText(values["embedding"]) < 0:
            self.embedding.addItem(values["embedding"])
        self.embedding.setCurrentText(values["embedding"])
        self.decoder.setCurrentText(values["decoder"])
        self.protocol.setCurrentText(values["protocol"])
        self.test_fraction.setValue(float(values["test_fraction"]))

    def clear_results(self) -> None:
        self.plot.clear()

    def parameters(self) -> dict:
        self.session.device = self.device.currentText()
        if self.session.context is not None:
            self.session.context.device = self.session.device
        return {"decode": {"embedding": self.embedding.currentText() or "captions",
                           "decoder": self.decoder.currentText(), "protocol": self.protocol.currentText(),
                           "test_fraction": float(self.test_fraction.value())}}

    def show_results(self, store) -> None:
        self.plot_scores(store.read_table("decoding"))
        self.show_layer("decoder_weight_norm")

    def plot_scores(self, table) -> None:
        """Top-k retrieval of every participant against chance (and the oracle, on a synthetic study)."""
        ax = self.plot.axes()
        topk = table[table["metric"].str.fullmatch(r"top\d+")]
        # one colour per participant, one line style per decoder (dashed: the oracle)
        colours = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(topk["subject"]))}
        for (decoder, subject), df in topk.groupby(["decoder", "subject"], sort=False):
            ks = df["metric"].str[3:].astype(int)
            style = "--" if decoder == "oracle" else "-"
            ax.plot(ks, df["value"], style, marker="o", label=f"{subject} {decoder}", lw=1.2, ms=3,
                    color=colours[subject])
        chance = topk.drop_duplicates("metric")
        ax.plot(chance["metric"].str[3:].astype(int), chance["chance"], ":", color="#bbbbbb", label="chance")
        ax.set_xlabel("k")
        ax.set_ylabel("top-k retrieval")
        ax.set_ylim(0, 1)
        self.plot.legend(ax, ncol=3)
        self.plot.draw()
