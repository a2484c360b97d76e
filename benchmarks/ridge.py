"""Ridge with per-target alpha: this project's RidgeDecoder vs himalaya and scikit-learn, side by side.

Timing: every method runs in THIS process on the same seeded data, in interleaved rounds (the order rotates
each round so no method always runs first or on a warmer cache), with the same thread count for torch and
for the BLAS behind numpy/scipy. Reported per method: the best and the median wall time over the rounds and
the ratio ours / it (from the best times; from medians in brackets). The chosen alphas and the predictions
on held-out samples are compared from the first round.

Memory (``--memory``) is a separate figure: each method once more in its own fresh process, reporting the
growth of its peak resident set during the fit over the resident set with the data loaded (one process per
method, so one method's allocations cannot hide another's; imports and set-up happen before, in a tiny fit).

Pairs compared (same folds, same score: mean squared error):

- ours (5-fold)   RidgeDecoder(cv=KFold(5))               vs himalaya RidgeCV and KernelRidgeCV (torch backend)
- ours (LOO)      RidgeDecoder(loo=True), float32         vs scikit-learn RidgeCV(alpha_per_target=True)

scikit-learn's ``RidgeCV(alpha_per_target=True)`` only supports efficient leave-one-out, so it is compared
with our leave-one-out mode. It casts float32 input to float64 and runs in float64 whatever it is given, so
the table also shows our leave-one-out in float64 (``ours-loo-f64``) for a same-precision comparison.

Usage::

    python benchmarks/ridge.py --size small                       # 2,000 × 4,000 → 128
    python benchmarks/ridge.py --size small --repeats 5 --memory
    python benchmarks/ridge.py --size nsd --repeats 1 --skip himalaya-primal   # 9,000 × 15,724 → 512; long
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import time

import numpy as np

SIZES = {"small": (2000, 4000, 128), "medium": (4000, 8000, 256), "nsd": (9000, 15724, 512)}
ALPHAS = 10.0 ** np.arange(0, 8)
N_TEST = 500
METHODS = ("ours-kfold", "himalaya-kernel", "himalaya-primal", "ours-loo", "ours-loo-f64", "sklearn")
# row → the row of ours it is compared with (None: a row of ours)
PAIRS = {"ours-kfold": None, "himalaya-kernel": "ours-kfold", "himalaya-primal": "ours-kfold",
         "ours-loo": None, "ours-loo-f64": "ours-loo", "sklearn": "ours-loo"}
DTYPE = {"ours-kfold": "float32", "himalaya-kernel": "float32", "himalaya-primal": "float32",
         "ours-loo": "float32", "ours-loo-f64": "float64", "sklearn": "float64 (casts)"}


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


def fit_predict(method: str, X: np.ndarray, Y: np.ndarray, X_test: np.ndarray):
    """Fit one method; return (seconds, chosen alphas, predictions on X_test)."""
    from sklearn.model_selection import KFold

    folds = KFold(5)
    t0 = time.perf_counter()
    if method.startswith("ours"):
        from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

        model = RidgeDecoder(alphas=ALPHAS, cv=folds, loo=method.startswith("ours-loo"), scoring="mse",
                             dtype="float64" if method.endswith("f64") else "float32", device="cpu")
        model.fit(X, Y)
        wall = time.perf_counter() - t0
        alphas, pred = model.best_alphas_, model.predict(X_test)
    elif method.startswith("himalaya"):
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV
        from himalaya.ridge import RidgeCV

        backend = set_backend("torch", on_error="raise")
        cls = KernelRidgeCV if method == "himalaya-kernel" else RidgeCV
        kwargs = {} if cls is KernelRidgeCV else {"solver_params": {"warn": False}}
        model = cls(alphas=ALPHAS, cv=folds, fit_intercept=True, **kwargs)
        model.fit(X, Y)
        wall = time.perf_counter() - t0
        alphas = backend.to_numpy(model.best_alphas_)
        pred = backend.to_numpy(model.predict(X_test))
    else:
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
        wall = time.perf_counter() - t0
        alphas, pred = np.asarray(model.alpha_), model.predict(X_test)
    return wall, np.asarray(alphas, dtype=np.float64), np.asarray(pred, dtype=np.float64)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _limit_threads(threads: int):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(threads)


def _peak_memory(method: str, size: tuple[int, int, int], threads: int) -> float:
    """Peak resident-set growth (MB) of one fit over the data, in a fresh process (run through a spawn pool).

    The kernel's high-water mark is reset after the data are made (``/proc/self/clear_refs``), so the
    figure is the fit's own peak, not the data generator's.
    """
    import gc

    _limit_threads(threads)
    X, Y, X_test = make_data(*size)
    fit_predict(method, X[:60], Y[:60], X_test[:5])  # imports and first-call set-up, as in the timed rounds
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base = _status_mb("VmRSS")
    fit_predict(method, X, Y, X_test)
    return max(0.0, _status_mb("VmHWM") - base)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best and median reported)")
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS, help="methods not to run")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory, each method in its own fresh process")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    n, p, t = size
    methods = [m for m in METHODS if m not in args.skip]
    limits = _limit_threads(args.threads)
    print(f"ridge, alpha per target: n={n} samples × p={p} features → t={t} targets, {len(ALPHAS)} alphas, "
          f"5 folds, {args.threads} thread(s), CPU, {args.repeats} interleaved round(s) in one process")
    X, Y, X_test = make_data(*size)
    for m in methods:  # imports and first-call set-up outside the timed rounds
        fit_predict(m, X[:60], Y[:60], X_test[:5])
    times: dict[str, list[float]] = {m: [] for m in methods}
    first: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(args.repeats):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for m in order:
            wall, alphas, pred = fit_predict(m, X, Y, X_test)
            times[m].append(wall)
            first.setdefault(m, (alphas, pred))
            print(f"  round {r + 1}: {m:16s} {wall:8.2f} s", flush=True)
    limits.restore_original_limits()

    memory: dict[str, float] = {}
    if args.memory:
        ctx = mp.get_context("spawn")
        for m in methods:
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                memory[m] = pool.submit(_peak_memory, m, size, args.threads).result()

    best = {m: min(v) for m, v in times.items()}
    med = {m: statistics.median(v) for m, v in times.items()}
    print()
    cols = ["method", "dtype", "best (s)", "median (s)", "ours / it", "same alphas", "max rel pred diff"]
    if memory:
        cols.append("peak extra MB (own process)")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")
    for m in methods:
        ours = PAIRS[m]
        cells = [m, DTYPE[m], f"{best[m]:.2f}", f"{med[m]:.2f}"]
        if ours is None or ours not in times:
            cells += ["", "", ""]
        else:
            agree = np.mean(np.isclose(first[ours][0], first[m][0], rtol=1e-5))  # himalaya keeps float32 alphas
            rel = np.abs(first[ours][1] - first[m][1]).max() / np.abs(first[m][1]).max()
            cells += [f"{best[ours] / best[m]:.2f} ({med[ours] / med[m]:.2f})", f"{agree:.1%}", f"{rel:.2e}"]
        if memory:
            cells.append(f"{memory[m]:.0f}")
        print("| " + " | ".join(cells) + " |")
    print()
    peers = [m for m in ("himalaya-kernel", "himalaya-primal") if m in times]
    if "ours-kfold" in times and peers:
        fastest = min(peers, key=best.get)
        print(f"ours (5-fold) / fastest himalaya ({fastest}): {best['ours-kfold'] / best[fastest]:.2f}  (goal ≤ 0.5)")
    if "sklearn" in times:
        for m, what in (("ours-loo", "float32, ours"), ("ours-loo-f64", "float64, same precision as sklearn")):
            if m in times:
                print(f"{m} / scikit-learn RidgeCV (float64): {best[m] / best['sklearn']:.2f}  ({what}; goal ≤ 0.2)")


if __name__ == "__main__":
    main()
