"""Speed of `w2s synth` (vectorised trials) against a plain per-trial numpy loop, in one process.

    python bench/synth.py [--trials 2000] [--repeats 3]

The loop is the textbook version of docs/theory.md's generator: draw x in all D ambient dimensions for
each trial and call numpy's lstsq four times. Both use the default problem (D=50, d_s=8, d_w=24, k=3,
n=90, N=300, sigma=0.7). Each is timed `--repeats` times, interleaved; prints the best times, the speed ratio
and both estimates of ER_w2s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from w2s_cli.numerics.synth import SynthConfig, make_subspaces, simulate


def loop(cfg: SynthConfig) -> np.ndarray:
    U_s, U_w, b = make_subspaces(cfg, np.random.default_rng(cfg.seed))
    rng = np.random.default_rng([cfg.seed, 2])
    er = np.empty(cfg.trials)
    for t in range(cfg.trials):
        X_l = rng.normal(size=(cfg.n_labeled, cfg.ambient))
        X_u = rng.normal(size=(cfg.n_pseudo, cfg.ambient))
        y_l = X_l @ b + cfg.sigma * rng.normal(size=cfg.n_labeled)
        y_u = X_u @ b + cfg.sigma * rng.normal(size=cfg.n_pseudo)
        theta_w = np.linalg.lstsq(X_l @ U_w, y_l, rcond=None)[0]
        theta = np.linalg.lstsq(X_u @ U_s, X_u @ U_w @ theta_w, rcond=None)[0]
        np.linalg.lstsq(X_l @ U_s, y_l, rcond=None)  # strong SFT
        np.linalg.lstsq(np.vstack([X_l, X_u]) @ U_s, np.concatenate([y_l, y_u]), rcond=None)  # ceiling
        er[t] = np.sum((U_s @ theta - b) ** 2)
    return er


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = SynthConfig(trials=args.trials)
    best, results = {"vectorised": np.inf, "loop": np.inf}, {}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name, fn in (("vectorised", lambda: simulate(cfg)["w2s"]), ("loop", lambda: loop(cfg))):
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    fast, slow = results["vectorised"], results["loop"]
    print(
        f"trials={cfg.trials}  best of {args.repeats}: vectorised {best['vectorised'] * 1e3:.1f} ms  "
        f"per-trial loop {best['loop'] * 1e3:.0f} ms  speed-up {best['loop'] / best['vectorised']:.1f}x"
    )
    print(
        f"ER_w2s: vectorised {fast.mean():.4f} ± {fast.std(ddof=1) / np.sqrt(len(fast)):.4f}, "
        f"loop {slow.mean():.4f} ± {slow.std(ddof=1) / np.sqrt(len(slow)):.4f}"
    )


if __name__ == "__main__":
    main()
