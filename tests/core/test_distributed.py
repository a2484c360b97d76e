"""Pieces on a dask LocalCluster (2 worker processes on loopback) give exactly what the serial run gives."""

from __future__ import annotations

import re
import socket
import sys
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from napari_brain_concepts.core.distributed import map_pieces, run_pieces  # noqa: E402
from napari_brain_concepts.core.errors import InputError  # noqa: E402
from napari_brain_concepts.core.progress import Progress  # noqa: E402

# workers unpickle the piece functions below by value (they need not import this test module)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fit_subject_decoder(name, study):
    """One piece: the ridge decoder of one subject (caption embedding from responses)."""
    import torch

    from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

    torch.set_num_threads(1)
    subject = study.subjects[name]
    rows = study.trial_rows(subject)
    targets = study.stimuli.embeddings["captions"].values[rows]
    decoder = RidgeDecoder(alphas=[1.0, 10.0, 100.0, 1000.0], cv=3, device="cpu", random_state=0)
    decoder.fit(subject.responses, targets, groups=rows)
    return name, decoder.coef_, decoder.best_alphas_


def seeded_statistic(seed, matrix):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=matrix.shape[1])
    return float(np.tanh(matrix @ w).sum()), seed


def fail_on_three(piece, delay=0.0):
    if piece == 3:
        time.sleep(delay)
        raise InputError(f"piece {piece}", "cannot be computed", "leave it out")
    return piece * 2


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def study():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny", embedding="features", n_subjects=3)


def test_subject_decoders_on_two_workers_equal_the_serial_run(cluster, study):
    names = study.subject_names
    serial = run_pieces(fit_subject_decoder, names, scheduler=None, shared={"study": study})
    reports = []
    spread = run_pieces(fit_subject_decoder, names, scheduler=cluster.scheduler_address,
                        shared={"study": study}, step="decoders", progress=reports.append)
    assert [r[0] for r in spread] == names                      # results in the order of the pieces
    for (_, coef_a, alpha_a), (_, coef_b, alpha_b) in zip(serial, spread):
        np.testing.assert_array_equal(coef_a, coef_b)
        np.testing.assert_array_equal(alpha_a, alpha_b)
    assert not np.allclose(serial[0][1], serial[1][1])         # the pieces did differ
    assert [r.done for r in reports] == [0, 1, 2, 3]
    assert reports[0].message == "3 pieces on 2 dask workers"


def test_local_cluster_default_and_shared_arrays(cluster):
    matrix = np.random.default_rng(0).normal(size=(40, 7))
    seeds = [5, 1, 4, 2, 3, 0]
    serial = run_pieces(seeded_statistic, seeds, scheduler="serial", shared={"matrix": matrix})
    local = run_pieces(seeded_statistic, seeds, scheduler="local", n_workers=2, shared={"matrix": matrix})
    assert local == serial
    assert [s for _, s in local] == seeds


def test_a_failing_piece_raises_its_own_error(cluster):
    """...after the pieces that finished before it were handed to ``on_done`` (the decode step keeps them as
    checkpoints: a failing subject does not lose the others' fits)."""
    done = {}
    with pytest.raises(InputError, match="piece 3: cannot be computed"):
        run_pieces(fail_on_three, range(5), scheduler=cluster.scheduler_address, shared={"delay": 2.0},
                   on_done=done.__setitem__)
    assert done == {0: 0, 1: 2, 2: 4, 4: 8}
    done.clear()
    with pytest.raises(InputError, match="piece 3: cannot be computed"):
        run_pieces(fail_on_three, range(5), scheduler=None, on_done=done.__setitem__)
    assert done == {0: 0, 1: 2, 2: 4}


def record_call(piece, calls):
    calls.append(piece)
    return piece


