"""`w2s run`: every stage with one set of options, repeated over T split draws (trials)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2s_cli.distributed import main_writes
from w2s_cli.errors import W2SError
from w2s_cli.inputs.sources import TEST, ImageSource, subset
from w2s_cli.options import BackboneSpec, DataOptions, ExtractOptions, RunOptions, SplitOptions, StudentKind
from w2s_cli.progress import stderr
from w2s_cli.stages.split import draw_split, noisy_values
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import obtain, read_entry, slug, write_entry
from w2s_cli.store.records import EmbeddingsRecord, RecordError, ResultRecord

# a study's progress: (trials done, trials in all, what was done last: a trial, a sweep point, a teacher)
Progress = Callable[[int, int, str], None]


def auto_limit(split, n_test: int, n_train: int) -> int | None:
    """The smallest extraction that still holds n_test test samples and n_train training samples."""
    if split is None:
        return None
    m = len(split)
    test_frac = float((split == TEST).mean())
    need = max(math.ceil(n_test / max(test_frac, 1e-12)), math.ceil(n_train / max(1 - test_frac, 1e-12)))
    return None if need >= m else need


def extraction_request(data: DataOptions, spec: BackboneSpec, limit: int | None, seed: int) -> dict[str, Any]:
    """What identifies an extraction for reuse in --out-dir (a cut model's stage only then: a whole model's
    request is as before, so its cached embeddings stay reused)."""
    cut = {} if spec.stage is None else {"stage": spec.stage}
    return {
        "data": data.data,
        "model": spec.model,
        **cut,
        "image_size": spec.image_size,
        "limit": limit,
        "seed": seed,
        "pretrained": spec.pretrained,
        "weights": str(Path(spec.weights).resolve()) if spec.weights else None,
    }


class LazySource:
    """The data source, opened at most once and only if needed (a cached run never opens it)."""

    def __init__(self, data: DataOptions) -> None:
        self.data, self.source = data, None

    def __call__(self) -> ImageSource:
        if self.source is None:
            from w2s_cli.inputs.sources import open_source

            self.source = open_source(self.data)
        return self.source


class EmbeddingCache:
    """Embeddings of several backbones over the same samples of one dataset, extracted once into a folder
    (resuming unfinished shards) and reused while their request and data are unchanged (store/cache.py).

    `run` keeps them as OUT/weak-NAME and OUT/strong-NAME, `sweep` and `rank-teachers` as OUT/embeddings/NAME;
    each looks in all three places, so a sweep in a run's folder reuses the run's embeddings and vice versa."""

    def __init__(
        self,
        folder: Path,
        data: DataOptions,
        extract: ExtractOptions,
        limit: int | None,
        seed: int,
        reuse: bool,
        source: LazySource | None = None,
    ) -> None:
        self.folder, self.data, self.extract, self.limit, self.seed, self.reuse = (
            folder,
            data,
            extract,
            limit,
            seed,
            reuse,
        )
        self.source = source or LazySource(data)
        self.seconds: dict[str, float] = {}
        self.found: dict[tuple[BackboneSpec, str], Path] = {}

    @staticmethod
    def name(spec: BackboneSpec) -> str:
        cut = "" if spec.stage is None else f"-stage{spec.stage}"
        return slug(f"{spec.model}-{spec.image_size or 'native'}px{cut}") + ".safetensors"

    def path(self, spec: BackboneSpec, role: str | None = None) -> Path:
        """Where an extraction for `role` ('weak', 'strong' in a run; None in a sweep) is written."""
        return self.folder / f"{role}-{self.name(spec)}" if role else self.folder / "embeddings" / self.name(spec)

    def candidates(self, spec: BackboneSpec, role: str | None) -> list[Path]:
        others = [self.folder / f"{r}-{self.name(spec)}" for r in ("weak", "strong")]
        others.append(self.folder / "embeddings" / self.name(spec))
        first = self.path(spec, role)
        return [first] + [p for p in others if p != first]

    def request(self, spec: BackboneSpec) -> dict[str, Any]:
        """The extraction's identity: its request (recorded in the embeddings) and, checked beside it, the data."""
        return extraction_request(self.data, spec, self.limit, self.seed)

    def matches(self, path: Path, request: dict[str, Any]) -> bool:
        try:
            made = EmbeddingsRecord.from_json(store.read_meta(path))
            return made.request == request and made.dataset["fingerprint"] == self.source().fingerprint
        except (W2SError, RecordError):  # an unreadable or foreign cache entry is simply not reused
            return False

    def reusable(self, spec: BackboneSpec, role: str | None = None) -> Path | None:
        """The first place that holds this extraction already (None with --no-reuse)."""
        request = self.request(spec)
        return next((p for p in self.candidates(spec, role) if self.reuse and self.matches(p, request)), None)

    def get(self, spec: BackboneSpec, role: str | None = None, key: str | None = None) -> Path:
        """The embeddings of `spec`: reused where they are, else extracted (another w2s process making them is
        waited for, then they are looked for again)."""
        if (spec, role or "") not in self.found:
            self.seconds[key or spec.label] = 0.0  # reused; an extraction says its own time
            self.found[spec, role or ""] = obtain(
                self.path(spec, role),
                lambda: self.reusable(spec, role),
                lambda: self.make(spec, role, key),
                reuse=self.reuse,
                say=lambda p: f"{p} (same request and data; --no-reuse to extract again)",
            )
        return self.found[spec, role or ""]

    def make(self, spec: BackboneSpec, role: str | None, key: str | None) -> Path:
        """Extract `spec`'s embeddings to their place for `role`, timed."""
        from w2s_cli.extraction.extract import extract

        out, start = self.path(spec, role), time.perf_counter()
        source, limit, request = self.source(), self.limit, self.request(spec)
        extract(self.data, spec, out, self.extract, limit=limit, seed=self.seed, request=request, source=source)
        self.seconds[key or spec.label] = time.perf_counter() - start
        return out


