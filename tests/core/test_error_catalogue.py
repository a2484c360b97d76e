"""The error catalogue of docs/errors.md ("Decoding, models, results, scheduler, NSD, parameters"):
every bad input gives one InputError naming the file or parameter, the problem and the fix.

Each case builds its bad input small and calls the real reader, estimator or step function; the
command-line cases check that ``brain-concepts`` prints that message on one line and exits 2.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from napari_brain_concepts.cli import main
from napari_brain_concepts.core.errors import InputError

from .nsd_fixture import make_nsd_tree


# ------------------------------------------------------------------------------------------ helpers
def _experiment(n_stim=40, reps=3, n_vox=12, d=6, n_sessions=3, seed=0):
    """Single-trial responses, stimulus rows, sessions and an embedding (decoding inputs)."""
    rng = np.random.default_rng(seed)
    rows = np.tile(np.arange(n_stim), reps)
    rng.shuffle(rows)
    E = rng.normal(size=(n_stim, d)).astype(np.float32)
    R = (E[rows] @ rng.normal(size=(d, n_vox)) + rng.normal(size=(len(rows), n_vox))).astype(np.float32)
    sessions = np.repeat(np.arange(n_sessions), len(rows) // n_sessions + 1)[:len(rows)]
    return R, rows, sessions, E


def _prepare(**change):
    from napari_brain_concepts.core.decoding.prepare import prepare_arrays

    R, rows, sessions, E = _experiment()
    args = {"responses": R, "stimulus_rows": rows, "embedding": E, "sessions": sessions}
    for key, fn in change.items():
        args[key] = fn(args[key]) if callable(fn) else fn
    return prepare_arrays(args.pop("responses"), args.pop("stimulus_rows"), args.pop("embedding"), **args)


def _with(arr, index, value):
    arr = np.array(arr, copy=True)
    arr[index] = value
    return arr


def _zero_session(R):
    _, _, sessions, _ = _experiment()
    return _with(R, sessions == 1, 0.0)


def _ridge():
    from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

    R, rows, _, E = _experiment()
    return RidgeDecoder(alphas=[1.0, 10.0], cv=3, device="cpu").fit(R, E[rows]), R, E[rows]


def _fitted_decoder_wrong_dimension():
    model, X, Y = _ridge()
    model.score(X, Y[:, :4])


def _fitted_decoder_wrong_voxels():
    model, X, _ = _ridge()
    model.predict(X[:, :5])


def _basis(k, d=8):
    from napari_brain_concepts.core.concepts.basis import ConceptBasis

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(30, d)).astype(np.float32)
    ConceptBasis(k, n_iter=2, device="cpu").fit(Y, Y + 0.1 * rng.normal(size=Y.shape).astype(np.float32))


def _shared(eps):
    from napari_brain_concepts.core.concepts.shared import SharedConceptClustering

    rng = np.random.default_rng(0)
    SharedConceptClustering(eps=eps).fit({"s1": rng.normal(size=(6, 20)), "s2": rng.normal(size=(6, 20))})


def _voxel_mask(**params):
    from napari_brain_concepts.core.concepts.masks import VoxelMaskOptimizer

    model, X, Y = _ridge()
    dirs = np.eye(Y.shape[1], dtype=np.float32)[:2]
    VoxelMaskOptimizer(n_steps=2, device="cpu", **params).fit(X, Y, dirs, model, X_val=X[:30], Y_val=Y[:30])


def _ridge_alphas(alphas):
    from napari_brain_concepts.core.decoding.ridge import RidgeDecoder

    R, rows, _, E = _experiment()
    RidgeDecoder(alphas=alphas, device="cpu").fit(R, E[rows])


def _searchlight_radius(radius):
    from napari_brain_concepts.core.alignment.searchlight import searchlight_rsa
    from napari_brain_concepts.core.progress import run_to_end

    mask = np.ones((4, 4, 4), bool)
    rng = np.random.default_rng(0)
    run_to_end(searchlight_rsa(rng.normal(size=(6, 64)), mask, {"m": rng.normal(size=(6, 3))}, radius=radius))


def _contrastive_temperature():
    from napari_brain_concepts.core.decoding.contrastive import ContrastiveDecoder

    R, rows, _, E = _experiment()
    ContrastiveDecoder(temperature=0.0, max_iter=2, device="cpu").fit(R, E[rows])


def _text_model(tmp: Path, kind: str):
    from napari_brain_concepts.core.embeddings.text import SentenceEncoder

    folder = tmp / "model"
    if kind != "missing":
        folder.mkdir()
    if kind == "weights":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    SentenceEncoder(folder, device="cpu", cache=False)


SMALL_NET = dict(channels=(8, 16), image_size=24, pool_grid=2, batch_size=16, device="cpu")


def _network_checkpoint(tmp: Path, kind: str):
    import torch

    from napari_brain_concepts.core.alignment.image_networks import ImageToTextNetwork

    path = tmp / "net.pt"
    if kind == "other-architecture":
        ImageToTextNetwork(**SMALL_NET).init(4).save_checkpoint(path)
        ImageToTextNetwork(**{**SMALL_NET, "channels": (8, 32)}).load_checkpoint(path)
    elif kind == "foreign":
        torch.save({"conv1.weight": torch.zeros(3)}, path)
        ImageToTextNetwork.from_checkpoint(path)
    else:
        path.write_bytes(b"not a checkpoint")
        ImageToTextNetwork.from_checkpoint(path)


TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def _clip_other_architecture(tmp: Path):
    import open_clip
    import torch

    from napari_brain_concepts.core.embeddings.clip import load_clip

    (tmp / "cat-tiny.json").write_text(json.dumps(TINY_CLIP))
    (tmp / "cat-tiny-wide.json").write_text(json.dumps({**TINY_CLIP, "embed_dim": 48}))
    open_clip.add_model_config(tmp)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("cat-tiny", pretrained=None).state_dict(), tmp / "tiny.pt")
    load_clip("cat-tiny-wide", tmp / "tiny.pt", config=tmp, device="cpu")


def _results_newer(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    ResultsStore.create(tmp / "results")
    manifest = tmp / "results" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 99}))
    ResultsStore.open(tmp / "results")


def _results_other_parameters(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    ResultsStore.create(tmp / "results", parameters={"decode": {"cv": 3}})
    ResultsStore.create(tmp / "results", parameters={"decode": {"cv": 5}}, resume=True)


def _results_other_study(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    ResultsStore.create(tmp / "results", study="synthetic-default-seed0")
    ResultsStore.create(tmp / "results", study="synthetic-tiny-seed0", resume=True)


def _results_into_the_study(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    (tmp / "study").mkdir()
    (tmp / "study" / "study.json").write_text("{}")
    ResultsStore.create(tmp / "study")


def _results_into_the_study_data(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    (tmp / "study" / "subjects").mkdir(parents=True)
    (tmp / "study" / "study.json").write_text("{}")
    ResultsStore.create(tmp / "study" / "derivatives" / "results")  # beside the data: fine
    ResultsStore.create(tmp / "study" / "subjects" / "results")


def _map_named_with_a_slash(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    ResultsStore.create(tmp / "results").write_map("sub-01", "corr_indoor/outdoor", np.zeros((2, 2, 2)), np.eye(4))


def _int16_overflow(tmp: Path):
    from napari_brain_concepts.core.io.results import ResultsStore

    store = ResultsStore.create(tmp / "results")
    store.write_shared("face", np.full((2, 2, 2), 40000), np.eye(4))


def _free_port() -> int:
    with socket.socket() as s:                                  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scheduler_silent():
    from napari_brain_concepts.core.distributed import connect

    connect(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1.0)


def _nsd_root(tmp: Path) -> Path:
    make_nsd_tree(tmp, subjects=(1,), n_sessions=2, n_sessions_design=3, trials_per_session=30, n_images=120,
                  image_size=8)
    return tmp


BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


def _nsd_truncated(tmp: Path):
    from napari_brain_concepts.core.io.nsd import read_nsd

    path = _nsd_root(tmp) / BETAS / "betas_session02.hdf5"
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    read_nsd(tmp, 1)


def _nsd(tmp: Path, **kwargs):
    from napari_brain_concepts.core.io.nsd import read_nsd

    read_nsd(_nsd_root(tmp), **kwargs)


# ------------------------------------------------------------------------------------------ the catalogue
# (id, function of a temporary folder that must raise, regex the message must match)
CASES = [
    # decoding inputs (core/decoding/prepare.py)
    ("nan-responses", lambda t: _prepare(responses=lambda R: _with(R, (2, 3), np.nan)),
     r"responses: contain NaN or Inf \(first at trial 2, voxel 3\)"),
    ("inf-responses", lambda t: _prepare(responses=lambda R: _with(R, (0, 0), np.inf)),
     r"responses: contain NaN or Inf \(first at trial 0, voxel 0\)"),
    ("all-zero-session", lambda t: _prepare(responses=_zero_session, subject="s1"),
     r"^subject s1 responses: session 1 holds the same value \(0\) in every voxel and trial"),
    ("constant-voxels-only", lambda t: _prepare(responses=lambda R: _with(R, (slice(None), slice(0, 3)), 2.5),
                                                voxel_mask=np.arange(12) < 3),
     r"voxel selection: keeps no voxel"),
    ("n-voxels-zero", lambda t: _prepare(n_voxels=0), r"parameter n_voxels: 0 keeps no voxel\. Fix: keep at least 1"),
    ("test-column-marks-none", lambda t: _prepare(test_flags=np.zeros(40, bool), subject="s1"),
     r"stimuli\.tsv column 'test': marks none of the stimuli subject s1 saw as test"),
    ("test-column-marks-all", lambda t: _prepare(test_flags=np.ones(40, bool), subject="s1"),
     r"stimuli\.tsv column 'test': the split of subject s1 leaves 0 training and 40 test stimuli\. "
     r"Fix: mark fewer stimuli as test"),
    ("embedding-rows-not-stimuli", lambda t: _prepare(embedding=lambda E: E[:10]),
     r"embedding 'embedding': has 10 rows but trials refer to stimulus row 39"),
    ("trial-rows-not-responses", lambda t: _prepare(stimulus_rows=lambda r: r[:-1]),
     r"trials: 119 stimulus rows for 120 response trials"),
    # fitted decoders (core/decoding/ridge.py)
    ("decoder-wrong-embedding-dim", lambda t: _fitted_decoder_wrong_dimension(),
     r"parameter Y: has 4 columns, the decoder was fitted on 6-d targets"),
    ("decoder-wrong-voxels", lambda t: _fitted_decoder_wrong_voxels(),
     r"data to predict from: X has 5 features, but RidgeDecoder is expecting 12 features as input"),
    # models from disk (core/embeddings/text.py, clip.py, core/alignment/image_networks.py)
    ("model-folder-missing", lambda t: _text_model(t, "missing"), r"sentence-model folder does not exist"),
    ("model-folder-not-a-model", lambda t: _text_model(t, "empty"),
     r"is not a Hugging Face model folder \(no config.json\)"),
    ("model-folder-no-weights", lambda t: _text_model(t, "weights"), r"holds no model weights"),
    ("network-checkpoint-other-architecture", lambda t: _network_checkpoint(t, "other-architecture"),
     r"net\.pt: is a checkpoint of another architecture \(channels: checkpoint \[8, 16\] vs network \[8, 32\]\)"),
    ("network-checkpoint-foreign", lambda t: _network_checkpoint(t, "foreign"),
     r"net\.pt: is not an image-network checkpoint of this package"),
    ("network-checkpoint-garbage", lambda t: _network_checkpoint(t, "garbage"),
     r"net\.pt: cannot be read as a torch checkpoint"),
    ("clip-checkpoint-other-architecture", _clip_other_architecture,
     r"tiny\.pt: does not match open_clip model 'cat-tiny-wide'"),
    # results folders (core/io/results.py)
    ("results-newer-version", _results_newer,
     r"manifest\.json: was written by a newer version of the format \(99 > 1\)"),
    ("results-resume-other-parameters", _results_other_parameters, r"manifest\.json: was written with other parameters"),
    ("results-resume-other-study", _results_other_study,
     r"manifest\.json: holds the results of study 'synthetic-default-seed0', not of 'synthetic-tiny-seed0'"),
    ("results-into-the-study-folder", _results_into_the_study, r"study: is a study folder \(it holds study\.json\)"),
    ("results-into-the-study-data", _results_into_the_study_data,
     r"study/subjects/results: is inside the subjects/ folder of the study folder .*study, which its reader reads"),
    ("results-map-name-with-a-slash", _map_named_with_a_slash,
     r"map 'corr_indoor/outdoor': cannot name a file of the results folder"),
    ("int16-overflow", _int16_overflow, r"face\.nii\.gz: values up to 40000 do not fit int16"),
    # distributed (core/distributed.py)
    ("scheduler-silent", lambda t: _scheduler_silent(), r"parameter scheduler: no dask scheduler answers at"),
    # NSD (core/io/nsd.py)
    ("nsd-truncated-hdf5", _nsd_truncated, r"betas_session02\.hdf5: cannot be read .*truncated"),
    ("nsd-missing-session", lambda t: _nsd(t, subject=1, sessions=[1, 3]),
     r"betas_session03\.hdf5: session 3 of subj01 is missing"),
    ("nsd-subject-out-of-range", lambda t: _nsd(t, subject=9), r"parameter subject: .* is outside 1\.\.8"),
    ("nsd-not-a-root", lambda t: __import__("napari_brain_concepts.core.io.nsd", fromlist=["read_nsd"]
                                            ).read_nsd(t, 1),
     r"nsd_expdesign\.mat: NSD experimental design file is missing"),
    # parameters out of range
    ("eps-above-2", lambda t: _shared(3.0), r"parameter eps: 3\.0 is outside \(0\.0, 2\.0\]"),
    ("eps-zero", lambda t: _shared(0.0), r"parameter eps: 0\.0 is outside \(0\.0, 2\.0\]"),
    ("K-zero", lambda t: _basis(0), r"parameter n_components: 0 is not a positive integer"),
    ("K-above-dimension", lambda t: _basis(9), r"larger than the embedding dimension 8"),
    ("sparsity-negative", lambda t: _voxel_mask(sparsity=-1.0), r"parameter sparsity"),
    ("alphas-zero", lambda t: _ridge_alphas([0.0, 1.0]), r"parameter alphas: .* is not a list of positive numbers"),
    ("alphas-negative", lambda t: _ridge_alphas([-1.0]), r"parameter alphas: .* is not a list of positive numbers"),
    ("radius-zero", lambda t: _searchlight_radius(0), r"parameter radius"),
    ("temperature-zero", lambda t: _contrastive_temperature(), r"parameter temperature"),
]


@pytest.mark.parametrize(("make", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_catalogue(tmp_path, make, pattern):
    with pytest.raises(InputError, match=pattern) as err:
        make(tmp_path)
    message = str(err.value)
    assert "Fix:" in message and "\n" not in message


def test_catalogue_has_at_least_25_bad_inputs():
    assert len(CASES) >= 25


def test_some_constant_voxels_are_a_warning_not_an_error():
    with pytest.warns(UserWarning, match="3 of 12 voxel\\(s\\) are constant"):
        data = _prepare(responses=lambda R: _with(R, (slice(None), slice(0, 3)), 2.5))
    assert list(data.dropped_constant) == [0, 1, 2]


# ------------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory) -> Path:
    return _nsd_root(tmp_path_factory.mktemp("nsd"))


def _one_line_exit_2(capsys, argv: list[str], pattern: str) -> None:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()      # progress bars of model loading may come first
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2
    assert len(errors) == 1 and lines[-1] == errors[0] and "Fix:" in errors[0], lines
    assert re.search(pattern, errors[0]), errors[0]


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--subject", "9"], r"parameter subject: .* is outside 1\.\.8"),
    (["--subject", "1", "--sessions", "1", "3"], r"betas_session03\.hdf5: session 3 of subj01 is missing"),
    ([], r"--subject: is required with --nsd"),
    (["--subject", "1", "--sessions", "1", "--param", "cv=3"], r"--param cv=3: is not of the form STEP.NAME=VALUE"),
], ids=["subject-9", "missing-session", "no-subject", "param-form"])
def test_cli_nsd_errors_are_one_line_and_exit_2(nsd_root, tmp_path, capsys, extra, pattern):
    _one_line_exit_2(capsys, ["run", "--nsd", str(nsd_root), *extra, "--out", str(tmp_path / "o"), "--quiet"],
                     pattern)


def test_cli_results_of_a_newer_version(nsd_root, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"version": 7, "steps": {}}))
    _one_line_exit_2(capsys, ["run", "--nsd", str(nsd_root), "--subject", "1", "--sessions", "1", "--out", str(out),
                              "--resume", "--quiet"], r"manifest\.json: was written by a newer version")


def test_cli_model_folder_that_is_not_a_model(nsd_root, tmp_path, capsys):
    empty = tmp_path / "nomodel"
    empty.mkdir()
    _one_line_exit_2(capsys, ["embed", "--nsd", str(nsd_root), "--subject", "1", "--sessions", "1",
                              "--param", f"embed.model={empty}", "--out", str(tmp_path / "o"), "--quiet"],
                     r"nomodel: is not a Hugging Face model folder")
