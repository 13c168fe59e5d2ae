"""Data sources: turn a SPEC string into images, labels or targets, sample ids and the dataset's own split.

SPECs: `fashion-mnist`, `digits`, `folder:PATH`, `csv:PATH`, `torchvision:NAME`. Every source has a
fingerprint (a hash of what identifies its content) so that artifacts from different data never mix.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from w2s_cli.artifacts import file_sha256
from w2s_cli.errors import W2SError

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
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"}


@dataclass
class ImageSource:
    """A dataset of images with a label (classification) or a numeric target (regression) each.

    `split[i]` is TRAIN or TEST for datasets that come with their own split, else None for all.
    `load(i)` returns an RGB PIL image; grey images are repeated to three channels.
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


class _ArrayImages:
    """Picklable loader over an in-memory uint8 array (m, H, W) or (m, H, W, 3)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i]).convert("RGB")


class _FileImages:
    """Picklable loader over image files; a corrupt file is a user error naming the file."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise W2SError(f"{path}: cannot read image ({type(exc).__name__})") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not), the format of (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise W2SError(f"{path}: unreadable IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise W2SError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise W2SError(f"{path}: truncated IDX file")
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
    roots = [root] if root is not None else [DEBIAN_FASHION_MNIST]
    for r in roots:
        files = [_find_idx(r, s) for s in stems]
        if all(files):
            break
    else:
        if not download:
            where = root if root is not None else DEBIAN_FASHION_MNIST
            raise W2SError(
                f"fashion-mnist: IDX files not found in {where}; install the Debian package "
                "'dataset-fashion-mnist', pass --root DIR holding the IDX files, or add --download"
            )
        import torchvision

        target = root if root is not None else Path.home() / ".cache" / "w2s"
        try:
            torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise W2SError(f"fashion-mnist: download failed ({exc})") from None
        files = [_find_idx(target, s) for s in stems]
    h = hashlib.sha256()
    arrays = []
    for f in files:
        arr = read_idx(f)
        h.update(arr.tobytes())
        arrays.append(arr)
    x_train, y_train, x_test, y_test = arrays
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).astype(np.int64)
    split = np.concatenate([np.full(len(y_train), TRAIN), np.full(len(y_test), TEST)]).astype(np.int8)
    return ImageSource(
        "fashion-mnist",
        h.hexdigest(),
        "classification",
        labels,
        _ArrayImages(images),
        split,
        list(FASHION_MNIST_CLASSES),
        {"source": str(files[0].parent)},
    )


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
        _ArrayImages(images),
        None,
        [str(k) for k in range(10)],
    )


def _scan_class_folders(path: Path) -> tuple[list[str], list[int], list[str]]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for k, c in enumerate(classes):
        for root, _, names in sorted(os.walk(path / c)):
            for n in sorted(names):
                if Path(n).suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(os.path.join(root, n))
                    labels.append(k)
    return classes, labels, files


def image_folder(path: Path) -> ImageSource:
    """torchvision ImageFolder layout (PATH/class/img); PATH/train and PATH/test (or val) give a split."""
    if not path.is_dir():
        raise W2SError(f"folder:{path}: not a directory")
    sub = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    test_dir = sub.get("test") or sub.get("val")
    parts = [(sub["train"], TRAIN), (test_dir, TEST)] if "train" in sub and test_dir else [(path, TRAIN)]
    classes: list[str] | None = None
    files: list[str] = []
    labels: list[int] = []
    split: list[int] = []
    for folder, s in parts:
        c, lab, fs = _scan_class_folders(folder)
        if classes is None:
            classes = c
        elif c != classes:
            raise W2SError(f"folder:{path}: train and test hold different class folders")
        files += fs
        labels += lab
        split += [s] * len(fs)
    if not files:
        raise W2SError(f"folder:{path}: no images found (expected PATH/<class>/<image>)")
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.relpath(f, path).encode() + b"\0" + str(os.path.getsize(f)).encode() + b"\n")
    h.update("\n".join(classes or []).encode())
    return ImageSource(
        f"folder:{path.name}",
        h.hexdigest(),
        "classification",
        np.asarray(labels, np.int64),
        _FileImages(files),
        np.asarray(split, np.int8) if len(parts) == 2 else None,
        classes,
        {"source": str(path.resolve())},
    )


