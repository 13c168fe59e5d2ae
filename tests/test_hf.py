"""hf:NAME_OR_PATH[:CONFIG]: Hugging Face datasets built locally from real images (scikit-learn digits), offline."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from conftest import assert_user_error, digits, w2s  # noqa: E402

from w2s_cli import W2SError  # noqa: E402
from w2s_cli.inputs.hf import split_spec  # noqa: E402
from w2s_cli.inputs.sources import TEST, TRAIN, UnreadableImage, open_source  # noqa: E402
from w2s_cli.options import DataOptions  # noqa: E402

N_TRAIN, N_TEST = 40, 20
CLASSES = [f"digit{k}" for k in range(10)]


def hf(spec, **kw):
    return open_source(DataOptions(f"hf:{spec}", **kw))


@pytest.fixture(autouse=True)
def offline_cache(tmp_path_factory, monkeypatch):
    """load_dataset caches under a private folder and never asks the Hub."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def digits_rows():
    d = digits()
    images = [Image.fromarray(np.round(d.images[i] * (255 / 16)).astype(np.uint8)) for i in range(N_TRAIN + N_TEST)]
    return images, d.target[: N_TRAIN + N_TEST].astype(int)


def make(images, labels, features, **extra):
    return datasets.Dataset.from_dict({"img": images, "digit": [int(v) for v in labels], **extra}, features=features)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, digits_rows):
    """The same 60 digits as a saved DatasetDict, a saved single Dataset, a parquet folder, and variants."""
    images, labels = digits_rows
    root = tmp_path_factory.mktemp("hf")
    feats = datasets.Features(
        {
            "img": datasets.Image(),
            "digit": datasets.ClassLabel(names=CLASSES),
            "label": datasets.Value("int64"),
        }
    )
    odd = [int(v) * 10 + 5 for v in labels]  # plain ints: classes are the sorted distinct values
    tr, te = slice(0, N_TRAIN), slice(N_TRAIN, None)
    dd = datasets.DatasetDict(
        train=make(images[tr], labels[tr], feats, label=odd[tr]),
        test=make(images[te], labels[te], feats, label=odd[te]),
    )
    dd.save_to_disk(root / "saved")
    datasets.concatenate_datasets([dd["train"], dd["test"]]).save_to_disk(root / "single")
    (root / "parquet").mkdir()
    dd["train"].to_parquet(root / "parquet" / "train.parquet")
    dd["test"].to_parquet(root / "parquet" / "test.parquet")
    datasets.DatasetDict(train=dd["train"], validation=dd["test"]).save_to_disk(root / "validation")
    datasets.DatasetDict(a=dd["train"], b=dd["test"]).save_to_disk(root / "odd-splits")
    reg = datasets.Features({"img": datasets.Image(), "target": datasets.Value("float64")})
    values = [float(v) * 0.5 + 0.25 for v in labels]
    datasets.Dataset.from_dict({"img": images, "target": values}, features=reg).save_to_disk(root / "regression")
    values[7] = float("nan")
    datasets.Dataset.from_dict({"img": images, "target": values}, features=reg).save_to_disk(root / "nan")
    datasets.Dataset.from_dict({"name": ["a", "b"], "label": [0, 1]}).save_to_disk(root / "no-image")
    datasets.Dataset.from_dict(
        {"img": images[:2], "size": [1.0, 2.0]}, features=datasets.Features(img=datasets.Image(), size=reg["target"])
    ).save_to_disk(root / "no-label")
    broken = [{"bytes": b"not an image", "path": None}, {"bytes": b"\x89PNG\r\n", "path": None}]
    datasets.Dataset.from_dict(
        {"img": broken, "label": [0, 1]}, features=datasets.Features(img=datasets.Image(), label=feats["label"])
    ).save_to_disk(root / "broken")
    return root


