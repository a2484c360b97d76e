"""The steps a study needs: a study folder without embeddings/ (its caption embedding computed by the embed
step before decode), and a whole analysis that leaves out the steps a study cannot support."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_brain_concepts.cli import main
from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.io.study_folder import read_study, write_study
from napari_brain_concepts.core.pipeline import (
    DEFAULT_STEPS,
    STEP_ORDER,
    run_analysis,
    with_requirements,
)
from napari_brain_concepts.core.progress import run_to_end
from napari_brain_concepts.core.study import Embedding

from ._studies import small_study

FAST = ["--param", "decode.cv=3", "--param", "decode.alphas=[1.0, 100.0, 10000.0]", "--threads", "1"]


def _ctx(study, store=None, **params) -> AnalysisContext:
    return AnalysisContext(study=study, store=store, params=params, device="cpu")


def _own(study):
    """``study`` as a study folder made by hand would give it: no embeddings of its own."""
    study.stimuli.embeddings.clear()
    return study


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """The tiny synthetic study written as a user's own study: captions, categories and images, but no
    embeddings/ and no planted truth."""
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    folder = tmp_path_factory.mktemp("own") / "study"
    write_study(make_synthetic_study(seed=0, size="tiny"), folder)
    shutil.rmtree(folder / "embeddings")
    shutil.rmtree(folder / "truth")
    meta = json.loads((folder / "study.json").read_text())
    del meta["embeddings"]
    meta["name"] = "own-study"
    (folder / "study.json").write_text(json.dumps(meta))
    return folder


def _variant(own_folder: Path, tmp_path: Path, drop: list[str]) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(own_folder, folder)
    table = pd.read_csv(folder / "stimuli.tsv", sep="\t", dtype=str, keep_default_na=False)
    table.drop(columns=[c for c in table.columns if any(c.startswith(d) for d in drop)]).to_csv(
        folder / "stimuli.tsv", sep="\t", index=False)
    if "image" in drop:
        shutil.rmtree(folder / "images")
    return folder


def _steps(out: Path) -> list[str]:
    return list(json.loads((out / "manifest.json").read_text())["steps"])


# -- which steps run ---------------------------------------------------------------------------------

def test_a_study_with_its_own_caption_embedding_runs_the_steps_in_their_usual_order():
    study = small_study()
    ctx = _ctx(study)
    assert with_requirements(["decode"], ctx) == ["decode"]
    assert with_requirements(["masks"], ctx) == ["decode", "concepts", "masks"]
    assert with_requirements(DEFAULT_STEPS, ctx) == [s for s in STEP_ORDER if s in DEFAULT_STEPS]


def test_decode_needs_the_embed_step_where_the_study_has_no_caption_embedding(tmp_path):
    ctx = _ctx(_own(small_study()))
    assert with_requirements(["decode"], ctx) == ["embed", "decode"]
    assert with_requirements(["masks"], ctx) == ["embed", "decode", "concepts", "masks"]
    whole = with_requirements(DEFAULT_STEPS, ctx)
    assert whole[:2] == ["embed", "decode"] and sorted(whole) == sorted(DEFAULT_STEPS)
    assert with_requirements(["decode"]) == ["decode"]  # without the study: the fixed requirements only
    # another embedding than the embed step computes, or the embed step's own under another name
    assert with_requirements(["decode"], _ctx(ctx.study, decode={"embedding": "clip-image"})) == ["decode"]
    assert with_requirements(["decode"], _ctx(ctx.study, decode={"embedding": "minilm"},
                                              embed={"caption_name": "minilm"})) == ["embed", "decode"]
    # a resumed analysis whose embed step finished reads the embedding back: embed does not run again
    store = ResultsStore.create(tmp_path / "results")
    with store.staged("embed"):
        store.write_arrays("alignment_embeddings", captions=np.ones((len(ctx.study.stimuli), 4), np.float32))
        store.write_table("alignment_embeddings", pd.DataFrame({"name": ["captions"], "model": ["m"],
                                                                "kind": ["caption-mean"], "dim": [4]}))
        store.mark_done("embed")
    resumed = _ctx(ctx.study, store)
    assert with_requirements(["decode"], resumed) == ["decode"]
    emb = resumed.embedding("captions")
    assert emb.values.shape == (len(ctx.study.stimuli), 4) and emb.kind == "caption-mean"
    assert ctx.study.stimuli.embeddings["captions"] is emb  # later steps find it in the study


def test_a_missing_embedding_says_what_to_do():
    study = _own(small_study())
    study.stimuli.captions = [[] for _ in study.stimuli.ids]
    ctx = _ctx(study)
    assert with_requirements(["decode"], ctx) == ["decode"]  # nothing to embed: decode says so
    with pytest.raises(InputError) as info:
        ctx.embedding("captions", param="decode.embedding")
    assert str(info.value) == (
        "study small: has no embedding 'captions' and no captions to compute it from (no caption_N columns in "
        "stimuli.tsv). Fix: add caption_1, caption_2, … columns to stimuli.tsv (the embed "
        "step computes 'captions' from them), or save a precomputed embedding as embeddings/captions.npy in the "
        "study folder.")
    study.stimuli.add_embedding(Embedding("clip", np.zeros((len(study.stimuli), 3), np.float32)))
    with pytest.raises(InputError, match=r"^study small: has no embedding 'captions' and no captions to compute "
                                         r"it from \(no caption_N columns in stimuli\.tsv\)\. Fix: choose one of clip with "
                                         r"--param decode\.embedding=NAME \(e\.g\. --param decode\.embedding=clip\), "
                                         r"add caption_1"):
        ctx.embedding("captions", param="decode.embedding")


# -- through the command line ------------------------------------------------------------------------

def test_decode_on_a_study_without_embeddings_computes_the_caption_embedding_first(own_folder, tmp_path, capsys):
    """The user review: `decode STUDY` stopped with "has no embeddings", and `embed` did not help."""
    out = tmp_path / "results"
    assert main(["decode", str(own_folder), "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    assert _steps(out) == ["embed", "decode"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study_fingerprint"] == read_study(own_folder).fingerprint()
    assert manifest["parameters"]["steps"] == ["decode"]
    assert (out / "tables" / "decoding.tsv").is_file()
    embedded = out / "arrays" / "alignment_embeddings.npz"
    before = embedded.stat().st_mtime_ns, (out / "tables" / "decoding.tsv").read_bytes()
    capsys.readouterr()
    # --resume: the decoders are fitted again in memory, the caption embedding is read back, not recomputed
    assert main(["maps", str(own_folder), "--out", str(out), *FAST, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "step decode (in memory)" in err and "step embed" not in err
    assert _steps(out) == ["embed", "decode", "maps"]
    assert (embedded.stat().st_mtime_ns, (out / "tables" / "decoding.tsv").read_bytes()) == before
    assert (out / "tables" / "concept_maps.tsv").is_file()


def test_embed_then_decode_resumed_uses_the_embedding_embed_computed(own_folder, tmp_path, capsys):
    out = tmp_path / "results"
    fast_embed = ["--param", "embed.controls=[]"]
    assert main(["embed", str(own_folder), "--out", str(out), *FAST, *fast_embed]) == 0
    assert main(["decode", str(own_folder), "--out", str(out), *FAST, *fast_embed, "--resume"]) == 0, \
        capsys.readouterr().err
    assert _steps(out) == ["embed", "decode"]


def test_a_study_without_captions_or_embeddings_stops_with_one_clear_line(own_folder, tmp_path, capsys):
    folder = _variant(own_folder, tmp_path, ["caption_"])
    assert main(["decode", str(folder), "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("error: study own-study: has no embedding 'captions' and no captions to compute it from (no "
                   "caption_N columns in stimuli.tsv). Fix: add caption_1, caption_2, … columns "
                   "to stimuli.tsv (the embed step computes 'captions' from them), or save a precomputed embedding "
                   "as embeddings/captions.npy in the study folder.")
    assert not (tmp_path / "out").exists()


def test_run_leaves_out_maps_and_image_models_on_a_study_without_categories_and_images(own_folder, tmp_path):
    """The user review: `run` stopped at maps ("no category is given for at least 5 stimuli") on a study
    without categories, and at image-models on one without images; it leaves them out now, as it does shared."""
    from .test_cli import _cli

    folder = _variant(own_folder, tmp_path, ["categories", "image"])
    out = tmp_path / "out"
    fast = ["--param", "concepts.n_iter=200", "--param", "masks.n_steps=60", "--param", "masks.burn_in=20",
            "--param", "rsa.radius=2", "--param", "embed.controls=[\"words_all\"]", "--quiet"]
    result = _cli("run", str(folder), "--out", str(out), *FAST, *fast)
    assert result.returncode == 0, result.stderr
    assert _steps(out) == ["embed", "decode", "concepts", "masks", "shared", "rsa", "encode", "captions"]
    assert ("Left out step maps: the study gives no stimulus categories (stimuli.tsv has no categories column, "
            "or it is empty).") in result.stdout
    assert ("Left out step image-models: the study has no images (stimuli.tsv has no image column, or it is "
            "empty).") in result.stdout
    # asked for by name, each stops with its clear error
    for verb, expected in [
        ("maps", f"error: {folder / 'stimuli.tsv'}: the study gives no stimulus categories (stimuli.tsv has no "
                 "categories column, or it is empty). Fix: label the stimuli in a ';'-separated categories column "
                 "of stimuli.tsv (e.g. animal;red), with labels shared by 5 stimuli or more, or lower "
                 "maps.min_count."),
        ("image-models", f"error: {folder / 'stimuli.tsv'}: the study has no images (stimuli.tsv has no image "
                         "column, or it is empty). Fix: add an image column to stimuli.tsv (paths relative to the "
                         "study folder)."),
    ]:
        result = _cli(verb, str(folder), "--out", str(out), *FAST, *fast, "--resume")
        assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_run_with_a_clip_model_still_leaves_out_what_cannot_apply(own_folder, tmp_path, capsys):
    """`run --model` gave the pipeline the whole step list by name, so on a study without categories it
    stopped at maps ("the study gives no stimulus categories") instead of leaving maps out; it now leaves
    maps and image-models out as `run` does, and goes on to the CLIP step (whose missing model fails here)."""
    folder = _variant(own_folder, tmp_path, ["categories", "image"])
    missing = tmp_path / "no-such-clip"
    code = main(["run", str(folder), "--out", str(tmp_path / "out"), "--model", f"local-dir:{missing}"])
    err = capsys.readouterr().err  # progress and the error
    assert code == 2
    assert "leaving out step maps: the study gives no stimulus categories" in err
    assert "leaving out step image-models: the study has no images" in err
    error = err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "no-such-clip" in error, err


def test_maps_needs_a_category_shared_by_min_count_stimuli():
    from napari_brain_concepts.core.concepts.category_maps import category_features
    from napari_brain_concepts.core.pipeline import STEPS

    study = small_study()
    study.truth = None
    ctx = _ctx(study, maps={"min_count": 2})
    assert STEPS["maps"].not_applicable(ctx) is None
    assert category_features(study, 2)[0] == ["body", "face", "place"]
    reason = STEPS["maps"].not_applicable(_ctx(study))
    assert reason == ("no category label is shared by at least 5 stimuli (maps.min_count; the most common, "
                      "'place', labels 3)")
    with pytest.raises(InputError, match=r"^stimuli\.tsv: no category label is shared by at least 5 stimuli"):
        category_features(study, 5)


def test_a_whole_analysis_leaves_out_maps_and_image_models_where_they_cannot_apply(tmp_path, monkeypatch):
    """The same through run_analysis (the Python API): a whole analysis leaves the steps out; asked for by
    name they run and fail."""
    from napari_brain_concepts.core import pipeline

    study = small_study(pixels=False)
    study.truth = None
    monkeypatch.setattr(pipeline, "DEFAULT_STEPS", ["maps", "image-models"])
    ctx = _ctx(study, ResultsStore.create(tmp_path / "a"))
    reports = []
    run_to_end(run_analysis(ctx), reports.append)
    assert set(ctx.state["skipped_steps"]) == {"maps", "image-models"}
    assert any(r.message == "leaving out step image-models: the study has no images (stimuli.tsv has no image "
               "column, or it is empty)" for r in reports)
    assert ctx.store.finished_steps == []
    # asked for by name: the step's own error, before the steps it needs (decode, embed) run
    for step, expected in [("maps", "no category label is shared by at least 5 stimuli"), ("image-models",
                                                                                            "has no images")]:
        ctx = _ctx(study, ResultsStore.create(tmp_path / step))
        with pytest.raises(InputError, match=expected):
            run_to_end(run_analysis(ctx, [step]))
        assert ctx.store.finished_steps == [] and "decoders" not in ctx.state


# -- parameters given from Python ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny", n_subjects=2)


@pytest.mark.parametrize("params, message", [
    ({"decod": {"decoder": "contrastive"}}, r"step 'decod'.*no step has that name"),
    ({"decode.cv": 3}, r"step 'decode\.cv'.*per step, e\.g\. params=\{'decode': \{'cv': \.\.\.\}\}"),
    ({"decode": {"cv": "3"}}, r"parameter decode\.cv: '3' is not a whole number"),
])
def test_parameters_no_step_can_use_are_refused_before_any_step_runs(tiny, tmp_path, params, message):
    """From Python, a misspelt step or the command line's 'step.name' form ran the step with its defaults."""
    store = ResultsStore.create(tmp_path / "results", study=tiny.name)
    with pytest.raises(InputError, match=message):
        run_to_end(run_analysis(AnalysisContext(study=tiny, store=store, params=params, device="cpu"), ["decode"]))
    assert not store.is_done("decode")


