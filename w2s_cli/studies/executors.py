"""Where a sweep's trials run: in this process (the default), in K worker processes on this machine, or as a
SLURM job array through submitit.

A job is one (point, trial): train-weak, pseudolabel and fit-student (or finetune) of one split draw, written
into the trial's own folder `points/<point>/trial-<seed>/` exactly as the in-process loop writes it; the
parent then finds every trial finished and combines them the same way, so the numbers do not depend on the
executor. A trial already finished (same inputs and options) is not a job, so a killed or failed sweep,
rerun, submits only what is missing. A failed job is reported with its log and submitted once more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.options import (
    COLLECT,
    BackboneSpec,
    DataOptions,
    ExecutorOptions,
    ExtractOptions,
    RunOptions,
    SplitOptions,
    StudentKind,
)
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.progress import stderr
from w2s_cli.store import artifact as store
from w2s_cli.store.cache import slug
from w2s_cli.studies.run import EmbeddingCache, Progress, finished, result_name, trial, trial_identity

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class TrialJob:
    """One trial of one point: what a worker, or a SLURM task, runs."""

    name: str
    paths: dict[str, Path]
    folder: Path
    options: RunOptions  # trials=1, split.seed = this trial's seed
    extract: ExtractOptions
    resume: bool
    configuration: dict[str, Any] | None = None  # the command's, recorded in what the job writes

    def __call__(self) -> str:
        with store.recording(self.configuration):
            return str(trial(self.paths, self.folder, self.options, self.options.split.seed, quiet=True,
                             resume=self.resume, extract=self.extract))  # fmt: skip

    @property
    def target(self) -> Path:
        return self.folder / f"trial-{self.options.split.seed}" / result_name(self.options)


@dataclass(frozen=True)
class ExtractionJob:
    """The embeddings of one backbone, extracted once, before the trials that read them."""

    name: str
    spec: BackboneSpec
    folder: Path
    data: DataOptions
    extract: ExtractOptions
    limit: int | None
    seed: int
    reuse: bool
    configuration: dict[str, Any] | None = None

    def __call__(self) -> str:
        cache = EmbeddingCache(self.folder, self.data, self.extract, self.limit, self.seed, self.reuse)
        with store.recording(self.configuration):
            return str(cache.get(self.spec))


@dataclass(frozen=True)
class PrefixJob:
    """The frozen prefix's outputs (finetuning `--train last:K`) for every image of the strong embeddings,
    cached once, after those embeddings and before the trials that read them (two trials making the same
    cache at once would each write it)."""

    name: str
    strong: Path
    recipe: FinetuneRecipe
    extract: ExtractOptions
    configuration: dict[str, Any] | None = None

    def __call__(self) -> str:
        from w2s_cli.finetuning.prefix import prepare_prefix_cache

        with store.recording(self.configuration):
            return str(prepare_prefix_cache(self.strong, self.recipe, self.extract))


def prefix_jobs(todo: list[TrialJob], extract: ExtractOptions) -> list[PrefixJob]:
    """One job per (strong embeddings, cut) that the finetuned trials still to run read from a cache."""
    jobs: dict[tuple[Path, str], PrefixJob] = {}
    for t in todo:
        o = t.options
        if o.student == StudentKind.finetune and o.finetune.spec.kind == "last":
            key = (Path(t.paths["strong"]), str(o.finetune.spec))
            name = f"activations/{o.strong.label}.{o.finetune.spec.kind}{o.finetune.spec.size}"
            jobs.setdefault(key, PrefixJob(name, key[0], o.finetune, extract, store.configuration()))
    return list(jobs.values())


def trial_jobs(
    folder: Path, paths: dict[str, Path], options: RunOptions, extract: ExtractOptions, resume: bool, prefix: str
) -> list[TrialJob]:
    """One job per trial of `options`, each asking for its own seed (the same folders run_trials writes)."""
    quiet = dataclasses.replace(extract, quiet=True)
    jobs = []
    for t in range(options.trials):
        s = options.split.seed + t
        one = dataclasses.replace(options, trials=1, split=SplitOptions(**{**options.split.__dict__, "seed": s}))
        jobs.append(TrialJob(f"{prefix}/trial-{s}", paths, folder, one, quiet, resume, store.configuration()))
    return jobs


def is_finished(job: TrialJob) -> bool:
    """Whether the job's trial is already in its folder (its embeddings must exist to tell)."""
    if not job.resume or not all(Path(p).exists() for p in job.paths.values()):
        return False
    return finished(job.target, trial_identity(job.paths, job.options, job.options.split.seed)) is not None


