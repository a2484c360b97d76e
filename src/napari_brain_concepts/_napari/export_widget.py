"""Export dock widget: every derived layer as NIfTI with its participant's affine, plus tables and figures."""

from __future__ import annotations

import shutil
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import workers
from .session import get_session

_DERIVED_ROLES = ("map", "mask", "prediction")


def _derived(tag: dict | None) -> bool:
    """A map, a prediction, or a mask of the results (a concept's or a results entry's): not the analysed-mask
    outline, which is the study's own input."""
    if not tag or tag.get("role") not in _DERIVED_ROLES:
        return False
    return tag["role"] != "mask" or tag.get("entry") is not None or tag.get("concept") is not None


def check_export(folder: str | Path, results_dir: str | Path | None, whole: bool) -> None:
    """Refuse, before anything is written, an export folder that is the results folder or lies in it (the
    layers' files landed among the results, then the copy of the tables failed), and with ``whole`` a
    ``folder/results`` the whole copy cannot go to (:func:`~napari_brain_concepts.core.io.results.check_results_copy`:
    the results folder itself, a file, other files, another analysis's results)."""
    from ..core.errors import InputError
    from ..core.io.results import check_results_copy

    if results_dir is None:
        return
    here, results = Path(folder).resolve(), Path(results_dir).resolve()
    if here == results or results in here.parents:
        raise InputError(folder, f"is {'the' if here == results else 'inside the'} results folder {results}",
                         "choose a folder outside it")
    if whole:
        check_results_copy(results, here / "results")


def export_layers(viewer, folder: str | Path, results_dir: str | Path | None = None, tables: bool = True
                  ) -> list[Path]:
    """Write the plugin's derived layers (maps, masks, predictions) and, with ``tables``, the results'
    tables and figures (the Export dock leaves them out when it copies the whole results folder, which holds
    them). Returns the files written (none, and no folder made, when there is nothing to export).

    Layers go to ``folder/SUBJ/NAME.nii.gz`` (spaces as underscores; a concept's hard mask, whose name would
    give the file of its soft mask, as ``NAME_hard.nii.gz``; a signed map once, from the layer of its positive
    part, which holds the whole map) through the NIfTI writer, so each keeps the affine and header of the
    participant it was computed for; ``tables/`` and ``figures/`` are copied from the results folder
    (:func:`copy_tables`).
    """
    from napari.layers import Labels

    from ..core.io.results import ResultsStore
    from .writer import write_image, write_labels

    folder = Path(folder)
    results_dir = Path(results_dir) if results_dir is not None and ResultsStore.is_results(results_dir) else None
    check_export(folder, results_dir, whole=False)
    layers = []
    for layer in viewer.layers:
        tag = layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None
        if _derived(tag) and tag.get("part") != "negative":  # a signed map's negative part: its positive part's data
            layers.append((layer, tag))
    written: list[Path] = []
    targets: set[Path] = set()  # files written so far
    for layer, tag in layers:
        subject = tag.get("subject") or "shared"
        name = layer.name.removeprefix(f"{subject} ").replace(" ", "_").replace("/", "_")
        target = folder / subject / f"{name}.nii.gz"
        # names that differ only by a space or a slash (a concept's soft "mask_c003" and hard "mask c003")
        # get "_hard" (a mask) or the layer's role, then a number, so that no layer's file overwrites another's
        role = tag.get("role")
        extras = ["_hard" if role == "mask" else f"_{role}", *(f"_{i}" for i in range(2, len(viewer.layers) + 2))]
        for extra in extras:
            if target not in targets:
                break
            target = folder / subject / f"{name}{extra}.nii.gz"
        targets.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = write_labels if isinstance(layer, Labels) else write_image
        written += [Path(p) for p in writer(str(target), layer.data, layer.as_layer_data_tuple()[1])]

    if results_dir is not None and tables:
        written += copy_tables(results_dir, folder)
    return written


