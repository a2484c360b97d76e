"""Results store: atomic writes, manifest steps, versions, disk-full errors, read-back."""

from __future__ import annotations

import errno
import json

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.atomic import atomic_path, write_atomic, write_text_atomic
from napari_brain_concepts.core.io.results import STORE_VERSION, ResultsStore
from napari_brain_concepts.core.io.volumes import save_nifti

AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------
def test_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.tsv"
    write_text_atomic(target, "old\n")

    def writer(path):
        path.write_text("half of the new cont")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        write_atomic(target, writer)
    assert target.read_text() == "old\n"
    assert _listing(tmp_path) == ["table.tsv"]


def test_interrupted_write_leaves_no_file_when_there_was_none(tmp_path):
    def writer(path):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "sub" / "x.npy", writer)
    assert _listing(tmp_path / "sub") == []


def test_disk_full_becomes_one_clear_error(tmp_path):
    target = tmp_path / "maps" / "r.nii.gz"
    save_nifti(np.ones((2, 2, 2), np.float32), AFFINE, target)
    before = target.read_bytes()

    def writer(path):
        path.write_bytes(b"\x00" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError) as info:
        write_atomic(target, writer)
    assert info.value.where == str(target)
    assert "disk is full" in info.value.problem and "free space" in info.value.fix
    assert target.read_bytes() == before
    assert _listing(target.parent) == ["r.nii.gz"]


