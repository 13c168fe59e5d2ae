"""What a study runs: the experiment of `w2s run` (backbones, split, heads, student) and where its jobs run."""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from w2s_cli.errors import W2SError, printable
from w2s_cli.options.data import BackboneSpec
from w2s_cli.options.fit import HeadOptions, SplitOptions, SubspaceOptions
from w2s_cli.options.recipe import FinetuneRecipe


class StudentKind(str, Enum):
    """probe: linear heads on the frozen embeddings (fit-student); finetune: the strong network finetuned."""

    probe = "probe"
    finetune = "finetune"


EXECUTORS = ("inprocess", "local:K", "slurm", "submitit-local")


# sbatch options that the job array's own flags set (a --slurm-option would silently replace them), and those
# submitit sets for its logs and array (replacing them breaks the jobs); by sbatch's name, with w2s's flag
OWN_SBATCH = {
    "time": "--slurm-time",
    "partition": "--slurm-partition",
    "gpus-per-node": "--slurm-gpus",
    "cpus-per-task": "--slurm-cpus",
    "mem": "--slurm-mem-gb",
    **{k: "" for k in ("job-name", "output", "error", "array", "open-mode", "signal", "dependency", "ntasks-per-node",
                       "nodes")},
}  # fmt: skip


COLLECT = "collect"  # no jobs: only gather what earlier jobs wrote (sweep --collect OUT); not a --executor value


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the jobs run. `executor`: inprocess (one after another, in this process), local:K (K worker
    processes), slurm (a job array through submitit) or submitit-local (submitit's local executor: the
    slurm path, each job its own process on this machine). The rest are the SLURM job's resources."""

    executor: str = "inprocess"
    detach: bool = False
    partition: str | None = None
    time_min: int = 60
    gpus: int = 0
    cpus: int = 2
    mem_gb: float = 8.0
    sbatch: list[str] = field(default_factory=list)
    dry_run: bool = False  # estimate the work (studies/cost.py) instead of doing it

    @property
    def kind(self) -> str:
        return self.executor.partition(":")[0]

    @property
    def workers(self) -> int:
        """K of local:K."""
        return int(self.executor.partition(":")[2])

    def __post_init__(self) -> None:
        kind, colon, k = self.executor.partition(":")
        valid = kind in ("inprocess", "slurm", "submitit-local", COLLECT) and not colon
        valid = valid or (kind == "local" and k.isdigit() and int(k) >= 1)
        if not valid:
            raise W2SError(f"--executor must be one of {', '.join(EXECUTORS)}, not '{printable(self.executor)}'")
        if self.detach and kind != "slurm":
            raise W2SError("--detach needs --executor slurm (local workers end with this process)")
        for name, v, least in (("--slurm-time", self.time_min, 1), ("--slurm-cpus", self.cpus, 1),
                               ("--slurm-gpus", self.gpus, 0)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                what = "positive" if least else "0 or more"
                raise W2SError(f"{name} must be {what} (a whole number), got {printable(v)}")
        if isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float)) or not 0 < self.mem_gb < math.inf:
            raise W2SError(f"--slurm-mem-gb must be positive (and finite), got {printable(self.mem_gb)}")
        self.sbatch_parameters()
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]  # submitit calls both
        if kind == "slurm" and not self.dry_run and missing:  # an estimate (--dry-run) needs no cluster
            raise W2SError(
                f"--executor slurm: this machine has no SLURM (no {' or '.join(missing)} on the PATH); run on a "
                "SLURM login node, or use --executor local:K or submitit-local here"
            )

    def sbatch_parameters(self) -> dict[str, str | bool]:
        """--slurm-option KEY=VALUE (or a bare KEY: an sbatch flag) as submitit's additional sbatch parameters,
        each refused unless it is one sbatch option that w2s does not set itself."""
        out: dict[str, str | bool] = {}
        for opt in self.sbatch:
            key, eq, value = str(opt).partition("=")
            name = key.strip().lstrip("-")
            said = f"--slurm-option '{printable(opt)}'"
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name) or (eq and not value.strip()):
                raise W2SError(f"{said}: expected KEY=VALUE (an sbatch option, e.g. qos=high) or a bare KEY")
            if not value.isprintable():
                raise W2SError(f"{said}: the value holds a line break or another control character")
            own = OWN_SBATCH.get(name.replace("_", "-"))
            if own is not None:
                raise W2SError(f"{said}: w2s sets this sbatch option itself{f' (use {own})' if own else ''}")
            out[name.replace("-", "_")] = value.strip() if eq else True
        return out

    @property
    def spread(self) -> bool:
        return self.kind != "inprocess"


@dataclass(frozen=True)
class RunOptions:
    """Everything `w2s run` needs besides the data: the two backbones and the experiment."""

    weak: BackboneSpec = field(default_factory=lambda: BackboneSpec("tf_efficientnet_lite0", 64))
    strong: BackboneSpec = field(default_factory=lambda: BackboneSpec("tf_efficientnet_lite2", 112))
    split: SplitOptions = field(default_factory=SplitOptions)
    weak_subspace: SubspaceOptions = field(default_factory=SubspaceOptions)
    strong_subspace: SubspaceOptions = field(default_factory=SubspaceOptions)
    head: HeadOptions = field(default_factory=HeadOptions)
    trials: int = 1
    limit: int | None = None
    seed: int = 0  # of the extraction's --limit draw and of random weights
    dimensions: bool = True
    student: StudentKind = StudentKind.probe
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    teachers: tuple[BackboneSpec, ...] = ()  # other weak teachers, combined with `weak` by `combine`
    combine: str | None = None

    def backbones(self) -> list[BackboneSpec]:
        """Every backbone a trial reads: the weak teachers (the first, then the others combined), the strong."""
        return [self.weak, *self.teachers, self.strong]

    def roles(self, where: Callable[[BackboneSpec], Path]) -> dict[str, Path]:
        """A trial's embeddings by role (weak, weak1..., strong), each found by `where`."""
        paths = {"weak": where(self.weak), "strong": where(self.strong)}
        paths.update({f"weak{k}": where(spec) for k, spec in enumerate(self.teachers, start=1)})
        return paths

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise W2SError(f"--trials must be at least 1, got {self.trials}")
        from w2s_cli.store.records import COMBINE_RULES

        if self.teachers and self.combine is None:
            raise W2SError(
                f"{1 + len(self.teachers)} --weak teachers: name how to combine them (--combine mean|stack|confident)"
            )
        if self.combine is not None and self.combine not in COMBINE_RULES:
            raise W2SError(f"--combine must be one of {', '.join(COMBINE_RULES)}, not '{self.combine}'")
        if self.combine is not None and not self.teachers:
            raise W2SError(f"--combine {self.combine} needs at least two --weak teachers, got one")
        labels = [t.label for t in (self.weak, *self.teachers)]
        if self.combine == "stack" and len(set(labels)) < len(labels):  # refused before any extraction
            raise W2SError("--combine stack: a --weak teacher is given twice (the two weights are not determined)")
        if self.student == StudentKind.finetune:  # the fits' rows are the split's: refused before any extraction
            if self.strong.stage is not None:
                raise W2SError(
                    f"--strong {self.strong.label}: a finetuned student needs a whole network, not one cut at a stage"
                )
            n, N = self.split.n_labeled, self.split.n_pseudo
            self.finetune.check_rows({"w2s": N, "strong_sft": n, "ceiling": n + N})