def copy_tables(results_dir: str | Path, folder: str | Path) -> list[Path]:
    """Copy the results' ``tables/`` and ``figures/`` into ``folder``; returns the files the copy wrote (not
    what the folder held before)."""
    written: list[Path] = []

    def copy(a: str, b: str) -> str:
        shutil.copy2(a, b)
        written.append(Path(b))
        return b

    for src in (Path(results_dir) / sub for sub in ("tables", "figures")):
        if src.is_dir():
            shutil.copytree(src, Path(folder) / src.name, dirs_exist_ok=True, copy_function=copy)
    return written


class ExportWidget(QWidget):
    """Choose a folder, export everything derived that is on show, the tables and figures, and (by default) the
    whole results folder."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("export folder")
        browse = QPushButton("…")
        self.export_button = QPushButton("Export")
        self.export_button.setToolTip("write every derived layer as NIfTI with its participant's affine, "
                                      "and the results' tables and figures")
        self.whole = QCheckBox("Whole results folder")
        self.whole.setChecked(True)
        self.whole.setToolTip("also copy the analysis' results folder, every participant's maps and masks, the "
                              "decoders and the tables, to FOLDER/results (it opens again with Open results…); "
                              "an analysis run in napari is kept in a temporary folder until napari closes")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.whole)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        from .docking import share_height_when_shown

        share_height_when_shown(self)  # stacked with the other docks, it keeps the height it needs
        browse.clicked.connect(self._browse)
        self.export_button.clicked.connect(lambda: self.export())
        self.session.busy_changed.connect(self._on_busy)
        self._on_busy(self.session.busy)

    def _on_busy(self, busy: bool) -> None:
        """Off while a step writes the results folder (a copy would catch it halfway)."""
        self.export_button.setEnabled(not busy)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to")
        if path:
            self.folder.setText(path)

    def export(self, folder: str | Path | None = None) -> list[Path]:
        """Write the layers on show (here: fast), then, with *Whole results folder*, copy the results folder,
        tables and figures included, in a worker (the session is busy meanwhile, as during a step, and the
        status says when it is done); without it, or when that copy fails, copy the tables and figures beside
        the layers. Returns the files written here."""
        from ..core.io.results import ResultsStore

        folder = folder or self.folder.text().strip()
        if not folder:
            self.status.setText("Choose a folder first.")
            return []
        results = self.session.results_dir
        results = results if results is not None and ResultsStore.is_results(results) else None
        whole = self.whole.isChecked() and results is not None
        try:
            if self.session.busy:
                from ..core.errors import InputError

                raise InputError("Export", "a step of the analysis is running", "export once it has finished")
            check_export(folder, results, whole)
            written = export_layers(self.viewer, folder, results, tables=not whole)  # else in the copy
        except Exception as exc:  # one notification with the message
            self.status.setText("Export failed: see the notification.")
            workers.notify_error(exc)
            return []
        if not written and not whole:
            self.status.setText("Nothing to export: open a study and run a step first.")
            return []
        said = f"Wrote {len(written)} file{'s' if len(written) != 1 else ''} to {folder}"
        if not whole:
            self.status.setText(f"{said}.")
            return written
        from ..core.io.results import copy_results

        target = Path(folder) / "results"
        self.status.setText(f"{said}; copying the results folder to {target} …")
        self.session.set_busy(True)

        def done(copied):
            self.status.setText(f"{said}, and the whole results folder ({len(copied)} files, the tables and "
                                f"figures among them) to {target}.")

        def failed(exc):
            workers.notify_error(exc)
            try:  # the tables and figures, which the copy was to hold, beside the layers then
                beside = copy_tables(results, folder)
            except OSError as again:
                workers.notify_error(again)
                beside = []
            kept = f"; the tables and figures are beside the layers ({len(beside)} files)" if beside else ""
            self.status.setText(f"{said}; the copy of the results folder failed (see the notification){kept}.")

        workers.start(copy_results, results, target, on_return=done, on_error=failed,
                      on_finish=lambda: self.session.set_busy(False))
        return written
