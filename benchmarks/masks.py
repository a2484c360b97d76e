"""Batched voxel-mask optimisation vs a per-concept loop doing the same steps.

Both runs use :class:`VoxelMaskOptimizer` on the same data, decoder and concept directions; the peer
(``batched=False``) optimises each concept as its own problem with its own Adam, step by step, exactly
as the reference implementation does one concept at a time. Prints the wall time of each, their ratio
and the largest difference between the masks they keep.

NSD-like size (default): 15,000 voxels, 3,000 optimisation trials (plus 600 held-out trials to select the
mask), 512-d embedding, 32 concepts. ``--small``: 2,000 voxels, 500 trials, 8 concepts.

    python benchmarks/masks.py [--small] [--steps 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_problem(n_voxels: int, n_trials: int, n_val: int, d: int, k: int, seed: int = 0):
    """Random responses with a planted signal for each concept and a ridge-like linear decoder."""
    rng = np.random.default_rng(seed)
    n = n_trials + n_val
    latent = rng.standard_normal((n, k)).astype(np.float32)
    dirs = np.linalg.qr(rng.standard_normal((d, k)))[0].T.astype(np.float32)  # (k, d) orthonormal
    Y = latent @ dirs + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    tuning = np.zeros((k, n_voxels), dtype=np.float32)
    size = max(10, n_voxels // (4 * k))
    for j in range(k):
        tuning[j, rng.choice(n_voxels, size, replace=False)] = 1.0
    X = latent @ tuning + rng.standard_normal((n, n_voxels)).astype(np.float32)
    X = (X - X.mean(0)) / X.std(0)
    coef = (dirs.T @ tuning / size + 0.01 * rng.standard_normal((d, n_voxels))).astype(np.float32)
    intercept = np.zeros(d, dtype=np.float32)
    return X[:n_trials], Y[:n_trials], X[n_trials:], Y[n_trials:], dirs, (coef, intercept)


def main(argv=None) -> None:
    from napari_brain_concepts.core.concepts.masks import VoxelMaskOptimizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="2,000 voxels, 500 trials, 8 concepts")
    ap.add_argument("--steps", type=int, default=40, help="optimisation steps of each run (default 40)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    size = dict(n_voxels=2000, n_trials=500, n_val=100, d=128, k=8) if args.small else \
        dict(n_voxels=15000, n_trials=3000, n_val=600, d=512, k=32)
    X, Y, Xv, Yv, dirs, dec = make_problem(**size)
    burn = args.steps // 4
    kw = dict(n_steps=args.steps, burn_in=burn, eval_every=5, device=args.device, random_state=0)
    print(f"{size['n_voxels']} voxels x {size['n_trials']} trials (+{size['n_val']} held out), "
          f"{size['k']} concepts, d={size['d']}, {args.steps} steps, device {args.device}")
    for batched in (True, False):  # warm-up: first use of torch.optim and of the kernels
        VoxelMaskOptimizer(batched=batched, **{**kw, "n_steps": 2, "burn_in": 0}).fit(X, Y, dirs, dec,
                                                                                     X_val=Xv, Y_val=Yv)
    times, fits = {}, {}
    for name, batched in (("batched", True), ("per-concept loop", False)):
        opt = VoxelMaskOptimizer(batched=batched, **kw)
        t0 = time.perf_counter()
        opt.fit(X, Y, dirs, dec, X_val=Xv, Y_val=Yv)
        times[name] = time.perf_counter() - t0
        fits[name] = opt
    a, b = fits["batched"], fits["per-concept loop"]
    diff = float(np.max(np.abs(a.masks_ - b.masks_)))
    ratio = times["per-concept loop"] / times["batched"]
    print(f"{'run':<20}{'seconds':>10}{'s/step':>10}")
    for name, t in times.items():
        print(f"{name:<20}{t:>10.2f}{t / args.steps:>10.4f}")
    print(f"{'speed ratio':<20}{ratio:>10.2f}   (goal >= 5)")
    print(f"{'max |dm|':<20}{diff:>10.2e}   (must be < 1e-5)")
    print(f"{'same best steps':<20}{str(bool(np.array_equal(a.best_step_, b.best_step_))):>10}")
    print(f"{'same hard masks':<20}{str(bool(np.array_equal(a.hard_masks_, b.hard_masks_))):>10}")


if __name__ == "__main__":
    main()
