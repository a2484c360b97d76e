"""What to read of an NSD copy, asked when the Study dock opens one: participants, sessions, betas version and
common space (the command line's ``--subject``, ``--sessions``, ``--betas`` and ``--to-common``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

#: the choices of the common space, and what each gives ``to_common`` of the reader
COMMON_SPACES = {
    "none: each participant in its own space": None,
    "identity: their mm coordinates are already aligned": "identity",
    "a folder of subjXX.txt affines (native mm → common mm)": "folder",
}


class NsdDialog(QDialog):
    """Choose what to read of the NSD copy at ``root``; after OK, :attr:`chosen` holds the keyword arguments
    of :meth:`StudyWidget.open_nsd` (``subjects``, ``sessions``, ``betas``, ``to_common``)."""

    def __init__(self, root: str | Path, parent=None):
        from ..core.io.nsd import DEFAULT_BETAS, nsd_contents

        super().__init__(parent)
        self.root = Path(root)
        self.contents = nsd_contents(root)
        self.chosen: dict[str, Any] | None = None
        self.setWindowTitle("Read NSD")

        self.subjects = QListWidget()
        self.subjects.setToolTip("the participants to read: each keeps its own native grid; the Participant "
                                 "box switches between them")
        for i, k in enumerate(self.contents):
            item = QListWidgetItem(f"subj{k:02d}")
            item.setData(Qt.ItemDataRole.UserRole, k)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(Qt.CheckState.Checked if i == 0 else Qt.CheckState.Unchecked)
            self.subjects.addItem(item)
        self.subjects.setMaximumHeight(8 * 22)
        versions = list(dict.fromkeys(v for found in self.contents.values() for v in found))
        first = next(iter(self.contents.values()), {})  # the first participant's (ticked) betas come first,
        versions.sort(key=lambda v: (v not in first, v != DEFAULT_BETAS))  # NSD's recommended one among them
        self.betas = QComboBox()
        self.betas.addItems(versions)
        self.sessions = QLineEdit()
        self.sessions.setPlaceholderText("every session on disk, or e.g. 1-3, 5")
        self.on_disk = QLabel()
        self.on_disk.setWordWrap(True)
        self.common = QComboBox()
        self.common.addItems(list(COMMON_SPACES))
        self.common.setToolTip("the shared-concepts step needs the participants in one space; without one, it "
                               "is left out")
        self.common_folder = QLineEdit()
        self.common_folder.setPlaceholderText("folder holding subjXX.txt for every participant read")
        self.browse = QPushButton("…")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e05050")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)

        folder_row = QHBoxLayout()
        folder_row.addWidget(self.common_folder)
        folder_row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Participants", self.subjects)
        form.addRow("Betas", self.betas)
        form.addRow("Sessions", self.sessions)
        form.addRow("", self.on_disk)
        form.addRow("Common space", self.common)
        form.addRow("", folder_row)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"NSD copy at {self.root}" if self.contents else
                                f"{self.root} holds no betas under nsddata_betas/ppdata/subjXX/func1pt8mm/"))
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.subjects.itemChanged.connect(self._show_on_disk)
        self.betas.currentTextChanged.connect(self._show_on_disk)
        self.common.currentIndexChanged.connect(self._on_common)
        self.browse.clicked.connect(self._choose_folder)
        self.buttons.accepted.connect(self._on_ok)
        self.buttons.rejected.connect(self.reject)
        self._on_common()
        self._show_on_disk()
        if not self.contents:  # nothing to read: only Cancel
            self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)

    def checked(self) -> list[int]:
        """The subject numbers ticked."""
        items = (self.subjects.item(i) for i in range(self.subjects.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items
                if item.checkState() == Qt.CheckState.Checked]

    def check(self, *subjects: int) -> None:
        """Tick exactly ``subjects`` (numbers)."""
        for i in range(self.subjects.count()):
            item = self.subjects.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in subjects
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def values(self) -> dict[str, Any]:
        """The chosen options, or an error saying what to mend."""
        from ..core.errors import InputError
        from ..core.io.nsd import number_ranges, parse_sessions, to_common_folder

        subjects = self.checked()
        if not subjects:
            raise InputError("Participants", "none is ticked", "tick at least one participant")
        betas = self.betas.currentText()
        sessions = parse_sessions(self.sessions.text(), "Sessions")
        for k in subjects:  # what the copy holds is known: said here, not after the dialog has closed
            found = self.contents[k].get(betas, [])
            if not found:
                others = ", ".join(self.contents[k])
                raise InputError("Betas", f"subj{k:02d} has no sessions of {betas} on disk (it has {others})",
                                 "choose a betas version every ticked participant has, or untick subj"
                                 f"{k:02d}")
            missing = sorted(set(sessions or []) - set(found))
            if missing:
                raise InputError("Sessions", f"subj{k:02d} has no session {number_ranges(missing)} of {betas} on "
                                 f"disk (it has {number_ranges(found)})", "choose sessions on disk, or leave "
                                 "Sessions empty for all of them")
        common = COMMON_SPACES[self.common.currentText()]
        if common == "folder":
            common = self.common_folder.text().strip()
            if not common:
                raise InputError("Common space", "no folder is given", "choose the folder of subjXX.txt "
                                 "affines, or another common space")
            to_common_folder(common, subjects, "Common space")  # subjXX.txt of every ticked participant
        return {"subjects": subjects, "sessions": sessions, "betas": betas or None, "to_common": common}

    def _on_ok(self) -> None:
        from ..core.errors import BrainConceptsError

        try:
            self.chosen = self.values()
        except BrainConceptsError as err:
            self.error.setText(str(err))
            return
        self.accept()

    def _on_common(self, *_: Any) -> None:
        folder = COMMON_SPACES[self.common.currentText()] == "folder"
        self.common_folder.setEnabled(folder)
        self.browse.setEnabled(folder)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of subjXX.txt affines")
        if path:
            self.common_folder.setText(path)

    def _show_on_disk(self, *_: Any) -> None:
        """Which sessions of the chosen betas each ticked participant has on disk."""
        from ..core.io.nsd import number_ranges

        betas = self.betas.currentText()
        lines = []
        for k in self.checked():
            found = self.contents.get(k, {}).get(betas)
            lines.append(f"subj{k:02d}: sessions {number_ranges(found)} on disk" if found else
                         f"subj{k:02d}: no sessions of {betas} on disk")
        self.on_disk.setText("; ".join(lines))
