"""Determinism: the same study, parameters and seed give bit-identical result files on CPU, whether the
steps run twice in one process or their pieces run serially or on a dask cluster of worker processes.

(tests/core/test_cli.py checks two whole command-line runs of decode + maps in separate processes.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.pipeline import run_analysis
from napari_brain_concepts.core.progress import run_to_end

# small runs of the steps after decode (decode + maps are covered by test_cli)
SMALL = {
    "decode": {"alphas": [1.0, 100.0, 10000.0], "cv": 3},
    "concepts": {"n_components": 6, "n_iter": 60, "prune": False, "contact_sheets": False},
    "masks": {"n_steps": 30, "burn_in": 10, "eval_every": 10},
    "shared": {"contact_sheets": False, "eps_sweep": [0.6]},
    "embed": {"controls": ["categories_multihot"]},
    "rsa": {"searchlight": False},
}
STEPS = ["decode", "concepts", "masks", "shared", "embed", "rsa", "encode"]


@pytest.fixture(scope="module")
def study():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny")


def _hashes(root: Path) -> dict[str, str]:
    # figures are left out: a PNG's bytes depend on the fonts and matplotlib build, not on the analysis
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and p.suffix != ".png"}


def _analyse(study, out: Path, seed: int = 0) -> tuple[dict[str, str], pd.DataFrame]:
    store = ResultsStore.create(out, parameters={"params": SMALL, "seed": seed})
    ctx = AnalysisContext(study=study, store=store, params={k: dict(v) for k, v in SMALL.items()},
                          random_state=seed, device="cpu")
    run_to_end(run_analysis(ctx, STEPS))
    assert list(store.manifest["steps"]) == STEPS
    return _hashes(out), ctx.state["decoding_scores"]


def test_two_runs_of_every_step_give_identical_files(study, tmp_path):
    first, scores = _analyse(study, tmp_path / "a")
    second, again = _analyse(study, tmp_path / "b")
    pd.testing.assert_frame_equal(scores, again, check_exact=True)   # the TSV rounds to 6 digits
    kinds = {name.split("/")[0] for name in first}
    assert {"tables", "arrays", "subjects"} <= kinds
    assert any(name.endswith(".nii.gz") for name in first)
    assert first == second


def _fit_subject(name, study, embedding):
    import torch

    from napari_brain_concepts.core.decoding.prepare import prepare_subject

    torch.set_num_threads(1)  # the same in the test process and in every dask worker
    from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

    data = prepare_subject(study, name, embedding, random_state=0)
    model = RidgeDecoder(alphas=[1.0, 100.0, 10000.0], cv=3, device="cpu").fit(data.X_train, data.Y_train)
    return model.coef_, model.best_alphas_, model.predict(data.X_test)


def test_serial_and_dask_pieces_are_identical(study):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from napari_brain_concepts.core.distributed import map_pieces

    emb = "captions" if "captions" in study.stimuli.embeddings else next(iter(study.stimuli.embeddings))
    names = study.subject_names
    shared = {"study": study, "embedding": emb}
    import torch

    # dask workers run one thread each (the nanny sets OMP_NUM_THREADS=1); float32 sums are bit-identical
    # only for the same thread count, so the serial run uses one thread too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_to_end(map_pieces(_fit_subject, names, scheduler=None, shared=shared))
    finally:
        torch.set_num_threads(threads)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        parallel = run_to_end(map_pieces(_fit_subject, names, scheduler=cluster.scheduler_address, shared=shared))
    assert len(serial) == len(parallel) == len(names)
    for (coef_a, alpha_a, pred_a), (coef_b, alpha_b, pred_b) in zip(serial, parallel):
        np.testing.assert_array_equal(coef_a, coef_b)
        np.testing.assert_array_equal(alpha_a, alpha_b)
        # predictions are one float32 matrix product of those equal weights; its last bits depend on the
        # memory alignment of the arrays (unpickled in the worker), not on the fit
        np.testing.assert_allclose(pred_a, pred_b, rtol=1e-5, atol=1e-7)