def _run_logged(job: Callable[[], str], log: Path) -> str:
    """A worker's job, its stdout and stderr (and a traceback if it fails) kept in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            return job()
        except BaseException:
            traceback.print_exc()
            raise


def _limit_threads(threads: int) -> None:
    """A worker's BLAS and torch threads, so that K workers share the cores instead of oversubscribing them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for torch, if a finetuning job imports it
    _limit_threads.keep = threadpool_limits  # noqa: B010 - the limit holds for the worker's life


class Submission:
    """One submitted job: its handle, its log, and whether it is a retry."""

    def __init__(self, job: Any, handle: Any, log: Path, attempt: int) -> None:
        self.job, self.handle, self.log, self.attempt = job, handle, log, attempt


class WorkerPool:
    """local:K: K spawned worker processes on this machine, each with cores/K threads."""

    def __init__(self, workers: int, logs: Path) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")  # fork after torch's threads have run can hang
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_limit_threads, initargs=(threads,))
        self.logs, self.workers = logs, workers

    def submit(self, jobs: list[Any], attempt: int = 0, after: list[Submission] | None = None) -> list[Submission]:
        subs = []
        for job in jobs:
            log = self.logs / f"{slug(job.name)}{'.retry' if attempt else ''}.log"
            subs.append(Submission(job, self.pool.submit(_run_logged, job, log), log, attempt))
        return subs

    @staticmethod
    def done(sub: Submission) -> bool:
        return sub.handle.done()

    @staticmethod
    def error(sub: Submission) -> str | None:
        exc = sub.handle.exception()
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    def close(self, interrupted: bool) -> None:
        if interrupted:  # end the running jobs now rather than waiting for them (3.11 has no public way)
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=not interrupted, cancel_futures=True)


class SubmititCluster:
    """slurm (a job array per submission) or submitit-local, through submitit; logs in OUT/jobs/<job id>/."""

    def __init__(self, options: ExecutorOptions, folder: Path) -> None:
        import submitit

        cluster = "slurm" if options.kind == "slurm" else "local"
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        self.executor.update_parameters(
            name="w2s",
            timeout_min=options.time_min,
            gpus_per_node=options.gpus,
            cpus_per_task=options.cpus,
            mem_gb=options.mem_gb,
            slurm_partition=options.partition,
            slurm_additional_parameters=options.sbatch_parameters(),
        )
        self.slurm, self.live, self.folder = cluster == "slurm", [], folder
        self.name = options.executor

    def submit(self, jobs: list[Any], attempt: int = 0, after: list[Submission] | None = None) -> list[Submission]:
        from submitit.core import utils

        if not jobs:  # nothing to submit (e.g. every embedding already cached): no empty batch
            return []
        if after and self.slurm:  # SLURM starts the trials once the extraction jobs have succeeded
            ids = ":".join(str(s.handle.job_id) for s in after)
            self.executor.update_parameters(slurm_dependency=f"afterok:{ids}")
        said = io.StringIO()  # submitit prints a failed sbatch's stderr before raising: said once, below
        try:
            with contextlib.redirect_stderr(said), self.executor.batch():
                handles = [self.executor.submit(job) for job in jobs]
        except (OSError, subprocess.SubprocessError, utils.UncompletedJobError, utils.FailedSubmissionError) as exc:
            # sbatch refused the array (a partition, account or option it does not know) or could not run
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise W2SError(
                f"--executor {self.name}: the jobs could not be submitted ({printable(why or type(exc).__name__)})"
            ) from None
        sys.stderr.write(said.getvalue())
        if after and self.slurm:
            self.executor.update_parameters(slurm_dependency=None)
        subs = [Submission(j, h, Path(h.paths.stderr), attempt) for j, h in zip(jobs, handles, strict=True)]
        self.live += subs
        return subs

    @staticmethod
    def done(sub: Submission) -> bool:
        return sub.handle.done()

    @staticmethod
    def error(sub: Submission) -> str | None:
        exc = sub.handle.exception()
        if exc is None:
            return None
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return lines[-1] if lines else type(exc).__name__

    def close(self, interrupted: bool) -> None:
        if interrupted:  # the parent owns its jobs unless --detach: a rerun resubmits what is missing
            for sub in self.live:
                if not sub.handle.done():
                    sub.handle.cancel(check=False)
        with contextlib.suppress(OSError):  # the empty folder named by the pattern that submitit leaves
            (self.folder / "%j").rmdir()


