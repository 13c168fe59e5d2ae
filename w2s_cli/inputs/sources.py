"""Data sources: turn a SPEC string into images, labels or targets, sample ids and the dataset's own split.

SPECs: `fashion-mnist`, `digits`, `folder:PATH`, `csv:PATH`, `torchvision:NAME`, `hf:NAME_OR_PATH[:CONFIG]`,
each registered with its opener in w2s_cli.inputs.registry (which drives open_source and the CLI's help).
Every source has a fingerprint (a hash of what identifies its content) so that artifacts from different
data never mix.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from w2s_cli.errors import W2SError, printable
from w2s_cli.inputs import registry
from w2s_cli.inputs.registry import source
from w2s_cli.options import DataOptions

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TRAIN, TEST = 0, 1


class UnreadableImage(Exception):
    """Raised inside loader workers; the extraction turns it into one W2SError line naming the file."""


@dataclass
class ImageSource:
    """A dataset of images with a label (classification) or a numeric target (regression) each.

    `split[i]` is TRAIN or TEST for datasets that come with their own split, else None for all.
    `load(i)` returns an RGB PIL image (grey images repeated to three channels); it must be picklable so
    that DataLoader workers can call it.
    """

    name: str
    fingerprint: str
    task: str  # "classification" | "regression"
    targets: np.ndarray  # int64 labels or float64 targets, shape (m,)
    load: Callable[[int], Image.Image]
    split: np.ndarray | None = None
    classes: list[str] | None = None
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)

    def record(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "task": self.task,
            "size": len(self),
            "classes": self.classes,
            "has_split": self.split is not None,
            **self.details,
        }


class ArrayImages:
    """Picklable loader over an in-memory uint8 array (m, H, W) or (m, H, W, 3)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i]).convert("RGB")


class FileImages:
    """Picklable loader over image files."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as exc:  # PIL raises many types for damaged files
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UnreadableImage(f"{printable(path)}: cannot read image ({reason})") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not), the format of (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise W2SError(f"{printable(path)}: unreadable IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise W2SError(f"{printable(path)}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise W2SError(f"{printable(path)}: truncated IDX file")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (
        root / f"{stem}.gz",
        root / stem,
        root / "FashionMNIST" / "raw" / f"{stem}.gz",
        root / "FashionMNIST" / "raw" / stem,
    ):
        if candidate.exists():
            return candidate
    return None


def fashion_mnist(root: Path | None = None, download: bool = False) -> ImageSource:
    """Fashion-MNIST: --root, else the Debian package's files, else torchvision's download if asked."""
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    where = root if root is not None else DEBIAN_FASHION_MNIST
    files = [_find_idx(where, s) for s in stems]
    if not all(files):
        if not download:
            raise W2SError(
                f"fashion-mnist: IDX files not found in {printable(where)}; install the Debian package "
                "'dataset-fashion-mnist', pass --root DIR holding the IDX files, or add --download"
            )
        import torchvision

        target = root if root is not None else Path.home() / ".cache" / "w2s"
        try:
            torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise W2SError(f"fashion-mnist: download failed ({type(exc).__name__})") from None
        files = [_find_idx(target, s) for s in stems]
    h = hashlib.sha256()
    arrays = []
    for f in files:
        arr = read_idx(f)
        h.update(arr.tobytes())
        arrays.append(arr)
    x_train, y_train, x_test, y_test = arrays
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise W2SError(f"fashion-mnist: images and labels differ in number in {printable(files[0].parent)}")
    split = np.concatenate([np.full(len(y_train), TRAIN), np.full(len(y_test), TEST)]).astype(np.int8)
    return ImageSource(
        "fashion-mnist",
        h.hexdigest(),
        "classification",
        np.concatenate([y_train, y_test]).astype(np.int64),
        ArrayImages(np.concatenate([x_train, x_test])),
        split,
        list(FASHION_MNIST_CLASSES),
        {"source": str(files[0].parent)},
    )


@source("fashion-mnist", help="Fashion-MNIST: the Debian package's IDX files, else --root DIR, else --download")
def _fashion_mnist(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return fashion_mnist(root, options.download)


def digits() -> ImageSource:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255); no split of its own."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    fingerprint = hashlib.sha256(images.tobytes() + d.target.astype(np.int64).tobytes()).hexdigest()
    return ImageSource(
        "digits",
        fingerprint,
        "classification",
        d.target.astype(np.int64),
        ArrayImages(images),
        None,
        [str(k) for k in range(10)],
    )


@source("digits", help="scikit-learn's 1,797 8x8 digits (no split of its own)")
def _digits(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return digits()


def image_folder(path: Path) -> ImageSource:
    """torchvision's ImageFolder layout (PATH/class/img); PATH/train and PATH/test (or val) give a split."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    if not path.is_dir():
        raise W2SError(f"folder:{printable(path)}: not a directory")
    sub = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    test_dir = sub.get("test") or sub.get("val")
    parts = [(sub["train"], TRAIN), (test_dir, TEST)] if "train" in sub and test_dir else [(path, TRAIN)]
    classes: list[str] | None = None
    files: list[str] = []
    labels: list[int] = []
    split: list[int] = []
    for folder, s in parts:
        try:
            c, class_to_idx = find_classes(str(folder))
            samples = ImageFolder.make_dataset(str(folder), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
        except (FileNotFoundError, OSError) as exc:
            raise W2SError(f"folder:{printable(path)}: {printable(exc)} (expected PATH/<class>/<image>)") from None
        if classes is None:
            classes = c
        elif c != classes:
            raise W2SError(f"folder:{printable(path)}: train and test hold different class folders")
        files += [f for f, _ in samples]
        labels += [k for _, k in samples]
        split += [s] * len(samples)
    if not files:
        raise W2SError(f"folder:{printable(path)}: no images found (expected PATH/<class>/<image>)")
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.relpath(f, path).encode() + b"\0" + str(os.path.getsize(f)).encode() + b"\n")
    h.update("\n".join(classes or []).encode())
    return ImageSource(
        f"folder:{path.name}",
        h.hexdigest(),
        "classification",
        np.asarray(labels, np.int64),
        FileImages(files),
        np.asarray(split, np.int8) if len(parts) == 2 else None,
        classes,
        {"source": str(path.resolve())},
    )


