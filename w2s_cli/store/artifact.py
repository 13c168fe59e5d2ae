"""Artifacts: safetensors files holding tensors plus one JSON record (no pickle, no torch needed).

The record says what produced the tensors (kind, command, versions, seed, model, dataset fingerprint,
sample-id hash, split, solver, the content hash of every tensor) so that a consumer can refuse inputs that
do not belong together. Reading checks the header, the schema version and the kind here; the fields are
checked by building the kind's typed record (store/records/), the one schema check, whose message names
the field. Tensors are read lazily: whole small ones, or selected rows of a large one by
plain file reads at the offsets the safetensors header gives, so no stage needs a whole embedding matrix
in memory. Writes are atomic (a temp file in the target folder, then a rename) and follow the user's
umask; a tensor too large for memory can be written from an iterator of row blocks.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from w2s_cli.distributed import CHUNK_ROWS  # rows per chunk of a pass over an artifact (W2S_CHUNK_ROWS)
from w2s_cli.errors import W2SError, printable
from w2s_cli.store.records import ARTIFACTS, RecordError

SCHEMA_VERSION = 3
# schema 3 writes schema 2's layout (the result records, store/records/, only made it checked when built),
# so files of schema 2 read as they are; embeddings kept their layout from schema 1 (a cache of extractions
# stays usable)
READS = {kind: (2, 3) for kind in ("teacher", "pseudolabels", "result", "intrinsic_dim")} | {"embeddings": (1, 2, 3)}
KINDS = tuple(ARTIFACTS)  # embeddings, teacher, pseudolabels, result, intrinsic_dim: each with its record
META_KEY = "w2s"
_HASH_PLACEHOLDER = "0" * 64
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


@dataclass
class Chunked:
    """A tensor too large for memory, given as its shape, dtype and an iterable of row blocks in order."""

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Iterable[np.ndarray]


class Artifact:
    """A record plus tensors: in memory (`tensors`, for writing) or lazily read from `path`.

    Every float tensor read from a file is checked finite as it is read (the rows read, not the whole file):
    a NaN or inf is refused with the file, the tensor and its first bad row, naming the artifact by `role`
    (e.g. "strong embeddings") when the reader gave one.

    The file is opened once, at the first read, and every later read is of that very file: another w2s
    process that writes the same path meanwhile replaces it by a rename, and this reader keeps reading
    the version it started with (whose header it parsed) instead of the new file at old offsets."""

    def __init__(
        self,
        kind: str,
        meta: dict[str, Any],
        tensors: dict[str, Any] | None = None,
        path: Path | None = None,
        role: str | None = None,
        record: Any = None,
    ) -> None:
        self.kind, self.meta, self.path, self.role = kind, meta, path, role
        self.record = record  # the typed record (store/records/), built and so checked when read from a file
        self.tensors: dict[str, Any] = dict(tensors or {})
        self._index: dict | None = None
        self._fd: int | None = None

    def _file(self) -> int:
        """The descriptor of the file read (opened at the first read, closed when this object goes)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        return self._fd

    def __getstate__(self) -> dict[str, Any]:  # a descriptor does not travel to another process
        return {**self.__dict__, "_fd": None}

    # reading ------------------------------------------------------------------------------------------
    # Tensors are read with plain file reads at the offsets of the safetensors header, not through the
    # library's memory map: mapped pages count as this process's resident memory, so reading rows of a
    # 5 GB embedding matrix that way grows a stage to 5 GB (measured by bench/scale.py).
    def _layout(self) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
        """name -> (dtype, shape, byte offset in the file), from the safetensors header, checked."""
        if self._index is None:
            name = printable(self.path)
            try:
                fd = self._file()
                size = os.fstat(fd).st_size
                n = int.from_bytes(os.pread(fd, 8, 0), "little")
                if not 0 < n <= size - 8:
                    raise ValueError("bad header length")
                header = json.loads(_pread(fd, n, 8))
            except OSError as exc:
                raise W2SError(f"{name}: cannot read ({_reason(exc)})") from None
            except (ValueError, UnicodeDecodeError):
                raise W2SError(f"{name}: not a safetensors file (damaged header)") from None
            index = {}
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                try:
                    dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
                    shape = tuple(int(d) for d in info["shape"])
                    begin, end = (int(o) for o in info["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise W2SError(f"{name}: tensor '{printable(key)}' has an unreadable description") from None
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if end - begin != nbytes or 8 + n + end > size:
                    raise W2SError(f"{name}: tensor '{printable(key)}' is truncated or damaged")
                index[key] = (dtype, shape, 8 + n + begin)
            self._index = index
        return self._index

    def names(self) -> list[str]:
        if self.path is None:
            return list(self.tensors)
        return list(self._layout())

    def has(self, name: str) -> bool:
        return name in self.tensors or name in self.names()

    def _missing(self, name: str) -> W2SError:
        return W2SError(
            f"{printable(self.path)}: artifact of kind '{self.kind}' has no tensor '{name}' (not made by this w2s, "
            "or damaged)"
        )

    def _read(self, name: str, start: int, count: int) -> np.ndarray:
        """Rows [start, start + count) of tensor `name`."""
        dtype, shape, offset = self._layout()[name]
        row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        nbytes = count * row * dtype.itemsize
        data = _pread(self._file(), nbytes, offset + start * row * dtype.itemsize)
        if len(data) != nbytes:
            raise W2SError(f"{printable(self.path)}: tensor '{name}' is truncated")
        out = np.frombuffer(data, dtype=dtype, count=count * row)
        return out.reshape((count, *shape[1:])).astype(dtype.newbyteorder("="), copy=False)

    def __getitem__(self, name: str) -> np.ndarray:
        """The whole tensor (read once, then kept)."""
        if name not in self.tensors:
            if not self.has(name):
                raise self._missing(name)
            shape = self._layout()[name][1]
            try:
                block = self._read(name, 0, shape[0] if shape else 1)
            except OSError as exc:
                raise W2SError(f"{printable(self.path)}: unreadable tensor '{name}' ({_reason(exc)})") from None
            self.tensors[name] = self._finite(name, None, block.reshape(shape))
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.tensors:
            return tuple(self.tensors[name].shape)
        if not self.has(name):
            raise self._missing(name)
        return self._layout()[name][1]

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (any order) of a tensor, reading only the row ranges that hold them."""
        idx = np.asarray(idx, dtype=np.int64)
        if name in self.tensors:
            return np.asarray(self.tensors[name])[idx]
        shape = self.shape(name)
        n = shape[0]
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise W2SError(f"{printable(self.path)}: rows out of range for tensor '{name}' ({n} rows)")
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *shape[1:]), dtype=self._layout()[name][0].newbyteorder("="))
        try:
            pos = 0
            for block in _row_blocks(lambda a, b: self._read(name, a, b - a), idx[order]):
                out[order[pos : pos + len(block)]] = block
                pos += len(block)
        except OSError as exc:
            raise W2SError(f"{printable(self.path)}: unreadable tensor '{name}' ({_reason(exc)})") from None
        return self._finite(name, idx, out)

    def _finite(self, name: str, idx: np.ndarray | None, block: np.ndarray) -> np.ndarray:
        """block (rows idx of tensor `name`; None: all of it), refused if a float value in it is NaN or inf."""
        if block.dtype.kind != "f" or np.isfinite(block).all():
            return block
        bad = ~np.isfinite(block.reshape(block.shape[0] if block.ndim else 1, -1)).all(axis=1)
        rows = np.flatnonzero(bad) if idx is None else np.sort(idx[bad])
        role = f"{self.role} " if self.role else ""
        raise W2SError(
            f"{role}{printable(self.path)}: tensor '{name}': {len(rows)} of the rows read hold NaN or inf "
            f"(first: row {int(rows[0])})"
        )

    def chunks(
        self, name: str, rows: np.ndarray | None = None, chunk: int = CHUNK_ROWS
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row indices, block) pairs over `rows` (sorted; default all) in ascending order, `chunk` at a time."""
        n = self.shape(name)[0]
        rows = np.arange(n, dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            yield part, self.rows(name, part)


def _row_blocks(read, idx: np.ndarray) -> Iterator[np.ndarray]:
    """Blocks of the rows idx (sorted), read(start, stop) giving rows [start, stop): a dense window is read
    whole and subset, sparse rows are read in runs of consecutive indices."""
    start = 0
    while start < len(idx):
        lo = idx[start]
        stop = int(np.searchsorted(idx, lo + CHUNK_ROWS, side="left"))
        members = idx[start:stop]
        hi = int(members[-1]) + 1
        if len(members) * 8 >= hi - lo:
            yield read(int(lo), hi)[members - lo]
        else:
            breaks = np.flatnonzero(np.diff(members) != 1) + 1
            yield np.concatenate([read(int(run[0]), int(run[-1]) + 1) for run in np.split(members, breaks)])
        start = stop


def _pread(fd: int, nbytes: int, offset: int) -> bytearray:
    """Up to `nbytes` bytes at `offset` (fewer only at the end of the file), without moving a file position,
    so that threads may read one descriptor at once."""
    data = bytearray(nbytes)
    view, got = memoryview(data), 0
    while got < nbytes:
        part = view[got : got + (1 << 26)]
        if hasattr(os, "preadv"):  # straight into the buffer
            n = os.preadv(fd, [part], offset + got)
        else:
            read = os.pread(fd, len(part), offset + got)
            part[: len(read)], n = read, len(read)
        if n == 0:
            break
        got += n
    return data[:got] if got < nbytes else data


def _os_error(exc: BaseException) -> int | None:
    """The errno inside a safetensors error ("... I/O error: File too large (os error 27)"), if any."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return printable(text[0]) if text else type(exc).__name__


# records ------------------------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("w2s", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "safetensors"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


# the effective configuration of the command whose work is under way (`recording`); None outside any
_CONFIGURATION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("configuration", default=None)


@contextlib.contextmanager
def recording(configuration: Mapping[str, Any] | None) -> Iterator[None]:
    """Inside the block, every artifact written records `configuration` (a command's effective options by
    long name, cli/config.py; a job carries its command's into its worker); after it, what was before."""
    token = _CONFIGURATION.set(dict(configuration) if configuration else None)
    try:
        yield
    finally:
        _CONFIGURATION.reset(token)


def configuration() -> dict[str, Any] | None:
    """The configuration being recorded (`recording`), or None."""
    current = _CONFIGURATION.get()
    return None if current is None else dict(current)


def base_meta(kind: str, seed: int | None) -> dict[str, Any]:
    """The fields every artifact carries. `artifact_id` is the content hash, filled in on save."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": package_versions(),
        "seed": seed,
    }
    if _CONFIGURATION.get():
        meta["configuration"] = configuration()
    return meta


def ids_sha256(sample_ids: np.ndarray) -> str:
    """Hash of the sample ids (an int64 vector of dataset indices), in row order."""
    return hashlib.sha256(np.ascontiguousarray(sample_ids, dtype=np.int64).tobytes()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# writing ------------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path in `path`'s folder to write to; renamed onto `path` when the block succeeds, removed when
    it fails, so that a reader never sees a half-written file. The file gets the user's umask."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".w2s-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise W2SError(f"cannot write {printable(path)}: {_reason(exc)}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:
        Path(tmp).unlink(missing_ok=True)
        code = exc.errno if isinstance(exc, OSError) else _os_error(exc)
        if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO):
            raise W2SError(f"cannot write {printable(path)}: {os.strerror(code)}") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(artifact: Artifact, path: str | os.PathLike) -> Path:
    """Write atomically. Every tensor is hashed into `artifact_id` (and the record's `content_sha256`)."""
    path = Path(path)
    if artifact.kind not in KINDS:
        raise ValueError(f"unknown artifact kind {artifact.kind!r}")
    if artifact.meta.get("kind") != artifact.kind:
        raise ValueError("artifact.meta['kind'] must equal artifact.kind")
    arrays = {}
    for name, t in artifact.tensors.items():
        if isinstance(t, Chunked):
            arrays[name] = t
        else:
            a = np.ascontiguousarray(t)
            if a.dtype not in _CODES:
                raise ValueError(f"tensor {name}: unsupported dtype {a.dtype}")
            arrays[name] = a
    with atomic_output(path) as tmp:
        _write_safetensors(tmp, arrays, artifact.meta)
    artifact.path = path
    artifact.tensors = {k: v for k, v in arrays.items() if not isinstance(v, Chunked)}
    return path


def _write_safetensors(path: Path, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """The safetensors layout (8-byte header length, JSON header, raw little-endian data), written in a
    stream so that a `Chunked` tensor never has to be in memory; the content hash is patched in last.

    Our own writer because safetensors' save_file needs every tensor in memory; files are read back with
    the safetensors library (tested)."""
    names = sorted(arrays)
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        a = arrays[name]
        shape, dtype = (a.shape, np.dtype(a.dtype))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    record = {**meta, "artifact_id": _HASH_PLACEHOLDER, "content_sha256": _HASH_PLACEHOLDER}
    header["__metadata__"] = {META_KEY: json.dumps(record)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in names:
            a = arrays[name]
            h.update(f"{name}:{header[name]['dtype']}:{header[name]['shape']}\n".encode())
            written, expected = 0, header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            blocks = a.blocks if isinstance(a, Chunked) else [a]
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=np.dtype(a.dtype).newbyteorder("<"))
                data = memoryview(block).cast("B")
                h.update(data)
                f.write(data)
                written += len(data)
            if written != expected:
                raise ValueError(f"tensor {name}: wrote {written} bytes, expected {expected}")
        digest = h.hexdigest()
        patched = text.replace(_HASH_PLACEHOLDER.encode(), digest.encode(), 2)
        f.seek(8)
        f.write(patched)
        f.flush()
        os.fsync(f.fileno())
    meta["artifact_id"] = meta["content_sha256"] = digest


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The record only, without reading tensors, checked (its kind's typed record built); every way a file
    can be wrong is one clear W2SError."""
    meta = _header(path)
    _typed_record(meta, path)
    return meta


def _header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of the file at `path`, of a kind and schema this w2s reads (its fields not checked)."""
    path = Path(path)
    name = printable(path)
    try:  # exists() itself raises in a folder we may not search
        if not path.exists():
            raise W2SError(f"{name}: no such file")
        if path.is_dir():
            raise W2SError(f"{name}: is a directory, not an artifact")
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise W2SError(f"{name}: cannot read ({_reason(exc)})") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise W2SError(f"{name}: not a safetensors file ({_reason(exc)})") from None
    if raw is None:
        raise W2SError(f"{name}: a safetensors file without a w2s record (not made by w2s)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise W2SError(f"{name}: corrupt w2s record (not JSON)") from None
    if not isinstance(meta, dict):
        raise W2SError(f"{name}: corrupt w2s record (not a JSON object)")
    version, kind = meta.get("schema_version"), meta.get("kind")
    if version not in READS.get(kind, (SCHEMA_VERSION,)):
        reads = " and ".join(map(str, READS.get(kind, (SCHEMA_VERSION,))))
        raise W2SError(
            f"{name}: w2s record schema {printable(version)}, written by an older or newer w2s (this w2s reads "
            f"{reads}); make it again with this version"
        )
    if kind not in KINDS:
        raise W2SError(f"{name}: unknown artifact kind '{printable(kind)}'")
    return meta


def _typed_record(meta: dict[str, Any], path: str | os.PathLike, role: str | None = None) -> Any:
    """The typed record of a file's JSON record (its kind's, store/records/): the one check of its fields; one
    that does not fit is one W2SError naming the file (as `role`, else by its kind) and the field."""
    kind = meta["kind"]
    try:
        record = ARTIFACTS[kind].from_json(meta)
        if "artifact_id" not in meta:  # written by save() with the content hash
            raise RecordError(f"a '{kind}' artifact without 'artifact_id'")
    except RecordError as exc:
        raise W2SError(f"{role or kind} {printable(path)}: corrupt w2s record: {exc}") from None
    return record


def load(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None, what: str | None = None) -> Artifact:
    """The artifact at `path` (tensors read on demand, its typed record checked: `art.record`); refuse one of
    the wrong kind with a clear error."""
    path = Path(path)
    for _ in range(5):  # another w2s process may replace the file (by a rename) while we look at it
        before = _file_id(path)
        meta = _header(path)
        kinds = (kind,) if isinstance(kind, str) else kind
        if kinds is not None and meta["kind"] not in kinds:
            want = " or ".join(kinds)
            role = f"{what} " if what else ""
            raise W2SError(f"{role}{printable(path)}: is a '{meta['kind']}' artifact, expected {want}")
        art = Artifact(meta["kind"], meta, path=path, role=what, record=_typed_record(meta, path, what))
        try:  # its tensors are read from the very file its record came from
            if _file_id(art._file()) == before:
                break
        except OSError:
            break  # the first read says why
    return art


def _file_id(where: Path | int) -> tuple[int, int] | None:
    """(device, inode) of a path or an open descriptor; None if it cannot be seen."""
    try:
        st = os.fstat(where) if isinstance(where, int) else os.stat(where)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def reference(art: Artifact, relative_to: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """How a downstream artifact (to be written at `relative_to`) records an input: its absolute path, its
    path relative to the downstream artifact's folder (so a moved run folder still resolves), its id
    (the content hash of its tensors)."""
    src = Path(art.path).resolve()
    rel = os.path.relpath(src, Path(relative_to).resolve().parent)
    return {"path": str(src), "relpath": rel, "artifact_id": art.meta["artifact_id"], **extra}


def resolve(ref: dict[str, Any], owner: str | os.PathLike, given: str | os.PathLike | None = None) -> Path:
    """Where a recorded input is now: `given` if the user named it, else relative to the owning artifact's
    folder (a moved run folder), else the absolute path recorded. The first that exists wins."""
    if given is not None:
        return Path(given)
    candidates = []
    if ref.get("relpath"):
        candidates.append(Path(os.path.normpath(Path(owner).resolve().parent / ref["relpath"])))
    candidates.append(Path(ref["path"]))
    for c in candidates:
        if c.exists():
            return c
    return candidates[-1]


def rebase(ref: dict[str, Any], owner: str | os.PathLike, relative_to: str | os.PathLike) -> dict[str, Any]:
    """A reference recorded by `owner`, as an artifact to be written at `relative_to` records it: the same
    file (where it is now, `resolve`), its absolute path and its path relative to the new artifact's folder;
    the reference's other keys kept."""
    src = resolve(ref, owner).resolve()
    rel = os.path.relpath(src, Path(relative_to).resolve().parent)
    return {**ref, "path": str(src), "relpath": rel}


def require_same_samples(a: dict[str, Any], b: dict[str, Any], what_a: str, what_b: str) -> None:
    """Refuse two records that are not about the same samples of the same dataset."""
    if a["dataset"]["fingerprint"] != b["dataset"]["fingerprint"]:
        raise W2SError(
            f"{what_a} and {what_b} come from different datasets "
            f"({a['dataset']['name']} {a['dataset']['fingerprint'][:12]} vs "
            f"{b['dataset']['name']} {b['dataset']['fingerprint'][:12]})"
        )
    if a["sample_ids_sha256"] != b["sample_ids_sha256"]:
        raise W2SError(
            f"{what_a} and {what_b} hold different samples of {a['dataset']['name']} "
            "(extract both with the same --limit and --seed)"
        )