def check_sizes(source: ImageSource, options: RunOptions, limit: int | None) -> None:
    """Refuse, before anything is extracted, a split or label noise that these samples cannot give."""
    ids = subset(source, limit, options.seed)
    split = None if source.split is None else source.split[ids]
    draw_split(len(ids), split, options.split, options.split.n_pseudo)
    classes = int(source.targets.max()) + 1 if source.task == "classification" else None
    noisy_values(source.targets[:1], classes, options.split.label_noise, 0)


def embedding_cache(
    out_dir: str | os.PathLike, data: DataOptions, runs: list[RunOptions], extract: ExtractOptions, reuse: bool
) -> EmbeddingCache:
    """source -> limit -> sizes: the embeddings cache in out_dir shared by `runs` (one run, a sweep's grid or
    the teachers to rank: one data source, seed and --limit), its extraction just large enough for all of them
    (--limit, else the fewest samples that hold every run's split), every run's sizes checked before anything
    is extracted."""
    from w2s_cli.inputs.backbones import check_stage

    for spec in dict.fromkeys(s for o in runs for s in (o.weak, o.strong)):
        check_stage(spec.model, spec.stage)  # a stage the model lacks: refused before any data is read
    source, base = LazySource(data), runs[0]
    limit = base.limit
    if limit is None:
        n_test = max(o.split.n_test for o in runs)
        limit = auto_limit(source().split, n_test, max(o.split.n_labeled + o.split.n_pseudo for o in runs))
    for options in runs:
        check_sizes(source(), options, limit)
    return EmbeddingCache(Path(out_dir), data, extract, limit, base.seed, reuse, source)


def embeddings_for(
    out_dir: Path, data: DataOptions, options: RunOptions, extract_opts: ExtractOptions, reuse: bool
) -> tuple[dict[str, Path], dict[str, float]]:
    """Weak and strong embeddings for a run in out_dir (extracted or reused), and the seconds spent."""
    cache = embedding_cache(out_dir, data, [options], extract_opts, reuse)
    paths = {
        role: cache.get(spec, role, f"extract_{role}")
        for role, spec in (("weak", options.weak), ("strong", options.strong))
    }
    for k, spec in enumerate(options.teachers, start=1):  # the other teachers of a combination
        paths[f"weak{k}"] = cache.get(spec, "weak", f"extract_weak{k}")
    return paths, cache.seconds


def weak_paths(paths: dict[str, Path]) -> list[Path]:
    """The weak teachers' embeddings: `weak`, then the other teachers of a combination in their order."""
    return [paths["weak"], *(paths[f"weak{k}"] for k in range(1, len(paths)) if f"weak{k}" in paths)]


