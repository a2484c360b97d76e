"""A tiny study with planted concepts, for the concept-basis, naming and mask tests.

Each stimulus holds some of four concepts (face, food, text, vehicle). Its captions name them with
varied words; its embedding is a fixed direction per concept plus a large "style" part (colour words
in the captions) that no voxel responds to, plus noise. Each subject has a 3D grid with a planted
block of voxels per concept, responding to that concept; one concept is planted in one subject only.
"""

from __future__ import annotations

import numpy as np

from napari_brain_concepts.core.study import Embedding, Stimuli, Study, Subject

CONCEPTS = ("face", "food", "text", "vehicle")
WORDS = {
    "face": ["face", "man", "woman"],
    "food": ["pizza", "apple", "sandwich"],
    "text": ["sign", "letters", "word"],
    "vehicle": ["car", "bus", "truck"],
}
STYLES = ("red", "green", "blue", "yellow", "purple", "orange")
GRID = (8, 8, 4)
ONLY_IN_FIRST = "vehicle"


def planted_study(seed: int = 0, n_stimuli: int = 240, n_subjects: int = 2, d: int = 48,
                  repeats: int = 2, noise: float = 1.0) -> Study:
    rng = np.random.default_rng(seed)
    n_c = len(CONCEPTS)
    present = rng.random((n_stimuli, n_c)) < 0.3
    features = (present * rng.uniform(0.5, 1.5, (n_stimuli, n_c))).astype(np.float32)  # how much of it
    style = rng.integers(0, len(STYLES), n_stimuli)
    captions = []
    for i in range(n_stimuli):
        shown = [c for j, c in enumerate(CONCEPTS) if present[i, j]]
        caps = []
        for r in range(3):
            things = [WORDS[c][(i + r + j) % 3] for j, c in enumerate(shown)] or ["nothing", "much"]
            caps.append(f"a {STYLES[style[i]]} picture with a {' and a '.join(things)}")
        captions.append(caps)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0].T.astype(np.float32)
    concept_dirs = basis[:n_c]
    style_dirs = 3.0 * basis[n_c:n_c + len(STYLES)]  # large variance the brain does not carry
    Y = features @ concept_dirs + style_dirs[style] + 0.15 * rng.normal(size=(n_stimuli, d)).astype(np.float32)
    stimuli = Stimuli(
        ids=np.asarray([f"s{i:04d}" for i in range(n_stimuli)], dtype=object),
        captions=captions,
        categories=[[c for j, c in enumerate(CONCEPTS) if present[i, j]] for i in range(n_stimuli)],
        pixels=rng.integers(0, 256, (n_stimuli, 8, 8, 3), dtype=np.uint8),
        embeddings={"captions": Embedding("captions", Y.astype(np.float32), kind="caption-mean")},
        test=np.arange(n_stimuli) % 5 == 0,
    )
    mask = np.zeros(GRID, dtype=bool)
    mask[:, :, :] = True
    mask[0, 0, :] = False
    subjects, regions, weights = {}, {}, {}
    for s in range(n_subjects):
        name = f"sub-{s + 1:02d}"
        regions[name] = {}
        W = np.zeros((n_c, int(mask.sum())), dtype=np.float32)
        for j, c in enumerate(CONCEPTS):
            if c == ONLY_IN_FIRST and s > 0:
                continue
            vol = np.zeros(GRID, dtype=bool)
            x0 = 1 + 2 * (j % 3) + (s % 2)
            y0 = 1 + 3 * (j // 3)
            vol[x0:x0 + 2, y0:y0 + 3, 1:3] = True
            vol &= mask
            regions[name][c] = vol
            W[j, vol[mask]] = 1.0
        weights[name] = W
        trials = np.tile(np.arange(n_stimuli), repeats)
        X = features[trials] @ W + noise * rng.normal(size=(len(trials), W.shape[1])).astype(np.float32)
        subjects[name] = Subject(name=name, responses=X, mask=mask, affine=np.diag([2.0, 2.0, 2.0, 1.0]),
                                 stimulus_ids=stimuli.ids[trials],
                                 sessions=np.repeat(np.arange(repeats), n_stimuli))
    truth = {"concepts": list(CONCEPTS), "features": features, "regions": regions, "weights": weights,
             "concept_words": WORDS, "single_subject_concepts": {ONLY_IN_FIRST: "sub-01"},
             "embedding_space": "features"}
    return Study("planted", stimuli, subjects, truth=truth)
