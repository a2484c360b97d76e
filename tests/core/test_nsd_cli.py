"""NSD on the command line, as the NSD review ran it: the reader's options (betas version, common space), what
is said while NSD loads and when a copy is incomplete, and results kept out of the dataset."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_brain_concepts.cli import main

from .nsd_fixture import make_nsd_tree

FAST = ["--param", "decode.cv=3", "--param", "decode.alphas=[1.0, 100.0, 10000.0]", "--threads", "1"]
BETAS = "nsddata_betas/ppdata/subj{:02d}/func1pt8mm/betas_fithrf_GLMdenoise_RR"


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsdcli") / "nsd"
    make_nsd_tree(root, subjects=(1, 2), n_sessions=3, trials_per_session=30, n_images=200, image_size=8)
    return root


def _copy(nsd, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(nsd, root)
    return root


def test_results_are_not_written_into_the_nsd_copy(nsd, capsys):
    for out in (nsd, nsd / "derivatives" / "results"):
        assert main(["decode", "--nsd", str(nsd), "--subject", "1", "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert f"the NSD copy at {nsd}: the results would be written into the dataset" in err
        assert f"--out {nsd.parent / 'nsd_results'}" in err
        assert "[        load]" not in err  # refused before NSD is read (its betas take hours on a real copy)
    assert not (nsd / "manifest.json").exists() and not (nsd / "derivatives").exists()


def test_a_missing_session_is_said_and_the_sessions_read_are_recorded(nsd, tmp_path, capsys):
    root = _copy(nsd, tmp_path)
    (root / BETAS.format(1) / "betas_session02.hdf5").unlink()
    (root / "nsddata" / "freesurfer" / "subj01" / "label" / "streams.mgz.ctab").unlink()
    out = tmp_path / "out"
    assert main(["decode", "--nsd", str(root), "--subject", "1", "--subject", "1", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr()
    err = printed.err
    assert "warning: subj01: session 2 has no betas file in" in err and "(read: 1, 3)" in err
    assert "streams.mgz.ctab is missing or names no label: the labels of streams (subj01) are named by" in err
    summary = printed.out.splitlines()
    assert summary[0].startswith("Study NSD: 1 participant, ") and " test), " in summary[0]
    assert summary[1].startswith("Participants: subj01 (") and " trials in sessions 1, 3)" in summary[1]
    assert "[        load]   0.0% stimuli and captions" in err  # the reader's progress reaches the terminal
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["nsd_subjects"] == [1]  # --subject 1 twice reads it once
    assert manifest["nsd_sessions_read"] == {"subj01": [1, 3]}


def test_another_betas_version_is_found_and_chosen_with_betas(nsd, tmp_path, capsys):
    root = _copy(nsd, tmp_path)
    folder = root / BETAS.format(1)
    folder.rename(folder.with_name("betas_fithrf"))
    args = ["decode", "--nsd", str(root), "--subject", "1", "--out", str(tmp_path / "out"), *FAST, "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "betas of another version are there: betas_fithrf" in err and "--betas" in err
    assert main([*args, "--betas", "betas_fithrf"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["nsd_betas"] == "betas_fithrf"
    # the viewer reads NSD as the results were made (it read the default betas, and the fingerprint refused them)
    from napari_brain_concepts.core.io.nsd import read_nsd, recorded_reading

    reading = recorded_reading(manifest)
    assert reading["betas"] == "betas_fithrf" and reading["sessions"] == [1, 2, 3]
    assert read_nsd(reading.pop("root"), **reading).fingerprint() == manifest["study_fingerprint"]


def test_the_nsd_options_need_nsd(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["decode", "--size", "tiny", "--subject", "3", "--sessions", "2", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    assert "--subject and --sessions are for NSD: add --nsd ROOT, or leave them out" in capsys.readouterr().err


def test_shared_concepts_on_nsd_need_a_common_space_given_with_to_common(nsd, tmp_path, capsys):
    """The review: the error pointed at nsd/subjects/…/to_common.txt, files NSD does not have, and writing them
    changed nothing; --to-common FOLDER (or identity) now gives the reader its transforms."""
    shared = ["--param", "shared.min_participants=1", "--param", "shared.contact_sheets=false",
              "--param", "shared.eps_sweep=[0.6]", "--quiet"]
    args = ["shared", "--nsd", str(nsd), "--subject", "1", "--subject", "2", *FAST, *shared]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: NSD at {nsd}: the participants are not in one space") and "--to-common" in err
    folder = tmp_path / "common"
    folder.mkdir()
    (folder / "subj01.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    assert main([*args, "--out", str(tmp_path / "b"), "--to-common", str(folder)]) == 2
    assert f"{folder}: has no subj02.txt" in capsys.readouterr().err
    shutil.copy(folder / "subj01.txt", folder / "subj02.txt")
    assert main([*args, "--out", str(tmp_path / "b"), "--to-common", str(folder)]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "shared" in manifest["steps"] and manifest["nsd_to_common"] == str(folder)


def test_image_models_without_the_image_brick_name_it(nsd, tmp_path, capsys):
    root = _copy(nsd, tmp_path)
    brick = root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    brick.unlink()
    assert main(["image-models", "--nsd", str(root), "--subject", "1", "--out", str(tmp_path / "o"), *FAST,
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {brick}: is missing, so the study has no images") and "stimuli.tsv" not in err


def test_the_sentence_model_of_embed_model_is_the_one_nsd_is_decoded_with(nsd, tmp_path, capsys):
    """The review: on NSD the caption embedding was computed at read time with the packaged model whatever
    embed.model said, so decode used one model and rsa (after embed) another, in one results folder."""
    import pandas as pd

    from napari_brain_concepts.core.embeddings.text import default_model_path

    model = tmp_path / "othermodel"
    shutil.copytree(default_model_path(), model)
    out = tmp_path / "out"
    assert main(["run", "--nsd", str(nsd), "--subject", "1", "--steps", "decode", "rsa", "--out", str(out), *FAST,
                 "--param", f"embed.model={model}", "--param", "embed.controls=[]", "--param", "rsa.searchlight=false",
                 "--quiet"]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["decode"]["embedding_model"] == "othermodel"
    table = pd.read_csv(out / "tables" / "alignment_embeddings.tsv", sep="\t")
    assert set(table.loc[table["name"] == "captions", "model"]) == {"othermodel"}
