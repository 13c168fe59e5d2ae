"""w2s from Python: the same stages as the CLI, as functions taking option objects, plus the estimators and
the theory.

python examples/library.py [OUT_DIR]
"""

import sys
from pathlib import Path

import numpy as np

from w2s_cli import (
    BackboneSpec,
    DataOptions,
    ExtractOptions,
    RidgelessRegressor,
    SplitOptions,
    SubspaceOptions,
    extract,
    fit_student,
    load_result,
    pseudolabel,
    summary,
    theory,
    train_weak,
)

out = Path(sys.argv[1] if len(sys.argv) > 1 else "w2s-library")
quiet = ExtractOptions(quiet=True)

# 1. embeddings of every digit from a weak and a strong pretrained backbone
weak = extract(DataOptions("digits"), BackboneSpec("tf_efficientnet_lite0", 24), out / "weak.safetensors", quiet)
strong = extract(DataOptions("digits"), BackboneSpec("tf_efficientnet_lite2", 64), out / "strong.safetensors", quiet)

# 2. teacher on n = 300 labels, N = 1000 pseudo-labels, student / SFT / ceiling on the strong embeddings,
#    each backbone in its shared 40- / 100-dimensional principal subspace of the n + N training rows
split = SplitOptions(n_labeled=300, n_pseudo=1000, n_test=400)
teacher = train_weak(weak, out / "teacher.safetensors", split=split, subspace=SubspaceOptions("40"))
pseudo = pseudolabel(teacher, out / "pseudo.safetensors")
result = fit_student(pseudo, strong, out / "result.safetensors", subspace=SubspaceOptions("100"))
s = summary(load_result(result))  # a Summary record; s.to_json() is what `w2s report --json` prints
m, t = s.metrics, s.theory
print("accuracy:", {k: round(v, 3) for k, v in m.accuracy.items()})
print(f"PGR {m.pgr:.3f} ± {m.pgr_stderr:.3f}  OPR {m.opr:.3f} ± {m.opr_stderr:.3f}")
print("label-light prediction:", {"pgr": round(t.predicted.pgr, 3), "opr": round(t.predicted.opr, 3)})
print("exact / paper variance:", {k: round(v.ratio, 3) for k, v in t.variance.items()})

# 3. the solvers are scikit-learn estimators: minimum-norm least squares in float64
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(20, 50)), rng.normal(size=(20, 1))
model = RidgelessRegressor(fit_intercept=False).fit(X, Y)
print("ridgeless = numpy lstsq:", np.allclose(model.coef_, np.linalg.lstsq(X, Y, rcond=None)[0]))

# 4. the theory: predicted PGR / OPR from intrinsic dimensions, and their N -> infinity limits
print("predicted:", theory.predict(d_s=8, d_w=24, d_sw=3, n=90, N=300, sigma2=0.49))
print("limits:", theory.limits(d_s=8, d_w=24, d_sw=3))
