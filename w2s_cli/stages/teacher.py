"""The weak teacher: draw and store the split, fit the weak basis and the teacher on n labels
(`train-weak`), then label the N pseudo rows (`pseudolabel`)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli.distributed import gather_rows, main_writes
from w2s_cli.errors import W2SError
from w2s_cli.numerics.stats import accuracy, as_targets, one_hot, squared_errors
from w2s_cli.numerics.variance import loo_residuals
from w2s_cli.options import Solver, SplitOptions, SubspaceOptions
from w2s_cli.stages.heads import FittedHead, apply, fit_head, my_blocks, shared_basis, to_embedding_space
from w2s_cli.stages.split import DrawnSplit, draw_split, noisy_values, subset_pseudo
from w2s_cli.store import artifact as store
from w2s_cli.store import embeddings as emb_store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import (
    Basis,
    LabelNoiseRecord,
    PseudoLabelsRecord,
    Split,
    TeacherRecord,
    TeacherReference,
    read_record,
)


def train_weak(
    weak: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: SplitOptions | None = None,
    subspace: SubspaceOptions | None = None,
    solver: Solver = Solver.ridgeless,
    n_pseudo: int | None = None,
) -> Path:
    """Draw the split of the weak embeddings' rows, fit the weak basis on the n + N training rows and the
    teacher on the n labelled ones; write a `teacher` artifact. n_pseudo None: min(split.n_pseudo, pool)."""
    start = time.perf_counter()
    split_opts, sub_opts, solver = split or SplitOptions(), subspace or SubspaceOptions(), Solver(solver)
    spec = sub_opts.parsed()
    out = check_output(out, inputs=[weak])
    emb = EmbeddingSet(weak, "weak embeddings")
    if solver == Solver.logistic and emb.labels is None:
        raise W2SError("--solver logistic needs a classification dataset; this one has numeric targets")
    s = draw_split(emb.n_rows, emb.split, split_opts, n_pseudo)
    noisy = noisy_values(emb.values(), emb.n_classes, split_opts.label_noise, split_opts.seed)
    basis, basis_record, spectrum = shared_basis(emb, s.train, spec, sub_opts.energy, split_opts.n_labeled)
    Z_L = basis.transform(emb.rows(s.labeled))
    Y_L = as_targets(noisy[s.labeled], emb.n_classes)  # after label noise
    head = fit_head(solver, Z_L, Y_L)
    coef, intercept = to_embedding_space(basis, *head.linear())
    link = "softmax" if solver == Solver.logistic else "identity"
    test_out = apply(coef, intercept, emb.rows(s.test), link)
    record = TeacherRecord(
        embeddings=emb.reference(out),
        dataset=emb.record.dataset,
        sample_ids_sha256=emb.record.sample_ids_sha256,
        task=emb.task,
        solver=solver.value,
        link=link,
        subspace=Basis(requested=str(sub_opts.subspace), **basis_record),
        split=_split_record(split_opts, s, emb),
        label_noise=LabelNoiseRecord(
            split_opts.label_noise, "symmetric flips" if emb.labels is not None else "gaussian", [split_opts.seed, 2]
        ),
        **_teacher_errors(head, Z_L, Y_L, test_out, emb, s.test),
        seconds=round(time.perf_counter() - start, 3),
        provenance=store.base_meta("teacher", split_opts.seed),
    )
    tensors = {"coef": coef, "intercept": intercept, **_split_tensors(s, noisy), "test_output": test_out}
    tensors.update({"basis_mean": basis.mean, "spectrum": spectrum})
    if basis.components is not None:
        tensors["basis"] = basis.components
    return main_writes(lambda: store.save(store.Artifact("teacher", record.to_json(), tensors), out), out)


def _split_record(opts: SplitOptions, s: DrawnSplit, emb: EmbeddingSet) -> Split:
    """The record of the drawn split: seeds and the sizes n_test, n (labelled), N (pseudo) and the pool's."""
    return Split(
        seed=opts.seed,
        test_seed=opts.test_seed,
        n_test=len(s.test),
        n_labeled=len(s.labeled),
        n_pseudo=len(s.pseudo),
        n_pool=s.n_pool,
        test_from_dataset_split=emb.split is not None,
    )


def _teacher_errors(
    head: FittedHead, Z_L: np.ndarray, Y_L: np.ndarray, test_out: np.ndarray, emb: EmbeddingSet, test: np.ndarray
) -> dict[str, Any]:
    """The teacher's fit record, noise variance sigma2, leave-one-out error on its n labels, and test error
    and accuracy (the TeacherRecord fields of the same names)."""
    loo = loo_residuals(head.fit, Z_L, Y_L) if head.fit is not None else None
    return {
        "fit": head.record(),
        "sigma2": head.fit.sigma2() if head.fit is not None else None,
        "loo_error": None if loo is None else float((loo**2).mean()),
        "test_error": float(squared_errors(test_out, emb.truth(test)).mean()),
        "test_accuracy": accuracy(test_out, emb.labels[test]) if emb.labels is not None else None,
    }


