"""Ridge with per-target alpha: this project's RidgeDecoder vs himalaya and scikit-learn, side by side.

Every method runs in its own fresh process (one after the other, same thread count) on the same seeded
data, so wall time and peak memory (resident set growth over the data) are comparable. Reported: wall
time, peak extra memory, ratio to ours, agreement of the chosen alphas and max relative difference of
predictions on held-out samples.

- ours (5-fold)   RidgeDecoder(cv=KFold(5), scoring="mse")         vs himalaya RidgeCV / KernelRidgeCV
- ours (LOO)      RidgeDecoder(loo=True, scoring="mse")             vs scikit-learn RidgeCV (leave-one-out)

scikit-learn's ``RidgeCV(alpha_per_target=True)`` only supports efficient leave-one-out, so it is compared
with our leave-one-out mode; himalaya with our K-fold mode (same folds, same score: mean squared error).

Usage::

    python benchmarks/ridge.py --size small          # 2,000 × 4,000 → 128 (a minute or two)
    python benchmarks/ridge.py --size nsd            # 9,000 × 15,724 → 512 (NSD-sized; long)
    python benchmarks/ridge.py --size nsd --skip himalaya-primal
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import resource
import time

import numpy as np

SIZES = {"small": (2000, 4000, 128), "medium": (4000, 8000, 256), "nsd": (9000, 15724, 512)}
ALPHAS = 10.0 ** np.arange(0, 8)
N_TEST = 500
METHODS = ("ours-kfold", "himalaya-kernel", "ours-loo", "sklearn", "himalaya-primal")


def make_data(n: int, p: int, t: int, seed: int = 0):
    """fMRI-like float32 data: shared low-rank structure + noise; targets with graded signal-to-noise."""
    rng = np.random.default_rng(seed)
    m = n + N_TEST
    X = rng.standard_normal((m, 50), dtype=np.float32) @ rng.standard_normal((50, p), dtype=np.float32)
    X *= 0.3
    X += rng.standard_normal((m, p), dtype=np.float32)
    X -= X[:n].mean(0)
    X /= X[:n].std(0)
    W = rng.standard_normal((p, t), dtype=np.float32) / np.sqrt(p)
    Y = X @ W
    Y *= np.logspace(0, -2, t, dtype=np.float32)  # from well to barely predictable targets
    Y += rng.standard_normal((m, t), dtype=np.float32)
    Y -= Y[:n].mean(0)
    return X[:n], Y[:n], X[n:]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _run(method: str, size: tuple[int, int, int], threads: int):
    import torch
    from sklearn.model_selection import KFold

    torch.set_num_threads(threads)
    X, Y, X_test = make_data(*size)
    base = _rss_mb()
    folds = KFold(5)
    t0 = time.perf_counter()
    if method.startswith("ours"):
        from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

        model = RidgeDecoder(alphas=ALPHAS, cv=folds, loo=method == "ours-loo", scoring="mse", device="cpu")
        model.fit(X, Y)
        alphas, pred = model.best_alphas_, model.predict(X_test)
    elif method.startswith("himalaya"):
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV
        from himalaya.ridge import RidgeCV

        backend = set_backend("torch", on_error="raise")
        cls = KernelRidgeCV if method == "himalaya-kernel" else RidgeCV
        model = cls(alphas=ALPHAS, cv=folds, fit_intercept=True)
        model.fit(X, Y)
        alphas = backend.to_numpy(model.best_alphas_)
        pred = backend.to_numpy(model.predict(X_test))
    else:
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
        alphas, pred = np.asarray(model.alpha_), model.predict(X_test)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return wall, max(0.0, peak - base), np.asarray(alphas, dtype=np.float64), np.asarray(pred, dtype=np.float64)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS, help="methods not to run")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    n, p, t = size
    print(f"ridge, alpha per target: n={n} samples × p={p} features → t={t} targets, {len(ALPHAS)} alphas, "
          f"5 folds, float32, {args.threads} thread(s), CPU")
    results = {}
    ctx = mp.get_context("spawn")
    for method in METHODS:
        if method in args.skip:
            continue
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            results[method] = pool.submit(_run, method, size, args.threads).result()
        wall = results[method][0]
        print(f"  {method:16s} done in {wall:8.1f} s", flush=True)

    print()
    print(f"| {'method':16s} | {'wall (s)':>9s} | {'peak extra (MB)':>15s} | {'ours / it':>9s} | "
          f"{'same alphas':>11s} | {'max rel pred diff':>17s} |")
    print("|" + "|".join("-" * w for w in (18, 11, 17, 11, 13, 19)) + "|")
    pairs = {"ours-kfold": None, "himalaya-kernel": "ours-kfold", "himalaya-primal": "ours-kfold",
             "ours-loo": None, "sklearn": "ours-loo"}
    for method, ours in pairs.items():
        if method not in results:
            continue
        wall, mem = results[method][:2]
        if ours is None or ours not in results:
            print(f"| {method:16s} | {wall:9.1f} | {mem:15.0f} | {'':>9s} | {'':>11s} | {'':>17s} |")
            continue
        o = results[ours]
        agree = np.mean(np.isclose(o[2], results[method][2], rtol=1e-5))  # himalaya keeps float32 alphas
        rel = np.abs(o[3] - results[method][3]).max() / np.abs(results[method][3]).max()
        print(f"| {method:16s} | {wall:9.1f} | {mem:15.0f} | {o[0] / wall:9.2f} | {agree:11.1%} | {rel:17.2e} |")
    peers = [m for m in ("himalaya-kernel", "himalaya-primal") if m in results]
    if "ours-kfold" in results and peers:
        fastest = min(peers, key=lambda m: results[m][0])
        print(f"\nours (5-fold) / fastest himalaya ({fastest}): {results['ours-kfold'][0] / results[fastest][0]:.2f}"
              "  (goal ≤ 0.5)")
    if "ours-loo" in results and "sklearn" in results:
        print(f"ours (LOO) / scikit-learn RidgeCV: {results['ours-loo'][0] / results['sklearn'][0]:.2f}"
              "  (goal ≤ 0.2)")


if __name__ == "__main__":
    main()