def test_other_os_errors_are_not_disguised(tmp_path):
    def writer(path):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "x.txt", writer)
    assert _listing(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    """Like a file opened for writing (umask applies), not 0600 as a mkstemp file would be."""
    (tmp_path / "plain.txt").write_text("x")
    write_text_atomic(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_temporary_name_keeps_the_suffixes(tmp_path):
    with atomic_path(tmp_path / "map.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), AFFINE), tmp)
    assert _listing(tmp_path) == ["map.nii.gz"]
    assert nib.load(tmp_path / "map.nii.gz").shape == (2, 2, 2)


# ------------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------------
def test_manifest_records_parameters_versions_and_steps(tmp_path):
    params = {"decode": {"alphas": np.array([0.1, 1.0]), "seed": np.int64(3)}, "subjects": ("s1", "s2")}
    store = ResultsStore.create(tmp_path / "res", parameters=params, study="demo")
    manifest = json.loads((tmp_path / "res" / "manifest.json").read_text())
    assert manifest["version"] == STORE_VERSION and manifest["study"] == "demo"
    assert manifest["parameters"] == {"decode": {"alphas": [0.1, 1.0], "seed": 3}, "subjects": ["s1", "s2"]}
    assert "numpy" in manifest["versions"] and "python" in manifest["versions"]
    assert manifest["steps"] == {}
    assert not store.is_done("decode")
    store.mark_done("decode", score=np.float32(0.5), n=np.int64(4))
    store.mark_done("maps")
    reopened = ResultsStore.open(tmp_path / "res")
    assert reopened.is_done("decode") and reopened.is_done("maps") and not reopened.is_done("concepts")
    assert reopened.finished_steps == ["decode", "maps"]
    assert reopened.manifest["steps"]["decode"]["score"] == 0.5
    assert "finished" in reopened.manifest["steps"]["decode"]
    assert ResultsStore.is_results(tmp_path / "res") and not ResultsStore.is_results(tmp_path)


def test_resume_compares_values_with_the_defaults_filled_in(tmp_path):
    """napari's forms record every value they show (decode.embedding='captions', the default); the command
    line records only --param values. Continuing one's folder with the other is no change of values."""
    given = {"params": {"decode": {"cv": 3}}, "seed": 0, "steps": ["decode"]}
    store = ResultsStore.create(tmp_path / "res", parameters=given)
    store.mark_done("decode")
    shown = {"params": {"decode": {"cv": 3, "embedding": "captions", "protocol": "mindeye"}}, "seed": 0,
             "steps": ["decode"]}
    assert ResultsStore.create(tmp_path / "res", parameters=shown, resume=True).is_done("decode")
    with pytest.raises(InputError, match=r"decode\.protocol=\"mindeye\" \(now \"sdc\"\)"):
        ResultsStore.create(tmp_path / "res", resume=True,
                            parameters={**shown, "params": {"decode": {"cv": 3, "protocol": "sdc"}}})


def test_resume_keeps_finished_steps_and_refuses_other_parameters(tmp_path):
    store = ResultsStore.create(tmp_path / "res", parameters={"k": 128})
    store.mark_done("basis")
    resumed = ResultsStore.create(tmp_path / "res", parameters={"k": 128}, resume=True)
    assert resumed.is_done("basis")
    with pytest.raises(InputError, match="other parameters"):
        ResultsStore.create(tmp_path / "res", parameters={"k": 64}, resume=True)
    with pytest.raises(InputError, match="already holds results"):
        ResultsStore.create(tmp_path / "res")  # (the default: overwrite=False)
    store.write_map("sub-01", "old", np.zeros((2, 2, 2)), AFFINE)
    store.write_table("old", pd.DataFrame({"a": [1]}))
    (tmp_path / "res" / "notes.txt").write_text("mine")
    fresh = ResultsStore.create(tmp_path / "res", parameters={"k": 64}, overwrite=True)
    assert fresh.finished_steps == [] and fresh.parameters == {"k": 64}
    # results of the earlier analysis are gone; files the store did not write stay
    assert fresh.subjects() == [] and fresh.maps("sub-01") == {} and not fresh.table_path("old").exists()
    assert (tmp_path / "res" / "notes.txt").read_text() == "mine"
    assert ResultsStore.open(tmp_path / "res").parameters == {"k": 64}


def test_newer_manifest_version_is_refused(tmp_path):
    store = ResultsStore.create(tmp_path / "res")
    manifest = json.loads((store.root / "manifest.json").read_text())
    manifest["version"] = STORE_VERSION + 1
    (store.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="newer version of the format") as info:
        ResultsStore.open(tmp_path / "res")
    assert info.value.where.endswith("manifest.json") and "upgrade" in info.value.fix
    with pytest.raises(InputError, match="newer version"):
        ResultsStore.create(tmp_path / "res", resume=True)


@pytest.mark.parametrize("content, match", [
    ("{not json", "is not valid JSON"),
    (None, "is not a results folder"),
])
def test_unreadable_results_folder(tmp_path, content, match):
    (tmp_path / "res").mkdir()
    if content is not None:
        (tmp_path / "res" / "manifest.json").write_text(content)
    with pytest.raises(InputError, match=match):
        ResultsStore.open(tmp_path / "res")


def test_results_path_that_is_a_file(tmp_path):
    (tmp_path / "res").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        ResultsStore.create(tmp_path / "res")


# ------------------------------------------------------------------------------------------------
# writers and readers
# ------------------------------------------------------------------------------------------------
def test_every_kind_of_result_reads_back(tmp_path):
    store = ResultsStore.create(tmp_path / "res")
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(3, 4, 5))
    store.write_map("sub-01", "r_captions", vol, AFFINE)
    store.write_mask("sub-01", "face", vol > 0, AFFINE)
    store.write_shared("face", (vol > 0).astype(int) * 3, AFFINE)
    table = pd.DataFrame({"concept": ["face", "place"], "dice": [0.5, np.nan], "n": [3, 4]})
    store.write_table("validation", table)
    store.write_array("weights", rng.normal(size=(4, 6)).astype(np.float32))
    store.write_arrays("decoder", coef=np.ones((2, 3)), alphas=np.array([1.0, 10.0]))
    store.write_json("tables/summary.json", {"top1": np.float64(0.25)})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    store.write_figure("summary", fig)
    plt.close(fig)

    img = store.read_map(store.maps("sub-01")["r_captions"])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), vol.astype(np.float32))
    np.testing.assert_array_equal(img.affine, AFFINE)
    mask = nib.load(store.masks("sub-01")["face"])
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), (vol > 0).astype(np.uint8))
    shared = nib.load(store.shared_maps()["face"])
    np.testing.assert_array_equal(np.asanyarray(shared.dataobj), (vol > 0) * 3)
    pd.testing.assert_frame_equal(store.read_table("validation"), table)
    np.testing.assert_array_equal(store.read_array("weights"), np.load(store.array_path("weights")))
    arrays = store.read_arrays("decoder")
    assert sorted(arrays) == ["alphas", "coef"]
    assert json.loads((store.root / "tables" / "summary.json").read_text()) == {"top1": 0.25}
    assert store.figure_path("summary").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.subjects() == ["sub-01"]
    leftovers = [p for p in store.root.rglob(".*")]
    assert leftovers == []


