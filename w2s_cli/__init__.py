"""w2s: weak-to-strong experiments on real vision backbones (the importable library behind the `w2s` CLI).

    from w2s_cli import extract, train_weak, pseudolabel, fit_student, finetune, run, sweep, rank_teachers, summary
    from w2s_cli import RidgelessRegressor, RidgeRegressor, LogisticClassifier, theory

Subpackages follow the pipeline: `inputs` (data sources, timm backbones), `extraction` (embeddings),
`store` (artifacts), `numerics` (the math, no torch), `finetuning` (finetuned students), `stages` (the
pipeline's steps), `report`, `cli`.
Everything but the option objects and W2SError is imported on first use (`extract` needs torch, the
estimators scikit-learn), so `import w2s_cli` stays light.
"""

from w2s_cli.errors import W2SError
from w2s_cli.options import (
    BackboneSpec,
    DataOptions,
    ExtractOptions,
    HeadOptions,
    RunOptions,
    SplitOptions,
    SubspaceOptions,
)
from w2s_cli.options.recipe import FinetuneRecipe

__version__ = "0.2.0"

_LAZY = {
    "RidgelessRegressor": ("w2s_cli.numerics.solvers", "RidgelessRegressor"),
    "RidgeRegressor": ("w2s_cli.numerics.solvers", "RidgeRegressor"),
    "LogisticClassifier": ("w2s_cli.numerics.solvers", "LogisticClassifier"),
    "theory": ("w2s_cli.numerics.theory", None),
    "extract": ("w2s_cli.extraction.extract", "extract"),
    "train_weak": ("w2s_cli.stages.teacher", "train_weak"),
    "pseudolabel": ("w2s_cli.stages.teacher", "pseudolabel"),
    "fit_student": ("w2s_cli.stages.student", "fit_student"),
    "finetune": ("w2s_cli.stages.finetune", "finetune"),
    "run": ("w2s_cli.studies.run", "run"),
    "sweep": ("w2s_cli.studies.sweep", "sweep"),
    "rank_teachers": ("w2s_cli.studies.ranking", "rank_teachers"),
    "intrinsic_dim": ("w2s_cli.diagnostics.intrinsic", "intrinsic_dim"),
    "summary": ("w2s_cli.stages.summary", "summary"),
    "load_result": ("w2s_cli.stages.summary", "load_result"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        found = importlib.import_module(module)
        return found if attr is None else getattr(found, attr)
    raise AttributeError(f"module 'w2s_cli' has no attribute {name!r}")


__all__ = [
    "W2SError",
    "BackboneSpec",
    "DataOptions",
    "ExtractOptions",
    "FinetuneRecipe",
    "HeadOptions",
    "RunOptions",
    "SplitOptions",
    "SubspaceOptions",
    *_LAZY,
]
