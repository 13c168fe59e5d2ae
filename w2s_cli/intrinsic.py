"""`w2s intrinsic-dim`: d_w (and d_s, d_sw) of one or two embedding matrices, from our artifacts or from plain
.npy / .npz / .safetensors files (rows = samples)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli import artifacts
from w2s_cli.dimension import ESTIMATORS, authors_overlap, describe, plot_spectra, subspace_overlap
from w2s_cli.errors import W2SError


def load_matrix(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any] | None]:
    """An (m, D) matrix and, for our embeddings artifacts, their record."""
    path = Path(path)
    if not path.exists():
        raise W2SError(f"{path}: no such file")
    meta = None
    try:
        if path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = next((k for k in ("embeddings", "features") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise W2SError(f"{path}: several arrays ({', '.join(keys)}); name one 'embeddings'")
                X = z[key]
        elif path.suffix == ".safetensors":
            try:
                meta = artifacts.read_meta(path)
            except W2SError:
                meta = None
            if meta is not None:
                from w2s_cli.embeddings import load_embeddings

                return load_embeddings(path)["embeddings"], meta
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            key = "embeddings" if "embeddings" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
            if key is None:
                raise W2SError(f"{path}: several tensors ({', '.join(tensors)}); name one 'embeddings'")
            X = tensors[key]
        else:
            raise W2SError(f"{path}: expected a .npy, .npz or .safetensors file")
    except (OSError, ValueError) as exc:
        raise W2SError(f"{path}: unreadable matrix ({exc})") from None
    if X.ndim != 2 or X.shape[0] < 2:
        raise W2SError(f"{path}: expected a (samples, features) matrix, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
        raise W2SError(f"{path}: the matrix must be numeric and finite (NaN or inf found)")
    return X, meta


def parse_estimators(spec: str) -> tuple[str, ...]:
    names = tuple(s.strip().lower() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise W2SError(f"unknown estimator '{unknown[0]}'; choose from {', '.join(ESTIMATORS)}")
    return names


def intrinsic_dim(
    weak: str | os.PathLike,
    strong: str | os.PathLike | None = None,
    energy: float = 0.99,
    center: bool = True,
    estimators: str = "spectral,pr,twonn,mle",
    method: str = "subspace",
    max_samples: int = 5000,
    seed: int = 0,
    plot: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Estimates for the weak matrix (and the strong one, and their overlap d_sw)."""
    if method not in ("subspace", "authors"):
        raise W2SError(f"--method must be subspace or authors, not '{method}'")
    names = parse_estimators(estimators)
    W, meta_w = load_matrix(weak)
    result: dict[str, Any] = {"energy": energy, "center": center, "estimators": {n: ESTIMATORS[n] for n in names}}
    result["weak"], eig_w = describe(W, energy, center, names, max_samples, seed)
    spectra, tensors = {"weak": eig_w[0]}, {"spectrum_weak": eig_w[0]}
    if strong is not None:
        S, meta_s = load_matrix(strong)
        if meta_w is not None and meta_s is not None:
            artifacts.require_same_samples(meta_w, meta_s, f"weak {weak}", f"strong {strong}")
        elif len(S) != len(W):
            raise W2SError(f"weak has {len(W)} rows and strong {len(S)}: the overlap needs the same samples")
        result["strong"], eig_s = describe(S, energy, center, names, max_samples, seed)
        spectra["strong"], tensors["spectrum_strong"] = eig_s[0], eig_s[0]
        d_s, d_w = result["strong"]["d"], result["weak"]["d"]
        if method == "subspace":
            ov = subspace_overlap(S, W, d_s, d_w, center, eig_s, eig_w)
            tensors["canonical_correlations"] = np.asarray(ov["canonical_correlations"])
            result.update({k: ov[k] for k in ("d_sw", "d_sw_null", "d_sw_corrected", "canonical_correlations")})
            result["method"] = "subspace: squared canonical correlations of the top left singular subspaces"
        else:
            result.update(authors_overlap(S, W, d_s, d_w, seed))
    if plot is not None:
        plot_spectra(spectra, {k: result[k]["d"] for k in spectra}, energy, plot)
        result["plot"] = str(plot)
    if out is not None:
        meta = artifacts.base_meta("intrinsic_dim", seed)
        meta.update(
            {
                "inputs": {
                    "weak": str(Path(weak).resolve()),
                    "strong": str(Path(strong).resolve()) if strong else None,
                },
                "result": {k: v for k, v in result.items() if k != "canonical_correlations"},
            }
        )
        result["artifact"] = str(artifacts.save(artifacts.Artifact("intrinsic_dim", meta, tensors), out))
    return result
