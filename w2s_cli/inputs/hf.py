"""`hf:NAME_OR_PATH[:CONFIG]`: a Hugging Face `datasets` dataset (the optional extra `pip install 'w2s[hf]'`).

NAME_OR_PATH is one of
* a local directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (`datasets.load_from_disk`);
* a local directory of data files, e.g. parquet files or an image folder (`datasets.load_dataset(PATH)`);
* a dataset name on the Hub, e.g. `ylecun/mnist` (`datasets.load_dataset(NAME, CONFIG)`, through the usual cache).

CONFIG rule: when the whole argument names an existing local path, there is no CONFIG. Otherwise the argument
is split at its last ':' when what follows is non-empty and holds no '/' (so it is not part of a path).

Columns: `--image-column`, else the first `datasets.Image` column. The label: `--label-column`, else the first
`datasets.ClassLabel` column, else a column named `label`, `labels` or `target`. A ClassLabel gives a
classification with its class names; other integers (or strings, or booleans) a classification whose classes
are the sorted distinct values, numbered 0..C-1; floats a regression. `--target-column` names a numeric column
to use as a regression target.

Splits: a DatasetDict with `train` plus `test` (else `validation`) keeps that split; a single split (or a
`train` without test or validation) has no split of its own. Rows are the train rows, then the test rows, in the
dataset's order. Images are read lazily, one row at a time, from the Arrow files (memory-mapped, and pickled by
file reference for datasets on disk), never all decoded at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from w2s_cli.errors import W2SError, printable
from w2s_cli.inputs.registry import source
from w2s_cli.inputs.sources import TEST, TRAIN, ImageSource, UnreadableImage
from w2s_cli.options import DataOptions

LABEL_NAMES = ("label", "labels", "target")
TEST_NAMES = ("test", "validation")


def split_spec(arg: str) -> tuple[str, str | None]:
    """NAME_OR_PATH and CONFIG (see the module's docstring for the rule)."""
    if os.path.exists(os.path.expanduser(arg)):
        return arg, None
    head, sep, tail = arg.rpartition(":")
    if sep and head and tail and "/" not in tail and os.sep not in tail:
        return head, tail
    return arg, None


def _import_datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise W2SError(f"{name}: needs the optional package 'datasets' (pip install 'w2s[hf]')") from None
    return datasets


def _one_line(exc: BaseException) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return printable(text if len(text) <= 300 else text[:297] + "...")


def _is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load(name: str, where: str, config: str | None, datasets) -> tuple[Any, str]:
    """The loaded Dataset or DatasetDict, and what to record as its source."""
    path = Path(os.path.expanduser(where))
    if path.exists():
        if not path.is_dir():
            raise W2SError(f"{name}: not a directory (give the folder saved by save_to_disk or holding the data files)")
        source = str(path.resolve())
        if _is_saved_to_disk(path):
            if config is not None:
                raise W2SError(f"{name}: a dataset saved with save_to_disk has no configurations")
            try:
                return datasets.load_from_disk(str(path)), source
            except Exception as exc:  # datasets raises many types for damaged folders
                raise W2SError(f"{name}: could not load the saved dataset ({_one_line(exc)})") from None
    elif path.is_absolute() or where.startswith((".", "~")):
        raise W2SError(f"{name}: no such directory")
    else:
        source = where
    try:
        loaded = datasets.load_dataset(str(path) if path.exists() else where, config)
    except Exception as exc:  # network, hub and builder errors come in many types
        raise W2SError(f"{name}: could not load the dataset ({_one_line(exc)})") from None
    return loaded, source


def _parts(name: str, loaded, datasets) -> list[tuple[str, Any]]:
    """(split name, Dataset) to use: [train, test], or one part without a split of its own."""
    if isinstance(loaded, datasets.Dataset):
        return [("", loaded)]
    if not isinstance(loaded, datasets.DatasetDict):
        raise W2SError(f"{name}: not a Dataset or DatasetDict ({type(loaded).__name__})")
    names = list(loaded.keys())
    if not names:
        raise W2SError(f"{name}: no splits")
    if len(names) == 1:
        return [(names[0], loaded[names[0]])]
    if "train" in loaded:
        test = next((s for s in TEST_NAMES if s in loaded), None)
        return [("train", loaded["train"])] + ([(test, loaded[test])] if test else [])
    shown = ", ".join(printable(s) for s in names)
    raise W2SError(f"{name}: splits {shown}: expected one split, or 'train' with 'test' or 'validation'")


def _columns_text(features) -> str:
    return ", ".join(f"{printable(c)} ({type(f).__name__})" for c, f in features.items())


def _image_column(name: str, features, wanted: str | None, datasets) -> str:
    if wanted is not None:
        if wanted not in features:
            raise W2SError(f"{name}: no column '{printable(wanted)}' (columns: {_columns_text(features)})")
        if not isinstance(features[wanted], datasets.Image):
            kind = type(features[wanted]).__name__
            raise W2SError(f"{name}: --image-column '{printable(wanted)}' is not an image column ({kind})")
        return wanted
    found = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if found is None:
        raise W2SError(f"{name}: no image column (columns: {_columns_text(features)}); datasets.Image is needed")
    return found


def _label_column(name: str, features, wanted: str | None, image: str, datasets) -> str:
    if wanted is not None:
        if wanted not in features:
            raise W2SError(f"{name}: no column '{printable(wanted)}' (columns: {_columns_text(features)})")
        if wanted == image:
            raise W2SError(f"{name}: '{printable(wanted)}' is the image column, not a label")
        return wanted
    found = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel) and c != image), None)
    found = found or next((c for c in LABEL_NAMES if c in features and c != image), None)
    if found is None:
        raise W2SError(
            f"{name}: no label column (no ClassLabel column and none named {', '.join(LABEL_NAMES)}; "
            f"columns: {_columns_text(features)}); pass --label-column"
        )
    return found


