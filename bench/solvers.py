"""Speed of `RidgelessRegressor.fit` against scikit-learn's `LinearRegression.fit`, in one process.

    python bench/solvers.py [--rows 50000] [--cols 1280] [--targets 10] [--repeats 3]

X is a realistic float32 embedding matrix: Gaussian latent factors with a decaying spectrum (scale 1/j)
rotated by a random orthogonal matrix, plus isotropic noise and a non-zero mean; the targets depend on the
leading factors plus noise. Both fits are timed on the same float32 X, interleaved, best of `--repeats`.
scikit-learn keeps float32 (its lstsq then runs in single precision), so the accuracy check compares our
predictions with those of LinearRegression fitted on X.astype(float64) (also timed), both evaluated in
float64: max |p_ours - p_sklearn64| / max |p_sklearn64| must be below 1e-8.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LinearRegression

from w2s_cli.numerics.solvers import RidgelessRegressor


def make_data(rows: int, cols: int, targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, cols + 1)).astype(np.float32)  # decaying spectrum
    basis = np.linalg.qr(rng.standard_normal((cols, cols)))[0].astype(np.float32)
    latent = rng.standard_normal((rows, cols), dtype=np.float32)
    X = (latent * scale) @ basis
    X += 0.01 * rng.standard_normal((rows, cols), dtype=np.float32)
    X += rng.normal(0.5, 0.2, size=cols).astype(np.float32)  # a non-zero mean, as after a ReLU/GELU
    lead = min(32, cols)
    Y = latent[:, :lead].astype(np.float64) @ rng.normal(size=(lead, targets)) + 0.3 * rng.normal(size=(rows, targets))
    return X, Y


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--cols", type=int, default=1280)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    X, Y = make_data(args.rows, args.cols, args.targets)
    X64 = X.astype(np.float64)
    head = X64[:5000] - X64[:5000].mean(axis=0)
    sv = np.linalg.svd(head, compute_uv=False)
    print(f"X {X.shape} {X.dtype}, Y {Y.shape}; condition number of the centred first 5000 rows {sv[0] / sv[-1]:.3g}")

    RidgelessRegressor().fit(X[:2000], Y[:2000])  # warm-up: imports, BLAS threads
    LinearRegression().fit(X[:2000], Y[:2000])
    best = {"ridgeless": np.inf, "sklearn float32": np.inf, "sklearn float64": np.inf}
    fits = {}
    for _ in range(args.repeats):  # interleaved
        for name, fn in (
            ("ridgeless", lambda: RidgelessRegressor().fit(X, Y)),
            ("sklearn float32", lambda: LinearRegression().fit(X, Y)),
            ("sklearn float64", lambda: LinearRegression().fit(X64, Y)),
        ):
            seconds, fits[name] = timed(fn)
            best[name] = min(best[name], seconds)
            print(f"  {name:16s} {seconds:7.2f} s")

    reference = fits["sklearn float64"].predict(X64)  # float64 predictions of the float64 fit
    scale = np.abs(reference).max()
    rel = np.abs(fits["ridgeless"].predict(X64) - reference).max() / scale
    rel32 = np.abs(fits["sklearn float32"].predict(X64) - reference).max() / scale
    r, s32, s64 = best["ridgeless"], best["sklearn float32"], best["sklearn float64"]
    print(
        f"best of {args.repeats}: ridgeless {r:.2f} s; sklearn LinearRegression on float32 X {s32:.2f} s"
        f" (ratio {s32 / r:.1f}x), on float64 X {s64:.2f} s (ratio {s64 / r:.1f}x)"
    )
    print(
        f"predictions, max |p - p_sklearn64| / max |p_sklearn64|: ridgeless {rel:.2e}"
        f" ({'ok' if rel < 1e-8 else 'ABOVE'} 1e-8), sklearn float32 {rel32:.2e}"
    )


if __name__ == "__main__":
    main()
