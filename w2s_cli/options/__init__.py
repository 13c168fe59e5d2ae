"""Typed option objects shared by the library and the command line, each group declared once (field names,
types, defaults, checks when built); the CLI turns every field into one flag (w2s_cli/cli/flags.py).

data.py (what is extracted and how), fit.py (split, subspaces, heads), recipe.py (how a strong network is
finetuned), study.py (the experiment of `w2s run`, executors)."""

from w2s_cli.options.data import BackboneSpec, DataOptions, Device, ExtractOptions, Precision, Preprocess
from w2s_cli.options.fit import (
    Head,
    HeadOptions,
    Solver,
    SplitOptions,
    SubspaceOptions,
    check_energy,
    check_student_labels,
    parse_subspace,
)
from w2s_cli.options.recipe import FinetuneRecipe
from w2s_cli.options.study import COLLECT, EXECUTORS, OWN_SBATCH, ExecutorOptions, RunOptions, StudentKind

__all__ = [
    "COLLECT",
    "EXECUTORS",
    "OWN_SBATCH",
    "BackboneSpec",
    "DataOptions",
    "Device",
    "ExecutorOptions",
    "ExtractOptions",
    "FinetuneRecipe",
    "Head",
    "HeadOptions",
    "Precision",
    "Preprocess",
    "RunOptions",
    "Solver",
    "SplitOptions",
    "StudentKind",
    "SubspaceOptions",
    "check_energy",
    "check_student_labels",
    "parse_subspace",
]
