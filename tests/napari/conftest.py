"""Shared by the widget tests: short step parameters and a viewer with the tiny synthetic study loaded."""

import pytest

from napari_brain_concepts._napari.session import get_session

PLUGIN = "napari-brain-concepts"
# short runs of every step: the widget tests check the wiring and the layers, the core tests the science
FAST = {
    "decode": {"alphas": [1.0, 100.0, 10000.0], "cv": 3},
    "concepts": {"n_components": 8, "n_iter": 150, "prune": False, "contact_sheets": False},
    "masks": {"n_steps": 60, "burn_in": 20, "eval_every": 10},
    "shared": {"contact_sheets": False, "eps_sweep": [0.6]},
    "embed": {"controls": ["categories_multihot"]},
    "rsa": {"searchlight": False},
    "captions": {"n_folds": 3},
}


@pytest.fixture
def loaded(make_napari_viewer, qtbot):
    """(viewer, Study widget, session) with the tiny synthetic study shown and FAST parameters set."""
    viewer = make_napari_viewer(show=True)
    _, study_widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Study")
    study_widget.load_synthetic(size="tiny", seed=0)
    qtbot.waitUntil(lambda: study_widget.subject is not None, timeout=600_000)
    session = get_session(viewer)
    session.ensure_context({k: dict(v) for k, v in FAST.items()})
    return viewer, study_widget, session
