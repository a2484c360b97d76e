"""The plugin's docks added one by one (Plugins menu) share the height of their column."""

from napari_brain_concepts._napari.docking import heights

PLUGIN = "napari-brain-concepts"


def test_heights_serve_small_wants_and_share_the_rest_evenly():
    assert heights([100, 500, 500], 700) == [100, 300, 300]
    assert heights([100, 200], 700) == [100, 200]          # room for all: each what it wants
    assert heights([400, 400, 400], 600) == [200, 200, 200]


def test_docks_added_one_by_one_each_get_a_share_of_the_column(make_napari_viewer, qtbot):
    """Qt gave each dock added below the first only its minimum (Decode, Concepts, Alignment: 69 px, two form
    rows, before Run and the status were kept below the scroll area) and the Study dock all the rest (470 px of a
    1,050 px window, half of it empty)."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1400)
    docks = {}
    for name in ("Study", "Decode", "Concepts", "Captions", "Alignment", "Export"):
        docks[name], _ = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    study = docks["Study"].widget()

    def shared():  # once the window has laid the column out (its docks fit in its height)
        return sum(d.height() for d in docks.values()) <= 1400 and study.height() >= study.sizeHint().height() \
            and all(docks[n].height() > 200 for n in ("Decode", "Concepts", "Alignment"))

    qtbot.waitUntil(shared, timeout=5_000)


def test_a_column_as_narrow_as_its_widest_dock_does_not_scroll_sideways(make_napari_viewer, qtbot):
    """The column is as wide as its widest dock's minimum; the scroll area did not count the frame napari's style
    sheet draws, so the Study dock scrolled sideways by 2 pixels, its scroll bar over the last row."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 800)
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in ("Study", "Decode", "Concepts")]
    scrolls = [dock.findChild(QScrollArea) for dock in docks]
    qtbot.waitUntil(lambda: all(s.isVisible() and s.viewport().width() > 0 for s in scrolls), timeout=5_000)
    qtbot.wait(100)
    assert min(s.width() for s in scrolls) <= max(s.minimumSizeHint().width() for s in scrolls) + 2  # narrowest
    for scroll in scrolls:
        assert not scroll.horizontalScrollBar().isVisible(), (scroll.viewport().width(), scroll.widget().width())


def test_a_concepts_gallery_does_not_make_its_dock_scroll_sideways(loaded, qtbot):
    """Six thumbnails a row in a grid with Qt's default margins made the Concepts dock's contents 18 px wider
    than the column napari gave it (the README's picture scrolled sideways)."""
    import pandas as pd
    from qtpy.QtWidgets import QScrollArea

    from napari_brain_concepts._napari.concepts_widget import THUMBNAILS

    viewer, _, session = loaded
    viewer.window._qt_window.resize(1400, 800)
    _, concepts = viewer.window.add_plugin_dock_widget(PLUGIN, "Concepts")
    scroll = concepts.findChild(QScrollArea)
    qtbot.waitUntil(lambda: scroll.isVisible() and scroll.viewport().width() > 0, timeout=5_000)
    ids = list(session.study.stimuli.ids)
    rows = pd.DataFrame({"end": ["positive", "negative"],
                         "stimulus_ids": [";".join(ids[:THUMBNAILS]), ";".join(ids[THUMBNAILS:2 * THUMBNAILS])]})
    concepts._fill_gallery(rows)
    qtbot.wait(100)
    assert concepts.gallery_layout.count() == 2 * THUMBNAILS
    assert scroll.widget().minimumSizeHint().width() <= scroll.viewport().width()
    assert not scroll.horizontalScrollBar().isVisible(), (scroll.viewport().width(), scroll.widget().width())
