"""The plugin's docks stacked in one column of napari's window share its height.

Docks added one by one (*Plugins › Brain Concepts › …*) go below each other in the right dock area; Qt gives
each new one only its minimum height (two rows of its form, scrolling), while the first keeps all the rest (the
Study dock: 470 px, half of it empty, over five docks of 69 px). When one of the plugin's docks is first shown,
the column's heights are shared out again: each dock as tall as its contents would like where there is room,
and the height left over shared evenly among those that want more (the Study dock, used all the time, first
gets what it wants, up to half). Docks of other plugins keep their height;
tabbed and floating docks are left alone. Nothing is done after that: heights the user drags stay.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

_MARK = "_brain_concepts_shares_height"  # "first": served before the others; True: shares with them


def share_height_when_shown(widget: QWidget, first: bool = False) -> None:
    """Share the column's height out (:func:`share_height`) once ``widget`` is first shown in its dock;
    ``first``: it gets the height it would like (up to half the column) before the others share the rest."""
    setattr(widget, _MARK, "first" if first else True)
    widget.installEventFilter(_FirstShow(widget))


class _FirstShow(QObject):
    def __init__(self, widget: QWidget):
        super().__init__(widget)
        self._widget = widget

    def eventFilter(self, obj, event) -> bool:
        if obj is self._widget and event.type() == QEvent.Type.Show:
            obj.removeEventFilter(self)
            QTimer.singleShot(0, lambda: share_height(self._widget))  # once napari has placed the dock
        return False


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def heights(wanted: list[int], available: int) -> list[int]:
    """``available`` pixels shared among docks that would like ``wanted`` each: a dock that wants less than an
    even share gets what it wants, and the others share the rest evenly."""
    sizes = [0] * len(wanted)
    left, open_ = available, set(range(len(wanted)))
    while open_:
        share = left / len(open_)
        small = [i for i in open_ if wanted[i] <= share]
        if not small:
            for i in open_:
                sizes[i] = int(share)
            break
        for i in small:
            sizes[i] = wanted[i]
            left -= wanted[i]
            open_.discard(i)
    return sizes


def share_height(widget: QWidget) -> None:
    """Share out the height of the dock column that holds ``widget`` among the plugin's docks in it."""
    try:
        main, dock = widget.window(), _dock_of(widget)
    except RuntimeError:  # deleted before the timer fired (a viewer closed at once)
        return
    if not isinstance(main, QMainWindow) or dock is None or dock.isFloating() or main.tabifiedDockWidgets(dock):
        return
    area = main.dockWidgetArea(dock)
    column = [d for d in main.findChildren(QDockWidget)
              if d.isVisible() and not d.isFloating() and main.dockWidgetArea(d) == area
              and not main.tabifiedDockWidgets(d)]
    column = [d for d in column if abs(d.x() - dock.x()) < 2]  # the same column, not one beside it
    ours = [d for d in column if d.widget() is not None and getattr(d.widget(), _MARK, False)]
    if len(ours) < 2:
        return
    available = sum(d.height() for d in ours)
    # the title bar and margins of a dock come on top of what its contents would like
    wanted = [d.widget().sizeHint().height() + d.height() - d.widget().height() + 8 for d in ours]
    first = [i for i, d in enumerate(ours) if getattr(d.widget(), _MARK) == "first"]
    sizes = [0] * len(ours)
    for i in first:
        sizes[i] = min(wanted[i], available // 2)
    rest = [i for i in range(len(ours)) if i not in first]
    for i, size in zip(rest, heights([wanted[i] for i in rest], available - sum(sizes))):
        sizes[i] = size
    main.resizeDocks(ours, sizes, Qt.Orientation.Vertical)
