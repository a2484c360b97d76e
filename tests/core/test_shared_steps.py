"""The ``shared`` step on the synthetic study: planted shared concepts are recovered in every subject,
the one-subject concept is not, face/body/place concepts are checked against the fLoc-style ROIs."""

import numpy as np
import pandas as pd
import pytest

from napari_brain_concepts.core.concepts.shared_steps import load_decoders, shared_step
from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.decoding.prepare import prepare_subject
from napari_brain_concepts.core.decoding.ridge import RidgeDecoder
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.progress import run_to_end
from napari_brain_concepts.core.synthetic import make_synthetic_study


@pytest.fixture(scope="module")
def fitted():
    study = make_synthetic_study(seed=0, size="tiny")
    decoders, prepared = {}, {}
    for name in study.subjects:
        prep = prepare_subject(study, name, "captions", protocol="sdc")
        decoders[name] = RidgeDecoder(alphas=[1e4], device="cpu").fit(prep.X_train, prep.Y_train)
        prepared[name] = prep
    return study, decoders, prepared


def _context(study, root, state, **params):
    store = ResultsStore.create(root)
    return AnalysisContext(study=study, store=store, params={"shared": params}, state=state)


@pytest.fixture(scope="module")
def result(fitted, tmp_path_factory):
    """The decode and shared steps with their defaults (cross-validated ridge), as a whole analysis runs them."""
    from napari_brain_concepts.core.pipeline import run_analysis

    study = fitted[0]
    ctx = _context(study, tmp_path_factory.mktemp("shared") / "results", {}, contact_sheets=False)
    ctx.device = "cpu"
    run_to_end(run_analysis(ctx, ["decode", "shared"]))
    return study, ctx, ctx.state["shared"]["summary"]


def test_planted_shared_concepts_are_found_in_every_subject(result):
    study, ctx, _ = result
    dice = ctx.store.read_table("shared_planted_dice")
    mean = dice.groupby(["planted", "concept"])["dice"].mean()
    best = {planted: mean[planted].idxmax() for planted in study.truth["shared_concepts"]}
    # every planted shared concept has its own shared concept
    assert len(set(best.values())) == len(best) == 8
    for planted, concept in best.items():
        values = dice[(dice.planted == planted) & (dice.concept == concept)].set_index("subject")["dice"]
        assert sorted(values.index) == sorted(study.subjects)
        assert values.min() >= 0.7, (planted, values.round(2).to_dict())
    concepts = ctx.store.read_table("shared_concepts").set_index("concept")
    for planted, concept in best.items():
        assert concepts.loc[concept, "planted"] == planted
        assert concepts.loc[concept, "planted_dice"] == pytest.approx(mean[planted][concept], abs=1e-5)


def test_single_subject_concept_is_not_shared(result):
    study, ctx, _ = result
    (concept, subject), = study.truth["single_subject_concepts"].items()
    dice = ctx.store.read_table("shared_planted_dice")
    assert dice[dice.planted == concept]["subject"].unique().tolist() == [subject]
    assert dice[dice.planted == concept]["dice"].max() < 0.2
    concepts = ctx.store.read_table("shared_concepts")
    assert concept not in set(concepts["planted"])
    assert (concepts["n_participants"] >= 4).all()  # min_participants 3 others + the subject itself