def trial_identity(paths: dict[str, Path], options: RunOptions, seed: int) -> dict[str, Any]:
    """What a trial depends on: its embeddings, split draw, label noise, bases, solvers, student and w2s's
    version. A finished trial whose entry holds this identity is reused (store/cache.py)."""
    teacher_solver, student_solver = options.head.solvers()
    finetuned = options.student == StudentKind.finetune
    sp = options.split
    return {
        "weak": store.read_meta(paths["weak"])["artifact_id"],
        "strong": store.read_meta(paths["strong"])["artifact_id"],
        "split": {
            "seed": seed,
            "test_seed": sp.test_seed,
            "n_test": sp.n_test,
            "n_labeled": sp.n_labeled,
            "n_pseudo": sp.n_pseudo,
        },
        "label_noise": sp.label_noise,
        "subspace": [
            options.weak_subspace.subspace,
            options.weak_subspace.energy,
            options.strong_subspace.subspace,
            options.strong_subspace.energy,
        ],
        "solver": {"teacher": teacher_solver.value, "student": "finetune" if finetuned else student_solver.value},
        "labels": "hard" if options.head.hard else "soft",
        "analysed": None if finetuned else options.dimensions,  # finetuned students have no variance analysis
        "student": options.finetune.record() if finetuned else None,
        "w2s": store.package_versions().get("w2s"),
        # a combination: the other teachers' embeddings and the rule (absent for one teacher: old entries hold)
        **(
            {"teachers": [store.read_meta(p)["artifact_id"] for p in weak_paths(paths)[1:]], "combine": options.combine}
            if options.teachers
            else {}
        ),
    }


def trial_entry(target: Path) -> Path:
    """The cache's entry of the trial whose result is `target`: its identity and the result's artifact_id."""
    return target.with_name(target.name.removesuffix(".safetensors") + ".identity.json")


def finished(target: Path, identity: dict[str, Any]) -> Path | None:
    """`target` if it holds the result of exactly this trial (a rerun then skips it)."""
    entry = read_entry(trial_entry(target), identity)
    try:
        same = entry is not None and store.read_meta(target)["artifact_id"] == entry.made["artifact_id"]
    except (W2SError, KeyError, TypeError):
        return None
    return target if same else None


def result_name(options: RunOptions) -> str:
    """A trial's (and a run's) result file: probe and finetuned students side by side, one per recipe."""
    if options.student == StudentKind.finetune:
        return f"result-finetune-{options.finetune.key()}.safetensors"
    return "result.safetensors"


def run_trials(
    paths: dict[str, Path],
    folder: Path,
    options: RunOptions,
    *,
    quiet: bool = False,
    progress: Progress | None = None,
    resume: bool = True,
    extract: ExtractOptions | None = None,
) -> list[Path]:
    """T trials (seeds seed..seed+T-1, the test split fixed) of train-weak, pseudolabel, fit-student (or
    finetune). With `resume`, a trial whose result is already in `folder` (same identity) is not redone.
    `progress(done, T, 'trial-SEED')` after each trial (else, unless quiet, a line on stderr)."""
    results = []
    for t in range(options.trials):
        s = options.split.seed + t
        results.append(
            trial(paths, folder, options, s, quiet=quiet or progress is not None, resume=resume, extract=extract)
        )
        if progress is not None:
            progress(t + 1, options.trials, f"trial-{s}")
        elif not quiet:
            acc = ResultRecord.from_json(store.read_meta(results[-1])).trials[0].metrics.accuracy
            note = f" (weak {acc['weak']:.3f} -> w2s {acc['w2s']:.3f})" if acc else ""
            stderr.print(f"trial {t + 1}/{options.trials} done{note}")
    return results


def trial(
    paths: dict[str, Path],
    folder: Path,
    options: RunOptions,
    seed: int,
    *,
    quiet: bool = False,
    resume: bool = True,
    extract: ExtractOptions | None = None,
) -> Path:
    """The trial drawn with `seed`, in folder/trial-SEED: reused when finished with this identity (`resume`),
    else made and its entry written. The trial's folder is one unit: another w2s process in it is waited for,
    and what it finished meanwhile is kept."""
    target = folder / f"trial-{seed}" / result_name(options)
    identity = trial_identity(paths, options, seed)

    def make() -> Path:
        one_trial(paths, target, options, seed, quiet=quiet, extract=extract, reuse=resume)
        made = {"result": target.name, "artifact_id": store.read_meta(target)["artifact_id"]}
        return main_writes(lambda: write_entry(trial_entry(target), identity, made), target)

    return obtain(target.parent, lambda: finished(target, identity), make, reuse=resume)


def one_trial(
    paths: dict[str, Path],
    target: Path,
    options: RunOptions,
    seed: int,
    *,
    quiet: bool = False,
    extract: ExtractOptions | None = None,
    reuse: bool = True,
) -> Path:
    """One trial in target's folder: the teacher (train-weak) on the split drawn with `seed`, its pseudo-labels,
    then the student with strong SFT and ceiling (fit-student, or finetune: its strong SFT and ceiling fits
    reused, with `reuse`, from the fit cache beside the strong embeddings); returns `target`'s path."""
    pseudo = pseudo_labels(paths, target.parent, options, seed)
    if options.student == StudentKind.finetune:
        from w2s_cli.diagnostics.predict import predict_and_attach
        from w2s_cli.stages.finetune import finetune, fit_cache_folder

        ft_extract = dataclasses.replace(extract or ExtractOptions(), quiet=quiet)
        made = finetune(
            pseudo,
            paths["strong"],
            out=target,
            recipe=options.finetune,
            subspace=options.strong_subspace,
            extract=ft_extract,
            fit_cache=fit_cache_folder(paths["strong"]),
            reuse=reuse,
        )
        return predict_and_attach(made, extract=ft_extract, quiet=quiet)
    return fit_student(
        pseudo,
        paths["strong"],
        target,
        subspace=options.strong_subspace,
        solver=options.head.solvers()[1],
        dimensions=options.dimensions,
    )


