"""w2s from Python: the same stages as the CLI, as functions, plus the estimators and the theory.

python examples/library.py [OUT_DIR]
"""

import sys
from pathlib import Path

import numpy as np

from w2s_cli import RidgelessRegressor, theory
from w2s_cli.extract import extract
from w2s_cli.report import load_result, summary
from w2s_cli.student import fit_student
from w2s_cli.teacher import pseudolabel, train_weak

out = Path(sys.argv[1] if len(sys.argv) > 1 else "w2s-library")

# 1. embeddings of every digit from a weak and a strong pretrained backbone
weak = extract("digits", "tf_efficientnet_lite0", out / "weak.safetensors", image_size=24, quiet=True)
strong = extract("digits", "tf_efficientnet_lite2", out / "strong.safetensors", image_size=64, quiet=True)

# 2. teacher on n = 300 labels, N = 1000 pseudo-labels, student / SFT / ceiling on the strong embeddings
teacher = train_weak(weak, out / "teacher.safetensors", n_labeled=300, n_test=400, subspace=40)
pseudo = pseudolabel(teacher, out / "pseudo.safetensors", n_pseudo=1000)
result = fit_student(pseudo, strong, out / "result.safetensors", subspace=100)
s = summary(load_result(result))
print("accuracy:", {k: round(v, 3) for k, v in s["accuracy"].items()})
print(f"PGR {s['pgr']:.3f}  OPR {s['opr']:.3f}  theory: {s['theory']['predicted']}")

# 3. the solvers are plain estimators: minimum-norm least squares in float64
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(20, 50)), rng.normal(size=(20, 1))
model = RidgelessRegressor(fit_intercept=False).fit(X, Y)
print("ridgeless = numpy lstsq:", np.allclose(model.coef_, np.linalg.lstsq(X, Y, rcond=None)[0]))

# 4. the theory: predicted PGR / OPR from intrinsic dimensions, and their N -> infinity limits
print("predicted:", theory.predict(d_s=8, d_w=24, d_sw=3, n=90, N=300, sigma2=0.49))
print("limits:", theory.limits(d_s=8, d_w=24, d_sw=3))
