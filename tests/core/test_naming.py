"""Concept naming: planted concepts are named by their words; TSV and contact sheets are written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_brain_concepts.core.concepts.naming import caption_lemmas, name_directions, write_names
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore

from ._planted_concepts import CONCEPTS, STYLES, WORDS, planted_study


@pytest.fixture(scope="module")
def study():
    return planted_study(seed=2, n_stimuli=200, n_subjects=2)


def _planted_directions(study):
    E = study.stimuli.embeddings["captions"].values
    F = study.truth["features"]
    dirs = np.linalg.lstsq(np.c_[F, np.ones(len(F))], E, rcond=None)[0][:-1]
    return E, dirs


def test_caption_lemmas():
    assert caption_lemmas("Two women are riding the buses, next to 3 houses") == \
        ["two", "woman", "ride", "bus", "next", "house"]
    assert caption_lemmas("") == []


def test_planted_concepts_are_named_by_their_words(study):
    E, dirs = _planted_directions(study)
    names = name_directions(dirs, E, study.stimuli, list(CONCEPTS), n_show=6, n_words=5)
    for concept in CONCEPTS:
        top = names.words(concept)[:3]
        assert set(top) & set(WORDS[concept]), (concept, top)
        # the negative end is not the concept
        assert not set(names.words(concept, "negative")[:2]) & set(WORDS[concept])
        # stimuli at the top hold the concept
        j = CONCEPTS.index(concept)
        assert np.all(study.truth["features"][names.top[names.concepts.index(concept)], j] > 0)
    # colour words are in every caption's style, spread evenly: never a concept's label
    assert not any(set(names.words(c)[:2]) & set(STYLES) for c in CONCEPTS)
    t = names.table
    assert list(t.columns[:4]) == ["concept", "end", "label", "words"]
    assert len(t) == 2 * len(CONCEPTS)
    assert t["stimulus_ids"].str.split(";").map(len).eq(6).all()


def test_basis_components_matched_to_planted_concepts_carry_their_names(study):
    from napari_brain_concepts.core.concepts.basis import ConceptBasis
    from napari_brain_concepts.core.concepts.truth import match_planted

    E, dirs = _planted_directions(study)
    rng = np.random.default_rng(0)
    # decoded embeddings: the planted part of each stimulus survives, the rest is noise
    rows = np.repeat(np.arange(len(E)), 2)
    F = study.truth["features"]
    Y_hat = F[rows] @ dirs + 0.3 * rng.normal(size=(len(rows), E.shape[1])).astype(np.float32)
    basis = ConceptBasis(6, n_iter=200, learning_rate=3e-3, device="cpu", random_state=0).fit(E[rows], Y_hat, rows)
    ids = [f"c{k:03d}" for k in range(basis.n_concepts_)]
    names = name_directions(basis.components_, E, study.stimuli, ids)
    matches = match_planted(study, basis.transform(E), ids)
    for _, m in matches.iterrows():
        assert set(names.words(m["concept"])[:3]) & set(WORDS[m["planted"]]), (m["planted"], names.words(m["concept"]))


def test_tsv_and_contact_sheets_are_written(study, tmp_path):
    E, dirs = _planted_directions(study)
    names = name_directions(dirs, E, study.stimuli, list(CONCEPTS), n_show=5)
    store = ResultsStore.create(tmp_path / "res")
    paths = write_names(store, names, study.stimuli, sheets=["face", "food"])
    table = store.read_table("concept_names")
    assert set(table["concept"]) == set(CONCEPTS)
    assert table.loc[(table.concept == "face") & (table.end == "positive"), "words"].iloc[0] == \
        ";".join(names.words("face"))
    sheet = Image.open(store.figure_path("concept_face"))
    assert sheet.format == "PNG" and sheet.size[0] > 5 * 96
    assert len(paths) == 3


def test_any_directions_and_bad_input(study):
    E, dirs = _planted_directions(study)
    names = name_directions(dirs[0], E, study.stimuli, rows=np.arange(50), n_show=3)
    assert names.concepts == ["c000"] and names.top.max() < 50
    with pytest.raises(InputError, match="directions"):
        name_directions(dirs[:, :5], E, study.stimuli)
    with pytest.raises(InputError, match="names for"):
        name_directions(dirs, E, study.stimuli, ["a"])
    with pytest.raises(InputError, match="no concept"):
        names.words("nope")


@pytest.fixture(scope="module")
def tiny():
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny", n_subjects=2)


def test_planted_directions_of_the_synthetic_study_are_named_by_their_words(tiny):
    syn = tiny
    E = syn.stimuli.embeddings["captions"].values
    F = syn.truth["features"]
    # the direction that reads each concept out of the embedding (a ridge filter, not an exact fit)
    from sklearn.linear_model import Ridge

    dirs = Ridge(alpha=1.0).fit(E, F).coef_
    names = name_directions(dirs, E, syn.stimuli, syn.truth["concepts"], n_words=5)
    unnamed = {}
    for concept in syn.truth["concepts"]:
        planted_words = {lemma for w in syn.truth["concept_words"][concept] for lemma in caption_lemmas(w)}
        if not set(names.words(concept)[:3]) & planted_words:
            unnamed[concept] = names.words(concept)
        top = names.top[names.concepts.index(concept)]
        assert np.mean(F[top, syn.truth["concepts"].index(concept)] > 0) >= 0.75, concept
    # "colour" is carried by six different words (red, green, …): none is frequent enough among the top
    # stimuli to beat words shared by every scene layout; its top stimuli are coloured all the same
    assert set(unnamed) <= {"colour"}, unnamed


def test_excess_ranking_lists_only_lemmas_above_chance(tiny):
    from sklearn.linear_model import Ridge

    syn = tiny
    E = syn.stimuli.embeddings["captions"].values
    dirs = Ridge(alpha=1.0).fit(E, syn.truth["features"]).coef_
    concepts = syn.truth["concepts"]
    by_freq = name_directions(dirs, E, syn.stimuli, concepts, n_words=8)
    by_excess = name_directions(dirs, E, syn.stimuli, concepts, n_words=8, word_ranking="excess")
    # the share of all stimuli whose captions hold each lemma
    holds = [set(caption_lemmas(" ".join(c))) for c in syn.stimuli.captions]
    share = {w: np.mean([w in h for h in holds]) for h in holds for w in h}
    below_chance = 0
    for table, ranking in ((by_excess.table, "excess"), (by_freq.table, "frequency")):
        for _, row in table.iterrows():
            words, counts = row["words"].split(";"), row["word_counts"].split(";")
            for w, c in zip(words, counts):
                if w:
                    above = int(c) > row["n_counted"] * share[w]
                    if ranking == "excess":
                        assert above, (row["concept"], row["end"], w, c)
                    else:
                        below_chance += not above
    assert below_chance > 0  # frequency alone lists lemmas that are no more frequent than chance
    def named(names):  # concepts with a planted word among their first three lemmas
        return {c for c in concepts
                if set(names.words(c)[:3]) & {lemma for w in syn.truth["concept_words"][c] for lemma in caption_lemmas(w)}}

    assert named(by_excess) >= named(by_freq) and len(named(by_excess)) >= len(concepts) - 1
    with pytest.raises(InputError, match="word_ranking"):
        name_directions(dirs, E, syn.stimuli, concepts, word_ranking="tfidf")


def test_words_tied_in_count_are_ranked_rarest_first():
    """Among words that every top stimulus holds, the one rare in the whole set (the concept's own word,
    here "red") comes before words common to many scenes, not after them in alphabetical order."""
    from napari_brain_concepts.core.study import Stimuli

    captions = ([["a red kite beside a tree"]] * 10 + [["a blue kite beside a house"]] * 8
                + [["a cat on a mat"]] * 22)
    stimuli = Stimuli(ids=np.array([f"s{i}" for i in range(40)]), captions=captions)
    E = np.zeros((40, 2), np.float32)
    E[:10, 0] = 1.0
    E[10:, 1] = 1.0
    names = name_directions(np.array([[1.0, 0.0]]), E, stimuli, n_words_from=10, words_fraction=0.25)
    assert names.words("c000")[:4] == ["red", "tree", "beside", "kite"]

