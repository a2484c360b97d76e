"""Matplotlib figures inside dock widgets."""

from __future__ import annotations

from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


class PlotCanvas(QWidget):
    """A matplotlib figure in a Qt widget, drawn in napari's dark theme colours."""

    def __init__(self, height: float = 2.6, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, height), facecolor="#262930", layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(int(height * 80))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def axes(self):
        """A fresh axes with light text on the dark background."""
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        ax.set_facecolor("#262930")
        for side in ax.spines.values():
            side.set_color("#aaaaaa")
        ax.tick_params(colors="#dddddd", labelsize=8)
        ax.xaxis.label.set_color("#dddddd")
        ax.yaxis.label.set_color("#dddddd")
        ax.title.set_color("#ffffff")
        return ax

    def legend(self, ax, ncol: int = 2) -> None:
        """The axes' legend below the plot, outside the axes, so it never covers data in a narrow dock
        (the figure's constrained layout shrinks the axes to make room)."""
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            self.figure.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=6,
                               frameon=False, labelcolor="#dddddd")

    def clear(self) -> None:
        """An empty canvas (no results to show)."""
        self.figure.clear()
        self.canvas.draw_idle()

    def draw(self) -> None:
        self.canvas.draw_idle()
