import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from w2s_cli import W2SError
from w2s_cli.cli.flags import SPEC_HELP
from w2s_cli.inputs import hf, registry, sources
from w2s_cli.inputs.sources import DEBIAN_FASHION_MNIST, TEST, UnreadableImage, digits, read_idx, subset
from w2s_cli.inputs.sources import open_source as _open
from w2s_cli.options import DataOptions


def open_source(spec, **kw):
    return _open(DataOptions(spec, **kw))


def test_digits_is_real_and_grey_images_become_rgb():
    src = digits()
    assert len(src) == 1797 and src.split is None and src.task == "classification"
    im = src.load(0)
    assert im.mode == "RGB" and im.size == (8, 8)
    assert len(src.fingerprint) == 64 and src.fingerprint == digits().fingerprint


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_and_fashion_mnist_from_root(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n))
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").shape == (10, 28, 28)
    src = open_source("fashion-mnist", root=str(tmp_path))
    assert len(src) == 40 and (src.split == TEST).sum() == 10
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(W2SError, match="truncated"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(W2SError, match="IDX files not found"):
        open_source("fashion-mnist", root=str(tmp_path / "nowhere"))
    with pytest.raises(W2SError, match="--root .*: not a directory"):
        open_source("fashion-mnist", root=str(tmp_path / "missing"))


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    src = open_source("fashion-mnist")
    assert len(src) == 70000 and (src.split == TEST).sum() == 10000
    assert np.bincount(src.targets).tolist() == [7000] * 10


def test_folder_source_with_split_and_corrupt_image(image_folder, tmp_path):
    src = open_source(f"folder:{image_folder}")
    assert src.classes == ["class0", "class1", "class2"] and (src.split == TEST).sum() == 18
    assert src.load(0).mode == "RGB"
    broken = tmp_path / "broken" / "a"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"this is not a png")
    with pytest.raises(UnreadableImage, match="cannot read image"):
        open_source(f"folder:{tmp_path / 'broken'}").load(0)


def test_csv_regression_source(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((8, 8), i * 60, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "t.csv").write_text(
        "path,angle,split\n" + "".join(f"{i}.png,{i * 1.5},{'test' if i == 3 else 'train'}\n" for i in range(4))
    )
    src = open_source(f"csv:{tmp_path / 't.csv'}")
    assert src.task == "regression" and src.targets.tolist() == [0.0, 1.5, 3.0, 4.5]
    assert src.split.tolist() == [0, 0, 0, 1]
    for text, pattern in (
        ("path,angle\n0.png,abc\n", "line 2: target 'abc' is not a number"),
        ("path,angle\n0.png,nan\n", "not a finite number"),
        ("path,angle\n,1.0\n", "line 2: no image path"),
        ("path,angle\n9.png,1.0\n", r"1 image file\(s\) missing"),
        ("path,angle\n0.png\n", "target 'None' is not a number"),
    ):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(W2SError, match=pattern):
            open_source(f"csv:{tmp_path / 'bad.csv'}")
    (tmp_path / "latin.csv").write_bytes("path,angle\n0.png,1\nk\xe4se.png,2\n".encode("latin-1"))
    with pytest.raises(W2SError, match="not UTF-8"):
        open_source(f"csv:{tmp_path / 'latin.csv'}")


def test_unknown_spec_and_limit():
    with pytest.raises(W2SError, match="unknown data SPEC"):
        open_source("imagenet")
    src = digits()
    ids = subset(src, 100, seed=1)
    assert len(ids) == 100 and np.all(np.diff(ids) > 0)
    np.testing.assert_array_equal(ids, subset(src, 100, seed=1))
    split = np.array([0] * 60 + [1] * 40, np.int8)
    src.split, src.targets = split, src.targets[:100]
    ids = subset(src, 50, seed=0)
    assert (split[ids] == TEST).sum() == 20  # the test split keeps its share


def test_torchvision_dataset_from_local_files(tmp_path):
    """torchvision:FashionMNIST reads the IDX files torchvision expects under ROOT/FashionMNIST/raw."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", 20), ("t10k", 8)):
        for kind, arr in (
            ("images-idx3", rng.integers(0, 255, size=(n, 28, 28))),
            ("labels-idx1", rng.integers(0, 10, size=n)),
        ):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
            (raw / f"{stem}-{kind}-ubyte").write_bytes(header + arr.astype(np.uint8).tobytes())
    src = open_source("torchvision:FashionMNIST", root=str(tmp_path))
    assert len(src) == 28 and (src.split == TEST).sum() == 8 and src.classes[0] == "T-shirt/top"
    assert src.load(0).mode == "RGB"
    (tmp_path / "empty").mkdir()
    with pytest.raises(W2SError, match="add --download"):
        open_source("torchvision:FashionMNIST", root=str(tmp_path / "empty"))
    with pytest.raises(W2SError, match="no such dataset"):
        open_source("torchvision:NoSuchSet")


SPECS = ["fashion-mnist", "digits", "folder:PATH", "csv:PATH", "torchvision:NAME", "hf:NAME_OR_PATH[:CONFIG]"]


def test_registry_drives_help_error_and_dispatch(monkeypatch, tmp_path):
    kinds = list(registry.SOURCES.values())
    assert [k.spec for k in kinds] == SPECS and all(k.help for k in kinds)
    assert SPEC_HELP == " | ".join(SPECS)
    with pytest.raises(W2SError) as err:
        open_source("imagenet")
    assert str(err.value) == (
        "unknown data SPEC 'imagenet'; use fashion-mnist, digits, folder:PATH, csv:PATH, torchvision:NAME or "
        "hf:NAME_OR_PATH[:CONFIG]"
    )
    for bad in ("folder:", "folder", "csv:", "hf:", "torchvision", "digits:", "fashion-mnist:x", "", ":x"):
        with pytest.raises(W2SError, match=f"unknown data SPEC '{re.escape(bad)}'; use fashion-mnist, digits"):
            open_source(bad)
    calls = []
    for name in ("fashion_mnist", "digits", "image_folder", "csv_images", "torchvision_dataset", "hf_dataset"):
        module = hf if name == "hf_dataset" else sources
        monkeypatch.setattr(module, name, lambda *a, name=name: calls.append((name, a)))
    kw = {"root": str(tmp_path), "download": True, "target_column": "y"}
    expected = {
        "fashion-mnist": ("fashion_mnist", (tmp_path, True)),
        "digits": ("digits", ()),
        "folder:a/b:c": ("image_folder", (Path("a/b:c"),)),
        "csv:t.csv": ("csv_images", (Path("t.csv"), "y")),
        "torchvision:CIFAR10": ("torchvision_dataset", ("CIFAR10", tmp_path, True)),
        "hf:ylecun/mnist:cfg": ("hf_dataset", ("ylecun/mnist:cfg", DataOptions("hf:ylecun/mnist:cfg", **kw))),
    }
    assert [registry.find(spec)[0].spec for spec in expected] == SPECS  # one example per registered kind
    for spec, call in expected.items():
        open_source(spec, **kw)
        assert calls.pop() == call


def test_cli_help_stays_light():
    """Each source registers its opener beside itself (sources.py, hf.py), so listing the SPECs for the CLI's
    help imports them, with numpy and PIL; nothing heavier (no torch, timm, scipy or scikit-learn)."""
    heavy = "{'torch', 'timm', 'scipy', 'sklearn'}"
    code = f"import sys, w2s_cli.cli.flags; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