@pytest.mark.parametrize("read, match", [
    (lambda s: s.read_table("nothing"), "table is missing"),
    (lambda s: s.read_array("nothing"), "array is missing"),
    (lambda s: s.read_arrays("nothing"), "array file is missing"),
    (lambda s: s.read_map(s.map_path("sub-01", "nothing")), "map file is missing"),
])
def test_missing_results_name_the_step_to_run(tmp_path, read, match):
    store = ResultsStore.create(tmp_path / "res")
    with pytest.raises(InputError, match=match):
        read(store)


def test_empty_store_lists_nothing(tmp_path):
    store = ResultsStore.create(tmp_path / "res")
    assert store.subjects() == [] and store.maps("sub-01") == {} and store.shared_maps() == {}


# ------------------------------------------------------------------------------------------------
# staged steps
# ------------------------------------------------------------------------------------------------
def test_staged_step_moves_its_files_in_place_when_it_finishes(tmp_path):
    store = ResultsStore.create(tmp_path / "res")
    with store.staged("decode"):
        store.write_table("scores", pd.DataFrame({"top1": [0.5]}))
        store.mark_done("decode", n=1)
        assert not (store.root / "tables" / "scores.tsv").exists()  # not visible before the step ends
        assert store.read_table("scores")["top1"].tolist() == [0.5]  # but readable by the step itself
        assert not store.is_done("decode")
    assert (store.root / "tables" / "scores.tsv").is_file()
    assert ResultsStore.open(store.root).is_done("decode")
    assert not (store.root / ".staging").exists()


@pytest.mark.parametrize("stop", [RuntimeError("step failed"), GeneratorExit()], ids=["error", "cancelled"])
def test_staged_step_that_stops_leaves_the_earlier_results(tmp_path, stop):
    store = ResultsStore.create(tmp_path / "res")
    store.write_table("scores", pd.DataFrame({"top1": [0.25]}))
    with pytest.raises(type(stop)), store.staged("decode"):
        store.write_table("scores", pd.DataFrame({"top1": [0.9]}))
        store.write_array("weights", np.ones(3))
        store.mark_done("decode")
        raise stop
    assert store.read_table("scores")["top1"].tolist() == [0.25]
    assert not store.array_path("weights").exists()
    assert not store.is_done("decode") and not ResultsStore.open(store.root).is_done("decode")
    assert not (store.root / ".staging").exists()


def test_earlier_results_set_aside_come_back_or_go(tmp_path):
    """keep_earlier: the earlier analysis waits in .earlier/ until the new one fails (back) or finishes (gone)."""
    first = ResultsStore.create(tmp_path / "res", parameters={"k": 1})
    first.write_table("old", pd.DataFrame({"a": [1]}))
    first.mark_done("decode")
    second = ResultsStore.create(tmp_path / "res", parameters={"k": 2}, overwrite=True, keep_earlier=True)
    assert second.finished_steps == [] and not second.table_path("old").exists()
    second.write_table("new", pd.DataFrame({"a": [2]}))
    assert second.restore_earlier()
    back = ResultsStore.open(tmp_path / "res")
    assert back.parameters == {"k": 1} and back.finished_steps == ["decode"] and back.table_path("old").exists()
    assert not back.table_path("new").exists() and not (tmp_path / "res" / ".earlier").exists()
    third = ResultsStore.create(tmp_path / "res", parameters={"k": 3}, overwrite=True, keep_earlier=True)
    third.drop_earlier()
    assert not (tmp_path / "res" / ".earlier").exists() and not third.restore_earlier()
    assert ResultsStore.open(tmp_path / "res").parameters == {"k": 3}


