"""Activations of image models from local files: torchvision, open_clip, the trained networks."""

import json

import numpy as np
import pytest
from PIL import Image

from napari_brain_concepts.core.alignment.image_features import (
    ImageModelSpec,
    image_features,
    image_features_iter,
    load_image_model,
    network_spec,
    stimulus_images,
)
from napari_brain_concepts.core.alignment.image_networks import ImageToTextNetwork
from napari_brain_concepts.core.errors import InputError
from napari_brain_concepts.core.study import Stimuli

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _images(n=6, size=48, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pt"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_torchvision_from_local_file_equals_the_model_it_was_saved_from(resnet_file):
    path, model = resnet_file
    images = _images()
    spec = ImageModelSpec("resnet18", "torchvision", "resnet18", weights=path, layer="layer3", image_size=64)
    feats = image_features(spec, images, device="cpu", batch_size=4)
    assert feats.shape == (6, 256) and feats.dtype == np.float32
    # The same activations straight from the saved model, spatially averaged.
    loaded = load_image_model(spec, device="cpu")
    x = torch.stack([loaded.preprocess(im) for im in images])
    captured = {}
    model.layer3.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    with torch.no_grad():
        model(x)
    np.testing.assert_allclose(feats, captured["o"].mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    # default layer of a torchvision model with an avgpool is the pooled features
    pooled = image_features(ImageModelSpec("r", "torchvision", "resnet18", weights=path, image_size=64),
                            images, device="cpu")
    assert pooled.shape == (6, 512)
    assert not np.allclose(pooled[0], pooled[1])


def test_torchvision_bad_inputs(resnet_file, tmp_path):
    path, _ = resnet_file
    images = _images(2)
    with pytest.raises(InputError, match="weights file .* is missing"):
        image_features(ImageModelSpec("r", "torchvision", "resnet18", weights=tmp_path / "none.pt"), images)
    with pytest.raises(InputError, match="names no weights file"):
        ImageModelSpec("r", "torchvision", "resnet18").check()
    with pytest.raises(InputError, match="do not fit torchvision resnet34.*missing keys"):
        load_image_model(ImageModelSpec("r", "torchvision", "resnet34", weights=path), device="cpu")
    with pytest.raises(InputError, match="torchvision has no model 'resnet19'"):
        load_image_model(ImageModelSpec("r", "torchvision", "resnet19", weights=path), device="cpu")
    with pytest.raises(InputError, match="'layer9'.*not a module.*layer"):
        image_features(ImageModelSpec("r", "torchvision", "resnet18", weights=path, layer="layer9",
                                      image_size=32), images, device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        load_image_model(ImageModelSpec("r", "torchvision", "resnet18", weights=junk), device="cpu")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("oc")
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    (folder / "nbc-tiny-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("nbc-tiny-vit", pretrained=None)
    weights = folder / "tiny.pt"
    torch.save(model.state_dict(), weights)
    return folder / "nbc-tiny-vit.json", weights, model.eval()


def test_open_clip_from_local_checkpoint(tiny_open_clip):
    config, weights, model = tiny_open_clip
    images = _images(5)
    spec = ImageModelSpec("tiny clip", "open_clip", "nbc-tiny-vit", weights=weights, config=config)
    loaded = load_image_model(spec, device="cpu")
    emb = image_features(loaded, images, batch_size=2)
    assert emb.shape == (5, 32)
    x = torch.stack([loaded.preprocess(im) for im in images])
    with torch.no_grad():
        np.testing.assert_allclose(emb, model.encode_image(x).numpy(), rtol=1e-4, atol=1e-5)
    block = image_features(loaded, images, layer="visual.transformer.resblocks.1")
    assert block.shape == (5, 64)
    with pytest.raises(InputError, match="not run when encoding images"):
        image_features(loaded, images, layer="transformer.resblocks.0")
    with pytest.raises(InputError, match="knows no model"):
        load_image_model(ImageModelSpec("x", "open_clip", "no-such-clip", weights=weights), device="cpu")
    with pytest.raises(InputError, match="weights file .* is missing"):
        load_image_model(ImageModelSpec("x", "open_clip", "nbc-tiny-vit", weights=weights.with_name("gone.pt")))


def test_trained_network_features_from_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    net = ImageToTextNetwork(channels=(8, 16), image_size=32, epochs=1, device="cpu").fit(
        pixels, rng.normal(size=(12, 5)).astype(np.float32))
    ckpt = net.save_checkpoint(tmp_path / "net.pt")
    images = [Image.fromarray(p) for p in pixels]
    steps = []
    gen = image_features_iter(network_spec("net", ckpt, layer="conv2"), images, batch_size=5, device="cpu")
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            feats = stop.value
            break
    assert [p.done for p in steps] == [5, 10, 12]
    np.testing.assert_allclose(feats, net.transform(pixels, layer="conv2"), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not a layer of the network"):
        image_features(network_spec("net", ckpt, layer="fc7"), images, device="cpu")


def test_stimulus_images_reports_missing_files(tmp_path):
    (tmp_path / "a.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    stimuli = Stimuli(ids=["a", "b", "c"], captions=[["x"], ["y"], ["z"]],
                      image_paths=["a.png", "b.png", "c.png"], root=tmp_path)
    assert len(stimulus_images(stimuli, [0])) == 1
    with pytest.raises(InputError, match=r"b\.png: image file is missing \(2 of 3 images are\)"):
        stimulus_images(stimuli)
    no_images = Stimuli(ids=["a", "b"], captions=[["x"], ["y"]])
    with pytest.raises(InputError, match="2 of 2 stimuli have no image"):
        stimulus_images(no_images)


def test_stimulus_images_stream_in_batches_with_the_same_features(resnet_file):
    """Images are decoded when a batch needs them, never all at once, and give the features of a list."""
    path, _ = resnet_file
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (7, 40, 40, 3), dtype=np.uint8)
    reads = []

    def source(i):
        reads.append(i)
        return pixels[i]

    stimuli = Stimuli(ids=[f"s{i}" for i in range(7)], captions=[[] for _ in range(7)], image_source=source)
    images = stimulus_images(stimuli)
    assert len(images) == 7 and reads == []
    subset = images[[6, 2, 4]]
    assert len(subset) == 3 and len(images[2:5]) == 3 and reads == []
    np.testing.assert_array_equal(np.asarray(subset[0]), pixels[6])
    assert reads == [6]
    reads.clear()
    spec = ImageModelSpec("r", "torchvision", "resnet18", weights=path, layer="layer2", image_size=32)
    model = load_image_model(spec, device="cpu")
    gen = image_features_iter(model, images, batch_size=3)
    first = next(gen)
    assert first.done == 3 and sorted(reads) == [0, 1, 2]     # only the first batch was read
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            streamed = stop.value
            break
    assert sorted(reads) == list(range(7))
    eager = image_features(model, [Image.fromarray(p) for p in pixels], batch_size=3)
    np.testing.assert_array_equal(streamed, eager)