@source("folder", arg="PATH", help="an ImageFolder tree PATH/<class>/<image>; PATH/train + PATH/test (or val) split")
def _folder(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return image_folder(Path(arg))


def csv_images(path: Path, target_column: str | None = None) -> ImageSource:
    """A CSV with an image path column (relative to the CSV) and a numeric target: a regression task.

    Columns: `path` (or `image`, `file`, else the first), the target (`--target-column`, else `target`, else
    the second), and an optional `split` column with values train/test.
    """
    from w2s_cli.store.artifact import file_sha256  # lazily: the CLI's help imports this module

    name = f"csv:{printable(path)}"
    if not path.is_file():
        raise W2SError(f"{name}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as exc:
        raise W2SError(f"{name}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise W2SError(f"{name}: unreadable CSV ({printable(exc)})") from None
    if not rows:
        raise W2SError(f"{name}: no rows")
    cols = [c for c in rows[0].keys() if c is not None]
    path_col = next((c for c in ("path", "image", "file") if c in cols), cols[0])
    if target_column is not None and target_column not in cols:
        raise W2SError(f"{name}: no column '{printable(target_column)}' (columns: {printable(', '.join(cols))})")
    rest = [c for c in cols if c not in (path_col, "split")]
    tcol = target_column or ("target" if "target" in cols else (rest[0] if rest else None))
    if tcol is None:
        raise W2SError(f"{name}: needs an image path column and a numeric target column")
    files, targets, split = [], [], []
    for k, row in enumerate(rows, start=2):
        raw_path, raw_target = row.get(path_col), row.get(tcol)
        if not raw_path:
            raise W2SError(f"{name}: line {k}: no image path in column '{printable(path_col)}'")
        try:
            value = float(raw_target)
        except (TypeError, ValueError):
            raise W2SError(f"{name}: line {k}: target '{printable(raw_target)}' is not a number") from None
        if not math.isfinite(value):
            raise W2SError(f"{name}: line {k}: target '{printable(raw_target)}' is not a finite number")
        targets.append(value)
        p = Path(raw_path)
        files.append(str(p if p.is_absolute() else path.parent / p))
        if "split" in cols:
            s = (row["split"] or "").strip().lower()
            if s not in ("train", "test"):
                raise W2SError(f"{name}: line {k}: split must be train or test, not '{printable(s)}'")
            split.append(TEST if s == "test" else TRAIN)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise W2SError(f"{name}: {len(missing)} image file(s) missing, first: {printable(missing[0])}")
    return ImageSource(
        f"csv:{path.name}",
        file_sha256(path),
        "regression",
        np.asarray(targets, np.float64),
        FileImages(files),
        np.asarray(split, np.int8) if split else None,
        None,
        {"source": str(path.resolve()), "target_column": tcol},
    )


@source("csv", arg="PATH", help="a UTF-8 CSV of image paths and a numeric target (regression); optional split")
def _csv(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return csv_images(Path(arg), options.target_column)


def torchvision_dataset(name: str, root: Path | None, download: bool) -> ImageSource:
    """Any torchvision classification dataset taking `train=` (CIFAR10, MNIST, KMNIST, ...)."""
    import torchvision

    cls = getattr(torchvision.datasets, name, None)
    if cls is None or not isinstance(cls, type):
        raise W2SError(f"torchvision:{printable(name)}: no such dataset in torchvision.datasets")
    root = root if root is not None else Path.home() / ".cache" / "w2s"
    parts = []
    for train in (True, False):
        try:
            parts.append(cls(str(root), train=train, download=download))
        except TypeError:
            raise W2SError(f"torchvision:{name}: only datasets with a train= argument are supported") from None
        except RuntimeError as exc:
            hint = "" if download else " (add --download, or --root DIR holding it)"
            raise W2SError(f"torchvision:{name}: {printable(str(exc).splitlines()[0])}{hint}") from None
        except Exception as exc:  # network errors come in many types
            raise W2SError(f"torchvision:{name}: could not load ({type(exc).__name__})") from None
    arrays, labels, split = [], [], []
    for s, ds in enumerate(parts):
        data = np.asarray(ds.data)
        if data.dtype != np.uint8 or data.ndim not in (3, 4):
            raise W2SError(f"torchvision:{name}: images are not an in-memory uint8 array; use folder:PATH")
        arrays.append(data)
        labels.append(np.asarray(ds.targets, dtype=np.int64))
        split.append(np.full(len(data), s, np.int8))
    images = np.concatenate(arrays)
    targets = np.concatenate(labels)
    h = hashlib.sha256(name.encode())
    h.update(images.tobytes())
    h.update(targets.tobytes())
    classes = [str(c) for c in getattr(parts[0], "classes", [])] or None
    return ImageSource(
        f"torchvision:{name}",
        h.hexdigest(),
        "classification",
        targets,
        ArrayImages(images),
        np.concatenate(split),
        classes,
        {"source": str(root)},
    )


@source("torchvision", arg="NAME", help="a torchvision dataset taking train= (CIFAR10, MNIST, ...), --root/--download")
def _torchvision(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return torchvision_dataset(arg, root, options.download)


def open_source(options: DataOptions) -> ImageSource:
    """Parse a SPEC and open the data source it names."""
    spec = options.data
    root = Path(options.root) if options.root else None
    if root is not None and not root.is_dir():
        raise W2SError(f"--root {printable(root)}: not a directory")
    found = registry.find(spec)
    if found is None:
        raise W2SError(f"unknown data SPEC '{printable(spec)}'; use {registry.spec_list()}")
    kind, arg = found
    return kind.opener(arg, options, root)


def subset(source: ImageSource, limit: int | None, seed: int) -> np.ndarray:
    """Sample ids (sorted dataset indices) to extract: all, or `limit` drawn at random with `seed`.

    With a dataset split, each split keeps its share of the limit so that a limited extraction still
    has a test part.
    """
    m = len(source)
    if limit is not None and limit <= 0:
        raise W2SError(f"--limit must be positive, got {limit}")
    if limit is None or limit >= m:
        return np.arange(m, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if source.split is None:
        return np.sort(rng.choice(m, size=limit, replace=False)).astype(np.int64)
    test_idx = np.flatnonzero(source.split == TEST)
    train_idx = np.flatnonzero(source.split == TRAIN)
    n_test = int(round(limit * len(test_idx) / m))
    chosen = [
        rng.choice(test_idx, size=n_test, replace=False),
        rng.choice(train_idx, size=limit - n_test, replace=False),
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
