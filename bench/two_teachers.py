"""The fit cache across weak teachers: a finetuned sweep over two teachers (`w2s sweep --vary weak=A,B
--student finetune`) against two one-teacher runs (`w2s run --weak A`, `w2s run --weak B`), in one process.

    python bench/two_teachers.py                      # digits, lite0@32 and lite0@64 -> lite2@64, n=300, N=1,000

Strong SFT and the ceiling depend on neither teacher, so the sweep finetunes them once (its second point's
records say `reused_from` the first's result) where the two runs finetune them twice. The extractions (the
three backbones' embeddings and the frozen prefix's outputs) are made first, in a common folder, and copied
into each fresh out-dir before its command, so neither side pays for them: what is timed is teacher,
pseudo-labels, the finetunes and their label-light predictions. Wall time and this process's CPU time
(all its threads) are both printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from w2s_cli.store import artifact as store


def w2s(*args: object) -> str:
    """`w2s ARGS` in this process through the real entry point; its stderr (raises on a non-zero exit)."""
    from w2s_cli.cli.app import main

    err, saved, code = io.StringIO(), sys.argv, 0
    sys.argv = ["w2s", *map(str, args)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved
    if code:
        raise SystemExit(f"w2s {' '.join(map(str, args))} failed ({code}):\n{err.getvalue()[-3000:]}")
    return err.getvalue()


def seeded(common: Path, name: str) -> Path:
    """A fresh out-dir holding the common embeddings and frozen prefix's outputs (nothing else: no fits)."""
    out = common.parent / name
    out.mkdir()
    for f in common.glob("*-*.safetensors"):
        shutil.copy(f, out / f.name)
    shutil.copytree(common / "activations", out / "activations")
    return out


def timed(fn) -> tuple[str, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    said = fn()
    return said, time.perf_counter() - wall, time.process_time() - cpu


def fits_of(folder: Path) -> list[tuple[str, str, float, str]]:
    """Each finetune result's finetuned fits under `folder`: (result, fit, seconds, the result it reused the fit
    from; a reused fit's seconds are those of the fit it reused)."""
    rows = []
    for path in sorted(folder.rglob("trial-*/result-finetune-*.safetensors")):
        meta = store.read_meta(path)
        for fit, rec in meta["fits"].items():
            if rec.get("solver") != "finetune":  # the weak teacher's linear fit
                continue
            source = rec.get("reused_from", {}).get("relpath", "")
            rows.append((str(path.relative_to(folder)), fit, float(rec.get("seconds", 0.0)), source))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--weak", nargs=2, default=["tf_efficientnet_lite0@32", "tf_efficientnet_lite0@64"])
    ap.add_argument("--strong", default="tf_efficientnet_lite2@64")
    ap.add_argument("--n-labeled", type=int, default=300)
    ap.add_argument("--n-pseudo", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--train", default="last:2")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    split = ["--data", args.data, "--n-labeled", args.n_labeled, "--n-pseudo", args.n_pseudo, "--n-test", args.n_test]
    common_args = [*split, "--strong", args.strong, "--device", args.device, "--quiet"]
    tuned = ["--student", "finetune", "--train", args.train, "--epochs", args.epochs]
    a, b = args.weak
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        common = root / "common"
        # extraction, not timed: both teachers' and the strong embeddings (linear-student runs), then the prefix
        for weak in (a, b):
            w2s("run", *common_args, "--weak", weak, "--out-dir", common)
        from w2s_cli.finetuning.prefix import prepare_prefix_cache
        from w2s_cli.options import ExtractOptions
        from w2s_cli.options.recipe import FinetuneRecipe

        strong = next(common.glob("strong-*.safetensors"))
        extract = ExtractOptions(device=args.device, quiet=True)
        prepare_prefix_cache(strong, FinetuneRecipe(train=args.train, epochs=args.epochs), extract)

        runs = {}
        for k, weak in enumerate((a, b)):
            out = seeded(common, f"run-{k}")
            runs[weak] = timed(lambda out=out, weak=weak: w2s("run", *common_args, *tuned, "--weak", weak,
                                                               "--out-dir", out))  # fmt: skip
        out = seeded(common, "sweep")
        swept = timed(lambda: w2s("sweep", *common_args, *tuned, "--weak", a, "--vary", f"weak={a},{b}",
                                  "--out-dir", out))  # fmt: skip

        print(f"data {args.data}, strong {args.strong}, n = {args.n_labeled}, N = {args.n_pseudo}, "
              f"{args.n_test} test, --train {args.train} --epochs {args.epochs}, device {args.device}")  # fmt: skip
        print("extraction (embeddings and frozen prefix) made first in a common folder and copied: not timed")
        for weak, (_, wall, cpu) in runs.items():
            print(f"w2s run --weak {weak}: {wall:8.1f} s wall  {cpu:8.1f} s CPU")
        one_wall, one_cpu = sum(r[1] for r in runs.values()), sum(r[2] for r in runs.values())
        print(f"two one-teacher runs: {one_wall:8.1f} s wall  {one_cpu:8.1f} s CPU")
        print(f"w2s sweep --vary weak={a},{b}: {swept[1]:8.1f} s wall  {swept[2]:8.1f} s CPU")
        print(f"ratio sweep / two runs: {swept[1] / one_wall:.3f} wall, {swept[2] / one_cpu:.3f} CPU")
        reused = [line for line in swept[0].splitlines() if line.startswith("reusing") and " fit of the same " in line]
        print(f"the sweep said {len(reused)} 'reusing ... fit' lines")
        for folder in [root / "run-0", root / "run-1", out]:
            for result, fit, seconds, source in fits_of(folder):
                note = f"reused_from {source}" if source else "finetuned"
                print(f"  {folder.name}/{result} {fit:10s} {seconds:7.1f} s  {note}")


if __name__ == "__main__":
    main()
