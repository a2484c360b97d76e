"""Searchlight RSA: this project's batched torch searchlight vs rsatoolbox's, on the same volume.

Both find the centres (≥ threshold of the sphere in the mask), compute the correlation-distance RDM of
every sphere (rsatoolbox: ``get_volume_searchlight``, ``get_searchlight_RDMs``) and compare it with model
RDMs (rsatoolbox: ``evaluate_models_searchlight`` with ``eval_fixed``), in one process on the same data.

rsatoolbox is used as documented: ``get_volume_searchlight(mask, radius, threshold)`` gives the centres and
the on-grid sphere of each; its neighbours are then restricted to the mask (the spheres this project uses,
so that no voxel outside the mask enters an RDM; rsatoolbox's ``truncate_at_boundary=True`` would do the
same but also apply the threshold to the truncated sphere, which keeps every mask voxel as a centre). The
restriction is timed with rsatoolbox's sphere stage. Both sides get the same number of threads: torch's
threads, the BLAS/OpenMP pools (``threadpoolctl``) and rsatoolbox's ``n_jobs``.

Ours runs before and after rsatoolbox and its time is the mean of the two, so that a change of load on a
shared machine during rsatoolbox's (long) run affects both sides alike. Prints the time of each stage, the
ratio and the largest difference in r from rsatoolbox's.

    python benchmarks/searchlight.py [--shape 24 28 24] [--radius 6] [--stimuli 100] [--models 3] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from importlib.metadata import version

import numpy as np
import torch


def brain_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid filling most of the grid (a coarse stand-in for a brain mask)."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape)[:, None, None, None] - 1) / 2
    radii = np.array(shape)[:, None, None, None] / 2.1
    return (((grid - centre) / radii) ** 2).sum(axis=0) <= 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 28, 24))
    parser.add_argument("--radius", type=float, default=6)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--stimuli", type=int, default=100)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--method", choices=("pearson", "spearman"), default="pearson")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both sides (default: torch's default thread count)")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    import rsatoolbox
    from rsatoolbox.util import searchlight as rsl
    from threadpoolctl import threadpool_limits

    from napari_brain_concepts.core.alignment.searchlight import (
        searchlight_rsa,
        searchlight_spheres,
    )
    from napari_brain_concepts.core.progress import run_to_end

    rng = np.random.default_rng(args.seed)
    mask = brain_mask(tuple(args.shape))
    n_vox = int(mask.sum())
    feats = [rng.normal(size=(args.stimuli, 16)) for _ in range(args.models)]
    patterns = (feats[0] @ rng.normal(size=(16, n_vox)) + 3 * rng.normal(size=(args.stimuli, n_vox)))
    models = {f"model{k}": f for k, f in enumerate(feats)}
    print(f"volume {tuple(args.shape)}, {n_vox} mask voxels, radius {args.radius}, threshold {args.threshold}, "
          f"{args.stimuli} stimuli, {args.models} models, {args.method}, {threads} thread(s) each side, "
          f"device {args.device}, rsatoolbox {version('rsatoolbox')}, torch {torch.__version__}")

    variants = [("sliding", torch.float64), ("sliding", torch.float32), ("gather", torch.float64)]
    labels = {v: f"{v[0]} {str(v[1]).split('.')[-1]}" for v in variants}
    ours_times: dict = {v: [] for v in variants}
    sphere_times: list[float] = []
    ours: dict = {}

    def run_ours() -> None:
        t = time.perf_counter()
        spheres = searchlight_spheres(mask, args.radius, args.threshold)
        sphere_times.append(time.perf_counter() - t)
        for engine, dtype in variants:
            t = time.perf_counter()
            ours[(engine, dtype)] = run_to_end(searchlight_rsa(
                patterns, mask, models, radius=args.radius, threshold=args.threshold, method=args.method,
                device=args.device, dtype=dtype, spheres=spheres, engine=engine))
            ours_times[(engine, dtype)].append(time.perf_counter() - t)

    with threadpool_limits(limits=threads):
        run_ours()
        times = {}
        quiet = contextlib.redirect_stderr(io.StringIO())
        t = time.perf_counter()
        with quiet, contextlib.redirect_stdout(io.StringIO()):
            centers, neighbors = rsl.get_volume_searchlight(mask, radius=args.radius, threshold=args.threshold)
        flat = mask.ravel()
        neighbors = [n[flat[n]] for n in neighbors]
        times["rsatoolbox spheres"] = time.perf_counter() - t
        volume_data = np.zeros((args.stimuli, mask.size))
        volume_data[:, flat] = patterns
        t = time.perf_counter()
        with quiet:
            sl_rdms = rsl.get_searchlight_RDMs(volume_data, centers, neighbors, np.arange(args.stimuli),
                                               method="correlation", verbose=False)
        times["rsatoolbox RDMs"] = time.perf_counter() - t
        model_list = [rsatoolbox.model.ModelFixed(name, rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(f),
                                                                                method="correlation"))
                      for name, f in models.items()]
        t = time.perf_counter()
        with quiet:
            evals = rsl.evaluate_models_searchlight(sl_rdms, model_list, rsatoolbox.inference.eval_fixed,
                                                    method="corr" if args.method == "pearson" else "spearman",
                                                    n_jobs=threads)
        times["rsatoolbox evaluate"] = time.perf_counter() - t
        theirs = np.array([[e.evaluations[0, k, 0] for e in evals] for k in range(args.models)])
        run_ours()

    spheres = ours[variants[0]].spheres
    assert np.array_equal(spheres.centers, centers), "centres differ"
    times["ours spheres"] = float(np.mean(sphere_times))
    for v in variants:
        times[f"ours RDMs+evaluate {labels[v]}"] = float(np.mean(ours_times[v]))
    rs_total = times["rsatoolbox spheres"] + times["rsatoolbox RDMs"] + times["rsatoolbox evaluate"]
    rdm_eval = times["rsatoolbox RDMs"] + times["rsatoolbox evaluate"]
    print(f"\n{len(centers)} searchlight centres, up to {spheres.width} voxels per sphere\n")
    print(f"{'stage':<40}{'seconds':>10}")
    for name, value in times.items():
        print(f"{name:<40}{value:>10.2f}")
    print()
    print(f"{'ours vs rsatoolbox':<40}{'ratio':>10}{'max |Δr|':>12}")
    print(f"{'spheres':<40}{times['rsatoolbox spheres'] / times['ours spheres']:>9.1f}×{'':>12}")
    for v in variants:
        ours_time = times[f"ours RDMs+evaluate {labels[v]}"]
        delta = np.max(np.abs(ours[v].scores - theirs))
        print(f"{'RDMs + evaluate, ' + labels[v]:<40}{rdm_eval / ours_time:>9.1f}×{delta:>12.2e}")
        print(f"{'whole searchlight, ' + labels[v]:<40}{rs_total / (times['ours spheres'] + ours_time):>9.1f}×"
              f"{delta:>12.2e}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