def _split_tensors(s: DrawnSplit, noisy: np.ndarray) -> dict[str, np.ndarray]:
    """The split's rows and the observed (after label noise) labels of the labelled and the pseudo rows."""
    return {
        "test_rows": s.test,
        "labeled_rows": s.labeled,
        "pseudo_rows": s.pseudo,
        "labeled_observed": noisy[s.labeled],
        "pseudo_observed": noisy[s.pseudo],
    }


def pseudolabel(
    teacher_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n_pseudo: int | None = None,
    hard: bool = False,
    embeddings: str | os.PathLike | None = None,
) -> Path:
    """Label the teacher's N pseudo rows (or n_pseudo of them) with its outputs; write a `pseudolabels`
    artifact that carries everything fit-student needs (rows, training labels, the weak basis, and the
    teacher's test outputs, which train-weak stored; teachers written before it stored them: recomputed)."""
    start = time.perf_counter()
    teacher = store.load(teacher_path, "teacher", what="teacher")
    made = read_record(teacher, TeacherRecord)
    recorded = store.resolve(made.embeddings, teacher.path, embeddings)
    out = check_output(out, inputs=[teacher_path, embeddings, recorded])
    emb = emb_store.find(made.embeddings, teacher.path, embeddings, "weak embeddings")
    if hard and emb.labels is None:
        raise W2SError("--hard needs a classification dataset; this one has numeric targets")
    seed = made.split.seed
    drawn = np.asarray(teacher["pseudo_rows"])
    keep = subset_pseudo(drawn, n_pseudo, seed) if n_pseudo is not None else drawn
    coef, intercept, link = teacher["coef"], teacher["intercept"], made.link
    pieces = gather_rows([(idx, apply(coef, intercept, block, link)) for idx, block in my_blocks(emb, keep)])
    soft = np.concatenate([out for _, out in pieces]) if pieces else np.zeros((0, len(intercept)))
    pseudo = one_hot(soft.argmax(axis=1), soft.shape[1]) if hard else soft
    ref = store.reference(teacher, out)
    record = pseudo_record(
        made,
        TeacherReference(ref["path"], ref["relpath"], ref["artifact_id"], made.solver, made.subspace, made.fit),
        keep=keep,
        drawn=drawn,
        hard=hard,
        pseudo_label_accuracy=accuracy(soft, emb.labels[keep]) if emb.labels is not None else None,
        teacher_sigma2=made.sigma2,
        teacher_loo_error=made.loo_error,
        seconds={"train_weak": made.seconds, "pseudolabel": round(time.perf_counter() - start, 3)},
    )
    tensors = {
        **shared_tensors(teacher, keep, drawn, pseudo),
        "weak_test_output": _test_output(teacher, emb, link),
        "weak_basis_mean": teacher["basis_mean"],
    }
    if teacher.has("basis"):
        tensors["weak_basis"] = teacher["basis"]
    return main_writes(lambda: store.save(store.Artifact("pseudolabels", record.to_json(), tensors), out), out)


def pseudo_record(
    made: TeacherRecord, teacher: TeacherReference, *, keep: np.ndarray, drawn: np.ndarray, hard: bool, **measured
) -> PseudoLabelsRecord:
    """The record of pseudo-labels of the N rows `keep` (of the `drawn` ones) from the teacher `made` (one
    teacher's, or a combination's first member's): its split, noise and data; `measured`: accuracy, sigma^2,
    leave-one-out error, seconds (and a combination)."""
    return PseudoLabelsRecord(
        teacher=teacher,
        embeddings=made.embeddings,
        dataset=made.dataset,
        sample_ids_sha256=made.sample_ids_sha256,
        task=made.task,
        split=dataclasses.replace(made.split, n_pseudo=len(keep), n_pseudo_drawn=len(drawn)),
        label_noise=made.label_noise,
        labels="hard" if hard else "soft",
        provenance=store.base_meta("pseudolabels", made.split.seed),
        **measured,
    )


def shared_tensors(teacher: store.Artifact, keep: np.ndarray, drawn: np.ndarray, labels: np.ndarray) -> dict:
    """The tensors every pseudo-labels artifact holds: its rows and labels, the split's rows and observed labels."""
    return {
        "pseudo_rows": keep,
        "pseudo_labels": labels,
        "test_rows": teacher["test_rows"],
        "labeled_rows": teacher["labeled_rows"],
        "labeled_observed": teacher["labeled_observed"],
        "pseudo_observed": np.asarray(teacher["pseudo_observed"])[np.searchsorted(drawn, keep)],
    }


def _test_output(teacher: store.Artifact, emb: EmbeddingSet, link: str) -> np.ndarray:
    """The teacher's outputs on the test rows: as train-weak stored them, or (a teacher artifact from before
    it stored them) computed again from its head and the weak embeddings."""
    if teacher.has("test_output"):
        return np.asarray(teacher["test_output"])
    return apply(teacher["coef"], teacher["intercept"], emb.rows(teacher["test_rows"]), link)
