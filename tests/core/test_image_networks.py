"""Image→caption-embedding network: training, recurrence, seeds, progress, checkpoints."""

import numpy as np
import pytest

from napari_brain_concepts.core.alignment.image_networks import ImageToTextNetwork, train_networks
from napari_brain_concepts.core.errors import InputError

torch = pytest.importorskip("torch")


def _toy(n=48, size=24, seed=0):
    """Images whose target depends on which half is bright: learnable from pixels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    images[labels == 1, : size // 2] += 150
    images[labels == 0, size // 2:] += 150
    basis = np.eye(4, dtype=np.float32)
    targets = basis[labels] + 0.05 * rng.normal(size=(n, 4)).astype(np.float32)
    return images, targets, labels


# pool_grid=2 keeps the layout in the readout: the toy targets are about where the bright half is
SMALL = dict(channels=(8, 16), image_size=24, pool_grid=2, batch_size=16, lr=3e-3, device="cpu")


@pytest.mark.parametrize("recurrent", [False, True])
def test_training_lowers_the_cosine_loss_and_learns_the_target(recurrent):
    images, targets, labels = _toy()
    net = ImageToTextNetwork(recurrent=recurrent, n_steps=2, epochs=12, **SMALL).fit(images, targets)
    assert net.history_[-1] < 0.5 * net.history_[0]
    pred = net.predict(images)
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1, rtol=1e-5)
    assert np.mean(pred[:, :2].argmax(axis=1) == labels) > 0.9
    untrained = ImageToTextNetwork(recurrent=recurrent, **SMALL).init(4)
    assert np.mean(untrained.predict(images)[:, :2].argmax(axis=1) == labels) < 0.8


def test_recurrent_variant_has_lateral_and_top_down_weights_and_unrolls():
    net = ImageToTextNetwork(recurrent=True, n_steps=4, **SMALL).init(4)
    names = [n for n, _ in net.module_.named_parameters()]
    assert any(n.startswith("lateral.") for n in names) and any(n.startswith("top_down.") for n in names)
    images, _, _ = _toy(n=4)
    one_step = ImageToTextNetwork(recurrent=True, n_steps=1, **SMALL).init(4)
    one_step.module_.load_state_dict(net.module_.state_dict())
    # same weights, different number of unrolled steps: lateral/top-down input changes the output
    assert not np.allclose(net.transform(images, "pool"), one_step.transform(images, "pool"))
    feed_forward = ImageToTextNetwork(recurrent=False, **SMALL).init(4)
    assert not any("lateral" in n for n, _ in feed_forward.module_.named_parameters())


def test_seeds_are_deterministic_and_differ():
    images, targets, _ = _toy(n=24)
    a = ImageToTextNetwork(epochs=2, random_state=3, **SMALL).fit(images, targets)
    b = ImageToTextNetwork(epochs=2, random_state=3, **SMALL).fit(images, targets)
    c = ImageToTextNetwork(epochs=2, random_state=4, **SMALL).fit(images, targets)
    np.testing.assert_array_equal(a.predict(images), b.predict(images))
    assert not np.allclose(a.predict(images), c.predict(images))


def test_category_control_uses_the_same_architecture_with_multi_hot_targets():
    images, _, labels = _toy()
    multi_hot = np.stack([labels == 0, labels == 1, np.ones_like(labels, bool)], axis=1).astype(np.float32)
    net = ImageToTextNetwork(target="categories", epochs=12, **SMALL).fit(images, multi_hot)
    prob = net.predict(images)
    assert prob.min() >= 0 and prob.max() <= 1
    assert np.mean((prob[:, 1] > 0.5) == (labels == 1)) > 0.9
    caption = ImageToTextNetwork(**SMALL).init(3)
    assert ({k: v.shape for k, v in net.module_.state_dict().items()}
            == {k: v.shape for k, v in caption.module_.state_dict().items()})
    with pytest.raises(InputError, match="not multi-hot"):
        ImageToTextNetwork(target="categories", epochs=1, **SMALL).fit(images, multi_hot + 0.5)


def test_fit_iter_reports_each_epoch_and_stops_cleanly_when_closed():
    images, targets, _ = _toy(n=16)
    net = ImageToTextNetwork(epochs=5, **SMALL)
    gen = net.fit_iter(images, targets)
    first = next(gen)
    assert (first.done, first.total) == (1, 5) and "loss" in first.message
    next(gen)
    gen.close()
    assert len(net.history_) == 2
    assert not net.module_.training  # left in eval mode, usable
    assert net.transform(images).shape == (16, 16 * 4)
    assert net.transform(images, "conv2").shape == (16, 16)


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    images, targets, _ = _toy(n=16)
    net = ImageToTextNetwork(recurrent=True, n_steps=2, epochs=1, **SMALL).fit(images, targets)
    path = net.save_checkpoint(tmp_path / "net.pt")
    again = ImageToTextNetwork.from_checkpoint(path, device="cpu")
    np.testing.assert_array_equal(again.predict(images), net.predict(images))
    assert again.recurrent and again.n_steps == 2 and again.history_ == net.history_
    same = ImageToTextNetwork(recurrent=True, n_steps=2, **SMALL).load_checkpoint(path)
    np.testing.assert_array_equal(same.transform(images, "conv1"), net.transform(images, "conv1"))

    with pytest.raises(InputError, match=r"another architecture \(channels: checkpoint \[8, 16\] vs network "
                                         r"\[8, 32\]\)"):
        ImageToTextNetwork(recurrent=True, n_steps=2, **{**SMALL, "channels": (8, 32)}).load_checkpoint(path)
    with pytest.raises(InputError, match="pool_grid: checkpoint 2 vs network 1"):
        ImageToTextNetwork(recurrent=True, n_steps=2, **{**SMALL, "pool_grid": 1}).load_checkpoint(path)
    with pytest.raises(InputError, match="recurrent: checkpoint True vs network False"):
        ImageToTextNetwork(**SMALL).load_checkpoint(path)
    with pytest.raises(InputError, match="target: checkpoint 'embedding' vs network 'categories'"):
        ImageToTextNetwork(target="categories", recurrent=True, n_steps=2, **SMALL).load_checkpoint(path)
    other = tmp_path / "resnet_like.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="not an image-network checkpoint"):
        ImageToTextNetwork.from_checkpoint(other)
    with pytest.raises(InputError, match="checkpoint file is missing"):
        ImageToTextNetwork.from_checkpoint(tmp_path / "absent.pt")


def test_bad_parameters_and_inputs():
    images, targets, _ = _toy(n=8)
    with pytest.raises(InputError, match="parameter target"):
        ImageToTextNetwork(target="words", **SMALL).fit(images, targets)
    with pytest.raises(InputError, match="targets: have shape"):
        ImageToTextNetwork(epochs=1, **SMALL).fit(images, targets[:5])
    with pytest.raises(InputError, match="not initialised"):
        ImageToTextNetwork(**SMALL).transform(images)
    with pytest.raises(InputError, match="'fc' is not a layer"):
        ImageToTextNetwork(**SMALL).init(4).transform(images, layer="fc")


def test_train_networks_gives_trained_untrained_and_category_nets_per_seed():
    images, targets, labels = _toy(n=16)
    cats = np.stack([labels == 0, labels == 1], axis=1).astype(np.float32)
    gen = train_networks(images, targets, cats, seeds=(0, 1), network=dict(SMALL, epochs=2), device="cpu")
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            nets = stop.value
            break
    assert set(nets) == {"caption", "untrained", "categories"}
    assert all(len(v) == 2 for v in nets.values())
    assert reports[-1].done == reports[-1].total == 8
    assert nets["untrained"][0].history_ == [] and len(nets["caption"][1].history_) == 2
    assert nets["categories"][0].target == "categories"


# -- the image-models step on the synthetic study --------------------------------------------------------------
STEP_PARAMS = dict(channels=[8, 16, 32], image_size=32, epochs=15, batch_size=32, lr=3e-3, seeds=[0])


def _run_image_models(tmp_path_factory, size: str, make_params) -> tuple:
    """The image-models step on the synthetic study of ``size`` (seed 0), with the parameters
    ``make_params(tmp_path_factory)`` gives; (context, progress reports)."""
    from napari_brain_concepts.core.alignment.image_steps import image_models_step
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse cache fixture
        mp.setenv("BRAIN_CONCEPTS_CACHE", str(tmp_path_factory.mktemp("cache")))
        study = make_synthetic_study(seed=0, size=size)
        store = ResultsStore.create(tmp_path_factory.mktemp("results"))
        ctx = AnalysisContext(study=study, store=store, device="cpu", random_state=0,
                              params={"image-models": make_params(tmp_path_factory)})
        reports = []
        with store.staged("image-models"):
            run_to_end(image_models_step(ctx), reports.append)
    return ctx, reports


@pytest.fixture(scope="module")
def image_models_run(tmp_path_factory):
    from napari_brain_concepts.core.alignment.image_steps import ImageModelsParams

    def params(factory):
        torchvision = pytest.importorskip("torchvision")
        torch.manual_seed(0)
        weights = factory.mktemp("weights") / "mobilenet.pt"
        torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
        other = {"name": "mobilenet", "source": "torchvision", "arch": "mobilenet_v3_small",
                 "weights": str(weights), "image_size": 64}
        return ImageModelsParams(**STEP_PARAMS, models=[other])

    return _run_image_models(tmp_path_factory, "tiny", params)


def test_image_models_step_writes_tables_figure_and_checkpoints(image_models_run):
    ctx, reports = image_models_run
    store = ctx.store
    assert store.is_done("image-models")
    table = store.read_table("image_models_rsa")
    models = {"caption embedding", "caption network", "untrained network", "category network", "mobilenet"}
    assert set(table["model"]) == models
    rois = set(table["roi"])
    assert {"planted/relation", "planted/number", "planted/colour", "floc-faces/FFA-1"} <= rois
    assert set(table["subject"]) == set(ctx.study.subject_names)
    summary = store.read_table("image_models")
    assert {"roi", "model", "r", "noise_ceiling", "r_norm", "q"} <= set(summary.columns)
    assert store.figure_path("image_models").is_file()
    state = ctx.state["image_models"]
    ckpt = store.array_path("image_net_caption_s0", ".pt")
    assert ckpt.is_file() and store.array_path("image_net_categories_s0", ".pt").is_file()
    again = ImageToTextNetwork.from_checkpoint(ckpt, device="cpu")
    rows = state["rows"]
    pixels = ctx.study.stimuli.pixels[rows]
    np.testing.assert_allclose(again.transform(pixels), state["features"]["caption network"], rtol=1e-5,
                               atol=1e-6)
    assert any(p.step == "image networks" for p in reports)
    assert any(p.step == "image features" and "mobilenet" in p.message for p in reports)
    assert state["features"]["mobilenet"].shape == (len(rows), 576)


def test_caption_network_generalises_to_held_out_images(image_models_run):
    """On test images it never saw, the caption network's output is closer to the images' caption embeddings
    (RSA, and cosine) than its untrained self's and the category control's representations."""
    from napari_brain_concepts.core.alignment import rsa

    ctx, _ = image_models_run
    state = ctx.state["image_models"]
    rows = state["rows"]
    assert not np.any(np.isin(rows, np.flatnonzero(~ctx.study.stimuli.test)))
    pixels = ctx.study.stimuli.pixels[rows]
    target = rsa.upper_triangle(rsa.correlation_rdm(ctx.study.stimuli.embeddings["captions"].values[rows]))
    score = {}
    for kind, nets in state["networks"].items():
        for layer in ("readout", "pool"):
            rdm = rsa.upper_triangle(rsa.correlation_rdm(nets[0].transform(pixels, layer=layer)))
            score[kind, layer] = float(rsa.compare_rdms(rdm, target)[0, 0])
    print("\nRSA with the caption embedding on held-out images:", {k: round(v, 3) for k, v in score.items()})
    assert score["caption", "readout"] > 0.08
    assert score["caption", "readout"] > score["untrained", "readout"] + 0.05
    assert score["caption", "readout"] > score["categories", "readout"]


# -- the network claim, on the default study (the tiny one is too small for it: its caption-driven regions hold
# ~16 voxels at 8 mm and its networks see 125 images at 32 px) ---------------------------------------------------
NETWORK_SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def default_image_models(tmp_path_factory):
    """The image-models step with its default network on the default study, three network seeds."""
    from napari_brain_concepts.core.alignment.image_steps import ImageModelsParams

    ctx, _ = _run_image_models(tmp_path_factory, "default", lambda _: ImageModelsParams(seeds=NETWORK_SEEDS))
    table = ctx.state["image_models"]["table"]
    # the step's mean over the network seeds of each kind (the rows named without a seed), checked by hand
    seeds = table[table["model"].str.startswith("caption network (seed")]
    mean = table[table["model"] == "caption network"].set_index(["subject", "roi"])["r"]
    np.testing.assert_allclose(mean, seeds.groupby(["subject", "roi"])["r"].mean().reindex(mean.index))
    assert set(ctx.state["image_models"]["summary"]["model"]) == {
        "caption embedding", "caption network", "untrained network", "category network"}
    means = table[~table["model"].str.contains("seed")]
    return ctx.study, means.pivot_table(index=["roi", "subject"], columns="model", values="r")


def _network_claim(scores, concept: str) -> None:
    sub = scores.xs(f"planted/{concept}", level="roi")
    print(f"\nRSA r in planted/{concept} (mean of {len(NETWORK_SEEDS)} network seeds):\n{sub.round(3)}")
    assert (sub["caption network"] > sub["untrained network"]).all(), concept
    assert (sub["caption network"] > sub["category network"]).all(), concept
    assert (sub["caption network"] > 0.03).all(), concept


@pytest.mark.parametrize("concept", ["colour", "relation"])
def test_caption_network_beats_untrained_and_category_control_in_caption_driven_regions(default_image_models,
                                                                                        concept):
    """Doerig et al.'s claim on the default study, in every subject: the network trained toward caption
    embeddings is closer to the caption-driven regions than its untrained self and the category control.
    It holds on study seeds 0, 1 and 2 alike (measured: caption network r 0.031-0.142, category network
    -0.029-0.037, untrained -0.012-0.085); with one network seed it fails in some subjects of seed 1."""
    study, scores = default_image_models
    assert concept in study.truth["caption_driven"]
    _network_claim(scores, concept)


@pytest.mark.xfail(strict=True, reason=(
    "The number region's RSA holds no number signal: its voxels all carry the number feature alike (a plateau, "
    "+-20%), and correlation distance removes a pattern's mean, so even the generative number feature is at "
    "r = -0.003 to 0.048 per subject (seed 0), the caption embedding itself at -0.012 to 0.046, and the caption "
    "network at -0.001 to 0.038, below its untrained self in sub-01. Numerosity-tuned voxels (Harvey et al. "
    "2013) would raise the feature to r ~0.2 but not the caption embedding (measured; not in the generator)."))
def test_caption_network_beats_untrained_and_category_control_in_the_number_region(default_image_models):
    study, scores = default_image_models
    assert "number" in study.truth["caption_driven"]
    _network_claim(scores, "number")


def test_image_models_step_with_images_missing_on_disk(tmp_path):
    from napari_brain_concepts.core.alignment.image_steps import (
        ImageModelsParams,
        image_models_step,
    )
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.io.results import ResultsStore
    from napari_brain_concepts.core.progress import run_to_end

    from ._studies import small_study

    study = small_study(pixels=False)
    study.stimuli.image_paths = [f"images/{i}.png" for i in study.stimuli.ids]
    study.stimuli.root = tmp_path
    store = ResultsStore.create(tmp_path / "results")
    ctx = AnalysisContext(study=study, store=store, device="cpu",
                          params={"image-models": ImageModelsParams(**STEP_PARAMS)})
    with pytest.raises(InputError, match=r"img-000\.png: image file is missing \(6 of 6 images are\)"):
        with store.staged("image-models"):
            run_to_end(image_models_step(ctx))
    assert not store.is_done("image-models")
