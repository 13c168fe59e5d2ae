"""Typed option objects shared by the library and the command line.

Each group is declared once here (field names, types, defaults); the CLI turns every field into one
`--option` (see `w2s_cli/cli/options.py`) and stages take the groups by keyword. Choices are enums.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from enum import Enum

from w2s_cli.errors import W2SError, printable
from w2s_cli.finetuning.recipe import FinetuneRecipe


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Preprocess(str, Enum):
    """timm: timm's own PIL transform in loader workers (exact, the default); device: workers decode to
    uint8 at a fixed size and resize, crop and normalise run batched on the model's device."""

    timm = "timm"
    device = "device"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Solver(str, Enum):
    ridgeless = "ridgeless"
    ridge = "ridge"
    logistic = "logistic"


class StudentKind(str, Enum):
    """probe: linear heads on the frozen embeddings (fit-student); finetune: the strong network finetuned."""

    probe = "probe"
    finetune = "finetune"


class Head(str, Enum):
    """ridgeless: every model is a minimum-norm least-squares fit (the theory's setting); logistic: the
    authors' heads, multinomial logistic regression by L-BFGS, the student on soft targets."""

    ridgeless = "ridgeless"
    logistic = "logistic"


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
    dry_run: bool = False  # estimate the work (stages/cost.py) instead of doing it

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
        return self.kind != "inprocess" or self.dry_run


@dataclass(frozen=True)
class DataOptions:
    """Where the images come from."""

    data: str = "fashion-mnist"
    root: str | None = None
    download: bool = False
    target_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None


@dataclass(frozen=True)
class ExtractOptions:
    """How embeddings are computed (not what they are: results do not depend on these, up to float order)."""

    batch_size: int = 64
    device: Device = Device.auto
    num_workers: int | None = None
    shard_rows: int = 10_000
    preprocess: Preprocess = Preprocess.timm
    precision: Precision = Precision.fp32
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise W2SError(f"--batch-size must be positive, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise W2SError(f"--num-workers must be 0 or more, got {self.num_workers}")
        if self.shard_rows <= 0:
            raise W2SError(f"--shard-rows must be positive, got {self.shard_rows}")


@dataclass(frozen=True)
class BackboneSpec:
    """A timm model at an input size, with its weights: `MODEL@PX` on the command line."""

    model: str
    image_size: int | None = None
    weights: str | None = None
    pretrained: bool = True

    @classmethod
    def parse(cls, text: str, weights: str | None = None, pretrained: bool = True) -> BackboneSpec:
        """'tf_efficientnet_lite0@64' -> model and input size; no '@PX': the model's own size."""
        name, at, size = text.strip().rpartition("@")
        if not at:
            name, size = text.strip(), ""
        if not name:
            raise W2SError(f"'{text}' is not MODEL or MODEL@PX")
        if size:
            try:
                px = int(size)
            except ValueError:
                raise W2SError(f"'{text}': the size after @ must be a whole number of pixels") from None
        else:
            px = None
        return cls(name, px, weights, pretrained)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.image_size or 'native'}"


@dataclass(frozen=True)
class SubspaceOptions:
    """The shared intrinsic subspace of one backbone: top-K principal directions of its centred embeddings
    over the n + N training rows. `auto`: the smallest K holding `energy` of the variance, at most n/2."""

    subspace: str = "auto"
    energy: float = 0.90

    def __post_init__(self) -> None:
        self.parsed()

    def parsed(self) -> str | int | None:
        return parse_subspace(self.subspace, self.energy)


def check_energy(energy: float) -> None:
    """An energy fraction (of a spectrum's variance) is in (0, 1]."""
    if not 0.0 < energy <= 1.0:  # also false for NaN
        raise W2SError(f"--energy must be in (0, 1], got {energy}")


def parse_subspace(spec: str | int | None, energy: float = 0.90) -> str | int | None:
    """'none' -> None, 'auto' -> 'auto', 'K' -> K; refuses anything else."""
    check_energy(energy)
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return "auto"
    try:
        k = int(spec)
    except (TypeError, ValueError):
        raise W2SError(f"--subspace must be none, auto or a positive whole number, not '{spec}'") from None
    if k <= 0:
        raise W2SError(f"--subspace must be positive, got {k}")
    return k


@dataclass(frozen=True)
class SplitOptions:
    """The experiment's samples: n labelled, N pseudo-labelled, a fixed test split, label noise."""

    n_labeled: int = 1000
    n_pseudo: int = 8000
    n_test: int = 2000
    seed: int = 0
    test_seed: int = 0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        for name, v in (("--n-labeled", self.n_labeled), ("--n-pseudo", self.n_pseudo), ("--n-test", self.n_test)):
            if v <= 0:
                raise W2SError(f"{name} must be positive, got {v}")
        if not self.label_noise >= 0 or math.isinf(self.label_noise):
            raise W2SError(f"--label-noise must be 0 or more, got {self.label_noise}")


@dataclass(frozen=True)
class HeadOptions:
    """Which fit every model uses. `head=logistic` makes teacher, student, SFT and ceiling logistic."""

    head: Head = Head.ridgeless
    teacher_solver: Solver = Solver.ridgeless
    student_solver: Solver = Solver.ridgeless
    hard: bool = False

    def __post_init__(self) -> None:
        check_student_labels(*reversed(self.solvers()), hard=self.hard)

    def solvers(self) -> tuple[Solver, Solver]:
        if self.head == Head.logistic:
            return Solver.logistic, Solver.logistic
        return Solver(self.teacher_solver), Solver(self.student_solver)


def check_student_labels(student: Solver, teacher: Solver | str, *, hard: bool) -> None:
    """Refuse a head that cannot learn from the pseudo-labels it would be given: a logistic student learns by
    cross-entropy from class probabilities (one-hot labels, or a logistic teacher's softmax outputs), and a
    ridgeless or ridge teacher's soft outputs are not probabilities (they can be negative or exceed 1)."""
    if Solver(student) == Solver.logistic and not hard and Solver(teacher) != Solver.logistic:
        raise W2SError(
            f"a logistic student learns from class probabilities, but soft pseudo-labels of a {Solver(teacher).value} "
            "teacher are not probabilities; use hard pseudo-labels (--hard), a logistic teacher, or a ridgeless or "
            "ridge student"
        )


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

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise W2SError(f"--trials must be at least 1, got {self.trials}")
        if self.student == StudentKind.finetune:  # the fits' rows are the split's: refused before any extraction
            n, N = self.split.n_labeled, self.split.n_pseudo
            self.finetune.check_rows({"w2s": N, "strong_sft": n, "ceiling": n + N})
