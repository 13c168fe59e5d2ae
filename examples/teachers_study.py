"""Issue 26's study: several weak teachers on Fashion-MNIST (the default strong lite2@112, n = 1,000, N = 8,000,
2,000 test rows), each alone and combined (every pair and all of them, under mean, stack and confident), with
probe students on 3 seeds and finetuned students (`last:2`, lr 1e-3, 5 epochs) on the seeds and teacher sets
given; then the tables (docs/teachers-study.csv, markdown on stdout).

Everything is cached in OUT (embeddings/, seed-S/): a killed run, rerun, computes what is missing.

    python examples/teachers_study.py OUT DOCS [--reference SEED=RESULT ...] [--finetune SEED:SET,SET ...]

SET names a teacher set as the tables do: a teacher's label (tf_efficientnet_lite0@24), `all-RULE`, or
`RULE:I+J` (members by their index in TEACHERS). The finetuned students: each set's W2S student is finetuned
alone (`finetune(trained=("w2s",))`, as a proxy is); strong SFT and the ceiling do not depend on the teacher,
so each seed's come from one full finetuned trial of that seed (`--reference SEED=RESULT`, e.g. the default
pair's `w2s run --student finetune --trials 3` trials; a reference whose teacher is one of TEACHERS also
counts as that teacher's finetuned W2S student on that seed).
"""

from __future__ import annotations

import csv
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from w2s_cli.numerics.stats import opr, pgr
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions, RunOptions, SplitOptions
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.stages.combine import pseudolabel_combined
from w2s_cli.stages.finetune import finetune
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.studies.run import embedding_cache

TEACHERS = [
    "tf_efficientnet_lite0@24",
    "tf_efficientnet_lite0@32",
    "tf_efficientnet_lite0@64",
    "tf_efficientnet_lite1@48",
    "tf_efficientnet_lite1@96",
    "tf_efficientnet_lite2:stage3@64",  # cut at an earlier stage of its network
]
STRONG = "tf_efficientnet_lite2@112"
RULES = ("mean", "stack", "confident")
SEEDS = (0, 1, 2)
QUIET = ExtractOptions(quiet=True)


def sets() -> list[tuple[str, str | None, tuple[int, ...]]]:
    """(name, rule, members): every single teacher, every pair and all of them under each rule."""
    out = [(TEACHERS[i], None, (i,)) for i in range(len(TEACHERS))]
    for rule in RULES:
        out += [(f"{rule}:{a}+{b}", rule, (a, b)) for a, b in itertools.combinations(range(len(TEACHERS)), 2)]
        out.append((f"all-{rule}", rule, tuple(range(len(TEACHERS)))))
    return out


def embeddings(out: Path) -> tuple[list[Path], Path]:
    specs = [BackboneSpec.parse(t) for t in TEACHERS]
    strong = BackboneSpec.parse(STRONG)
    runs = [RunOptions(weak=s, strong=strong) for s in specs]
    cache = embedding_cache(out, DataOptions("fashion-mnist"), runs, QUIET, True)
    return [cache.get(s) for s in specs], cache.get(strong)


def pseudo_for(
    folder: Path, weak: list[Path], rule: str | None, members: tuple[int, ...], name: str, seed: int
) -> Path:
    teachers = []
    for i in members:
        t = folder / f"teacher-{i}.safetensors"
        if not t.exists():
            train_weak(weak[i], t, split=SplitOptions(seed=seed))
        teachers.append(t)
    p = folder / f"pseudo-{slug(name)}.safetensors"
    if not p.exists():
        if rule is None:
            pseudolabel(teachers[0], p)
        else:
            pseudolabel_combined(teachers, p, rule=rule)
    return p


def slug(name: str) -> str:
    return name.replace("@", "-").replace(":", "-").replace("+", "-")


def row(
    result: Path, name: str, rule: str | None, seed: int, student: str, seconds: float | None, reference=None
) -> dict:
    """One teacher set's measured and predicted numbers; `reference`: the seed's full finetuned trial, whose
    strong SFT and ceiling stand for this W2S-only finetune's."""
    s = summary(load_result(result))
    m = s.metrics
    r = {"set": name, "rule": rule or "single", "seed": seed, "student": student}
    for k in ("weak", "w2s", "strong_sft", "ceiling"):
        source = m if reference is None or k in ("weak", "w2s") else reference.metrics
        r[f"error_{k}"] = source.error[k]
        r[f"acc_{k}"] = source.accuracy[k]
    r.update(
        pgr=pgr(r["error_weak"], r["error_w2s"], r["error_ceiling"]),
        opr=opr(r["error_strong_sft"], r["error_w2s"]),
        seconds=seconds,
    )
    pred = s.theory.predicted if s.theory is not None else s.predicted
    for k in ("weak", "w2s"):
        r[f"pred_error_{k}"] = None if pred is None else pred.error[k]
    r["pred_pgr"] = None if pred is None else pred.pgr
    r["best_member_acc"] = max((x.accuracy for x in s.members), default=None) if s.members else None
    if s.teachers is not None:
        r["variance_exact"] = s.teachers.variance_exact
        r["variance_best_member"] = min(m.variance_exact for m in s.teachers.members)
        r["variance_by_overlap"] = s.teachers.variance_by_overlap
        r["d_ww_mean"] = float(np.mean([p.d_ww for p in s.teachers.pairs])) if s.teachers.pairs else None
    if s.theory is not None:
        r["d_w"], r["d_sw"] = s.theory.dimensions.d_w, s.theory.dimensions.d_sw
    return r


