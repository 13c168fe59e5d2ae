"""Time and peak memory of w2s's spectral dimension and overlap against scikit-learn's PCA and
scikit-dimension's global PCA estimator on the same data, in one process.

    python bench/dimension.py [--rows 70000] [--width 1280]

Data: two float32 matrices of rows x width (synthetic: 300 latent directions, 100 of them shared, plus
isotropic noise), the size of all of Fashion-MNIST through an EfficientNet-Lite. Peak memory is what
tracemalloc sees numpy allocate during each call.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np

from w2s_cli.dimension import covariance_spectrum, energy_dimension, subspace_overlap


def measure(fn):
    tracemalloc.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=70000)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--skdim-rows", type=int, default=20000, help="rows given to scikit-dimension (it is slower)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    m, D = args.rows, args.width
    shared = rng.normal(size=(m, 100)).astype(np.float32)
    S = np.hstack([shared, rng.normal(size=(m, 200)).astype(np.float32)]) @ rng.normal(size=(300, D)).astype(np.float32)
    W = np.hstack([shared, rng.normal(size=(m, 200)).astype(np.float32)]) @ rng.normal(size=(300, D)).astype(np.float32)
    S += 0.1 * rng.normal(size=S.shape).astype(np.float32)
    W += 0.1 * rng.normal(size=W.shape).astype(np.float32)
    data_mb = S.nbytes / 2**20
    print(f"data: two {m} x {D} float32 matrices ({data_mb:.0f} MiB each)")

    (eig, t_ours, mem_ours) = measure(lambda: covariance_spectrum(S))
    d = energy_dimension(eig[0], 0.99)
    print(f"w2s spectrum (float64, chunked)       {t_ours:6.1f} s  peak {mem_ours:7.0f} MiB  d@0.99 = {d}")

    from sklearn.decomposition import PCA

    (pca, t_pca, mem_pca) = measure(lambda: PCA(svd_solver="covariance_eigh").fit(S))
    d_pca = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.99) + 1)
    print(
        f"scikit-learn PCA (covariance_eigh)   {t_pca:6.1f} s  peak {mem_pca:7.0f} MiB  d@0.99 = {d_pca}"
        f"  time ratio {t_pca / t_ours:.2f}, memory ratio {mem_pca / mem_ours:.2f}"
    )

    import skdim

    sub = S[: args.skdim_rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (lpca, t_sk, mem_sk) = measure(lambda: skdim.id.lPCA(ver="ratio", alphaRatio=0.99).fit(sub))
    (_, t_ours_sub, _) = measure(lambda: covariance_spectrum(sub))
    print(
        f"scikit-dimension lPCA on {len(sub)} rows  {t_sk:6.1f} s  peak {mem_sk:7.0f} MiB  d = {lpca.dimension_}"
        f"  time ratio vs w2s on the same rows {t_sk / t_ours_sub:.2f}"
    )

    eig_w = covariance_spectrum(W)
    d_w = energy_dimension(eig_w[0], 0.99)
    (ov, t_ov, mem_ov) = measure(lambda: subspace_overlap(S, W, d, d_w, True, eig, eig_w))
    print(
        f"w2s overlap d_sw (given spectra)     {t_ov:6.1f} s  peak {mem_ov:7.0f} MiB  d_sw = {ov['d_sw']:.1f}"
        f" (null {ov['d_sw_null']:.1f}; 100 latent directions shared)"
    )
    print(
        f"whole intrinsic-dim of two inputs (two spectra + overlap): {t_ours + (t_ours) + t_ov:.1f} s; "
        f"an m x m matrix would need {m * m * 8 / 2**30:.0f} GiB"
    )


if __name__ == "__main__":
    main()
