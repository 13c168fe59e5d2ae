"""w2s: weak-to-strong experiments on real vision backbones (importable library behind the `w2s` CLI)."""

from w2s_cli.errors import W2SError
from w2s_cli.solvers import LogisticClassifier, RidgelessRegressor, RidgeRegressor

__all__ = ["W2SError", "RidgelessRegressor", "RidgeRegressor", "LogisticClassifier"]
__version__ = "0.1.0"