def test_localizer_validation_table_and_files(result):
    study, ctx, summary = result
    root = ctx.store.root
    validation = ctx.store.read_table("localizer_validation")
    assert {"floc-faces", "floc-bodies", "floc-places"} <= set(validation["roi"])
    concepts = ctx.store.read_table("shared_concepts")
    by_planted = dict(zip(concepts["planted"], concepts["concept"]))
    whole = validation[validation.region == "all"]
    for planted, roi in (("face", "floc-faces"), ("body", "floc-bodies"), ("place", "floc-places")):
        rows = whole[(whole.concept == by_planted[planted]) & (whole.roi == roi)]
        assert len(rows) == len(study.subjects)
        assert rows["dice"].mean() > 0.2 and rows["auc"].mean() > 0.6, rows.to_dict("list")
        # against the other face/body/place localizers (the words ROI, VWFA, lies next to FFA by design)
        other = whole[(whole.concept == by_planted[planted]) & (whole.roi != roi)
                      & (whole.roi != "floc-words")].groupby("roi").mean(numeric_only=True)
        assert rows["dice"].mean() > other["dice"].max() and rows["auc"].mean() > other["auc"].max()
    for path in ("tables/localizer_validation.tsv", "tables/shared_concepts.tsv", "shared/concepts.tsv",
                 "tables/shared_eps_sweep.tsv", "tables/shared_overlap.tsv", "tables/shared_concept_names.tsv",
                 "figures/localizer_validation.png", "figures/shared_concepts.png"):
        assert (root / path).is_file(), path
    assert sorted(p.name for p in (root / "shared").glob("shared-*.nii.gz")) == \
        [f"{c}.nii.gz" for c in concepts["concept"]]
    for name in study.subjects:
        assert set(ctx.store.masks(name)) <= set(concepts["concept"])
    assert ctx.store.is_done("shared")
    assert isinstance(summary, pd.DataFrame) and list(summary["concept"]) == list(concepts["concept"])
    assert {"label", "participants", "pairwise_dice", "planted", "planted_dice", "best_roi", "roi_dice",
            "roi_auc"} <= set(summary.columns)
    assert ctx.state["shared"]["clustering"].n_clusters_ >= len(concepts)
    names = ctx.store.read_table("shared_concept_names")
    assert set(names["end"]) == {"positive", "negative"}  # the negations are named too


def test_decoders_from_the_store_and_bad_decoders(fitted, tmp_path):
    study, decoders, prepared = fitted
    ctx = _context(study, tmp_path / "a", {"decoders": decoders, "prepared": prepared})
    from_state, alphas = load_decoders(ctx)
    assert set(alphas.values()) == {None}  # one alpha already: used as fitted
    store_ctx = _context(study, tmp_path / "b", {})
    for name, dec in decoders.items():
        store_ctx.store.write_arrays(f"decoder_{name}", coef=dec.coef_, voxels=prepared[name].voxels)
    from_store, _ = load_decoders(store_ctx)
    for name in study.subjects:
        np.testing.assert_allclose(from_store[name], from_state[name])
        assert from_state[name].shape == (384, study.subjects[name].n_voxels)

    with pytest.raises(InputError, match="run the decode step first"):
        load_decoders(_context(study, tmp_path / "c", {}))
    n = study.subject().n_voxels
    bad = {name: np.ones((384, n)) for name in study.subjects}
    bad["sub-03"] = np.ones((100, n))
    with pytest.raises(InputError, match="ridge_alpha"):
        load_decoders(ctx, ridge_alpha="best")
    with pytest.raises(InputError, match="different embedding dimensions"):
        run_to_end(shared_step(_context(study, tmp_path / "d", {"decoders": bad})))
    with pytest.raises(InputError, match=r"parameter shared\.eps: .*outside \(0\.0, 2\.0\]"):
        run_to_end(shared_step(_context(study, tmp_path / "e", {"decoders": decoders, "prepared": prepared},
                                        eps=2.5)))


def test_per_target_alphas_are_refitted_with_one_alpha(fitted, tmp_path):
    study, _, prepared = fitted
    name = "sub-01"
    cv = RidgeDecoder(alphas=[1e2, 1e4, 1e6], device="cpu").fit(
        prepared[name].X_train, prepared[name].Y_train, groups=prepared[name].groups_train)
    assert len(np.unique(cv.best_alphas_)) > 1
    ctx = _context(study, tmp_path / "a", {"decoders": {name: cv}, "prepared": prepared})
    weights, alphas = load_decoders(ctx)
    chosen = cv.alphas_[np.argmax(cv.cv_scores_.mean(axis=1))]
    assert alphas == {name: chosen}
    one = RidgeDecoder(alphas=[chosen], device="cpu").fit(prepared[name].X_train, prepared[name].Y_train)
    np.testing.assert_allclose(weights[name], prepared[name].voxel_values(one.coef_), rtol=1e-5, atol=1e-7)
    as_fitted, alphas = load_decoders(ctx, ridge_alpha="as-fitted")
    assert alphas == {name: None}
    np.testing.assert_allclose(as_fitted[name], prepared[name].voxel_values(cv.coef_))


