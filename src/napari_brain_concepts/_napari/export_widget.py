"""Export dock widget: every derived layer as NIfTI with its participant's affine, plus tables and figures."""

from __future__ import annotations

import shutil
from pathlib import Path

from qtpy.QtWidgets import (
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


def export_layers(viewer, folder: str | Path, results_dir: str | Path | None = None) -> list[Path]:
    """Write the plugin's derived layers (maps, masks, predictions) and the results' tables and figures.

    Layers go to ``folder/SUBJ/NAME.nii.gz`` (spaces as underscores; a concept's hard mask, whose name would
    give the file of its soft mask, as ``NAME_hard.nii.gz``; a signed map once, from the layer of its positive
    part, which holds the whole map) through the NIfTI writer, so each keeps the affine and header of the
    participant it was computed for; ``tables/`` and ``figures/`` are copied from the results folder.
    """
    from napari.layers import Labels

    from .writer import write_image, write_labels

    folder = Path(folder)
    written: list[Path] = []
    targets: set[Path] = set()  # files written so far
    for layer in viewer.layers:
        tag = layer.metadata.get("brain_concepts") if isinstance(layer.metadata, dict) else None
        if not _derived(tag) or tag.get("part") == "negative":
            continue  # a signed map's negative part shows the data of its positive part, written once
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
    if results_dir is not None:
        for sub in ("tables", "figures"):
            src = Path(results_dir) / sub
            if src.is_dir():
                shutil.copytree(src, folder / sub, dirs_exist_ok=True)
                written += sorted((folder / sub).iterdir())
    return written


class ExportWidget(QWidget):
    """Choose a folder, export everything derived that is on show."""

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
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        from .docking import share_height_when_shown

        share_height_when_shown(self)  # stacked with the other docks, it keeps the height it needs
        browse.clicked.connect(self._browse)
        self.export_button.clicked.connect(lambda: self.export())

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to")
        if path:
            self.folder.setText(path)

    def export(self, folder: str | Path | None = None) -> list[Path]:
        folder = folder or self.folder.text().strip()
        if not folder:
            self.status.setText("Choose a folder first.")
            return []
        try:
            written = export_layers(self.viewer, folder, self.session.results_dir)
        except Exception as exc:  # one notification with the message
            workers.notify_error(exc)
            return []
        self.status.setText(f"Wrote {len(written)} files to {folder}.")
        return written
