"""The Alignment dock's RSA heat map: r per ROI and model, the FDR stars, and the noise ceilings."""

from __future__ import annotations

import numpy as np
import pandas as pd

PLUGIN = "napari-brain-concepts"


def _summary():
    rows = []
    for i, roi in enumerate(["floc-faces/FFA-1", "floc-places/OPA", "planted/number"]):
        for j, model in enumerate(["captions", "words_nouns"]):
            rows.append({"roi": roi, "model": model, "n_subjects": 4, "r": 0.1 * i - 0.05 * j,
                         "noise_ceiling": [0.42, -0.021, 0.0004][i], "significant": (i, j) == (2, 0)})
    rows.append({"roi": "floc-words/VWFA-1", "model": "captions", "n_subjects": 3, "r": 0.3,
                 "noise_ceiling": np.nan, "significant": True})  # no words_nouns row, no ceiling: empty cells
    return pd.DataFrame(rows)


def test_the_rsa_heat_map_shows_every_roi_and_model_the_stars_and_the_ceilings(make_napari_viewer):
    viewer = make_napari_viewer()
    _, alignment = viewer.window.add_plugin_dock_widget(PLUGIN, "Alignment")
    alignment.plot_rsa(_summary())
    heat, ceilings = alignment.plot.figure.axes[:2]
    image = heat.images[0].get_array()
    r = np.array([[0.0, -0.05], [0.1, 0.05], [0.2, 0.15], [0.3, np.nan]])
    np.testing.assert_allclose(image.filled(np.nan), r, atol=1e-12)
    assert image.mask[3, 1]  # nothing to show: the background, not a colour of the scale
    vmin, vmax = heat.images[0].get_clim()
    assert vmin == -vmax == -0.3  # centred on 0, as wide as the largest |r| (the ceilings do not set it)
    rois = ["floc-faces/FFA-1", "floc-places/OPA", "planted/number", "floc-words/VWFA-1"]
    assert [t.get_text() for t in heat.get_yticklabels()] == rois
    assert [t.get_text() for t in heat.get_xticklabels()] == ["captions", "words_nouns"]
    assert min(t.get_fontsize() for t in heat.get_xticklabels() + heat.get_yticklabels()) >= 7
    # a star where FDR-significant (row 2, and the words ROI's one model)
    assert sorted((round(t.get_position()[0]), round(t.get_position()[1]), t.get_text()) for t in heat.texts) == [
        (0, 2, "*"), (0, 3, "*")]
    # each ROI's noise ceiling on its row, on the right: a negative one with its sign, a tiny one as 0.00 (never
    # -0.00), none as a dash
    assert ceilings.get_ylim() == heat.get_ylim()
    assert list(ceilings.get_yticks()) == [0, 1, 2, 3]
    assert [t.get_text() for t in ceilings.get_yticklabels()] == ["0.42", "\u22120.02", "0.00", "\u2013"]
    assert ceilings.get_ylabel() == "noise ceiling"
    assert alignment.plot.figure.get_suptitle() == "group mean over 4 participants"


def test_an_empty_rsa_summary_leaves_the_plot_empty(make_napari_viewer):
    """No ROI with enough voxels and stimuli gives a summary without rows: no plot, no error."""
    viewer = make_napari_viewer()
    _, alignment = viewer.window.add_plugin_dock_widget(PLUGIN, "Alignment")
    alignment.plot_rsa(_summary())
    alignment.plot_rsa(_summary().iloc[:0])
    assert not alignment.plot.figure.axes
