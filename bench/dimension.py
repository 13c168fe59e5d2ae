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

from w2s_cli.numerics.moments import accumulate
from w2s_cli.numerics.spectra import Spectrum, energy_dimension
from w2s_cli.numerics.subspaces import overlap


def measure(fn):
    tracemalloc.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def chunks(X, rows=8192):
    return (X[s : s + rows] for s in range(0, len(X), rows))


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
    print(f"data: two {m} x {D} float32 matrices ({S.nbytes / 2**20:.0f} MiB each)")

    (sp, t_ours, mem_ours) = measure(lambda: Spectrum.of(accumulate(chunks(S), D)))
    d = energy_dimension(sp.values, 0.99)
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
    (_, t_ours_sub, _) = measure(lambda: Spectrum.of(accumulate(chunks(sub), D)))
    print(
        f"scikit-dimension lPCA on {len(sub)} rows  {t_sk:6.1f} s  peak {mem_sk:7.0f} MiB  d = {lpca.dimension_}"
        f"  time ratio vs w2s on the same rows {t_sk / t_ours_sub:.2f}"
    )

    sp_w = Spectrum.of(accumulate(chunks(W), D))
    d_w = energy_dimension(sp_w.values, 0.99)

    def joint() -> dict:
        Vs, Vw = sp.vectors[:, :d], sp_w.vectors[:, :d_w]
        pairs = zip(chunks(S), chunks(W), strict=True)
        blocks = (np.hstack([(s - sp.mean) @ Vs, (w - sp_w.mean) @ Vw]) for s, w in pairs)
        total = accumulate(blocks, d + d_w)
        return overlap(total.cross, total.count, slice(0, d), slice(d, None))

    (ov, t_ov, mem_ov) = measure(joint)
    print(
        f"w2s overlap d_sw (given spectra)     {t_ov:6.1f} s  peak {mem_ov:7.0f} MiB  d_sw = {ov['d_sw']:.1f}"
        f" (null {ov['d_sw_null']:.1f}; 100 latent directions shared)"
    )


if __name__ == "__main__":
    main()
