"""Issue #5's claims on the default synthetic study (seed 0), run as the demo runs them: decode, concept
basis and voxel masks with the demo's parameters (about 1.5 minutes on 2 CPU cores).

The masks are optimised for the components matched to planted concepts only (10 of 256), which the claims
are about. Each concept's mask is its own problem (the loss is a sum over concepts, Adam acts element-wise;
``test_masks.py`` checks the batch against a loop), so these are the demo's masks: measured against the run
of all 256, the soft masks differ by at most 3.4e-6 (float32 rounding: the matrix products of 10 and 256 rows
round differently), the hard masks and the steps they were kept at are the same. With all 256 the masks step took 150 s of the fixture's 200 s (quiet machine); now 40 s.

- The hard mask of the basis component matched to each planted concept overlaps the planted region:
  mean Dice ≥ 0.8 in every participant (with ``skew_weight=0`` it is 0.75-0.77).
- The basis keeps ≥ 90% of full-space top-1 retrieval and beats PCA with as many dimensions.
- Every planted concept has a component about it (r ≥ 0.7 with its generative feature); no component
  follows vehicle, which no brain carries, as well (best r < 0.6). The component the one-to-one matching
  leaves to vehicle is about other concepts and has masks of its own; they do not read vehicle out.
- The concept planted in one participant only (animal) gets a mask there.
- Read out through the hard masks, every planted concept is decodable (r with its generative feature
  ≥ 0.6), and no concept is decodable at the masks' threshold (0.3) from any mask of a participant where
  it was not planted.
"""

from __future__ import annotations

import pytest

from napari_brain_concepts.cli import DEMO_PARAMS
from napari_brain_concepts.core.concepts.steps import ConceptsParams, MasksParams
from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.pipeline import run_analysis
from napari_brain_concepts.core.progress import run_to_end
from napari_brain_concepts.core.summary import mask_summary
from napari_brain_concepts.core.synthetic import make_synthetic_study


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    study = make_synthetic_study(seed=0, size="default")
    params = {"concepts": ConceptsParams(**DEMO_PARAMS["concepts"]), "masks": MasksParams(**DEMO_PARAMS["masks"])}
    ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path_factory.mktemp("default") / "r"),
                          device="cpu", params=params)
    run_to_end(run_analysis(ctx, ["decode", "concepts"]))
    matched = sorted(set(ctx.state["concept_matches"]["concept"]))
    ctx.params["masks"] = MasksParams(**DEMO_PARAMS["masks"], concepts=matched)
    run_to_end(run_analysis(ctx, ["masks"]))
    return ctx


def test_masks_of_matched_components_recover_the_planted_regions(run):
    truth = run.study.truth
    table = run.state["mask_truth"]
    shared = table[table["planted"].isin(truth["shared_concepts"])]
    assert shared["planted_here"].all()
    per_subject = shared.groupby("subject")["dice"].mean()
    assert set(per_subject.index) == set(run.study.subject_names)
    assert (per_subject >= 0.8).all(), per_subject.round(3).to_dict()


def test_basis_keeps_retrieval_and_beats_pca(run):
    r = run.state["concept_retrieval"]
    mean = r[r["subject"] == "mean"].set_index("space")["top1"]
    assert mean["basis"] >= 0.9 * mean["full"] and mean["basis"] >= 0.9 * mean["full_centred"], mean.to_dict()
    assert mean["basis"] > mean["pca"], mean.to_dict()


def test_planted_concepts_have_a_component_and_vehicle_has_none(run):
    matches = run.state["concept_matches"].set_index("planted")
    carried = [c for c in run.study.truth["concepts"] if c not in run.study.truth["no_region_concepts"]]
    assert (matches.loc[carried, "r"] >= 0.7).all(), matches["r"].round(3).to_dict()
    for concept in run.study.truth["no_region_concepts"]:
        assert matches.loc[concept, "best_r"] < 0.6, matches["best_r"].round(3).to_dict()


def _animal(run):
    table = run.state["mask_truth"].set_index("subject")
    animal = table[table["planted"] == next(iter(run.study.truth["single_subject_concepts"]))]
    return animal, animal["planted_here"].astype(bool)


def test_the_one_participant_concept_gets_its_mask_there(run):
    animal, here = _animal(run)
    assert here.sum() == 1
    assert animal.loc[here, "has_mask"].all() and animal.loc[here, "dice"].iloc[0] >= 0.6


def test_concepts_not_planted_in_a_participant_are_not_decodable_from_their_masks_there(run):
    """Where a concept was not planted, the masks of the component matched to it do not read it out (r below
    the masks' threshold).

    Vehicle (no region anywhere) is handed c001 by the one-to-one matching: a mixed component whose negative
    end is relation. c001 has masks, in the relation region, and they read vehicle out at r < 0 (-0.32 to
    -0.15). The animal component keeps some decodability outside its participant (full decoder r up to 0.42)
    and one participant gets a 1-voxel mask; through it animal reads out at r = 0.14.
    """
    threshold = MasksParams(**DEMO_PARAMS["masks"]).min_decodability
    table = run.state["mask_truth"]
    absent = table[~table["planted_here"].astype(bool)]
    assert set(absent["planted"]) == {"vehicle", next(iter(run.study.truth["single_subject_concepts"]))}
    shown = absent[["subject", "planted", "concept", "n_mask", "concept_r"]].to_dict("list")
    assert not absent["decodes_concept"].any(), shown
    assert (absent["concept_r"].fillna(-1.0) < threshold).all(), shown
    # the demo's summary says so
    line = next(x for x in mask_summary(run).splitlines() if x.startswith("each concept read out"))
    assert f"not planted in a subject: 0 of {len(absent)} read out" in line, line


def test_planted_concepts_are_decodable_from_their_masks(run):
    """The other side of the check above: every planted concept reads out through its own mask."""
    threshold = MasksParams(**DEMO_PARAMS["masks"]).min_decodability
    here = run.state["mask_truth"]
    here = here[here["planted_here"].astype(bool)]
    assert here["decodes_concept"].all(), here[["subject", "planted", "concept_r"]].to_dict("list")
    assert (here["concept_r"] >= max(0.6, threshold)).all(), here["concept_r"].round(2).tolist()