def main(out: Path, docs: Path, finetuned: dict[int, list[str]], references: dict[int, list[Path]]) -> None:
    weak, strong = embeddings(out)
    rows, table = [], sets()
    refs = {seed: summary(load_result(paths[0])) for seed, paths in references.items()}
    for seed, paths in references.items():  # each reference trial's own teacher, finetuned in full
        for p in paths:
            s = summary(load_result(p))
            label = f"{s.weak_model}@{s.weak_input_size}"
            if label in TEACHERS:
                rows.append(row(p, label, None, seed, "finetune", s.seconds.get("finetune")))
    for seed in SEEDS:
        folder = out / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, rule, members in table:
            p = pseudo_for(folder, weak, rule, members, name, seed)
            r = folder / f"probe-{slug(name)}.result.safetensors"
            if not r.exists():
                fit_student(p, strong, r)
            rows.append(row(r, name, rule, seed, "probe", None))
            if name in finetuned.get(seed, []):
                f = folder / f"finetune-{slug(name)}.result.safetensors"
                begin = time.perf_counter()
                if not f.exists():
                    finetune(p, strong, f, recipe=FinetuneRecipe(), extract=QUIET, trained=("w2s",))
                rows.append(row(f, name, rule, seed, "finetune", round(time.perf_counter() - begin, 1), refs[seed]))
            print(f"seed {seed} {name} done", file=sys.stderr, flush=True)
    docs.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(docs / "teachers-study.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(tables(rows))


def mean_se(values: list[float]) -> tuple[float, float | None]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None)


def fmt(m: float, se: float | None, digits: int = 4) -> str:
    return f"{m:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def tables(rows: list[dict]) -> str:
    """Per student: each teacher set's W2S accuracy and PGR (mean ± se over the seeds it was run on), the
    best single teacher, and each combination's paired gain over it (same seeds)."""
    out = []
    for student in ("probe", "finetune"):
        mine = [r for r in rows if r["student"] == student]
        if not mine:
            continue
        by_set: dict[str, dict[int, dict]] = {}
        for r in mine:
            by_set.setdefault(r["set"], {})[r["seed"]] = r
        singles = [n for n in by_set if by_set[n][next(iter(by_set[n]))]["rule"] == "single"]
        best = max(singles, key=lambda n: mean_se([r["acc_w2s"] for r in by_set[n].values()])[0])
        out += [
            f"\n### {student} students (best single teacher by mean W2S accuracy: {best})\n",
            "| teacher set | seeds | teacher acc | W2S acc | PGR | W2S acc − best single's (paired) |",
            "|---|---|---|---|---|---|",
        ]
        order = sorted(by_set, key=lambda n: -mean_se([r["acc_w2s"] for r in by_set[n].values()])[0])
        for n in order:
            seeds = sorted(by_set[n])
            acc = mean_se([by_set[n][s]["acc_w2s"] for s in seeds])
            weak = mean_se([by_set[n][s]["acc_weak"] for s in seeds])
            pgr = mean_se([by_set[n][s]["pgr"] for s in seeds if by_set[n][s]["pgr"] is not None] or [float("nan")])
            shared = [s for s in seeds if s in by_set[best]]
            gain = mean_se([by_set[n][s]["acc_w2s"] - by_set[best][s]["acc_w2s"] for s in shared]) if shared else None
            out.append(
                f"| {n} | {len(seeds)} | {fmt(*weak)} | {fmt(*acc)} | {fmt(*pgr, digits=3)} | "
                + ("" if gain is None or n == best else fmt(*gain))
                + " |"
            )
    return "\n".join(out)


def parse_finetune(args: list[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in args:
        seed, names = a.split(":", 1)
        out.setdefault(int(seed), []).extend(n for n in names.split(",") if n)
    return out


def values(argv: list[str], flag: str) -> list[str]:
    """The arguments after `flag`, up to the next flag."""
    if flag not in argv:
        return []
    rest = argv[argv.index(flag) + 1 :]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


if __name__ == "__main__":
    argv = sys.argv[1:]
    refs: dict[int, list[Path]] = {}
    for a in values(argv, "--reference"):
        refs.setdefault(int(a.split("=", 1)[0]), []).append(Path(a.split("=", 1)[1]))
    main(Path(argv[0]), Path(argv[1]), parse_finetune(values(argv, "--finetune")), refs)
