"""Several weak teachers, trained on one split, combined into one pseudo-labels artifact
(`w2s pseudolabel T1 T2 ... --combine RULE`): every later stage, the report and the label-light predictions
read it as they read one teacher's.

Rules: `mean` (the average of the members' outputs), `stack` (weights on the simplex fitted on the members'
exact leave-one-out outputs of the n labelled rows: the labels each weight sees were never fitted by the
member it weighs) and `confident` (each row from the member with the largest margin between its two largest
outputs; a per-sample rule). No label of the N pool or of the test rows is read.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from pathlib import Path

import numpy as np

from w2s_cli.distributed import main_writes
from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.stats import accuracy, as_targets, one_hot
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.numerics.variance import loo_residuals
from w2s_cli.options import Solver
from w2s_cli.stages.heads import apply, fit_head
from w2s_cli.stages.split import subset_pseudo
from w2s_cli.stages.teacher import pseudo_record, shared_tensors
from w2s_cli.store import artifact as store
from w2s_cli.store import embeddings as emb_store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import (
    COMBINE_RULES,
    Combination,
    TeacherMember,
    TeacherRecord,
    TeacherReference,
    model_label,
    read_record,
)

SHARED_ROWS = ("test_rows", "labeled_rows", "pseudo_rows", "labeled_observed", "pseudo_observed")
MAX_STACK = 12  # the simplex fit tries every support: 2^K - 1 small solves


@dataclasses.dataclass(frozen=True)
class Member:
    """One teacher as the combination reads it: its artifact, record and weak embeddings."""

    art: store.Artifact
    made: TeacherRecord
    emb: EmbeddingSet

    def basis(self) -> PrincipalBasis:
        return PrincipalBasis(self.art["basis_mean"], self.art["basis"] if self.art.has("basis") else None)

    def outputs(self, rows: np.ndarray) -> np.ndarray:
        return apply(self.art["coef"], self.art["intercept"], self.emb.rows(rows), self.made.link)

    def test_output(self) -> np.ndarray:
        if self.art.has("test_output"):
            return np.asarray(self.art["test_output"], np.float64)
        return self.outputs(np.asarray(self.art["test_rows"]))


def pseudolabel_combined(
    teachers: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    rule: str,
    n_pseudo: int | None = None,
    hard: bool = False,
) -> Path:
    """Label the teachers' shared N pseudo rows with their combination by `rule`; write a `pseudolabels`
    artifact whose record names the members, the rule and the weights (Combination)."""
    start = time.perf_counter()
    if rule not in COMBINE_RULES:
        raise W2SError(f"--combine must be one of {', '.join(COMBINE_RULES)}, not '{printable(rule)}'")
    if len(teachers) < 2:
        raise W2SError(f"--combine {rule} needs at least two teachers, got {len(teachers)}")
    arts = [store.load(p, "teacher", what="teacher") for p in teachers]  # load names the path
    made = [read_record(a, TeacherRecord) for a in arts]
    recorded = [store.resolve(m.embeddings, a.path) for a, m in zip(arts, made, strict=True)]
    out = check_output(out, inputs=[*teachers, *recorded])
    check_members(arts, made, rule)
    members = [
        Member(a, m, emb_store.find(m.embeddings, a.path, None, f"weak embeddings of teacher {printable(a.path)}"))
        for a, m in zip(arts, made, strict=False)
    ]
    first = members[0]
    if (hard or rule == "confident") and first.emb.labels is None:
        raise W2SError(f"{'--hard' if hard else '--combine confident'} needs a classification dataset")
    drawn = np.asarray(first.art["pseudo_rows"])
    keep = subset_pseudo(drawn, n_pseudo, first.made.split.seed) if n_pseudo is not None else drawn
    Y_L = as_targets(first.art["labeled_observed"], first.emb.n_classes)
    weights, loo = combination_weights(members, rule, Y_L)
    soft, shares = combine([m.outputs(keep) for m in members], rule, weights)
    member_tests = [m.test_output() for m in members]
    test_out, _ = combine(member_tests, rule, weights)
    combination = Combination(
        rule=rule,
        members=tuple(_member(m, out, None if shares is None else shares[k]) for k, m in enumerate(members)),
        weights=None if weights is None else tuple(float(w) for w in weights),
        loo_error=None if loo is None else float((loo**2).mean()),
        note="the combined teacher's test outputs follow the same rule on the test rows",
    )
    sigma2 = [m.sigma2 for m in combination.members if m.sigma2 is not None]
    record = pseudo_record(
        first.made,
        _reference(first, out),
        keep=keep,
        drawn=drawn,
        hard=hard,
        pseudo_label_accuracy=accuracy(soft, first.emb.labels[keep]) if first.emb.labels is not None else None,
        teacher_sigma2=min(sigma2) if sigma2 else None,  # the shared labels' noise: the least biased estimate
        teacher_loo_error=combination.loo_error,
        seconds={"pseudolabel": round(time.perf_counter() - start, 3)},
        combination=combination,
    )
    labels = one_hot(soft.argmax(axis=1), soft.shape[1]) if hard else soft
    tensors = {**shared_tensors(first.art, keep, drawn, labels), "weak_test_output": test_out}
    for k, m in enumerate(members):
        tensors[f"member{k}_test_output"] = member_tests[k]
        tensors[f"member{k}_basis_mean"] = m.art["basis_mean"]
        if m.art.has("basis"):
            tensors[f"member{k}_basis"] = m.art["basis"]
    return main_writes(lambda: store.save(store.Artifact("pseudolabels", record.to_json(), tensors), out), out)


def check_members(arts: list[store.Artifact], made: list[TeacherRecord], rule: str) -> None:
    """Refuse teachers that do not belong together: other samples, another split (seed, sizes, rows or
    observed labels), another label noise or output link; `stack` needs ridgeless teachers (exact
    leave-one-out outputs) and at most MAX_STACK of them."""
    a0, m0 = arts[0], made[0]
    for a, m in zip(arts[1:], made[1:], strict=False):
        them = f"teacher {printable(a.path)}"
        ref = f"teacher {printable(a0.path)}"
        if m.sample_ids_sha256 != m0.sample_ids_sha256:
            raise W2SError(f"{them} was trained on other samples than {ref}; teachers combined share one split")
        if (m.label_noise.rate, m.label_noise.kind) != (m0.label_noise.rate, m0.label_noise.kind):
            raise W2SError(f"{them} was trained with another label noise than {ref}")
        if m.split.to_json() != m0.split.to_json() or any(not _same(a, a0, k) for k in SHARED_ROWS):
            raise W2SError(
                f"{them} drew another split than {ref} (seed {m.split.seed} vs {m0.split.seed}, n {m.split.n_labeled}"
                f" vs {m0.split.n_labeled}, N {m.split.n_pseudo} vs {m0.split.n_pseudo}); teachers combined share one"
            )
        if m.link != m0.link:
            raise W2SError(f"{them} has {m.link} outputs and {ref} {m0.link}: outputs of one kind are combined")
    if rule == "stack":
        if any(m.solver != Solver.ridgeless.value for m in made):
            raise W2SError("--combine stack needs ridgeless teachers (their exact leave-one-out outputs)")
        if len(made) > MAX_STACK:
            raise W2SError(f"--combine stack takes at most {MAX_STACK} teachers, not {len(made)}")


def _same(a: store.Artifact, b: store.Artifact, key: str) -> bool:
    return np.array_equal(np.asarray(a[key]), np.asarray(b[key]))


def combination_weights(
    members: list[Member], rule: str, Y_L: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The members' weights (None for the per-sample rule) and the combination's leave-one-out residuals on
    the n labelled rows (None where a member has none: logistic, or a fit that interpolates its n rows)."""
    if rule == "confident":
        return None, None
    return weights_from_loo(rule, [_member_loo(m, Y_L) for m in members], Y_L)