def test_closing_stops_the_run(cluster):
    gen = map_pieces(seeded_statistic, range(50), scheduler=cluster.scheduler_address,
                     shared={"matrix": np.ones((3, 2))})
    first = next(gen)
    assert isinstance(first, Progress) and first.done == 0 and first.total == 50
    gen.close()                                                  # cancels the rest; the cluster lives on
    assert run_pieces(fail_on_three, [1, 2], scheduler=cluster.scheduler_address) == [2, 4]
    calls = []
    gen = map_pieces(record_call, range(5), scheduler=None, shared={"calls": calls})
    next(gen), next(gen)
    gen.close()
    assert calls == [0]


def test_unreachable_scheduler_is_a_clear_error():
    with socket.socket() as s:                                  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match=rf"parameter scheduler: no dask scheduler answers at "
                                         rf"'tcp://127.0.0.1:{port}' within 1 s"):
        run_pieces(fail_on_three, [1], scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1.0)
    with pytest.raises(InputError, match="parameter scheduler"):
        run_pieces(fail_on_three, [1], scheduler=42)
    with pytest.raises(InputError, match="parameter n_workers"):
        run_pieces(fail_on_three, [1], scheduler="local", n_workers=0)


def test_an_analysis_spread_over_workers_gives_the_serial_results(cluster, tmp_path):
    """The NSD review: nothing a user runs reached map_pieces. An analysis with a scheduler (the CLI's
    --scheduler) fits the subjects' decoders and voxel masks on the workers, with the serial run's results."""
    from distributed import Client

    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.pipeline import run_analysis
    from napari_brain_concepts.core.progress import run_to_end
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(seed=0, size="tiny")
    params = {"decode": {"alphas": [1.0, 100.0, 10000.0], "cv": 3},
              "concepts": {"n_components": 6, "n_iter": 100, "prune": False, "contact_sheets": False},
              "masks": {"n_steps": 40, "burn_in": 10, "eval_every": 10}}
    runs = {}
    with Client(cluster) as client:
        for name, scheduler in (("serial", None), ("spread", client)):
            ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path / name), device="cpu",
                                  params={k: dict(v) for k, v in params.items()}, scheduler=scheduler)
            reports = []
            run_to_end(run_analysis(ctx, ["masks"]), reports.append)
            runs[name] = ctx, [p.message for p in reports]
    serial, spread = runs["serial"][0], runs["spread"][0]
    assert any("pieces on 2 dask workers" in m for m in runs["spread"][1])
    assert not any("dask" in m for m in runs["serial"][1])
    for name in study.subject_names:
        np.testing.assert_allclose(spread.state["decoders"][name].coef_, serial.state["decoders"][name].coef_,
                                   rtol=1e-5, atol=1e-6)
        # workers run on one thread, this process on every core: sums differ in the last bits, so a voxel at the
        # hard masks' threshold may flip
        same = spread.state["masks"][name].hard_masks_ == serial.state["masks"][name].hard_masks_
        assert same.mean() > 0.99
    a, b = serial.store.read_table("decoding"), spread.store.read_table("decoding")
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-4, atol=1e-6)
    a, b = serial.store.read_table("mask_scores"), spread.store.read_table("mask_scores")
    np.testing.assert_allclose(b[["decodability", "mask_r"]], a[["decodability", "mask_r"]], rtol=1e-3, atol=1e-4)
    assert (b["n_voxels"] - a["n_voxels"]).abs().max() <= 1


def test_the_command_line_spreads_the_decoders_with_scheduler(cluster, tmp_path, capsys):
    from napari_brain_concepts.cli import main

    out = tmp_path / "out"
    assert main(["decode", "--size", "tiny", "--out", str(out), "--scheduler", cluster.scheduler_address,
                 "--param", "decode.alphas=[1.0, 100.0]", "--param", "decode.cv=3"]) == 0
    # a piece's report names the subject alone ("sub-04 done"; a fit in this process says "sub-04: …"); the
    # progress printer may skip the "4 pieces on 2 dask workers" line (one line a step each half second)
    assert re.search(r"% sub-0\d done\n", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        main(["decode", "--size", "tiny", "--out", str(tmp_path / "x"), "--workers", "2"])
    assert "--workers needs --scheduler local" in capsys.readouterr().err
