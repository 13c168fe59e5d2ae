"""What the theory explains on one W2S trial: dimensions and overlap, the exact-design variance of the four
fits beside the paper's coefficients, the bias-variance decomposition of the measured errors, and the
label-light predictions. Ridgeless heads only (the variance law is about linear fits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from w2s_cli.errors import W2SError
from w2s_cli.numerics import theory
from w2s_cli.numerics.moments import select
from w2s_cli.numerics.solvers import LinearFit, fit_moments, gram_pinv
from w2s_cli.numerics.stats import MODELS, squared_errors
from w2s_cli.numerics.subspaces import overlap
from w2s_cli.numerics.variance import (
    Ensemble,
    LabelNoise,
    W2SMap,
    decompose,
    label_light,
    loo_residuals,
    sub,
    variance_coefficient,
    w2s_loo_residuals,
)
from w2s_cli.stages.design import Design
from w2s_cli.store.records import (
    Analysis,
    Combination,
    Decomposition,
    Dimensions,
    FitRecord,
    MemberTheory,
    Predicted,
    SeveralTeachers,
    TeacherPair,
    VarianceRow,
)


def fit_on(m, x: np.ndarray, y: np.ndarray) -> LinearFit:
    """The ridgeless fit of columns y on columns x of moments m."""
    sel = select(m, np.concatenate([x, y]))
    return fit_moments(sel, slice(0, len(x)), slice(len(x), None))


def dimensions(design: Design) -> Dimensions:
    ov = overlap(design.train.cross, design.train.count, design.zs, design.zw)
    return Dimensions(
        d_w=design.d_w,
        d_s=design.d_s,
        **{k: ov[k] for k in ("d_sw", "d_sw_null", "d_sw_corrected", "m")},
        rank_w=ov["d_w"],
        rank_s=ov["d_s"],
        canonical_correlations=ov["canonical_correlations"][:20],
    )


@dataclass(frozen=True)
class TheoryPredictions:
    """What `theory_predictions` finds: the parts of a trial's `Analysis` that need no test label (records),
    and what the analysis and rank-teachers go on from: the exact-design coefficients, the teacher's fit and
    the leave-one-out residuals of the n labelled rows."""

    dimensions: Dimensions
    variance: dict[str, VarianceRow]
    variance_note: str | None
    predicted: Predicted
    near_interpolation: tuple[str, ...]
    fits: dict[str, FitRecord]
    exact: dict[str, float]
    teacher: LinearFit | Ensemble
    loo: dict[str, np.ndarray | None]
    several: SeveralTeachers | None = None


def teacher_on(m, design: Design, weights: np.ndarray | None) -> LinearFit | Ensemble:
    """The teacher refitted on the rows of moments m: one ridgeless fit on z_w, or (a combination: the
    design's member blocks and their weights) each member on its block, combined."""
    if not design.w_blocks:
        return fit_on(m, design.zw, design.y)
    members = [fit_on(m, design.zw[b], design.y) for b in design.members]
    return Ensemble(members, np.asarray(weights, np.float64), design.members, m.cross[np.ix_(design.zw, design.zw)])


def theory_predictions(
    design: Design,
    fits: dict[str, LinearFit],
    noise: LabelNoise,
    combination: Combination | None = None,
    weights: tuple[float, ...] | np.ndarray | None = None,
) -> TheoryPredictions:
    """What needs no test label and no label of the N pseudo rows: dimensions, exact-design and paper
    variance coefficients, the label-light predictions, the fits' ranks and the interpolation flags.

    fits: the ridgeless "w2s" (on the pseudo-labels used), "strong_sft" and "ceiling" (only its design is
    used here); the teacher is refitted from the design (the same fit train-weak made). combination: several
    teachers combined with fixed weights (the design holds their coordinates side by side); `weights` alone
    (rank-teachers' combined candidates, which have no pseudo-labels artifact): the same predictions without
    the members' table (`several`)."""
    n, N, C = design.L.count, design.P.count, design.n_outputs
    weights = combination.weights if combination is not None else weights
    teacher = teacher_on(design.L, design, weights)
    w2s = W2SMap.build(teacher, fits["w2s"], design.P.cross[np.ix_(design.zw, design.zs)], design.P.mean[design.zw])
    dims = dimensions(design)
    test_s, test_w = sub(design.test, slice(0, design.d_s)), sub(design.test, slice(design.d_s, None))
    exact = {
        "weak": variance_coefficient(teacher, test_w),
        "w2s": w2s.variance_coefficient(test_s),
        "strong_sft": variance_coefficient(fits["strong_sft"], test_s),
        "ceiling": variance_coefficient(fits["ceiling"], test_s),
    }
    try:
        paper = theory.coefficients(dims.d_s, dims.d_w, min(dims.d_sw, dims.d_s, dims.d_w), n, N)
        paper_note = None
    except W2SError as exc:
        paper, paper_note = None, exc.message
    several = None if combination is None else several_teachers(design, teacher, combination, test_w)
    if design.w_blocks:
        if paper is not None:
            paper = {**paper, "weak": None if several is None else several.variance_by_overlap, "w2s": None}
            paper_note = (
                "combined teacher: its coefficient by its members' overlaps; the paper's W2S one is one teacher's"
            )
    variance = {
        k: VarianceRow(
            exact=exact[k],
            theory=None if paper is None else paper[k],
            ratio=None if paper is None or not paper[k] else exact[k] / paper[k],
        )
        for k in MODELS
    }
    loo_w = teacher_loo(teacher, design.Zw_L, design.Y_L)
    loo_s = loo_residuals(fits["strong_sft"], design.Zs_L, design.Y_L)
    loo_2 = w2s_loo_residuals(w2s, design.Zw_L, design.Zs_L, design.Y_L)
    misfit = None if fits["w2s"].rss is None else fits["w2s"].rss / (N * C)
    predicted = label_light(loo_w, loo_s, loo_2, fits["strong_sft"], exact["ceiling"], design.Y_L, noise, misfit)
    all_fits = {"weak": teacher, **fits}
    return TheoryPredictions(
        dimensions=dims,
        variance=variance,
        variance_note=paper_note,
        predicted=Predicted(**predicted),
        near_interpolation=tuple(k for k in MODELS if all_fits[k].near_interpolation()),
        fits={k: FitRecord(**f.record()) for k, f in all_fits.items()},
        exact=exact,
        teacher=teacher,
        loo={"weak": loo_w, "w2s": loo_2, "strong_sft": loo_s},
        several=several,
    )


def teacher_loo(teacher: LinearFit | Ensemble, Z_w: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
    """The teacher's exact leave-one-out residuals on its n rows (a combination: its members' weighted)."""
    if not isinstance(teacher, Ensemble):
        return loo_residuals(teacher, Z_w, Y)
    parts = [loo_residuals(f, Z_w[:, b], Y) for _, f, b in teacher.parts()]
    if any(r is None for r in parts):
        return None
    return sum(w * r for (w, _, _), r in zip(teacher.parts(), parts, strict=False))


def several_teachers(design: Design, teacher: Ensemble, combination: Combination, test_w) -> SeveralTeachers:
    """Each member's dimensions and own exact variance, every pair's shared dimension (over the n + N
    training rows), and the combined teacher's variance coefficient exact and by the overlaps."""
    train, zw, blocks = design.train, design.zw, design.members
    members = []
    for k, (w, fit, b) in enumerate(teacher.parts()):
        ov = overlap(train.cross, train.count, design.zs, zw[b])
        members.append(
            MemberTheory(
                label=combination.members[k].label,
                weight=float(w),
                d_w=float(ov["d_w"]),
                d_sw=ov["d_sw"],
                d_sw_corrected=ov["d_sw_corrected"],
                variance_exact=variance_coefficient(fit, sub(test_w, b)),
            )
        )
    d = np.diag([m.d_w for m in members])
    pairs = []
    for a in range(len(blocks)):
        for b in range(a + 1, len(blocks)):
            ov = overlap(train.cross, train.count, zw[blocks[a]], zw[blocks[b]])
            pairs.append(TeacherPair(a, b, ov["d_sw"], ov["d_sw_null"], ov["d_sw_corrected"]))
            d[a, b] = d[b, a] = ov["d_sw"]
    w = np.asarray(teacher.weights)
    return SeveralTeachers(
        rule=combination.rule,
        members=tuple(members),
        pairs=tuple(pairs),
        variance_exact=variance_coefficient(teacher, test_w),
        variance_by_overlap=float((1.0 + w @ d @ w) / design.L.count),
    )


def analyse(
    design: Design,
    outputs: dict[str, np.ndarray],
    truth: np.ndarray,
    fits: dict[str, LinearFit],
    noise: LabelNoise,
    combination: Combination | None = None,
) -> Analysis:
    """Everything the report says about the theory for one trial: the predictions above, plus the
    noise / bias / variance decomposition of the measured test errors."""
    p = theory_predictions(design, fits, noise, combination)
    exact, teacher = p.exact, p.teacher
    errors = {k: float(squared_errors(outputs[k], truth).mean()) for k in MODELS}
    s2w, s2c = teacher.sigma2(), fits["ceiling"].sigma2()
    var = {
        "weak": None if s2w is None else s2w * exact["weak"],
        "w2s": None if s2w is None else s2w * exact["w2s"],
        "strong_sft": None if s2c is None else s2c * exact["strong_sft"],
        "ceiling": None if s2c is None else s2c * exact["ceiling"],
    }
    ill = [k for k in MODELS if {"weak": teacher, **fits}[k].ill_determined]
    inherited, why = inherited_bias(design, outputs["ceiling"], None if combination is None else combination.weights)
    decomposition, note = {}, None
    if ill:  # its parts move with rounding in the fits' weakest directions: not printed as if they did not
        note = f"not determined by this design (ill-determined fit: {', '.join(ill)})"
    else:
        decomposition = {k: Decomposition(**v) for k, v in decompose(errors, var, inherited).items()}
        if why is not None:
            note = f"inherited bias not determined by this design ({why})"
    return Analysis(
        dimensions=p.dimensions,
        variance=p.variance,
        variance_note=p.variance_note,
        predicted=p.predicted,
        near_interpolation=p.near_interpolation,
        fits=p.fits,
        sigma2={"weak": s2w, "strong": s2c},
        decomposition=decomposition,
        decomposition_note=note,
        teachers=p.several,
    )


def inherited_bias(
    design: Design, ceiling_test: np.ndarray, weights: tuple[float, ...] | None = None
) -> tuple[float | None, str | None]:
    """||P_s f_w* - f_s*||^2 on the test rows: f_w* the weak fit on all n + N training labels, projected
    on the strong subspace by least squares over the same rows, against the strong ceiling; (None, why) when
    the moments of the n + N rows cannot resolve either fit (a full-width basis on few rows, say), where the
    number would be rounding error."""
    train = design.train
    weak_ceiling = teacher_on(train, design, weights)
    Gp, rank_s, _ = gram_pinv(select(train, design.zs).cross, train.count)
    if weak_ceiling.ill_determined or rank_s < min(train.count - 1, design.d_s):
        side = "weak" if weak_ceiling.ill_determined else "strong"
        rank, d = (weak_ceiling.rank, design.d_w) if side == "weak" else (rank_s, design.d_s)
        return None, f"the {side} fit over the {train.count} training rows resolves rank {rank} of {d} coordinates"
    coef = Gp @ (train.cross[np.ix_(design.zs, design.zw)] @ weak_ceiling.coef)
    projected = weak_ceiling.y_mean + (design.Zs_test - train.mean[design.zs]) @ coef
    return float(((projected - ceiling_test) ** 2).mean()), None
