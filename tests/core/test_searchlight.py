"""Searchlight: the same centres and neighbours as rsatoolbox, the same RDMs and model scores."""

import numpy as np
import pytest
import torch

from napari_brain_concepts.core.alignment import rsa
from napari_brain_concepts.core.alignment.searchlight import (
    _average_ranks,
    searchlight_rsa,
    searchlight_spheres,
    sphere_offsets,
)
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.progress import Progress, run_to_end

searchlight_mod = pytest.importorskip("rsatoolbox.util.searchlight")


def _mask(seed=0, shape=(13, 12, 11)):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    mask[2:11, 1:10, 2:10] = True
    mask &= rng.random(shape) > 0.15
    return mask


@pytest.mark.parametrize(("radius", "threshold"), [(2, 1.0), (3, 0.5), (2.5, 0.7), (6, 0.5)])
def test_centres_and_neighbours_equal_rsatoolbox(radius, threshold):
    mask = _mask()
    centers, neighbors = searchlight_mod.get_volume_searchlight(mask, radius=radius, threshold=threshold)
    ours = searchlight_spheres(mask, radius=radius, threshold=threshold)
    assert len(ours) > 0
    np.testing.assert_array_equal(ours.centers, centers)
    flat = mask.ravel()
    for theirs, mine in zip(neighbors, ours.neighbor_list(mask)):
        # our spheres are rsatoolbox's restricted to the mask (no voxel outside the mask enters an RDM)
        np.testing.assert_array_equal(np.sort(theirs[flat[theirs]]), np.sort(mine))


def test_sphere_is_strictly_inside_the_radius():
    offsets = sphere_offsets(6)
    assert np.all(np.linalg.norm(offsets, axis=1) < 6)
    assert len(offsets) == sum(1 for x in range(-6, 7) for y in range(-6, 7) for z in range(-6, 7)
                               if x * x + y * y + z * z < 36)


def test_average_ranks_equal_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(4, 30)).astype(np.float64)
    np.testing.assert_array_equal(_average_ranks(torch.as_tensor(x)).numpy(), stats.rankdata(x, axis=1))


@pytest.mark.parametrize(("method", "theirs"), [("pearson", "corr"), ("spearman", "spearman")])
def test_scores_equal_rsatoolbox(method, theirs):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    rng = np.random.default_rng(2)
    mask = _mask(3, (9, 9, 8))
    n_stim, n_vox = 24, int(mask.sum())
    feats = rng.normal(size=(n_stim, 6))
    patterns = feats @ rng.normal(size=(6, n_vox)) + rng.normal(scale=2.0, size=(n_stim, n_vox))
    models = {"true": feats, "noise": rng.normal(size=(n_stim, 6))}
    gen = searchlight_rsa(patterns, mask, models, radius=2, threshold=0.5, method=method, device="cpu",
                          batch_size=7)
    reports = []
    result = run_to_end(gen, reports.append)
    assert reports and isinstance(reports[-1], Progress) and reports[-1].done == reports[-1].total

    centers, neighbors = searchlight_mod.get_volume_searchlight(mask, radius=2, threshold=0.5)
    flat = mask.ravel()
    volume_data = np.zeros((n_stim, mask.size))
    volume_data[:, flat] = patterns
    neighbors = [n[flat[n]] for n in neighbors]
    sl_rdms = searchlight_mod.get_searchlight_RDMs(volume_data, centers, neighbors, np.arange(n_stim),
                                                   method="correlation", verbose=False)
    model_list = [rsatoolbox.model.ModelFixed(name, rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(f),
                                                                            method="correlation"))
                  for name, f in models.items()]
    evals = searchlight_mod.evaluate_models_searchlight(sl_rdms, model_list, rsatoolbox.inference.eval_fixed,
                                                        method=theirs)
    want = np.array([[e.evaluations[0, k, 0] for e in evals] for k in range(2)])
    np.testing.assert_allclose(result.scores, want, atol=1e-9)
    assert result.scores[0].mean() > result.scores[1].mean()
    vol = result.volume("true")
    assert vol.shape == mask.shape and np.allclose(vol.ravel()[centers], result.scores[0])


def test_subsets_average_per_subset_scores():
    rng = np.random.default_rng(4)
    mask = _mask(5, (8, 8, 8))
    n_vox = int(mask.sum())
    feats = rng.normal(size=(60, 5))
    patterns = feats @ rng.normal(size=(5, n_vox)) + rng.normal(size=(60, n_vox))
    subsets = rsa.stimulus_subsets(60, 20, random_state=0)
    both = run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, subsets, radius=2, device="cpu"))
    single = [run_to_end(searchlight_rsa(patterns[s], mask, {"m": feats[s]}, radius=2, device="cpu")).scores
              for s in subsets]
    np.testing.assert_allclose(both.scores, np.mean(single, axis=0), atol=1e-12)
    assert both.n_subsets == 3


def test_float32_is_close_to_float64():
    rng = np.random.default_rng(6)
    mask = _mask(7, (8, 8, 8))
    patterns = rng.normal(size=(20, int(mask.sum())))
    feats = rng.normal(size=(20, 4))
    a = run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, radius=2, device="cpu"))
    b = run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, radius=2, device="cpu", dtype=torch.float32))
    # float32 Gram matrices, float64 RDMs and comparisons: r within ~1e-8 of float64
    assert np.max(np.abs(a.scores - b.scores)) < 1e-6


def test_errors_name_the_problem():
    mask = _mask()
    with pytest.raises(InputError, match="searchlight patterns"):
        run_to_end(searchlight_rsa(np.zeros((5, 3)), mask, {"m": np.zeros((5, 2))}, radius=2))
    sparse = np.zeros((10, 10, 10), bool)
    sparse[::3, ::3, ::3] = True
    with pytest.raises(InputError, match="no centre"):
        run_to_end(searchlight_rsa(np.ones((5, int(sparse.sum()))), sparse, {"m": np.eye(5)}, radius=3))
    with pytest.raises(InputError, match="threshold"):
        searchlight_spheres(mask, 2, threshold=1.5)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_sliding_sphere_equals_gathering_every_sphere(method):
    rng = np.random.default_rng(8)
    mask = _mask(9, (10, 9, 11))
    patterns = rng.normal(size=(20, int(mask.sum()))) + 5.0
    models = {"a": rng.normal(size=(20, 4)), "b": rng.normal(size=(20, 7))}
    runs = {engine: run_to_end(searchlight_rsa(patterns, mask, models, radius=3, method=method, device="cpu",
                                               engine=engine, batch_size=5))
            for engine in ("sliding", "gather")}
    assert len(runs["gather"].spheres) > 50
    np.testing.assert_allclose(runs["sliding"].scores, runs["gather"].scores, atol=1e-10)


def test_dtype_is_given_as_text_as_everywhere_else():
    rng = np.random.default_rng(6)
    mask = _mask(7, (8, 8, 8))
    patterns = rng.normal(size=(20, int(mask.sum())))
    feats = rng.normal(size=(20, 4))
    for text, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        a = run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, radius=2, device="cpu", dtype=text))
        b = run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, radius=2, device="cpu", dtype=dtype))
        np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(InputError, match=r"parameter dtype: 'float16' is unknown\. Fix: use 'float64' or 'float32'"):
        run_to_end(searchlight_rsa(patterns, mask, {"m": feats}, radius=2, device="cpu", dtype="float16"))
