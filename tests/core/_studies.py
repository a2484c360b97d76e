"""Small hand-built studies for the data-model and study-folder tests, and an equality check."""

from __future__ import annotations

import numpy as np

from napari_brain_concepts.core.study import Embedding, RoiAtlas, Stimuli, Study, Subject

#: a non-isotropic, translated, flipped affine whose entries float32 stores exactly
AFFINE = np.array([[-2.0, 0.0, 0.0, 31.5],
                   [0.0, 2.5, 0.0, -40.25],
                   [0.0, 0.0, 3.0, -12.75],
                   [0.0, 0.0, 0.0, 1.0]])
#: anatomy on its own, finer grid
ANAT_AFFINE = np.array([[0.75, 0.0, 0.0, -3.5],
                        [0.0, 1.25, 0.0, 2.25],
                        [0.0, 0.0, 1.5, 0.5],
                        [0.0, 0.0, 0.0, 1.0]])


def small_study(seed: int = 0, n_stimuli: int = 6, pixels: bool = True) -> Study:
    """Two subjects on different grids, every optional part of the format filled in."""
    rng = np.random.default_rng(seed)
    ids = [f"img-{i:03d}" for i in range(n_stimuli)]
    captions = [[f"a photo of thing {i}", f"thing number {i} on a table"] for i in range(n_stimuli)]
    captions[1] = ["only one caption, with a comma; and a semicolon"]
    captions[2] = []
    categories = [["face", "body"] if i % 2 else ["place"] for i in range(n_stimuli)]
    categories[3] = []
    stimuli = Stimuli(
        ids=np.asarray(ids, dtype=object),
        captions=captions,
        categories=categories,
        pixels=rng.integers(0, 256, (n_stimuli, 12, 10, 3), dtype=np.uint8) if pixels else None,
        embeddings={
            "captions": Embedding("captions", rng.normal(size=(n_stimuli, 8)).astype(np.float32),
                                  model="all-MiniLM-L6-v2", kind="caption-mean", normalized=True),
            "clip-image": Embedding("clip-image", rng.normal(size=(n_stimuli, 5)).astype(np.float32),
                                    model="ViT-B-32", kind="image"),
        },
        test=np.arange(n_stimuli) % 3 == 0,
    )
    subjects = {}
    for k, (shape, affine) in enumerate([((5, 6, 4), AFFINE), ((4, 4, 5), np.diag([1.5, 1.5, 2.0, 1.0]))]):
        name = f"sub-{k + 1:02d}"
        mask = np.zeros(shape, dtype=bool)
        mask[1:-1, 1:-1, 1:] = True
        n_vox = int(mask.sum())
        trials = np.r_[np.arange(n_stimuli), rng.permutation(n_stimuli)[:3]]
        labels = np.zeros(shape, dtype=np.int32)
        labels[1, 1:3, 1:3] = 1
        labels[2, 2, 2:] = 3
        subjects[name] = Subject(
            name=name,
            responses=rng.normal(size=(len(trials), n_vox)).astype(np.float32),
            mask=mask,
            affine=affine,
            stimulus_ids=np.asarray([ids[t] for t in trials], dtype=object),
            sessions=np.repeat([0, 1], [n_stimuli, len(trials) - n_stimuli]),
            anat=rng.random((2 * shape[0], 2 * shape[1], 2 * shape[2])).astype(np.float32),
            anat_affine=ANAT_AFFINE,
            rois={"floc-faces": RoiAtlas(labels, {1: "FFA-1", 3: "OFA"}),
                  "floc-places": RoiAtlas((labels > 0).astype(np.int32) * 2, {2: "PPA"})},
            to_common=np.array([[1.0, 0, 0, 0.5], [0, 1.0, 0, -1.25], [0, 0, 1.0, 2.0], [0, 0, 0, 1]]),
            ncsnr=rng.random(n_vox).astype(np.float32),
        )
    truth = {
        "concepts": ["face", "place"],
        "features": rng.random((n_stimuli, 2)).astype(np.float32),
        "regions": {name: {"face": s.rois["floc-faces"].labels == 1} for name, s in subjects.items()},
        "weights": {name: rng.normal(size=(2, s.n_voxels)).astype(np.float32) for name, s in subjects.items()},
        "concept_words": {"face": ["face", "man"], "place": ["room"]},
        "single_subject_concepts": {"place": "sub-02"},
        "embedding_space": "features",
        "noise_sd": 0.5,
    }
    return Study(name="small", stimuli=stimuli, subjects=subjects, space="native", tr=1.6, truth=truth)


def image_array(stimuli: Stimuli, i: int) -> np.ndarray:
    return np.asarray(stimuli.image(i))


def _assert_same_tree(a, b, where: str = "truth") -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_study(a: Study, b: Study) -> None:
    """Everything a study folder stores is equal (arrays exactly; images pixel by pixel)."""
    assert a.name == b.name and a.space == b.space and a.tr == b.tr
    sa, sb = a.stimuli, b.stimuli
    assert list(sa.ids) == list(sb.ids)
    assert sa.captions == sb.captions
    assert sa.categories == sb.categories
    if sa.test is None:
        assert sb.test is None
    else:
        np.testing.assert_array_equal(sa.test, sb.test)
    assert sa.has_images == sb.has_images
    for i in range(len(sa)):
        if sa.pixels is not None or sa.image_paths[i] is not None:
            np.testing.assert_array_equal(image_array(sa, i), image_array(sb, i))
        else:
            assert sb.image_paths[i] is None
    assert list(sa.embeddings) == list(sb.embeddings)
    for name, ea in sa.embeddings.items():
        eb = sb.embeddings[name]
        assert (ea.model, ea.kind, ea.normalized) == (eb.model, eb.kind, eb.normalized)
        np.testing.assert_array_equal(ea.values, eb.values)
    assert list(a.subjects) == list(b.subjects)
    for name, x in a.subjects.items():
        y = b.subjects[name]
        np.testing.assert_array_equal(x.responses, y.responses)
        assert y.responses.dtype == np.float32
        np.testing.assert_array_equal(x.mask, y.mask)
        np.testing.assert_array_equal(x.affine, y.affine)
        assert list(x.stimulus_ids) == list(y.stimulus_ids)
        np.testing.assert_array_equal(x.sessions, y.sessions)
        for attr in ("anat", "anat_affine", "to_common", "ncsnr"):
            va, vb = getattr(x, attr), getattr(y, attr)
            if va is None:
                assert vb is None, attr
            else:
                np.testing.assert_array_equal(va, vb, err_msg=attr)
        assert sorted(x.rois) == sorted(y.rois)
        for rname, ra in x.rois.items():
            np.testing.assert_array_equal(ra.labels, y.rois[rname].labels)
            assert ra.names == y.rois[rname].names
    if a.truth is None:
        assert b.truth is None
    else:
        _assert_same_tree(a.truth, b.truth)
