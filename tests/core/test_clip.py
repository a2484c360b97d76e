"""CLIP embeddings from local files: a tiny open_clip architecture and a tiny Hugging Face CLIP folder,
random weights saved to disk and loaded back through the same code the user runs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from napari_brain_concepts.core.embeddings.clip import ClipEncoder, clip_embeddings, load_clip  # noqa: E402
from napari_brain_concepts.core.errors import InputError  # noqa: E402
from napari_brain_concepts.core.study import Stimuli  # noqa: E402

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_CONCEPTS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A registered tiny open_clip config and a random checkpoint saved as a state_dict file."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip")
    cfg = folder / "tiny-clip-test.json"
    cfg.write_text(json.dumps(TINY))
    wide = folder / "tiny-clip-test-wide.json"
    wide.write_text(json.dumps({**TINY, "embed_dim": 48}))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    ckpt = folder / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return {"config": folder, "checkpoint": ckpt}


def _stimuli(n=6, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 40, 44, 3), dtype=np.uint8)
    captions = [[f"a photo of thing {i}", f"thing number {i} on a table"] for i in range(n)]
    return Stimuli(ids=[f"s{i}" for i in range(n)], captions=captions, pixels=pixels)


def test_open_clip_checkpoint_embeds_images_and_texts(tiny_open_clip, cache):
    import open_clip

    stimuli = _stimuli()
    embs = clip_embeddings(stimuli, "tiny-clip-test", tiny_open_clip["checkpoint"],
                           config=tiny_open_clip["config"], device="cpu", batch_size=4)
    image, caps = embs["tiny-clip-test-image"], embs["tiny-clip-test-captions"]
    assert image.values.shape == (6, 32) and image.kind == "image" and image.normalized
    assert caps.values.shape == (6, 32) and caps.kind == "caption-mean"
    np.testing.assert_allclose(np.linalg.norm(image.values, axis=1), 1.0, atol=1e-5)
    assert set(stimuli.embeddings) == {"tiny-clip-test-image", "tiny-clip-test-captions"}

    # the same numbers as open_clip itself gives with the saved weights and the model's preprocessing
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-test", pretrained=str(tiny_open_clip["checkpoint"]))
    model.eval()
    tokenizer = open_clip.get_tokenizer("tiny-clip-test")
    with torch.no_grad():
        ref = model.encode_image(torch.stack([preprocess(stimuli.image(i)) for i in range(6)]))
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
        text = model.encode_text(tokenizer(stimuli.captions[2]))
        text = torch.nn.functional.normalize(text, dim=-1).numpy().mean(axis=0)
    np.testing.assert_allclose(image.values, ref, atol=1e-5)
    np.testing.assert_allclose(caps.values[2], text, atol=1e-5)
    # the images differ, so the embeddings must too (a constant output would pass the norm check)
    assert np.min(1 - image.values @ image.values.T + np.eye(6)) > 1e-4


def test_second_run_reads_the_cache(tiny_open_clip, cache):
    stimuli = _stimuli()
    first = ClipEncoder("tiny-clip-test", tiny_open_clip["checkpoint"], config=tiny_open_clip["config"],
                        device="cpu", batch_size=4)
    a = clip_embeddings(stimuli, first, add=False)
    assert first.n_images_encoded_ == 6 and first.n_texts_encoded_ == 12
    assert any(cache.rglob("*.npy"))

    again = ClipEncoder("tiny-clip-test", tiny_open_clip["checkpoint"], config=tiny_open_clip["config"],
                        device="cpu", batch_size=4)
    reports = []
    b = clip_embeddings(stimuli, again, add=False, progress=reports.append)
    assert again.n_images_encoded_ == 0 and again.n_texts_encoded_ == 0      # nothing recomputed
    assert again._model is None                                             # weights never loaded
    assert any("from the cache" in r.message for r in reports)
    for name in a:
        np.testing.assert_array_equal(a[name].values, b[name].values)

    changed = _stimuli(seed=1)                                               # same ids, other pixels
    clip_embeddings(changed, again, kinds=("image",), add=False)
    assert again.n_images_encoded_ == 6


def test_checkpoint_that_does_not_match_the_model_name(tiny_open_clip, cache):
    with pytest.raises(InputError, match=r"tiny\.pt: does not match open_clip model 'tiny-clip-test-wide'"):
        load_clip("tiny-clip-test-wide", tiny_open_clip["checkpoint"], config=tiny_open_clip["config"],
                  device="cpu")


def test_bad_model_and_checkpoint_arguments(tiny_open_clip, tmp_path, cache):
    with pytest.raises(InputError, match="no checkpoint given"):
        ClipEncoder("tiny-clip-test")
    with pytest.raises(InputError, match="checkpoint file is missing"):
        ClipEncoder("ViT-B-32", tmp_path / "nothing.pt")
    with pytest.raises(InputError, match="checkpoint file is missing"):
        ClipEncoder("ViT-B-32", "openai")                      # a download tag is not a local file
    with pytest.raises(InputError, match="open_clip knows no model 'no-such-net'"):
        load_clip("no-such-net", tiny_open_clip["checkpoint"], device="cpu")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pt: .*open_clip"):
        load_clip("tiny-clip-test", broken, config=tiny_open_clip["config"], device="cpu")
    with pytest.raises(InputError, match="parameter kinds"):
        clip_embeddings(_stimuli(), "tiny-clip-test", tiny_open_clip["checkpoint"],
                        config=tiny_open_clip["config"], kinds=("audio",))


def _hf_clip_folder(folder):
    """A tiny transformers CLIP with open_clip's BPE vocabulary as its tokenizer, saved locally."""
    import open_clip
    from open_clip.tokenizer import default_bpe
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    tok = open_clip.tokenizer.SimpleTokenizer()
    vocab = {k.replace("<start_of_text>", "<|startoftext|>").replace("<end_of_text>", "<|endoftext|>"): v
             for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        projection_dim=16)
    torch.manual_seed(1)
    model = CLIPModel(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out = folder / "hf-tiny-clip"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out, model, tokenizer, processor


def test_hugging_face_clip_folder(tmp_path, cache):
    folder, model, tokenizer, processor = _hf_clip_folder(tmp_path)
    stimuli = _stimuli(n=5)
    encoder = ClipEncoder(folder, device="cpu", batch_size=2)
    assert encoder.backend == "transformers"
    embs = clip_embeddings(stimuli, encoder, add=False)
    image, caps = embs["hf-tiny-clip-image"], embs["hf-tiny-clip-captions"]
    assert image.values.shape == (5, 16) and caps.values.shape == (5, 16)
    with torch.no_grad():
        pix = processor(images=[stimuli.image(i) for i in range(5)], return_tensors="pt")["pixel_values"]
        out = model.get_image_features(pixel_values=pix)
        ref = out if isinstance(out, torch.Tensor) else out.pooler_output
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
        enc = tokenizer(stimuli.captions[4], padding=True, return_tensors="pt")
        out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        txt = out if isinstance(out, torch.Tensor) else out.pooler_output
        txt = torch.nn.functional.normalize(txt, dim=-1).numpy().mean(axis=0)
    np.testing.assert_allclose(image.values, ref, atol=1e-5)
    np.testing.assert_allclose(caps.values[4], txt, atol=1e-5)
    # the checkpoint argument may name the folder too; then the cache is reused
    again = ClipEncoder("my-clip", folder, device="cpu")
    clip_embeddings(stimuli, again, add=False)
    assert again.n_images_encoded_ == 0 and again.n_texts_encoded_ == 0


def test_clip_step_adds_and_stores_embeddings(tiny_open_clip, tmp_path, cache):
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.embeddings.clip import clip_step
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    from ._studies import small_study

    study = small_study(n_stimuli=5)
    store = ResultsStore.create(tmp_path / "results")
    params = {"clip": {"model": "tiny-clip-test", "checkpoint": str(tiny_open_clip["checkpoint"]),
                       "config": str(tiny_open_clip["config"]), "kinds": ("image",), "batch_size": 2}}
    ctx = AnalysisContext(study=study, store=store, params=params, device="cpu")
    run_to_end(clip_step(ctx))
    assert ctx.state["clip_embeddings"] == ["tiny-clip-test-image"]
    assert store.is_done("clip")
    stored = store.read_arrays("clip_embeddings")["tiny-clip-test-image"]
    np.testing.assert_array_equal(stored, study.stimuli.embeddings["tiny-clip-test-image"].values)
    assert stored.shape == (5, 32)
    ctx = AnalysisContext(study=study, store=store, params={}, device="cpu")
    with pytest.raises(InputError, match="parameter clip.model: no CLIP model given"):
        run_to_end(clip_step(ctx))