def weights_from_loo(rule: str, loo: list[np.ndarray | None], Y_L: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`mean` or `stack` weights from the members' exact leave-one-out residuals on the n labelled rows, and
    the combination's residuals there (None where a member has none)."""
    if rule == "mean":
        w = np.full(len(loo), 1.0 / len(loo))
    else:
        if any(r is None for r in loo):
            raise W2SError("--combine stack: a teacher interpolates its n labels (leave-one-out undefined); use mean")
        A = np.stack([(Y_L - r).ravel() for r in loo], axis=1)
        if np.linalg.matrix_rank(np.vstack([A, np.ones(len(loo))])) < len(loo):
            # some w' != w on the simplex's plane gives the same outputs: only a sum of weights is determined
            raise W2SError(
                "--combine stack: the teachers' leave-one-out outputs on the n labels are linearly dependent (the"
                " same teacher twice?), so their weights are not determined; drop the repeated teacher or use mean"
            )
        w = simplex_least_squares(A, Y_L.ravel())
    if any(r is None for r in loo):
        return w, None
    return w, sum(wk * r for wk, r in zip(w, loo, strict=False))


def _member_loo(m: Member, Y_L: np.ndarray) -> np.ndarray | None:
    """A ridgeless teacher's exact leave-one-out residuals on its n labelled rows (refitted as train-weak
    fitted it); None for other heads or where it interpolates."""
    if m.made.solver != Solver.ridgeless.value:
        return None
    Z_L = m.basis().transform(m.emb.rows(np.asarray(m.art["labeled_rows"])))
    return loo_residuals(fit_head(Solver.ridgeless, Z_L, Y_L).fit, Z_L, Y_L)


def simplex_least_squares(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin ||A w - y||^2 over w >= 0, sum(w) = 1, exactly: on each support the equality-constrained least
    squares (its KKT system), the best nonnegative one kept. A convex program's optimum is the nonnegative
    solution on its own support, so the search finds it. Unique only when [A; 1] has full column rank
    (`weights_from_loo` refuses the rest: the smallest support reaching the optimum would be an arbitrary pick)."""
    A, y = np.asarray(A, np.float64), np.asarray(y, np.float64)
    K = A.shape[1]
    best, best_loss = None, np.inf
    for size in range(1, K + 1):
        for support in itertools.combinations(range(K), size):
            S = list(support)
            G = A[:, S].T @ A[:, S]
            kkt = np.block([[2 * G, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            rhs = np.concatenate([2 * A[:, S].T @ y, [1.0]])
            w_S = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if w_S.min() < -1e-12:
                continue
            w = np.zeros(K)
            w[S] = np.clip(w_S, 0.0, None) / np.clip(w_S, 0.0, None).sum()
            loss = float(((A @ w - y) ** 2).sum())
            if loss < best_loss - 1e-12 * max(1.0, abs(best_loss) if np.isfinite(best_loss) else 1.0):
                best, best_loss = w, loss
    return best


def combine(outputs: list[np.ndarray], rule: str, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The combined outputs of the same rows, and (per-sample rule) the share of rows each member gave."""
    stacked = np.stack([np.asarray(o, np.float64) for o in outputs])  # (K, rows, C)
    if rule != "confident":
        return np.tensordot(weights, stacked, axes=1), None
    top2 = np.sort(stacked, axis=2)[:, :, -2:]
    chosen = (top2[:, :, 1] - top2[:, :, 0]).argmax(axis=0)  # the first member on a tie
    shares = np.bincount(chosen, minlength=len(outputs)) / max(len(chosen), 1)
    return stacked[chosen, np.arange(stacked.shape[1])], shares


def _reference(m: Member, out: Path) -> TeacherReference:
    ref = store.reference(m.art, out)
    return TeacherReference(ref["path"], ref["relpath"], ref["artifact_id"], m.made.solver, m.made.subspace, m.made.fit)


def _member(m: Member, out: Path, share: float | None) -> TeacherMember:
    sig = m.made.embeddings.get("signature", {})
    size = sig.get("input_size")
    return TeacherMember(
        teacher=_reference(m, out),
        embeddings=m.made.embeddings,
        model=model_label(str(sig.get("model", "?")), sig.get("stage")),
        input_size=size[-1] if isinstance(size, list) else size,
        test_error=m.made.test_error,
        test_accuracy=m.made.test_accuracy,
        loo_error=m.made.loo_error,
        sigma2=m.made.sigma2,
        share=None if share is None else float(share),
    )