def csv_images(path: Path, target_column: str | None = None) -> ImageSource:
    """A CSV with an image path column (relative to the CSV) and a numeric target: a regression task.

    Columns: `path` (or `image`, `file`, else the first), the target (`--target-column`, else `target`, else
    the second), and an optional `split` column with values train/test.
    """
    if not path.is_file():
        raise W2SError(f"csv:{path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise W2SError(f"csv:{path}: no rows")
    cols = list(rows[0].keys())
    path_col = next((c for c in ("path", "image", "file") if c in cols), cols[0])
    if target_column is not None and target_column not in cols:
        raise W2SError(f"csv:{path}: no column '{target_column}' (columns: {', '.join(cols)})")
    rest = [c for c in cols if c not in (path_col, "split")]
    tcol = target_column or ("target" if "target" in cols else (rest[0] if rest else None))
    if tcol is None:
        raise W2SError(f"csv:{path}: needs an image path column and a numeric target column")
    files, targets, split = [], [], []
    for k, row in enumerate(rows, start=2):
        try:
            targets.append(float(row[tcol]))
        except (TypeError, ValueError):
            raise W2SError(f"csv:{path}: line {k}: target '{row[tcol]}' is not a number") from None
        p = Path(row[path_col])
        files.append(str(p if p.is_absolute() else path.parent / p))
        if "split" in cols:
            s = (row["split"] or "").strip().lower()
            if s not in ("train", "test"):
                raise W2SError(f"csv:{path}: line {k}: split must be train or test, not '{s}'")
            split.append(TEST if s == "test" else TRAIN)
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise W2SError(f"csv:{path}: {len(missing)} image file(s) missing, first: {missing[0]}")
    return ImageSource(
        f"csv:{path.name}",
        file_sha256(path),
        "regression",
        np.asarray(targets, np.float64),
        _FileImages(files),
        np.asarray(split, np.int8) if split else None,
        None,
        {"source": str(path.resolve()), "target_column": tcol},
    )


def torchvision_dataset(name: str, root: Path | None, download: bool) -> ImageSource:
    """Any torchvision classification dataset taking `train=` (CIFAR10, MNIST, KMNIST, ...)."""
    import torchvision

    cls = getattr(torchvision.datasets, name, None)
    if cls is None or not isinstance(cls, type):
        raise W2SError(f"torchvision:{name}: no such dataset in torchvision.datasets")
    root = root if root is not None else Path.home() / ".cache" / "w2s"
    parts = []
    for train in (True, False):
        try:
            parts.append(cls(str(root), train=train, download=download))
        except TypeError:
            raise W2SError(f"torchvision:{name}: only datasets with a train= argument are supported") from None
        except RuntimeError as exc:
            hint = "" if download else " (add --download, or --root DIR holding it)"
            raise W2SError(f"torchvision:{name}: {exc}{hint}") from None
        except Exception as exc:  # network errors come in many types
            raise W2SError(f"torchvision:{name}: could not load ({exc})") from None
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
        _ArrayImages(images),
        np.concatenate(split),
        classes,
        {"source": str(root)},
    )


def open_source(
    spec: str, root: str | None = None, download: bool = False, target_column: str | None = None
) -> ImageSource:
    """Parse a SPEC and open the data source it names."""
    root_path = Path(root) if root else None
    if spec == "fashion-mnist":
        return fashion_mnist(root_path, download)
    if spec == "digits":
        return digits()
    kind, _, arg = spec.partition(":")
    if kind == "folder" and arg:
        return image_folder(Path(arg))
    if kind == "csv" and arg:
        return csv_images(Path(arg), target_column)
    if kind == "torchvision" and arg:
        return torchvision_dataset(arg, root_path, download)
    raise W2SError(f"unknown data SPEC '{spec}'; use fashion-mnist, digits, folder:PATH, csv:PATH or torchvision:NAME")


def subset(source: ImageSource, limit: int | None, seed: int) -> np.ndarray:
    """Sample ids (sorted dataset indices) to extract: all, or `limit` drawn at random with `seed`.

    With a dataset split, each split keeps its share of the limit so that a limited extraction still
    has a test part.
    """
    m = len(source)
    if limit is None or limit >= m:
        return np.arange(m, dtype=np.int64)
    if limit <= 0:
        raise W2SError(f"--limit must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    if source.split is None:
        return np.sort(rng.choice(m, size=limit, replace=False)).astype(np.int64)
    chosen = []
    test_idx = np.flatnonzero(source.split == TEST)
    train_idx = np.flatnonzero(source.split == TRAIN)
    n_test = int(round(limit * len(test_idx) / m))
    chosen.append(rng.choice(test_idx, size=n_test, replace=False))
    chosen.append(rng.choice(train_idx, size=limit - n_test, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