def _row_name(split: str, j: int) -> str:
    return f"split '{printable(split)}' row {j}" if split else f"row {j}"


def _column(name: str, parts: list[tuple[str, Any]], column: str):
    """The column of every part, as pyarrow arrays (nulls refused), read without touching the images."""
    import pyarrow as pa

    arrays = []
    for split, ds in parts:
        arr = ds.with_format("arrow", columns=[column])[:][column]
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        if arr.null_count:
            j = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise W2SError(f"{name}: {_row_name(split, j)}: no value in column '{printable(column)}'")
        arrays.append(arr)
    return arrays


def _targets(name: str, parts, column: str, feature, regression: bool, datasets):
    """(task, targets, classes) from the label column."""
    import pyarrow as pa

    arrays = _column(name, parts, column)
    kind = arrays[0].type
    where = f"column '{printable(column)}'"
    if isinstance(feature, datasets.ClassLabel) and not regression:
        n = feature.num_classes
        for (split, _), arr in zip(parts, arrays, strict=True):
            values = arr.to_numpy(zero_copy_only=False)
            bad = np.flatnonzero((values < 0) | (values >= n))
            if len(bad):
                j = int(bad[0])
                raise W2SError(f"{name}: {_row_name(split, j)}: label {int(values[j])} is not a class of {where}")
        labels = np.concatenate([a.to_numpy(zero_copy_only=False) for a in arrays]).astype(np.int64)
        return "classification", labels, [str(c) for c in feature.names]
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind) or (regression and pa.types.is_integer(kind)):
        values = []
        for (split, _), arr in zip(parts, arrays, strict=True):
            v = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~np.isfinite(v))
            if len(bad):
                j = int(bad[0])
                raise W2SError(f"{name}: {_row_name(split, j)}: target {v[j]} in {where} is not a finite number")
            values.append(v)
        return "regression", np.concatenate(values).astype(np.float64), None
    if regression:
        raise W2SError(f"{name}: --target-column '{printable(column)}' is not numeric ({kind})")
    if (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        values = np.concatenate([a.to_numpy(zero_copy_only=False) for a in arrays])
        classes, labels = np.unique(values, return_inverse=True)
        return "classification", labels.astype(np.int64).reshape(-1), [str(c) for c in classes.tolist()]
    raise W2SError(f"{name}: {where} ({kind}) is neither a class label nor a number")


class HFImages:
    """Picklable loader over the image column of Arrow-backed datasets: row i is read and decoded on demand.

    Datasets on disk are memory-mapped and pickle as references to their files, so DataLoader workers get a
    few kilobytes, not the images.
    """

    def __init__(self, name: str, parts: list, column: str) -> None:
        import datasets

        self.name, self.column = name, column
        # the arrow format hands rows over undecoded ({"bytes", "path"}), decoded here so that failures name the row
        self.parts = [ds.select_columns([column]).with_format("arrow") for ds in parts]
        self.starts = np.cumsum([0] + [len(ds) for ds in self.parts])
        self.decoder = datasets.Image()

    def __call__(self, i: int) -> Image.Image:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        where = f"{self.name} row {i}"
        try:
            value = self.parts[k][int(i - self.starts[k])].column(self.column)[0].as_py()
            if value is None or (value.get("bytes") is None and value.get("path") is None):
                raise ValueError("no image")
            if value.get("path") and value.get("bytes") is None:
                where += f" ({printable(value['path'])})"
            im = self.decoder.decode_example(value)
            return im.convert("RGB")
        except Exception as exc:  # PIL, fsspec and Arrow raise many types
            reason = getattr(exc, "strerror", None) or (str(exc) if isinstance(exc, ValueError) else "")
            reason = reason or type(exc).__name__
            raise UnreadableImage(f"{where}: cannot read image ({printable(reason)})") from None


def hf_dataset(arg: str, options: DataOptions) -> ImageSource:
    """Open `hf:NAME_OR_PATH[:CONFIG]` (see the module's docstring)."""
    name = f"hf:{printable(arg)}"
    datasets = _import_datasets(name)
    where, config = split_spec(arg)
    loaded, source = _load(name, where, config, datasets)
    parts = _parts(name, loaded, datasets)
    features = parts[0][1].features
    for split, ds in parts[1:]:
        if ds.features != features:
            raise W2SError(f"{name}: splits '{printable(parts[0][0])}' and '{printable(split)}' differ in columns")
    if options.label_column is not None and options.target_column is not None:
        raise W2SError(f"{name}: give --label-column or --target-column, not both")
    image = _image_column(name, features, options.image_column, datasets)
    label = _label_column(name, features, options.label_column or options.target_column, image, datasets)
    task, targets, classes = _targets(name, parts, label, features[label], options.target_column is not None, datasets)
    if len(targets) == 0:
        raise W2SError(f"{name}: no rows")
    has_split = len(parts) == 2
    split = np.concatenate([np.full(len(ds), TEST if k else TRAIN, np.int8) for k, (_, ds) in enumerate(parts)])
    identity = {
        "kind": "hf",
        "splits": [[s, getattr(ds, "_fingerprint", None)] for s, ds in parts],
        "config": config,
        "image_column": image,
        "label_column": label,
        "task": task,
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    short = Path(source).name if os.path.isabs(source) else source
    title = f"hf:{short}" + (f":{config}" if config else "")
    details = {
        "source": source,
        "image_column": image,
        "label_column": label,
        "config": config,
        "splits": [s for s, _ in parts if s],
    }
    return ImageSource(
        title,
        fingerprint,
        task,
        targets,
        HFImages(title, [ds for _, ds in parts], image),
        split if has_split else None,
        classes,
        details,
    )


@source("hf", arg="NAME_OR_PATH[:CONFIG]", help="a Hugging Face datasets dataset (pip install 'w2s[hf]')")
def _hf(arg: str, options: DataOptions, root: Path | None) -> ImageSource:
    return hf_dataset(arg, options)