def test_numpy_numbers_are_numbers(tiny, tmp_path):
    store = ResultsStore.create(tmp_path / "results", study=tiny.name)
    params = {"decode": {"cv": np.int64(3), "alphas": np.array([1.0, 100.0, 1e4])}}
    run_to_end(run_analysis(AnalysisContext(study=tiny, store=store, params=params, device="cpu"), ["decode"]))
    assert store.is_done("decode")


def test_results_made_from_python_record_their_parameters_and_resume_is_checked_against_them(tiny, tmp_path):
    """The manifest records each finished step's given values and the seed, as the command line records its
    --param values, so a later --resume with other values for a finished step is refused."""
    out = tmp_path / "results"
    store = ResultsStore.create(out, study=tiny.name, fingerprint=tiny.fingerprint())
    params = {"decode": {"cv": 3, "alphas": [1.0, 100.0, 1e4]}}
    ctx = AnalysisContext(study=tiny, store=store, params=params, random_state=7, device="cpu")
    run_to_end(run_analysis(ctx, ["decode"]))
    recorded = json.loads((out / "manifest.json").read_text())["parameters"]
    assert recorded == {"params": params, "seed": 7, "steps": ["decode"]}
    with pytest.raises(InputError, match=r"finished steps: decode\.cv=3 \(now 4\)"):
        ResultsStore.create(out, parameters={"params": {"decode": {**params["decode"], "cv": 4}}, "seed": 7,
                                             "steps": ["maps"]},
                            study=tiny.name, resume=True, fingerprint=tiny.fingerprint())
    # the napari session's forms give dataclasses: their values other than the defaults are recorded
    from napari_brain_concepts.core.decoding.steps import DecodeParams

    ctx.params = {"decode": DecodeParams(cv=4, alphas=[1.0, 100.0, 1e4])}
    run_to_end(run_analysis(ctx, ["decode"]))
    recorded = json.loads((out / "manifest.json").read_text())["parameters"]
    assert recorded["params"]["decode"] == {"cv": 4, "alphas": [1.0, 100.0, 1e4]}