def test_resume_may_add_steps_and_change_what_has_not_finished(tmp_path):
    """A command-line analysis continues with another step list, or with new values for the steps it has not
    finished (a range error stopped it there); the seed and a finished step's values must stay."""
    def params(seed=0, steps=("decode",), **step_params):
        return {"params": {"decode": {"cv": 3}, **step_params}, "seed": seed, "steps": list(steps)}

    store = ResultsStore.create(tmp_path / "res", parameters=params(masks={"sparsity": -1}))
    store.mark_done("decode")
    resumed = ResultsStore.create(tmp_path / "res", parameters=params(steps=["masks"], masks={"sparsity": 20}),
                                  resume=True)
    assert resumed.is_done("decode")
    kept = ResultsStore.open(tmp_path / "res").parameters
    assert kept["steps"] == ["decode", "masks"] and kept["params"]["masks"] == {"sparsity": 20}
    with pytest.raises(InputError, match=r"other parameters for its finished steps: decode\.cv=3 \(now 5\)"):
        ResultsStore.create(tmp_path / "res", parameters={**params(), "params": {"decode": {"cv": 5}}},
                            resume=True)
    with pytest.raises(InputError, match=r"decode\.alphas=\[1\.0, .*\] \(default\) \(now \[1\]\)"):
        ResultsStore.create(tmp_path / "res", parameters={**params(), "params": {"decode": {"cv": 3, "alphas": [1]}}},
                            resume=True)
    with pytest.raises(InputError, match=r"other parameters: --seed 0 \(now 1\)"):
        ResultsStore.create(tmp_path / "res", parameters=params(seed=1), resume=True)


def test_resume_refuses_other_data_under_the_same_study_name(tmp_path):
    """A study folder rewritten with other data keeps its name; its fingerprint tells them apart."""
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(seed=0, size="tiny")
    assert study.fingerprint() == make_synthetic_study(seed=0, size="tiny").fingerprint()
    subject = study.subject()
    before = study.fingerprint()
    subject.responses[0, 0] += 1.0  # one value of a sampled trial
    assert study.fingerprint() != before
    store = ResultsStore.create(tmp_path / "res", study=study.name, fingerprint=before)
    store.mark_done("decode")
    assert ResultsStore.open(tmp_path / "res").manifest["study_fingerprint"] == before
    with pytest.raises(InputError, match=r"holds the results of study 'synthetic-tiny-seed0' made from other data"):
        ResultsStore.create(tmp_path / "res", study=study.name, fingerprint=study.fingerprint(), resume=True)
    assert ResultsStore.create(tmp_path / "res", study=study.name, fingerprint=before, resume=True).is_done("decode")


def test_copy_results_copies_the_whole_folder_and_replaces_an_earlier_copy_only_when_complete(tmp_path, monkeypatch):
    import shutil

    from napari_brain_concepts.core.io.results import ResultsStore, copy_results

    store = ResultsStore.create(tmp_path / "results")
    store.write_table("decoding", pd.DataFrame({"a": [1.0]}))
    store.write_map("sub-01", "m", np.ones((2, 2, 2), np.float32), np.eye(4))
    store.mark_done("decode")
    files = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())
    written = copy_results(store.root, tmp_path / "out" / "results")
    copy = ResultsStore.open(tmp_path / "out" / "results")
    assert copy.is_done("decode") and sorted(p.relative_to(copy.root) for p in written) == files
    # a second copy after more results replaces the first; a copy that fails halfway leaves the earlier one
    store.write_table("more", pd.DataFrame({"b": [2.0]}))
    real = shutil.copy2

    def failing(a, b, **kw):
        if a.endswith("more.tsv"):
            raise OSError("injected")
        return real(a, b, **kw)

    monkeypatch.setattr(shutil, "copy2", failing)
    with pytest.raises(OSError, match="injected"):
        copy_results(store.root, copy.root)
    assert not (copy.root / "tables" / "more.tsv").exists() and copy.is_done("decode")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results"]  # no partial copy left behind
    monkeypatch.undo()
    copy_results(store.root, copy.root)
    assert (copy.root / "tables" / "more.tsv").is_file()
    # refused: a copy into the results folder itself, or over a folder that is not a results folder
    with pytest.raises(InputError, match="lies inside the results folder"):
        copy_results(store.root, store.root / "copy")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="exists and is not a results folder"):
        copy_results(store.root, tmp_path / "mine" / "notes.txt")
    with pytest.raises(InputError, match="exists and is not a results folder"):
        copy_results(store.root, tmp_path / "mine")
    # another analysis's results folder is never replaced (only an earlier copy of this one)
    other = ResultsStore.create(tmp_path / "proj" / "results")
    with pytest.raises(InputError, match="holds the results of another analysis"):
        copy_results(store.root, other.root)
    assert ResultsStore.is_results(other.root)