def pseudo_labels(paths: dict[str, Path], folder: Path, options: RunOptions, seed: int) -> Path:
    """A trial's pipeline up to its pseudo-labels, in `folder`: the teacher (train-weak) on the split drawn
    with `seed`, then its labels of the N pool rows (what a trial and a finetuned ranking's proxy start from);
    several teachers (`options.teachers`): each trained on that split, their labels combined."""
    split = SplitOptions(**{**options.split.__dict__, "seed": seed})
    teachers = [
        train_weak(
            weak,
            folder / ("teacher.safetensors" if k == 0 else f"teacher-{k}.safetensors"),
            split=split,
            subspace=options.weak_subspace,
            solver=options.head.solvers()[0],
            n_pseudo=options.split.n_pseudo,
        )
        for k, weak in enumerate(weak_paths(paths))
    ]
    if options.teachers:
        from w2s_cli.stages.combine import pseudolabel_combined

        out = folder / "pseudolabels.safetensors"
        return pseudolabel_combined(teachers, out, rule=options.combine, hard=options.head.hard)
    return pseudolabel(teachers[0], folder / "pseudolabels.safetensors", hard=options.head.hard)


def run(
    out_dir: str | os.PathLike = "w2s-run",
    data: DataOptions | None = None,
    options: RunOptions | None = None,
    extract: ExtractOptions | None = None,
    *,
    reuse: bool = True,
) -> Path:
    """Extract weak and strong embeddings once, then T trials; returns the path of the combined result."""
    data, options, extract = data or DataOptions(), options or RunOptions(), extract or ExtractOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise W2SError(f"--out-dir {out_dir}: is a file, not a folder")
    paths, seconds = embeddings_for(out_dir, data, options, extract, reuse)
    return experiment(paths, out_dir, options, quiet=extract.quiet, resume=reuse, extract=extract, seconds=seconds)


def experiment(
    paths: dict[str, Path],
    folder: Path,
    options: RunOptions,
    *,
    out: Path | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    resume: bool = True,
    extract: ExtractOptions | None = None,
    seconds: dict[str, float] | None = None,
) -> Path:
    """trials -> combine: the T trials of one experiment (`run_trials`) in `folder`, combined into one result
    at `out` (default folder / result_name(options)); `seconds`: the extraction's, added to the trials'."""
    results = run_trials(paths, folder, options, quiet=quiet, progress=progress, resume=resume, extract=extract)
    out = folder / result_name(options) if out is None else out
    return combine([store.load(p, "result") for p in results], out, seconds)


def combine(results: list[store.Artifact], out: Path, extra_seconds: dict[str, float] | None = None) -> Path:
    """One `result` artifact holding the trials of several results of the same experiment."""
    records = [ResultRecord.from_json(r.meta) for r in results]
    first = records[0]
    for r in records[1:]:
        for key in ("weak_model", "strong_model", "n_labeled", "n_pseudo", "n_test", "solver", "student"):
            if getattr(r, key) != getattr(first, key):
                raise W2SError(f"cannot combine results that differ in {key}")
        if r.provenance["sample_ids_sha256"] != first.provenance["sample_ids_sha256"]:
            raise W2SError("cannot combine results that differ in sample_ids_sha256")
    seconds = {k: round(v, 3) for k, v in (extra_seconds or {}).items()}
    for r in records:
        for k, v in r.seconds.items():
            seconds[k] = round(seconds[k] + v if k in seconds else v, 3)
    provenance = copy.deepcopy(first.provenance)
    provenance.update(store.base_meta("result", first.provenance["seed"]))
    provenance["trial_results"] = [store.reference(r, out) for r in results]
    record = dataclasses.replace(
        first, trials=tuple(t for r in records for t in r.trials), seconds=seconds, provenance=provenance
    ).rebased(lambda ref: store.rebase(ref, results[0].path, out))  # the first trial's paths, relative to out
    return store.save(store.Artifact("result", record.to_json(), {"test_rows": results[0]["test_rows"]}), out)