def backend(options: ExecutorOptions, out_dir: Path) -> WorkerPool | SubmititCluster:
    """The executor's runner, or one line saying why it cannot start (before any job is submitted)."""
    try:
        if options.kind == "local":
            return WorkerPool(options.workers, out_dir / "jobs" / "logs")
        return SubmititCluster(options, out_dir / "jobs")
    except (OSError, RuntimeError, ValueError) as exc:  # submitit's own checks of the cluster, a pool's processes
        raise W2SError(f"--executor {options.executor} cannot start: {printable(' '.join(str(exc).split()))}") from None


def wait(
    runner: WorkerPool | SubmititCluster,
    subs: list[Submission],
    tick: Callable[[Any], None] | None = None,
) -> None:
    """Wait for every submission; a failed job is said with its log and submitted once more; jobs that fail
    twice end the sweep with one error naming them (the finished ones stay, so a rerun does the rest)."""
    pending, failed = list(subs), []
    while pending:
        landed = [s for s in pending if runner.done(s)]
        if not landed:
            time.sleep(POLL_SECONDS)
            continue
        for sub in landed:
            pending.remove(sub)
            error = runner.error(sub)
            if error is None:
                if tick is not None:
                    tick(sub.job)
            elif sub.attempt == 0:
                stderr.print(f"job {sub.job.name} failed ({printable(error)}); log: {sub.log}; retrying once")
                pending += runner.submit([sub.job], attempt=1)
            else:
                failed.append(sub)
    if failed:
        names = "; ".join(f"{s.job.name} (log: {s.log})" for s in failed)
        raise W2SError(
            f"{len(failed)} job(s) failed twice: {names}; the other jobs' results are kept: "
            "rerun the same command to run only what is missing"
        )


def record_submission(folder: Path, subs: list[Submission]) -> Path:
    """OUT/jobs/submitted.json: each job's name, SLURM job id and log, for the user and for --collect."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "submitted.json"
    entries = [{"job": s.job.name, "id": str(s.handle.job_id), "log": str(s.log)} for s in subs]
    path.write_text(json.dumps({"submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "jobs": entries}))
    return path


class Detached(Exception):
    """Raised by `spread` after a --detach submission: the caller reports it instead of a result."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__("detached")
        self.record = record


def embeddings_plan(
    cache: EmbeddingCache, specs: Iterable[BackboneSpec]
) -> tuple[dict[BackboneSpec, Path], list[ExtractionJob]]:
    """Where each backbone's embeddings are (reused) or will be (an extraction job writes them)."""
    where, jobs = {}, []
    for spec in dict.fromkeys(specs):
        found = cache.reusable(spec)
        where[spec] = found or cache.path(spec)
        if found is None:
            job = ExtractionJob(f"embeddings/{spec.label}", spec, cache.folder, cache.data, cache.extract, cache.limit,
                                cache.seed, cache.reuse, store.configuration())  # fmt: skip
            jobs.append(job)
    return where, jobs


