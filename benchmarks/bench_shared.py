"""SharedConceptClustering against scikit-learn's DBSCAN, side by side in one process.

Case 1 (one point per participant): both compute the same clustering, so the ratio is the cost of the
participant counting and the graph formulation over scikit-learn's own DBSCAN.
Case 2 (NSD-like layout: a few participants with many voxels each): scikit-learn's DBSCAN cannot count
participants; its time on the same points (min_samples = min_participants + 1) is the peer.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_shared.py [--voxels 4000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.cluster import DBSCAN

from napari_brain_concepts.core.concepts.shared import SharedConceptClustering


def _time(fn, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _planted(n_subjects: int, n_voxels: int, d: int, n_concepts: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_concepts, d))
    out = {}
    for s in range(n_subjects):
        cols = rng.normal(size=(n_voxels, d))
        which = rng.integers(0, n_concepts + 3, size=n_voxels)  # some voxels carry no concept
        tuned = which < n_concepts
        cols[tuned] += 4 * directions[which[tuned]]
        out[f"s{s}"] = cols.T
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voxels", type=int, default=3000, help="voxels per participant (case 2)")
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()

    rows = []
    rng = np.random.default_rng(0)
    for n in (1000, 3000):
        centres = rng.normal(size=(8, 16))
        points = centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, 16))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        ours = _time(lambda x=points: SharedConceptClustering(eps=0.05, min_participants=4, expand_eps=0).fit(
            x, groups=np.arange(len(x))))
        peer = _time(lambda x=points: DBSCAN(eps=0.05, min_samples=5, metric="cosine", algorithm="brute").fit(x))
        rows.append((f"one point per participant, n={n}", ours, peer))

    weights = _planted(8, args.voxels, args.dim, 6)
    points = np.concatenate([w.T for w in weights.values()])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    ours = _time(lambda: SharedConceptClustering(eps=0.6, min_participants=3).fit(weights), repeats=1)
    peer = _time(lambda: DBSCAN(eps=0.6, min_samples=4, metric="cosine", algorithm="brute").fit(points), repeats=1)
    rows.append((f"8 participants x {args.voxels} voxels, d={args.dim}", ours, peer))

    print(f"{'case':45s} {'shared (s)':>11s} {'sklearn DBSCAN (s)':>19s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:45s} {a:11.3f} {b:19.3f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
