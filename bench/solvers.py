"""Speed of the ridgeless fit the pipeline runs against scikit-learn's `LinearRegression` and numpy's
`lstsq`, in one process, at the pipeline's sizes.

    python bench/solvers.py [--sizes 10000x305 100000x305 ...] [--targets 10] [--repeats 2] [--threads 1]

The pipeline's path is `fit_ridgeless` from the float64 moments of [Z | Y] accumulated chunk by chunk from
float32 rows (`of_columns`), as `fit-student` and `RidgelessRegressor.fit` run it: its time here includes
the moments. Widths: 305 (the default run's strong subspace; the weak one is 294) and 1,280 (`--subspace
none`, the embeddings' full width). Z is a realistic float32 embedding matrix: Gaussian latent factors with
a decaying spectrum (scale 1/j) rotated by a random orthogonal matrix, plus isotropic noise and a non-zero
mean; the targets depend on the leading factors plus noise. Baselines on the same Z: LinearRegression on
the float32 rows (it keeps float32, so its lstsq runs in single precision) and on float64 rows, and numpy's
`lstsq` (gelsd) on the centred float64 rows (the reference solution). Timed interleaved, best of
`--repeats` (one repeat from 10 million entries). Accuracy: max |p - p_lstsq| / max |p_lstsq| over the
rows, every prediction in float64.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from w2s_cli.numerics.moments import of_columns
from w2s_cli.numerics.solvers import fit_ridgeless

SIZES = ("10000x305", "100000x305", "1000000x305", "10000x1280", "100000x1280", "300000x1280")


def make_data(rows: int, cols: int, targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, cols + 1)).astype(np.float32)  # decaying spectrum
    basis = np.linalg.qr(rng.standard_normal((cols, cols)))[0].astype(np.float32)
    latent = rng.standard_normal((rows, cols), dtype=np.float32)
    lead = min(32, cols)
    Y = latent[:, :lead].astype(np.float64) @ rng.normal(size=(lead, targets)) + 0.3 * rng.normal(size=(rows, targets))
    latent *= scale
    X = latent @ basis
    del latent
    X += 0.01 * rng.standard_normal((rows, cols), dtype=np.float32)
    X += rng.normal(0.5, 0.2, size=cols).astype(np.float32)  # a non-zero mean, as after a ReLU/GELU
    return X, Y


def pipeline(X: np.ndarray, Y: np.ndarray):
    """The stages' ridgeless fit: moments of [Z | Y] from the float32 rows, then the fit from them."""
    return fit_ridgeless(of_columns(X, Y), X.shape[1], rows=(X, Y))


def numpy_lstsq(X64: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_mean, y_mean, coef): the minimum-norm solution on the centred float64 rows."""
    x_mean, y_mean = X64.mean(axis=0), Y.mean(axis=0)
    return x_mean, y_mean, np.linalg.lstsq(X64 - x_mean, Y - y_mean, rcond=None)[0]


def measure(rows: int, cols: int, targets: int, repeats: int) -> dict[str, float]:
    X, Y = make_data(rows, cols, targets)
    X64 = X.astype(np.float64)
    contenders = {
        "w2s pipeline": lambda: pipeline(X, Y),
        "sklearn float32": lambda: LinearRegression().fit(X, Y),
        "sklearn float64": lambda: LinearRegression().fit(X64, Y),
        "numpy lstsq": lambda: numpy_lstsq(X64, Y),
    }
    repeats = 1 if rows * cols >= 10_000_000 else repeats
    best, fits = dict.fromkeys(contenders, np.inf), {}
    for _ in range(repeats):  # interleaved
        for name, fn in contenders.items():
            start = time.perf_counter()
            fits[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    x_mean, y_mean, coef = fits["numpy lstsq"]
    reference = y_mean + (X64 - x_mean) @ coef
    scale = np.abs(reference).max()
    ours = fits["w2s pipeline"]
    err = {
        "w2s pipeline": np.abs(ours.predict(X64) - reference).max() / scale,
        "sklearn float32": np.abs(fits["sklearn float32"].predict(X64) - reference).max() / scale,
    }
    r = best["w2s pipeline"]
    print(
        f"{rows:>9,} x {cols:>5,}: w2s pipeline {r:7.2f} s (rank {ours.rank}, {ours.solved_from});"
        f" sklearn float32 {best['sklearn float32']:7.2f} s ({best['sklearn float32'] / r:4.1f}x),"
        f" float64 {best['sklearn float64']:7.2f} s ({best['sklearn float64'] / r:4.1f}x);"
        f" numpy lstsq {best['numpy lstsq']:7.2f} s ({best['numpy lstsq'] / r:4.1f}x);"
        f" predictions vs lstsq: w2s {err['w2s pipeline']:.1e}, sklearn float32 {err['sklearn float32']:.1e}",
        flush=True,
    )
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), help="ROWSxCOLS")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    # one thread: threaded LAPACK stalls for seconds whenever another process holds the cores
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for every contender (0: all)")
    args = ap.parse_args()
    limit = threadpool_limits(args.threads, user_api="blas") if args.threads else contextlib.nullcontext()
    with limit:
        pipeline(*make_data(2000, 64, args.targets))  # warm-up: imports, BLAS threads
        LinearRegression().fit(*make_data(2000, 64, args.targets))
        ratios = {"sklearn float32": [], "sklearn float64": [], "numpy lstsq": []}
        for size in args.sizes:
            rows, cols = (int(v) for v in size.lower().split("x"))
            best = measure(rows, cols, args.targets, args.repeats)
            for name in ratios:
                ratios[name].append(best[name] / best["w2s pipeline"])
    print(
        "time ratio (baseline / w2s pipeline) over the sizes: "
        + "; ".join(f"{k} {min(v):.1f}-{max(v):.1f}x" for k, v in ratios.items())
    )


if __name__ == "__main__":
    main()