def trial_plan(
    tasks: list[tuple[str, Path, RunOptions]], where: dict[BackboneSpec, Path], extract: ExtractOptions, reuse: bool
) -> tuple[list[TrialJob], list[TrialJob]]:
    """Every trial of every task (name, folder, options) as a job, and those not already finished."""
    jobs = [
        job
        for name, folder, o in tasks
        for job in trial_jobs(folder, o.roles(where.__getitem__), o, extract, reuse, name)
    ]
    return jobs, [j for j in jobs if not is_finished(j)]


def spread(
    options: ExecutorOptions,
    tasks: list[tuple[str, Path, RunOptions]],
    cache: EmbeddingCache,
    extract: ExtractOptions,
    reuse: bool,
    progress: Progress | None = None,
) -> None:
    """Every trial of every task (name, folder, options) finished by the executor, so that the in-process
    loop then only combines them; with --detach, submitted (raises Detached with the submission's record)."""
    specs = [s for _, _, o in tasks for s in o.backbones()]
    if options.kind == "local":  # extracted here, once, as the in-process sweep does
        where, extraction = {spec: cache.get(spec) for spec in dict.fromkeys(specs)}, []
    else:
        where, extraction = embeddings_plan(cache, specs)
    jobs, todo = trial_plan(tasks, where, extract, reuse)
    done = len(jobs) - len(todo)
    prefixes = prefix_jobs(todo, dataclasses.replace(extract, quiet=True))
    if options.kind == "local":  # cached here, once, before the workers read them
        for job in prefix_jobs(todo, extract):
            job()
        prefixes = []
    if options.kind == COLLECT:
        if todo or extraction:
            first = (extraction or todo)[0].name
            raise W2SError(
                f"{len(todo)} of {len(jobs)} jobs are not finished (the first: {first}); see {cache.folder / 'jobs'}, "
                "or rerun the sweep's command to submit only the missing ones"
            )
    elif todo:
        stderr.print(f"{done} of {len(jobs)} jobs already finished; {len(todo)} to run ({options.executor})")
        _submit_and_wait(options, cache.folder, extraction + prefixes, todo, len(jobs), done, progress)
    elif progress is not None:
        progress(done, len(jobs), tasks[-1][0])
    cache.found.update({(spec, ""): path for spec, path in where.items()})


def _submit_and_wait(
    options: ExecutorOptions,
    out_dir: Path,
    extraction: list[ExtractionJob | PrefixJob],
    todo: list[TrialJob],
    total: int,
    done: int,
    progress: Progress | None,
) -> None:
    runner, count = backend(options, out_dir), [done]

    def tick(job: TrialJob) -> None:
        count[0] += 1
        if progress is not None:
            progress(count[0], total, job.name.rpartition("/trial-")[0].removeprefix("points/"))

    interrupted = True
    try:
        embeddings = [j for j in extraction if isinstance(j, ExtractionJob)]
        first = runner.submit(embeddings)
        if first and not options.detach:
            wait(runner, first)  # the embeddings, before any trial (or prefix cache) reads them
        prefixes = [j for j in extraction if isinstance(j, PrefixJob)]
        then = runner.submit(prefixes, after=first if options.detach else None)
        if then and not options.detach:
            wait(runner, then)  # the frozen prefix's cache, before the finetuned trials read it
        subs = runner.submit(todo, after=(then or first) if options.detach else None)
        first = first + then
        if options.detach:
            record = record_submission(out_dir / "jobs", first + subs)
            interrupted = False
            raise Detached({"submitted": len(first + subs), "record": str(record), "out_dir": str(out_dir)})
        wait(runner, subs, tick)
        interrupted = False
    finally:
        runner.close(interrupted)
