"""Study folder: round trip through write_study/read_study, and one clear error per bad input."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.study_folder import is_study_folder, read_study, write_study
from napari_brain_concepts.core.study import Embedding, Stimuli, Study, Subject

from ._studies import ANAT_AFFINE, assert_same_study, small_study

SUB = Path("subjects") / "sub-01"


# ------------------------------------------------------------------------------------------------
# round trip
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("responses_format", ["npy", "nifti"])
def test_round_trip_hand_built_study(tmp_path, responses_format):
    study = small_study()
    out = write_study(study, tmp_path / "study", responses_format=responses_format)
    expected = "responses.npy" if responses_format == "npy" else "responses.nii.gz"
    assert (out / SUB / expected).is_file()
    assert is_study_folder(out)
    back = read_study(out)
    assert back.path == out
    assert back.stimuli.pixels is None and back.stimuli.root == out
    assert all(p is not None and p.startswith("images/") for p in back.stimuli.image_paths)
    assert_same_study(study, back)
    # the default embedding (the first) survives too
    assert back.embedding().name == "captions"


def test_round_trip_of_a_read_study_copies_its_images(tmp_path):
    first = read_study(write_study(small_study(pixels=True), tmp_path / "a"))
    second = read_study(write_study(first, tmp_path / "b"))
    assert_same_study(first, second)
    assert all((tmp_path / "b" / p).is_file() for p in second.stimuli.image_paths)


def test_images_of_a_lazy_image_source_are_written(tmp_path):
    study = small_study()
    pixels = study.stimuli.pixels
    study.stimuli.pixels = None
    study.stimuli.image_source = lambda i: pixels[i]
    back = read_study(write_study(study, tmp_path / "study"))
    for i in range(len(pixels)):
        np.testing.assert_array_equal(np.asarray(back.stimuli.image(i)), pixels[i])


def test_round_trip_without_optional_parts(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.ones((2, 3, 2), dtype=bool)
    stimuli = Stimuli(ids=np.asarray(["a", "b"], dtype=object), captions=[[], []])
    subject = Subject("s1", rng.normal(size=(2, 12)).astype(np.float32), mask, np.eye(4), ["b", "a"])
    study = Study("bare", stimuli, {"s1": subject})
    back = read_study(write_study(study, tmp_path / "bare"))
    assert_same_study(study, back)
    header = (tmp_path / "bare" / "stimuli.tsv").read_text().splitlines()[0]
    assert header == "stimulus_id"


def test_round_trip_synthetic_study(tmp_path):
    synthetic = pytest.importorskip("napari_brain_concepts.core.synthetic",
                                    reason="core/synthetic.py is not there yet")
    # the tiny preset cut to 2 subjects and 40 stimuli, two embeddings (the format stores any embedding
    # the same way, so the feature-derived one spares loading the sentence model here)
    study = synthetic.make_synthetic_study(seed=0, size="tiny", n_subjects=2, n_stimuli=40, embedding="features",
                                           include_feature_embedding=True)
    back = read_study(write_study(study, tmp_path / "synthetic"))
    assert_same_study(study, back)
    assert set(back.truth["regions"]) == set(study.subjects)
    assert list(back.stimuli.embeddings) == list(study.stimuli.embeddings)


@pytest.mark.parametrize("odd", ["tab\there", "new\nline", "carriage\rreturn", 'a "quoted" word', " padded "])
def test_text_with_separators_round_trips(tmp_path, odd):
    rng = np.random.default_rng(0)
    stimuli = Stimuli(ids=np.asarray([odd, "plain"], dtype=object), captions=[[odd, "x"], [odd]],
                      categories=[[odd.strip()], []])
    subject = Subject("s1", rng.normal(size=(2, 2)).astype(np.float32), np.ones((1, 2, 1), bool), np.eye(4),
                      [odd, "plain"])
    study = Study("odd", stimuli, {"s1": subject})
    assert_same_study(study, read_study(write_study(study, tmp_path / "s")))


def test_anat_on_its_own_grid_is_kept_or_resampled(tmp_path):
    out = write_study(small_study(), tmp_path / "study")
    kept = read_study(out).subjects["sub-01"]
    assert kept.anat.shape == (10, 12, 8)
    np.testing.assert_array_equal(kept.anat_affine, ANAT_AFFINE)
    resampled = read_study(out, resample_anat=True).subjects["sub-01"]
    assert resampled.anat.shape == resampled.mask.shape
    np.testing.assert_array_equal(resampled.anat_affine, resampled.affine)
    assert np.isfinite(resampled.anat).all()


def test_anatomy_with_nan_background_is_shown_as_zero(tmp_path):
    out = write_study(small_study(), tmp_path / "study")
    anat = nib.load(out / SUB / "anat.nii.gz")
    data = np.asanyarray(anat.dataobj).copy()
    data[0] = np.nan
    nib.save(nib.Nifti1Image(data, anat.affine), out / SUB / "anat.nii.gz")
    with pytest.warns(UserWarning, match=r"anat.nii.gz: 96 NaN/Inf voxels of the anatomy are shown as 0"):
        subject = read_study(out).subjects["sub-01"]
    assert np.all(subject.anat[0] == 0)
    np.testing.assert_array_equal(subject.anat[1:], data[1:])


def test_trials_are_put_in_trial_order(tmp_path):
    out = write_study(small_study(), tmp_path / "study")
    path = out / SUB / "trials.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str)
    table.iloc[::-1].to_csv(path, sep="\t", index=False)
    np.testing.assert_array_equal(read_study(out).subjects["sub-01"].stimulus_ids,
                                  small_study().subjects["sub-01"].stimulus_ids)


def test_a_hand_written_study_with_a_4d_responses_file(tmp_path):
    """A folder written by hand (no writer): 4D responses, no trial/session columns, one caption column."""
    root = tmp_path / "hand"
    (root / SUB).mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"name": "hand", "space": "MNI152", "version": 1}))
    (root / "stimuli.tsv").write_text("stimulus_id\tcaption\tcategories\n7\ta dog\tanimal; pet\n"
                                      "08\ta cat\t\n")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = np.zeros((3, 3, 3), dtype=np.uint8)
    mask[1, :, 1] = 1
    responses = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(mask, affine), root / SUB / "mask.nii.gz")
    nib.save(nib.Nifti1Image(responses, affine), root / SUB / "responses.nii.gz")
    (root / SUB / "trials.tsv").write_text("stimulus_id\n7\n08\n08\n7\n")
    study = read_study(root / "study.json")
    subject = study.subjects["sub-01"]
    # the same tables saved by a spreadsheet on Windows (byte-order mark, CRLF line ends) read the same
    for rel in ("study.json", "stimuli.tsv", SUB / "trials.tsv"):
        text = (root / rel).read_text()
        (root / rel).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert_same_study(study, read_study(root))
    np.testing.assert_array_equal(subject.responses, responses[mask.astype(bool)].T)
    assert list(study.stimuli.ids) == ["7", "08"]  # ids stay text: "08" is not the number 8
    assert study.stimuli.categories == [["animal", "pet"], []]
    assert study.stimuli.captions == [["a dog"], ["a cat"]]
    assert study.space == "MNI152" and study.tr is None
    np.testing.assert_array_equal(study.trial_rows(subject), [0, 1, 1, 0])


# ------------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------------
def test_writer_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = write_study(small_study(), tmp_path / "study")
    with pytest.raises(InputError, match="already exists.*overwrite=True"):
        write_study(small_study(seed=1), out)
    (out / "subjects" / "sub-99").mkdir()  # stale content must not survive an overwrite
    write_study(small_study(seed=1), out, overwrite=True)
    assert not (out / "subjects" / "sub-99").exists()
    assert_same_study(small_study(seed=1), read_study(out))
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no staging or backup folder left


def test_failed_write_leaves_the_old_study_intact(tmp_path):
    out = write_study(small_study(), tmp_path / "study")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = small_study(seed=1)
    broken.truth["model"] = object()  # written last: every other file is already in the staging folder
    with pytest.raises(InputError, match=r"truth\['model'\].*cannot store"):
        write_study(broken, out, overwrite=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["study"]


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.subjects.update({"../evil": s.subjects.pop("sub-01")}), "subject name '../evil'"),
    (lambda s: s.stimuli.embeddings.update({".hidden": s.stimuli.embeddings["captions"]}), "embedding name"),
    (lambda s: s.stimuli.categories.__setitem__(0, ["a;b"]), "contains ';'"),
    (lambda s: s.stimuli.categories.__setitem__(0, ["indoor/outdoor"]), "category 'indoor/outdoor' contains '/'"),
], ids=["subject-name", "embedding-name", "category-semicolon", "category-slash"])
def test_writer_rejects_what_the_format_cannot_hold(tmp_path, mutate, match):
    study = small_study()
    mutate(study)
    with pytest.raises(InputError, match=match):
        write_study(study, tmp_path / "study")
    assert not (tmp_path / "study").exists()


def test_written_study_gets_the_usual_permissions(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file").write_text("x")
    out = write_study(small_study(), tmp_path / "study")
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert (out / "study.json").stat().st_mode == (tmp_path / "plain" / "file").stat().st_mode
    assert (out / SUB / "mask.nii.gz").stat().st_mode == (tmp_path / "plain" / "file").stat().st_mode


def test_writer_refuses_a_file_as_target(tmp_path):
    (tmp_path / "study").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        write_study(small_study(), tmp_path / "study")


def test_writer_rejects_an_unknown_responses_format(tmp_path):
    with pytest.raises(InputError, match="responses_format"):
        write_study(small_study(), tmp_path / "s", responses_format="hdf5")


# ------------------------------------------------------------------------------------------------
# bad input: one InputError naming the file, the problem and the fix
# ------------------------------------------------------------------------------------------------
def _json(root, rel, **changes):
    path = root / rel
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def _tsv(root, rel, edit):
    path = root / rel
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(table).to_csv(path, sep="\t", index=False)


def _nifti(root, rel, data, affine=None):
    path = root / rel
    affine = nib.load(root / SUB / "mask.nii.gz").affine if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)


def _mask(root):
    return np.asarray(nib.load(root / SUB / "mask.nii.gz").dataobj)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _uncompressed_truncated(path):
    """Rewrite path (.nii.gz) as an uncompressed .nii cut off inside its data."""
    img = nib.load(path)
    plain = path.with_name(path.name[:-3])
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), plain)
    path.unlink()
    _truncate(plain, 0.8)


def _set_cell(column, row, value):
    def edit(table):
        table.loc[row, column] = value
        return table
    return edit


def _responses_nifti(root):
    """Replace responses.npy by the equivalent 4D responses.nii.gz."""
    resp = np.load(root / SUB / "responses.npy")
    mask = _mask(root).astype(bool)
    vol = np.zeros((*mask.shape, resp.shape[0]), np.float32)
    vol[mask] = resp.T
    (root / SUB / "responses.npy").unlink()
    return vol


def _resp_nifti_with(edit):
    def mutate(root):
        vol = _responses_nifti(root)
        vol, affine = edit(vol, nib.load(root / SUB / "mask.nii.gz").affine)
        _nifti(root, SUB / "responses.nii.gz", vol, affine)
    return mutate


def _shifted(affine):
    affine = affine.copy()
    affine[0, 3] += 2.0
    return affine


def _npy(root, rel, array):
    np.save(root / rel, array)


BAD_INPUTS = [
    # study.json
    ("study-json-missing", lambda r: (r / "study.json").unlink(), "study.json", "study.json is missing"),
    ("study-json-bad-json", lambda r: (r / "study.json").write_text('{"name": "x",'), "study.json",
     "is not valid JSON"),
    ("study-json-not-object", lambda r: (r / "study.json").write_text("[1, 2]"), "study.json",
     "expected an object"),
    ("study-json-version", lambda r: _json(r, "study.json", version=2), "study.json",
     "format version 2 is not supported"),
    ("study-json-version-text", lambda r: _json(r, "study.json", version="1"), "study.json",
     "format version '1' is not supported"),
    ("study-json-tr", lambda r: _json(r, "study.json", tr=-1), "study.json", '"tr" is -1'),
    ("study-json-name", lambda r: _json(r, "study.json", name=3), "study.json", '"name" is 3'),
    ("study-json-subject-order", lambda r: _json(r, "study.json", subjects="sub-01"), "study.json",
     '"subjects" is'),
    # stimuli.tsv
    ("stimuli-missing", lambda r: (r / "stimuli.tsv").unlink(), "stimuli.tsv", "stimuli.tsv is missing"),
    ("stimuli-empty-file", lambda r: (r / "stimuli.tsv").write_text(""), "stimuli.tsv", "is empty"),
    ("stimuli-no-rows", lambda r: (r / "stimuli.tsv").write_text("stimulus_id\tcaption_1\n"), "stimuli.tsv",
     "lists no stimuli"),
    ("stimuli-no-id-column", lambda r: _tsv(r, "stimuli.tsv", lambda t: t.rename(columns={"stimulus_id": "id"})),
     "stimuli.tsv", "has no column 'stimulus_id'"),
    ("stimuli-comma-separated", lambda r: (r / "stimuli.tsv").write_text(
        (r / "stimuli.tsv").read_text().replace("\t", ",")), "stimuli.tsv",
     "is comma-separated, not tab-separated (header: stimulus_id,"),
    ("stimuli-categories-with-commas", lambda r: _tsv(r, "stimuli.tsv", lambda t: t.assign(
        categories=t["categories"].str.replace(";", ","))), "stimuli.tsv",
     "column 'categories' separates categories with ',' (row 3: 'face,body')"),
    ("stimuli-category-with-a-slash", lambda r: _tsv(r, "stimuli.tsv", lambda t: t.assign(
        categories=t["categories"].str.replace("body", "indoor/outdoor"))), "stimuli.tsv",
     "row 3 has the category 'indoor/outdoor', which holds a slash"),
    ("stimuli-duplicate-id", lambda r: _tsv(r, "stimuli.tsv", _set_cell("stimulus_id", 2, "img-000")),
     "stimuli.tsv", "'img-000' appears twice (rows 2 and 4)"),
    ("stimuli-empty-id", lambda r: _tsv(r, "stimuli.tsv", _set_cell("stimulus_id", 1, " ")), "stimuli.tsv",
     "row 3 has an empty stimulus_id"),
    ("stimuli-ragged-row", lambda r: (r / "stimuli.tsv").write_text(
        (r / "stimuli.tsv").read_text() + "img-extra\ta\tb\tc\td\te\tf\tg\n"), "stimuli.tsv",
     "cannot be parsed as a tab-separated table"),
    ("stimuli-test-flag", lambda r: _tsv(r, "stimuli.tsv", _set_cell("test", 0, "yes")), "stimuli.tsv",
     "column 'test' holds 'yes' at row 2"),
    ("image-missing", lambda r: (r / "images" / "img-004.png").unlink(), "images/img-004.png",
     "image file of stimulus 'img-004' (stimuli.tsv row 6) is missing"),
    ("image-not-an-image", lambda r: (r / "images" / "img-004.png").write_text("not a picture"),
     "images/img-004.png", "image of stimulus 'img-004' (stimuli.tsv row 6) cannot be read"),
    # embeddings
    ("embedding-rows", lambda r: _npy(r, "embeddings/captions.npy", np.zeros((5, 8), np.float32)),
     "embeddings/captions.npy", "has 5 rows but stimuli.tsv lists 6 stimuli"),
    ("embedding-nan", lambda r: _npy(r, "embeddings/captions.npy", np.full((6, 8), np.nan, np.float32)),
     "embeddings/captions.npy", "contains NaN or Inf"),
    ("embedding-int", lambda r: _npy(r, "embeddings/captions.npy", np.zeros((6, 8), np.int64)),
     "embeddings/captions.npy", "has dtype int64"),
    ("embedding-1d", lambda r: _npy(r, "embeddings/captions.npy", np.zeros(6, np.float32)),
     "embeddings/captions.npy", "expected 2D"),
    ("embedding-corrupt", lambda r: _truncate(r / "embeddings" / "captions.npy"), "embeddings/captions.npy",
     "cannot be read as a numeric .npy array"),
    ("embedding-bad-header", lambda r: (r / "embeddings" / "captions.npy").write_bytes(
        (r / "embeddings" / "captions.npy").read_bytes().replace(b"'descr'", b"('descr")),
     "embeddings/captions.npy", "cannot be read as a numeric .npy array"),
    ("embedding-kind", lambda r: _json(r, "embeddings/captions.json", kind="audio"), "embeddings/captions.json",
     "\"kind\" is 'audio'"),
    ("embedding-json", lambda r: (r / "embeddings" / "captions.json").write_text("{"), "embeddings/captions.json",
     "is not valid JSON"),
    ("embedding-listed-missing", lambda r: _json(r, "study.json", embeddings=["captions", "clip"]),
     "embeddings/clip.npy", "embedding listed in study.json is missing"),
    ("embedding-orphan-json", lambda r: (r / "embeddings" / "captions.npy").unlink(), "embeddings/captions.json",
     "has no matching captions.npy"),
    # subjects
    ("subjects-missing", lambda r: shutil.rmtree(r / "subjects"), "subjects", "subjects folder is missing"),
    ("subjects-empty", lambda r: [shutil.rmtree(p) for p in (r / "subjects").iterdir()], "subjects",
     "holds no subject folder"),
    ("subject-listed-missing", lambda r: shutil.rmtree(r / "subjects" / "sub-02"), "subjects/sub-02",
     "subject listed in study.json has no folder"),
    ("mask-missing", lambda r: (r / SUB / "mask.nii.gz").unlink(), SUB / "mask.nii.gz", "mask file is missing"),
    ("mask-4d", lambda r: _nifti(r, SUB / "mask.nii.gz", np.stack([_mask(r)] * 2, -1)), SUB / "mask.nii.gz",
     "mask has 4 dimensions (5, 6, 4, 2), expected 3"),
    ("mask-empty", lambda r: _nifti(r, SUB / "mask.nii.gz", np.zeros_like(_mask(r))), SUB / "mask.nii.gz",
     "mask is empty"),
    ("mask-nan", lambda r: _nifti(r, SUB / "mask.nii.gz", np.where(_mask(r) > 0, np.nan, 0).astype(np.float32)),
     SUB / "mask.nii.gz", "mask contains NaN or Inf"),
    ("mask-not-nifti", lambda r: (r / SUB / "mask.nii.gz").write_text("not an image"), SUB / "mask.nii.gz",
     "cannot be read as NIfTI"),
    ("mask-truncated", lambda r: _truncate(r / SUB / "mask.nii.gz"), SUB / "mask.nii.gz",
     "cannot be read as NIfTI"),
    ("mask-truncated-nii", lambda r: _uncompressed_truncated(r / SUB / "mask.nii.gz"), SUB / "mask.nii",
     "cannot be read as NIfTI"),
    ("responses-missing", lambda r: (r / SUB / "responses.npy").unlink(), SUB / "responses.nii.gz",
     "responses are missing"),
    ("responses-both", lambda r: _nifti(r, SUB / "responses.nii.gz", _responses_nifti(r)) or
     shutil.copy(r / "subjects" / "sub-02" / "responses.npy", r / SUB / "responses.npy"), SUB,
     "holds both responses.nii.gz and responses.npy"),
    ("responses-npy-voxels", lambda r: _npy(r, SUB / "responses.npy", np.zeros((9, 5), np.float32)),
     SUB / "responses.npy", "has 5 voxel columns but mask.nii.gz has 36 nonzero voxels"),
    ("responses-npy-transposed", lambda r: _npy(r, SUB / "responses.npy", np.zeros((36, 9), np.float32)),
     SUB / "responses.npy", "has shape (36, 9): 36 rows, as many as mask.nii.gz has nonzero voxels; it looks "
     "transposed"),
    ("responses-npy-3d", lambda r: _npy(r, SUB / "responses.npy", np.zeros((9, 36, 1), np.float32)),
     SUB / "responses.npy", "expected (n_trials, n_voxels)"),
    ("responses-npy-nan", lambda r: _npy(r, SUB / "responses.npy",
                                         np.where(np.eye(9, 36) > 0, np.nan, 0).astype(np.float32)),
     SUB / "responses.npy", "responses contain NaN or Inf (9 values; first at trial 0, voxel (1, 1, 1))"),
    ("responses-nifti-inf", _resp_nifti_with(lambda v, a: (np.where(np.arange(9) == 4, np.inf, v), a)),
     SUB / "responses.nii.gz", "first at trial 4"),
    ("responses-nifti-grid", _resp_nifti_with(lambda v, a: (v[:-1], a)), SUB / "responses.nii.gz",
     "grid (4, 6, 4) differs from mask.nii.gz's (5, 6, 4)"),
    ("responses-nifti-trials-first", _resp_nifti_with(lambda v, a: (np.moveaxis(v, -1, 0), a)),
     SUB / "responses.nii.gz", "grid (9, 5, 6) differs from mask.nii.gz's (5, 6, 4): the trials are on the first "
     "axis"),
    ("responses-nifti-affine", _resp_nifti_with(lambda v, a: (v, _shifted(a))), SUB / "responses.nii.gz",
     "affine differs from mask.nii.gz's (max difference 2 mm)"),
    ("responses-nifti-3d", _resp_nifti_with(lambda v, a: (v[..., 0], a)), SUB / "responses.nii.gz",
     "responses volume has 3 dimensions (5, 6, 4), expected 4"),
    ("responses-nifti-truncated", lambda r: _resp_nifti_with(lambda v, a: (v, a))(r) or
     _truncate(r / SUB / "responses.nii.gz", 0.6), SUB / "responses.nii.gz", "cannot be read as NIfTI"),
    # trials.tsv
    ("trials-missing", lambda r: (r / SUB / "trials.tsv").unlink(), SUB / "trials.tsv", "trials.tsv is missing"),
    ("trials-count", lambda r: _tsv(r, SUB / "trials.tsv", lambda t: t.iloc[:-1]), SUB / "trials.tsv",
     "lists 8 trials but responses.npy holds 9"),
    ("trials-unknown-id", lambda r: _tsv(r, SUB / "trials.tsv", _set_cell("stimulus_id", 3, "img-999")),
     SUB / "trials.tsv", "row 5 names stimulus 'img-999', which stimuli.tsv does not list"),
    ("trials-unknown-id-reordered", lambda r: _tsv(r, SUB / "trials.tsv", lambda t: _set_cell(
        "stimulus_id", 3, "img-999")(t).iloc[::-1]), SUB / "trials.tsv", "row 7 names stimulus 'img-999'"),
    ("trials-numbering", lambda r: _tsv(r, SUB / "trials.tsv", _set_cell("trial", 0, "1")), SUB / "trials.tsv",
     "column 'trial' is not 0..n_trials-1"),
    ("trials-session-text", lambda r: _tsv(r, SUB / "trials.tsv", _set_cell("session", 2, "two")),
     SUB / "trials.tsv", "column 'session' holds 'two' at row 4, expected an integer"),
    ("trials-no-id-column", lambda r: _tsv(r, SUB / "trials.tsv", lambda t: t.drop(columns="stimulus_id")),
     SUB / "trials.tsv", "has no column 'stimulus_id'"),
    # optional subject files
    ("anat-4d", lambda r: _nifti(r, SUB / "anat.nii.gz", np.zeros((3, 3, 3, 2), np.float32)), SUB / "anat.nii.gz",
     "anatomy has 4 dimensions"),
    ("roi-grid", lambda r: _nifti(r, SUB / "rois" / "floc-faces.nii.gz", np.zeros((5, 6, 5), np.int16)),
     SUB / "rois" / "floc-faces.nii.gz", "grid (5, 6, 5) differs from mask.nii.gz's (5, 6, 4)"),
    ("roi-affine", lambda r: _nifti(r, SUB / "rois" / "floc-faces.nii.gz", _mask(r),
                                    _shifted(nib.load(r / SUB / "mask.nii.gz").affine)),
     SUB / "rois" / "floc-faces.nii.gz", "affine differs from mask.nii.gz's (max difference 2 mm)"),
    ("roi-fractional", lambda r: _nifti(r, SUB / "rois" / "floc-faces.nii.gz", _mask(r) * np.float32(0.5)),
     SUB / "rois" / "floc-faces.nii.gz", "holds non-integer labels"),
    ("roi-negative", lambda r: _nifti(r, SUB / "rois" / "floc-faces.nii.gz", -_mask(r).astype(np.int16)),
     SUB / "rois" / "floc-faces.nii.gz", "holds negative label -1"),
    ("roi-names-label", lambda r: _tsv(r, SUB / "rois" / "floc-faces.tsv", _set_cell("label", 0, "FFA")),
     SUB / "rois" / "floc-faces.tsv", "column 'label' holds 'FFA' at row 2"),
    ("roi-names-orphan", lambda r: (r / SUB / "rois" / "floc-faces.nii.gz").unlink(),
     SUB / "rois" / "floc-faces.tsv", "has no matching floc-faces.nii.gz"),
    ("to-common-shape", lambda r: (r / SUB / "to_common.txt").write_text("1 0 0\n0 1 0\n0 0 1\n"),
     SUB / "to_common.txt", "is not a 4x4 affine (3 rows of 3 numbers)"),
    ("to-common-last-row", lambda r: (r / SUB / "to_common.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n5 5 5 5\n"),
     SUB / "to_common.txt", "is not an affine: its last row is 5 5 5 5, not 0 0 0 1"),
    ("to-common-nan", lambda r: (r / SUB / "to_common.txt").write_text("1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
     SUB / "to_common.txt", "holds NaN or Inf"),
    ("to-common-singular", lambda r: (r / SUB / "to_common.txt").write_text("0 0 0 0\n0 0 0 0\n0 0 0 0\n0 0 0 1\n"),
     SUB / "to_common.txt", "is singular"),
    ("to-common-text", lambda r: (r / SUB / "to_common.txt").write_text("identity\n"), SUB / "to_common.txt",
     "cannot be read as a 4x4 matrix"),
    ("ncsnr-length", lambda r: (r / SUB / "ncsnr.nii.gz").unlink() or _npy(r, SUB / "ncsnr.npy", np.ones(3)),
     SUB / "ncsnr.npy", "has 3 values for 36 mask voxels"),
    ("ncsnr-grid", lambda r: _nifti(r, SUB / "ncsnr.nii.gz", np.ones((5, 6, 3), np.float32)), SUB / "ncsnr.nii.gz",
     "grid (5, 6, 3) differs from mask.nii.gz's (5, 6, 4)"),
    ("ncsnr-nan", lambda r: _nifti(r, SUB / "ncsnr.nii.gz", np.full((5, 6, 4), np.nan, np.float32)),
     SUB / "ncsnr.nii.gz", "ncsnr contains NaN or Inf inside the mask"),
    # truth
    ("truth-json", lambda r: (r / "truth" / "truth.json").write_text("{'a': 1}"), "truth/truth.json",
     "is not valid JSON"),
    ("truth-arrays-truncated", lambda r: _truncate(r / "truth" / "arrays.npz"), "truth/arrays.npz",
     "cannot be read (BadZipFile"),
    ("truth-arrays-missing", lambda r: (r / "truth" / "arrays.npz").unlink(), "truth/arrays.npz",
     "referenced by truth.json is missing"),
]


@pytest.fixture(scope="module")
def written_study(tmp_path_factory):
    return write_study(small_study(), tmp_path_factory.mktemp("written") / "study")


@pytest.mark.parametrize("mutate, rel, problem", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_one_clear_error(written_study, tmp_path, mutate, rel, problem):
    root = tmp_path / "study"
    shutil.copytree(written_study, root)
    read_study(root)  # the copy itself is valid
    mutate(root)
    with pytest.raises(InputError) as info:
        read_study(root)
    err = info.value
    assert err.where == str(root / rel), err
    assert problem in err.problem, err
    assert err.fix, err
    assert str(err) == f"{err.where}: {err.problem}. Fix: {err.fix}."


@pytest.mark.parametrize("misname", ["gzip-as-nii", "plain-as-nii-gz"])
def test_a_nifti_file_named_for_the_wrong_compression_says_which_name_it_needs(written_study, tmp_path, misname):
    """A gzip-compressed responses.nii (or an uncompressed responses.nii.gz) cannot be read: the fix names the
    file as it should be, not "re-export the file"."""
    root = tmp_path / "study"
    shutil.copytree(written_study, root)
    _resp_nifti_with(lambda v, a: (v, a))(root)
    gz = root / SUB / "responses.nii.gz"
    if misname == "gzip-as-nii":
        path, right = gz.rename(root / SUB / "responses.nii"), "responses.nii.gz"
        fix = f"the file is gzip-compressed: name it {right}"
    else:
        img = nib.load(gz)
        plain = root / SUB / "responses.nii"
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), plain)
        path = plain.rename(gz)
        right = "responses.nii"
        fix = f"the file is not gzip-compressed: name it {right}"
    with pytest.raises(InputError) as info:
        read_study(root)
    assert info.value.where == str(path) and "cannot be read as NIfTI" in info.value.problem
    assert info.value.fix == fix
    path.rename(path.with_name(right))
    assert read_study(root).subjects["sub-01"].n_trials == 9


@pytest.mark.parametrize("columns, expected", [
    (["sentence_1", "sentence_2"], "columns 'sentence_1', 'sentence_2' are not read; if they hold captions, "
                                   "rename them caption_1"),
    (["Caption_1"], "columns 'Caption_1' are not read; if they hold captions"),
    (["caption 2", "coco_id"], "columns 'caption 2', 'coco_id' are not read; if 'caption 2' hold captions"),
    (["coco_id"], "columns 'coco_id' are not read (the columns read: stimulus_id, image, caption, categories, "
                  "test, caption_1..caption_k)"),
])
def test_stimuli_columns_that_are_not_read_are_named_in_a_warning(written_study, tmp_path, columns, expected):
    """Captions under another name (sentence_1, Caption_1) were dropped without a word; the decode step then
    had no captions to embed."""
    root = tmp_path / "study"
    shutil.copytree(written_study, root)
    _tsv(root, "stimuli.tsv", lambda t: t.assign(**{c: "a photo of a thing" for c in columns}))
    with pytest.warns(UserWarning) as record:
        read_study(root)
    messages = [str(w.message) for w in record if "are not read" in str(w.message)]
    assert len(messages) == 1 and expected in messages[0], messages
    assert messages[0].startswith(f"{root / 'stimuli.tsv'}: columns ")
    if columns != ["coco_id"]:
        assert "caption_1, caption_2, … (lower case, an underscore and a number)" in messages[0]


def test_a_study_with_only_known_stimuli_columns_reads_without_a_warning(written_study, recwarn):
    read_study(written_study)
    assert not [w for w in recwarn if "are not read" in str(w.message)]


def test_missing_study_folder(tmp_path):
    with pytest.raises(InputError, match="study folder does not exist"):
        read_study(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        read_study(tmp_path / "file")


def test_bad_input_cases_cover_the_issue_list():
    """The issue names these errors explicitly; keep a case for each."""
    names = {c[0] for c in BAD_INPUTS}
    assert {"study-json-missing", "stimuli-missing", "responses-missing", "mask-missing", "trials-count",
            "trials-unknown-id", "stimuli-duplicate-id", "responses-nifti-affine", "mask-4d", "mask-truncated",
            "responses-npy-nan", "mask-empty", "embedding-rows", "image-missing", "study-json-bad-json",
            "study-json-version"} <= names


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 10_000), damage=st.sampled_from(["truncate", "garbage", "empty", "delete", "overwrite"]),
       where=st.floats(0, 1), junk=st.binary(min_size=1, max_size=32))
def test_any_damaged_file_gives_an_input_error_or_a_valid_study(written_study, tmp_path, index, damage, where, junk):
    """Whatever file is damaged and however, the reader either still reads a valid study (e.g. a damaged
    image is only read when shown) or raises InputError, never another exception."""
    root = tmp_path / f"case-{uuid.uuid4().hex}"
    shutil.copytree(written_study, root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    path = files[index % len(files)]
    data = path.read_bytes()
    cut = int(where * len(data))
    if damage == "truncate":
        path.write_bytes(data[:cut])
    elif damage == "garbage":
        path.write_bytes(junk)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(data[:cut] + junk + data[cut + len(junk):])
    try:
        study = read_study(root)
    except InputError as err:
        assert err.where and err.problem and err.fix
    else:
        assert isinstance(study, Study)
    shutil.rmtree(root)


# ------------------------------------------------------------------------------------------------
# property: random valid small studies round-trip
# ------------------------------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)  # tabs, CR, LF too
# no ';' (the separator), ',' (a list of commas alone is refused as a wrong separator), '/' or '\\' (file names)
_category = _text.map(lambda s: "".join("-" if c in ";,/\\" else c for c in s).strip()).filter(bool)


@st.composite
def random_studies(draw):
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(_text.filter(lambda s: s.strip()), min_size=n, max_size=n, unique=True))
    captions = draw(st.lists(st.lists(_text, max_size=3), min_size=n, max_size=n))
    categories = draw(st.lists(st.lists(_category, max_size=3), min_size=n, max_size=n))
    with_test = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.integers(1, 4))
    embeddings = {"emb": Embedding("emb", rng.normal(size=(n, d)).astype(np.float32))} if draw(st.booleans()) else {}
    stimuli = Stimuli(ids=np.asarray(ids, dtype=object), captions=captions, categories=categories,
                      pixels=rng.integers(0, 256, (n, 3, 4, 3), dtype=np.uint8) if draw(st.booleans()) else None,
                      embeddings=embeddings, test=rng.random(n) < 0.5 if with_test else None)
    subjects = {}
    for k in range(draw(st.integers(1, 2))):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
        mask = rng.random(shape) < 0.6
        mask.flat[rng.integers(mask.size)] = True
        steps = np.array(draw(st.lists(st.sampled_from([-2.5, -1.0, 0.5, 1.5, 3.0]), min_size=3, max_size=3)))
        affine = np.diag([*steps, 1.0])
        affine[:3, 3] = rng.integers(-100, 100, 3) / 4
        n_trials = draw(st.integers(1, 6))
        subjects[f"s{k}"] = Subject(f"s{k}", rng.normal(size=(n_trials, int(mask.sum()))).astype(np.float32), mask,
                                    affine, [ids[i] for i in rng.integers(0, n, n_trials)],
                                    sessions=rng.integers(0, 3, n_trials))
    return Study(draw(_text.filter(lambda s: s.strip())), stimuli, subjects, tr=draw(st.none() | st.floats(0.1, 3)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=random_studies(), responses_format=st.sampled_from(["npy", "nifti"]))
def test_random_valid_studies_round_trip(tmp_path, study, responses_format):
    out = write_study(study, tmp_path / "study", overwrite=True, responses_format=responses_format)
    assert_same_study(study, read_study(out))


def test_a_roi_label_its_names_file_does_not_name_is_a_warning(written_study, tmp_path):
    """A region the participant's names file leaves out would be "label N" in that participant and drop out of
    the group ROI of its name: said, naming the file and the labels."""
    import pandas as pd

    root = tmp_path / "study"
    shutil.copytree(written_study, root)
    side = root / SUB / "rois" / "floc-faces.tsv"
    table = pd.read_csv(side, sep="\t", dtype=str)
    dropped = table["label"].iloc[-1]
    table.iloc[:-1].to_csv(side, sep="\t", index=False)
    with pytest.warns(UserWarning, match=rf"floc-faces\.tsv: label\(s\) {dropped} of floc-faces\.nii\.gz have no name"):
        study = read_study(root)
    assert f"label {dropped}" in study.subject(SUB.name).rois["floc-faces"].names.values()


def test_a_roi_volume_without_its_names_file_where_others_have_one_is_a_warning(written_study, tmp_path):
    """Without floc-faces.tsv one participant's regions are "label N" while the others' are named: the group RSA
    then split them into rows of one participant each, without a word (the review of one's own study)."""
    root = tmp_path / "study"
    shutil.copytree(written_study, root)
    (root / SUB / "rois" / "floc-faces.tsv").unlink()
    with pytest.warns(UserWarning, match=r"sub-01/rois: floc-faces has no floc-faces\.tsv, while other "
                                         r"participants name the labels of floc-faces.*Fix: add rois/floc-faces\.tsv"):
        read_study(root)
    for other in (root / "subjects").iterdir():  # no participant names them: nothing to say
        (other / "rois" / "floc-faces.tsv").unlink(missing_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_study(root)


def test_a_results_folder_given_as_a_study_says_what_it_is(tmp_path):
    """"Open study folder…" on a results folder said to write a study.json into it."""
    from napari_brain_concepts.core.io.results import ResultsStore

    store = ResultsStore.create(tmp_path / "results")
    with pytest.raises(InputError, match=r"is a results folder \(it holds manifest\.json\), not a study folder\. "
                                         r"Fix: open it as results"):
        read_study(store.root)