def test_saved_dataset_dict_keeps_its_split_classes_and_rgb_images(hf_dirs, digits_rows):
    images, labels = digits_rows
    src = hf(hf_dirs / "saved")
    assert len(src) == N_TRAIN + N_TEST and src.task == "classification" and src.classes == CLASSES
    assert src.split.tolist() == [TRAIN] * N_TRAIN + [TEST] * N_TEST
    assert src.targets.dtype == np.int64 and src.targets.tolist() == labels.tolist()
    for i in (0, N_TRAIN - 1, N_TRAIN, len(src) - 1):
        im = src.load(i)
        assert im.mode == "RGB" and im.size == (8, 8)
        assert np.array_equal(np.asarray(im)[..., 0], np.asarray(images[i]))
    record = src.record()
    assert record["source"] == str((hf_dirs / "saved").resolve()) and record["config"] is None
    assert (record["image_column"], record["label_column"], record["has_split"]) == ("img", "digit", True)
    assert len(src.fingerprint) == 64 and src.fingerprint == hf(hf_dirs / "saved").fingerprint


def test_parquet_folder_single_dataset_and_validation_split(hf_dirs):
    saved = hf(hf_dirs / "saved")
    pq = hf(hf_dirs / "parquet")
    assert pq.classes == CLASSES and pq.split.tolist() == saved.split.tolist()
    assert pq.targets.tolist() == saved.targets.tolist()
    assert np.array_equal(np.asarray(pq.load(N_TRAIN + 3)), np.asarray(saved.load(N_TRAIN + 3)))
    assert pq.fingerprint == hf(hf_dirs / "parquet").fingerprint != saved.fingerprint
    single = hf(hf_dirs / "single")
    assert single.split is None and single.targets.tolist() == saved.targets.tolist()
    assert single.fingerprint not in (saved.fingerprint, pq.fingerprint)
    val = hf(hf_dirs / "validation")
    assert val.split.tolist() == saved.split.tolist() and val.record()["splits"] == ["train", "validation"]
    with pytest.raises(W2SError, match=r"splits a, b: expected one split, or 'train' with 'test' or 'validation'"):
        hf(hf_dirs / "odd-splits")


def test_column_overrides_and_plain_integer_classes(hf_dirs, digits_rows):
    _, labels = digits_rows
    src = hf(hf_dirs / "saved", label_column="label", image_column="img")
    assert src.task == "classification" and src.record()["label_column"] == "label"
    assert src.classes == [str(k * 10 + 5) for k in sorted(set(labels.tolist()))]
    assert src.targets.tolist() == [sorted(set(labels.tolist())).index(v) for v in labels]
    assert src.fingerprint != hf(hf_dirs / "saved").fingerprint
    as_target = hf(hf_dirs / "saved", target_column="label")
    assert as_target.task == "regression" and as_target.targets.tolist() == [v * 10.0 + 5 for v in labels]
    with pytest.raises(W2SError, match=r"saved: no column 'nope' \(columns: img \(Image\), digit \(ClassLabel\)"):
        hf(hf_dirs / "saved", label_column="nope")
    with pytest.raises(W2SError, match="--image-column 'digit' is not an image column"):
        hf(hf_dirs / "saved", image_column="digit")
    with pytest.raises(W2SError, match="no column 'picture'"):
        hf(hf_dirs / "saved", image_column="picture")


def test_regression_target_and_non_finite_targets(hf_dirs, digits_rows):
    _, labels = digits_rows
    src = hf(hf_dirs / "regression")
    assert src.task == "regression" and src.classes is None and src.split is None
    assert src.targets.dtype == np.float64 and src.targets.tolist() == [v * 0.5 + 0.25 for v in labels]
    assert src.record()["label_column"] == "target" and src.load(5).mode == "RGB"
    with pytest.raises(W2SError, match=r"hf:.*nan: row 7: target nan in column 'target' is not a finite number"):
        hf(hf_dirs / "nan")


def test_refusals_are_one_clear_line(hf_dirs, monkeypatch):
    with pytest.raises(W2SError, match=r"hf:.*missing: no such directory$"):
        hf(hf_dirs / "missing")
    with pytest.raises(W2SError, match=r"no image column \(columns: name \(Value\), label \(Value\)\)"):
        hf(hf_dirs / "no-image")
    with pytest.raises(W2SError, match=r"no label column .*columns: img \(Image\), size \(Value\)\); pass --label"):
        hf(hf_dirs / "no-label")
    with pytest.raises(W2SError, match="has no configurations"):
        hf(f"{hf_dirs / 'saved'}:cfg")
    with pytest.raises(W2SError, match=r"^hf:nobody/nothing: could not load the dataset \(.+\)$") as info:
        hf("nobody/nothing")
    assert "\n" not in str(info.value)
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(W2SError, match=r"needs the optional package 'datasets' \(pip install 'w2s\[hf\]'\)"):
        hf(hf_dirs / "saved")


