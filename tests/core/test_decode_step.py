"""The decode step on the tiny synthetic study: files, state for later steps, scores against the oracle."""

import numpy as np
import pytest

from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.decoding.prepare import PreparedData
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder
from napari_brain_concepts.core.decoding.steps import DecodeParams, decode_step
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.progress import run_to_end


@pytest.fixture(scope="module")
def study():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny")


def _run(study, tmp_path, **params):
    store = ResultsStore.create(tmp_path / "results", overwrite=True)
    ctx = AnalysisContext(study=study, store=store, params={"decode": params}, random_state=0, device="cpu")
    reports = []
    run_to_end(decode_step(ctx), reports.append)
    return ctx, store, reports


def test_ridge_decode_step_writes_results_and_state(study, tmp_path):
    names = study.subject_names[:2]
    ctx, store, reports = _run(study, tmp_path, subjects=names)
    assert reports and all(r.step == "decode" for r in reports)
    assert store.is_done("decode")
    table = store.read_table("decoding")
    assert set(table.subject) == set(names)
    assert {"top1", "top5", "top10", "mindeye_brain_to_stimulus", "pairwise"} <= set(table.metric)
    assert store.figure_path("decoding").is_file()
    for name in names:
        sub = study.subject(name)
        dec = ctx.state["decoders"][name]
        data = ctx.state["splits"][name]
        assert isinstance(dec, RidgeDecoder) and isinstance(data, PreparedData)
        assert ctx.state["prepared"][name] is data
        assert dec.coef_.shape == (study.embedding("captions").dim, len(data.voxels))
        arrays = store.read_arrays(f"decoder_{name}")
        np.testing.assert_allclose(arrays["coef"], dec.coef_)
        assert set(np.unique(arrays["rows_test"])) == set(np.flatnonzero(study.stimuli.test))
        weight_map = store.read_map(store.map_path(name, "decoder_weight_norm")).get_fdata()
        assert weight_map.shape == sub.shape and np.all(weight_map[sub.mask][data.voxels] > 0)
        ours = table[(table.subject == name) & (table.decoder == "ridge")].set_index("metric")
        oracle = table[(table.subject == name) & (table.decoder == "oracle")].set_index("metric")
        # far above chance (25 test stimuli: top-1 chance 0.04), below the generative truth
        assert ours.loc["top1", "value"] >= 4 * ours.loc["top1", "chance"]
        assert ours.loc["pairwise", "value"] > 0.85
        assert ours.loc["pearson_mean", "value"] > 0.15
        assert oracle.loc["top1", "value"] >= ours.loc["top1", "value"]


def test_contrastive_decode_step_sdc_protocol(study, tmp_path):
    name = study.subject_names[0]
    ctx, store, reports = _run(study, tmp_path, subjects=[name], decoder="contrastive", protocol="sdc",
                               n_reruns=2, max_iter=300, lr=1e-3)
    # the reruns' training moves the step's progress (it read 0 % for a subject's whole training, the NSD review)
    fitting = [p.fraction for p in reports if "rerun" in p.message]
    assert fitting and fitting == sorted(fitting) and 0 < fitting[len(fitting) // 2] < fitting[-1] <= 1
    dec = ctx.state["decoders"][name]
    data = ctx.state["splits"][name]
    assert len(data.rows_train) > len(np.unique(data.rows_train))  # single trials
    assert dec.coef_.shape == (study.embedding("captions").dim, len(data.voxels))
    table = store.read_table("decoding")
    ours = table[table.decoder == "contrastive"].set_index("metric")
    assert ours.loc["pairwise", "value"] > 0.85
    assert ours.loc["top5", "value"] > 2 * ours.loc["top5", "chance"]
    assert ours.loc["mindeye_brain_to_stimulus", "value"] >= 5 * ours.loc["mindeye_brain_to_stimulus", "chance"]


def test_bad_parameters(study, tmp_path):
    with pytest.raises(InputError, match="decoder"):
        _run(study, tmp_path, decoder="lasso")
    with pytest.raises(InputError, match="protocol"):
        _run(study, tmp_path, protocol="average")
    with pytest.raises(InputError):
        _run(study, tmp_path, unknown_name=1)
    assert DecodeParams().embedding == "captions"