def test_a_folder_that_holds_results_is_replaced_only_when_asked(tiny, tmp_path):
    out = tmp_path / "results"
    store = ResultsStore.create(out, study=tiny.name)
    with store.staged("decode"):
        store.write_table("decoding", pd.DataFrame({"a": [1]}))
        store.mark_done("decode")
    with pytest.raises(InputError, match="already holds results.*--resume"):
        ResultsStore.create(out, study=tiny.name)
    assert ResultsStore.open(out).is_done("decode")
    again = ResultsStore.create(out, study=tiny.name, overwrite=True)
    assert not again.is_done("decode") and not (out / "tables" / "decoding.tsv").exists()


def test_the_summary_of_ones_own_data_has_the_maps_the_basis_and_the_masks(own_folder, tmp_path, capsys):
    """The CLI review: on a study without planted truth the summary had no maps, concept or masks section,
    and concept_maps.tsv held a column of NaN (the Dice with planted regions there are none of)."""
    out = tmp_path / "results"
    fast = [*FAST, "--param", "embed.controls=[]", "--param", "concepts.n_components=8",
            "--param", "concepts.contact_sheets=false", "--param", "masks.n_steps=60", "--param", "masks.burn_in=20"]
    assert main(["masks", str(own_folder), "--out", str(out), *fast]) == 0, capsys.readouterr().err
    assert main(["maps", str(own_folder), "--out", str(out), *fast, "--resume"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    maps = pd.read_csv(out / "tables" / "concept_maps.tsv", sep="\t")
    assert "dice_top_vs_planted" not in maps and maps["peak"].notna().all()
    section = printed.split("Per-concept maps: the peak of each map")[1].split("\n\n")[0]
    assert all(c in section for c in set(maps["concept"])) and "peak_corr_map" in section
    basis = printed.split("Concept basis: ")[1].split("\n\n")[0]
    names = pd.read_csv(out / "tables" / "concept_names.tsv", sep="\t")
    first = names[names["end"] == "positive"].iloc[0]
    assert "basis (" in basis and f"{first['concept']} {first['label']}" in " ".join(basis.split())
    masks = printed.split("Voxel masks: the most decodable concepts")[1].split("\n\n")[0]
    scores = pd.read_csv(out / "tables" / "mask_scores.tsv", sep="\t")
    best = scores.groupby("concept")["decodability"].mean().idxmax()
    assert masks.splitlines()[2].split()[0] == best


def test_the_summary_says_each_participants_data_and_cuts_long_tables(tmp_path):
    """The NSD review: the summary said "128–128 voxels" for one participant, nothing of the sessions read,
    left the encoding models out, and printed every row of the image-model table (~130 on NSD's ROIs)."""
    from napari_brain_concepts.core.summary import format_summary

    study = small_study()
    store = ResultsStore.create(tmp_path / "results")
    store.write_table("encoding_summary", pd.DataFrame({"roi": ["whole mask"], "model": ["captions"], "r": [0.2]}))
    store.write_table("concept_retrieval", pd.DataFrame())  # what the concepts step writes without test trials
    store.write_table("concept_names", pd.DataFrame({"concept": ["c000"], "end": ["positive"], "label": ["dog"]}))
    ctx = _ctx(study, store)
    ctx.state["image_models"] = {"summary": pd.DataFrame({"roi": [f"roi{i}" for i in range(30)], "r": 0.1})}
    text = format_summary(ctx)
    first, second = text.splitlines()[:2]
    voxels = {s.n_voxels for s in study.subjects.values()}
    assert first.startswith(f"Study {study.name}: {len(study.subjects)} participants, {len(study.stimuli)} stimuli")
    assert (f"{min(voxels):,}–{max(voxels):,} voxels" if len(voxels) > 1 else f" {min(voxels):,} voxels") in first
    assert "Concept basis: 1 component\n" in text and "c000 dog" in " ".join(text.split())
    assert second.startswith("Participants") and all(name in second for name in study.subject_names)
    assert "Encoding models: held-out r in each ROI" in text and "whole mask" in text
    assert "roi19" in text and "roi20" not in text and "… 10 more rows in tables/image_models.tsv" in text