def test_config_is_split_off_only_when_it_is_not_a_path(hf_dirs):
    assert split_spec("ylecun/mnist") == ("ylecun/mnist", None)
    assert split_spec("nyu-mll/glue:cola") == ("nyu-mll/glue", "cola")
    assert split_spec("./data:x/y") == ("./data:x/y", None)
    assert split_spec(f"{hf_dirs}/saved:mnist") == (f"{hf_dirs}/saved", "mnist")
    (hf_dirs / "odd:name").mkdir(exist_ok=True)
    assert split_spec(f"{hf_dirs}/odd:name") == (f"{hf_dirs}/odd:name", None)


def test_unreadable_images_raise_in_load(hf_dirs):
    src = hf(hf_dirs / "broken")
    for i in (0, 1):
        with pytest.raises(
            UnreadableImage, match=rf"^hf:broken row {i}: cannot read image \(UnidentifiedImageError\)$"
        ):
            src.load(i)


def test_image_folder_through_load_dataset_reads_files_lazily(tmp_path, digits_rows):
    images, labels = digits_rows
    for i in range(12):
        folder = tmp_path / "imf" / ("test" if i % 4 == 0 else "train") / f"d{labels[i] % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        images[i].save(folder / f"{i:02d}.png")
    src = hf(tmp_path / "imf")
    assert len(src) == 12 and (src.split == TEST).sum() == 3 and src.classes == ["d0", "d1"]
    assert src.record()["image_column"] == "image" and src.load(0).mode == "RGB"
    first = src.load.parts[0][0]["image"][0].as_py()["path"]  # a file reference, read on demand
    assert first.startswith(str(tmp_path / "imf" / "train")) and first.endswith(".png")
    Path(first).unlink()
    with pytest.raises(UnreadableImage, match=rf"imf row 0 \({re.escape(first)}\): cannot read image \(No such file"):
        src.load(0)


def test_loader_pickles_by_reference_and_runs_in_spawned_workers(hf_dirs, digits_rows):
    import torch

    images, _ = digits_rows
    src = hf(hf_dirs / "saved")
    blob = pickle.dumps(src.load)
    png = src.load.parts[0][0]["img"][0].as_py()["bytes"]
    assert png not in blob and len(blob) < 20_000  # file references, not the images
    assert np.array_equal(np.asarray(pickle.loads(blob)(N_TRAIN + 1)), np.asarray(src.load(N_TRAIN + 1)))
    # a spawned DataLoader worker gets the loader pickled and calls it on each row
    loader = torch.utils.data.DataLoader(
        range(len(src)), batch_size=None, collate_fn=src.load, num_workers=1, multiprocessing_context="spawn"
    )
    got = list(loader)
    assert [im.mode for im in got] == ["RGB"] * len(src)
    assert np.array_equal(np.stack([np.asarray(im)[..., 1] for im in got]), np.stack([np.asarray(im) for im in images]))


def test_cli_extract_from_a_saved_dataset(hf_dirs, tmp_path):
    from w2s_cli.store import artifact as store

    out = tmp_path / "e.safetensors"
    args = ["--model", "test_resnet", "--no-pretrained", "--image-size", "32", "--num-workers", "1", "-q"]
    result = w2s("extract", "--data", f"hf:{hf_dirs / 'saved'}", *args, "-o", out)
    assert result.exit_code == 0, result.output
    art = store.load(out)
    assert art.shape("embeddings")[0] == N_TRAIN + N_TEST
    assert art.meta["dataset"]["image_column"] == "img" and art.meta["dataset"]["classes"] == CLASSES
    assert_user_error(
        w2s("extract", "--data", f"hf:{hf_dirs / 'nan'}", *args, "-o", tmp_path / "x.safetensors"),
        "row 7: target nan in column 'target' is not a finite number",
    )