def test_a_cluster_of_nearly_all_voxels_is_reported_as_no_concept(fitted, tmp_path):
    """The own-data review: with two participants, one 'shared concept' held 3797 of 3800 voxels, silently.
    At eps = 2 (every cosine distance) all voxels are one cluster: the step says it is no concept."""
    study, decoders, prepared = fitted
    ctx = _context(study, tmp_path / "r", {"decoders": decoders, "prepared": prepared}, eps=2.0,
                   expand_eps=2.0, contact_sheets=False)
    reports = []
    with pytest.warns(UserWarning, match=r"shared-00 holds \d+% or more of every participant's voxels"):
        run_to_end(shared_step(ctx), reports.append)
    assert any(r.message.startswith("warning: shared-00 holds") for r in reports)


def test_the_planted_shared_concepts_are_not_reported_as_degenerate(fitted, result):
    import nibabel as nib

    from napari_brain_concepts.core.concepts.shared_steps import DEGENERATE_SHARE

    study, ctx, _ = result
    for name in study.subjects:
        masks = ctx.store.masks(name)
        shares = [np.asarray(nib.load(masks[c]).dataobj).sum() / study.subjects[name].n_voxels
                  for c in masks if c.startswith("shared-")]
        assert shares and max(shares) < DEGENERATE_SHARE


def test_participants_in_no_common_space_stop_the_analysis_before_any_step(tmp_path):
    """A participant on another grid without to_common.txt cannot join the shared concepts: asked for by name,
    the step fails before the first step runs, with the file's path in the study folder (it used to stop the
    analysis when the shared step started, after decoding, maps, concepts and masks); a whole analysis leaves
    it out, saying why; with only the participants of one grid decoded, it applies."""
    from pathlib import Path

    from napari_brain_concepts.core.pipeline import STEPS, run_analysis

    study = make_synthetic_study(size="tiny")
    study.stimuli.root = tmp_path / "study"  # as a study folder read from disk
    moved = study.subject(study.subject_names[1])
    moved.affine = moved.affine.copy()
    moved.affine[:3, 3] += 8.0  # another space, and no to_common
    store = ResultsStore.create(tmp_path / "results", study=study.name)
    ctx = AnalysisContext(study=study, store=store, device="cpu")
    names = ",".join(study.subject_names)  # none has a to_common.txt: each needs one
    expected = str(Path(tmp_path / "study" / "subjects" / f"{{{names}}}" / "to_common.txt"))
    with pytest.raises(InputError, match="the participants are not in one space") as info:
        run_to_end(run_analysis(ctx, ["maps", "shared"]))
    assert info.value.where == expected
    assert not store.finished_steps and not ctx.state.get("decoders")
    assert "have no to_common.txt" in STEPS["shared"].not_applicable(ctx)
    ctx.params["decode"] = {"subjects": [n for n in study.subject_names if n != moved.name]}
    assert STEPS["shared"].not_applicable(ctx) is None


def test_a_step_left_out_by_an_earlier_run_is_not_reported_once_it_applies(fitted, tmp_path):
    """A whole analysis (or a dock's run) records why it left a step out; run again in the same analysis with
    values under which the step applies, the old reason goes (the summary and the dock said it was left out)."""
    from napari_brain_concepts.core.pipeline import run_analysis

    study = fitted[0]
    ctx = _context(study, tmp_path / "results", {}, min_participants=len(study.subject_names))
    run_to_end(run_analysis(ctx, ["shared"], leave_out=True))
    assert "it needs at least" in ctx.state["skipped_steps"]["shared"]
    ctx.params["shared"]["min_participants"] = 1
    for leave_out in (True, False):  # a whole analysis, or the step asked for by name (a dock's own button)
        ctx.state["skipped_steps"]["shared"] = "left out before"
        run = run_analysis(ctx, ["shared"], leave_out=leave_out)
        first = next(run)  # the steps are chosen before the first one starts
        run.close()
        assert first.message.startswith("step ") and "shared" not in ctx.state["skipped_steps"]
