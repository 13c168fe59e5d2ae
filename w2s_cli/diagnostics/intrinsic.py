"""`w2s intrinsic-dim`: d_w (and d_s, d_sw) of one or two embedding matrices, from our artifacts or from plain
.npy / .npz / .safetensors files (rows = samples). Moments are accumulated in row chunks."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.spectra import ESTIMATORS, Spectrum, describe, nearest_neighbour_dimension
from w2s_cli.numerics.subspaces import authors_overlap, overlap
from w2s_cli.options import check_energy
from w2s_cli.store import artifact as store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import IntrinsicDim, SpectralDimensions


class Matrix:
    """Rows of an embeddings artifact (read in chunks) or of a plain matrix file (in memory)."""

    def __init__(self, path: str | os.PathLike, role: str) -> None:
        self.path, self.role, self.meta, self.emb, self.X = Path(path), role, None, None, None
        name = f"{role} {printable(self.path)}"
        if not self.path.exists():
            raise W2SError(f"{name}: no such file")
        if self.path.is_dir():
            raise W2SError(f"{name}: is a directory")
        if self.path.suffix == ".safetensors":
            try:
                self.meta = store.read_meta(self.path)
            except W2SError as exc:  # a plain safetensors matrix is fine; an unreadable file is not
                if "without a w2s record" not in exc.message:
                    raise W2SError(f"{role} {exc.message}") from None
                self.meta = None
            if self.meta is not None:
                self.emb = EmbeddingSet(self.path, role)
                self.m, self.width = self.emb.n_rows, self.emb.width
                return
        self.X = _read_plain(self.path, name)
        self.m, self.width = self.X.shape

    def chunks(self, rows: np.ndarray | None = None):
        if self.emb is not None:
            yield from (block for _, block in self.emb.chunks(rows))
        else:
            X = self.X if rows is None else self.X[rows]
            for start in range(0, len(X), store.CHUNK_ROWS):
                yield X[start : start + store.CHUNK_ROWS]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.emb.rows(idx) if self.emb is not None else self.X[idx]


def _read_plain(path: Path, name: str) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = next((k for k in ("embeddings", "features") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise W2SError(f"{name}: several arrays ({', '.join(keys)}); name one 'embeddings'")
                X = z[key]
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            key = "embeddings" if "embeddings" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
            if key is None:
                raise W2SError(f"{name}: several tensors ({', '.join(tensors)}); name one 'embeddings'")
            X = tensors[key]
        else:
            raise W2SError(f"{name}: expected a .npy, .npz or .safetensors file")
    except W2SError:
        raise
    except Exception as exc:  # numpy / zip / safetensors errors come in many types
        raise W2SError(f"{name}: unreadable matrix ({type(exc).__name__})") from None
    if X.ndim != 2 or X.shape[0] < 2:
        raise W2SError(f"{name}: expected a (samples, features) matrix, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
        raise W2SError(f"{name}: the matrix must be numeric and finite (NaN or inf found)")
    return X


def parse_estimators(spec: str) -> tuple[str, ...]:
    names = tuple(s.strip().lower() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        raise W2SError(
            f"unknown estimator '{printable(unknown[0] if unknown else spec)}'; choose from {', '.join(ESTIMATORS)}"
        )
    return names


def _moments(mats: list[Matrix], center: bool) -> Moments:
    """Joint moments of the matrices side by side (uncentred: about 0)."""
    total = Moments.empty(sum(m.width for m in mats))
    for blocks in zip(*(m.chunks() for m in mats), strict=True):
        block = np.hstack([np.asarray(b, np.float64) for b in blocks])
        if center:
            total = total.merge(Moments.of(block))
        else:
            total = Moments(total.count + len(block), total.mean, total.cross + block.T @ block)
    return total


def intrinsic_dim(
    weak: str | os.PathLike,
    strong: str | os.PathLike | None = None,
    *,
    energy: float = 0.99,
    center: bool = True,
    estimators: str = "spectral,pr,twonn,mle",
    method: str = "subspace",
    max_samples: int = 5000,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    spectra: bool = False,
) -> IntrinsicDim:
    """Estimates for the weak matrix (and the strong one, and their overlap d_sw), an `IntrinsicDim` record.
    spectra: also keep each input's eigenvalues in it (`.spectra`, role -> values; not written), what a
    figure of their cumulative energy (report.plots.plot_spectra) draws."""
    if method not in ("subspace", "authors"):
        raise W2SError(f"--method must be subspace or authors, not '{printable(method)}'")
    check_energy(energy)
    names = parse_estimators(estimators)
    if any(n in ("twonn", "mle") for n in names) and max_samples < 3:
        raise W2SError(f"--max-samples must be at least 3 for the nearest-neighbour estimators, got {max_samples}")
    if out is not None:
        check_output(out, inputs=[weak, strong], option="-o")
    mats = _matrices(weak, strong)
    joint = _moments(mats, center)
    dims, spectra_of, tensors = _dimensions(mats, joint, names, energy, max_samples, seed)
    ov: dict[str, Any] = {}
    if strong is not None:
        d_s, d_w = dims["strong"].d, dims["weak"].d
        if method == "subspace":
            found = _subspace_overlap(joint, spectra_of, mats[0].width, d_s, d_w, center)
            tensors["canonical_correlations"] = np.asarray(found["canonical_correlations"])
            ov = {k: found[k] for k in ("d_sw", "d_sw_null", "d_sw_corrected", "canonical_correlations")}
            ov["method"] = "subspace: squared canonical correlations of the top principal subspaces"
        else:
            ov = authors_overlap(spectra_of["strong"], spectra_of["weak"], d_s, d_w, seed)
    result = IntrinsicDim(energy, center, {n: ESTIMATORS[n] for n in names}, **dims, **ov)
    if out is not None:
        result = dataclasses.replace(result, artifact=str(_save_intrinsic(result, tensors, weak, strong, seed, out)))
    if spectra:
        result = dataclasses.replace(result, spectra={k: v.values for k, v in spectra_of.items()})
    return result


def _matrices(weak: str | os.PathLike, strong: str | os.PathLike | None) -> list[Matrix]:
    """The weak matrix, and the strong one of the same samples when given."""
    mats = [Matrix(weak, "weak")]
    if strong is not None:
        mats.append(Matrix(strong, "strong"))
        if mats[0].meta is not None and mats[1].meta is not None:
            store.require_same_samples(mats[0].meta, mats[1].meta, f"weak {weak}", f"strong {strong}")
        elif mats[0].m != mats[1].m:
            raise W2SError(f"weak has {mats[0].m} rows and strong {mats[1].m}: the overlap needs the same samples")
    return mats


def _dimensions(
    mats: list[Matrix],
    joint: Moments,
    names: tuple[str, ...],
    energy: float,
    max_samples: int,
    seed: int,
) -> tuple[dict[str, SpectralDimensions], dict[str, Spectrum], dict[str, np.ndarray]]:
    """Each matrix's estimates (d_w, d_s: by role) from its block of the joint moments and, for the
    nearest-neighbour estimators, from at most max_samples of its rows; its spectrum and the tensors to save."""
    dims, spectra, tensors, offset = {}, {}, {}, 0
    for mat in mats:
        cols = slice(offset, offset + mat.width)
        offset += mat.width
        sp = Spectrum.of(Moments(joint.count, joint.mean[cols], joint.cross[cols, cols]))
        neighbours = {}
        for est in names:
            if est in ("twonn", "mle"):
                rows = np.arange(mat.m)
                if mat.m > max_samples:
                    rows = np.sort(np.random.default_rng(seed).choice(mat.m, max_samples, replace=False))
                neighbours[est] = nearest_neighbour_dimension(mat.rows(rows), est, max_samples, seed)
        dims[mat.role] = SpectralDimensions(**describe(sp, energy), **neighbours)
        spectra[mat.role] = sp
        tensors[f"spectrum_{mat.role}"] = sp.values
    return dims, spectra, tensors


def _subspace_overlap(
    joint: Moments, spectra: dict[str, Spectrum], width_w: int, d_s: int, d_w: int, center: bool
) -> dict[str, Any]:
    """d_sw (ours): the squared canonical correlations of the top-d_s strong and top-d_w weak principal
    subspaces, from the joint moments ([weak | strong] columns, the weak matrix width_w wide)."""
    Vw, Vs = spectra["weak"].vectors[:, :d_w], spectra["strong"].vectors[:, :d_s]
    P = np.zeros((joint.cross.shape[0], d_s + d_w))  # projection onto [top-d_s strong | top-d_w weak]
    P[width_w:, :d_s], P[:width_w, d_s:] = Vs, Vw
    return overlap(P.T @ joint.cross @ P, joint.count, slice(0, d_s), slice(d_s, None), centred=center)


def _save_intrinsic(
    result: IntrinsicDim,
    tensors: dict[str, np.ndarray],
    weak: str | os.PathLike,
    strong: str | os.PathLike | None,
    seed: int,
    out: str | os.PathLike,
) -> Path:
    """Write the `intrinsic_dim` artifact: the inputs, the result (without the correlations: a tensor)."""
    meta = store.base_meta("intrinsic_dim", seed)
    meta.update(
        {
            "inputs": {
                "weak": str(Path(weak).resolve()),
                "strong": str(Path(strong).resolve()) if strong else None,
            },
            "result": dataclasses.replace(result, canonical_correlations=None).to_json(),
        }
    )
    return store.save(store.Artifact("intrinsic_dim", meta, tensors), out)
