"""The W2S student and its two references, fit on the strong embeddings in the strong shared basis
(`fit-student`):

* W2S student: the N pseudo-labelled rows, with the teacher's labels;
* strong SFT:  the same n labelled rows the teacher saw, with their (observed) labels;
* ceiling:     those n + N rows, with their (observed) labels.
All four models (with the weak teacher) are evaluated on the same test rows; with ridgeless heads the
result also says what the theory explains (stages/analysis.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from w2s_cli.distributed import main_writes
from w2s_cli.errors import W2SError, printable
from w2s_cli.numerics.moments import Moments, select
from w2s_cli.numerics.stats import as_targets
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.numerics.variance import LabelNoise
from w2s_cli.options import Solver, SubspaceOptions, check_student_labels
from w2s_cli.progress import stderr
from w2s_cli.stages.analysis import analyse
from w2s_cli.stages.design import Design, gather
from w2s_cli.stages.heads import FittedHead, basis_of, fit_head, train_moments
from w2s_cli.stages.summary import evaluate, member_errors
from w2s_cli.store import artifact as store
from w2s_cli.store import embeddings as emb_store
from w2s_cli.store.embeddings import EmbeddingSet
from w2s_cli.store.outputs import check_output
from w2s_cli.store.records import (
    Basis,
    FitRecord,
    Metrics,
    PseudoLabelsRecord,
    ResultRecord,
    StudentRecord,
    Trial,
    model_label,
    read_record,
)


class PseudoRows(NamedTuple):
    """The rows of a pseudo-labels artifact: test, the n labelled rows with their (observed) labels Y_L, the N
    pseudo rows with their observed labels (the pseudo-labels themselves are read per chunk)."""

    test: np.ndarray
    labeled: np.ndarray
    pseudo: np.ndarray
    Y_L: np.ndarray
    observed_P: np.ndarray


def fit_student(
    pseudo_path: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    *,
    subspace: SubspaceOptions | None = None,
    solver: Solver = Solver.ridgeless,
    dimensions: bool = True,
    weak: str | os.PathLike | None = None,
) -> Path:
    """Fit student, strong SFT and ceiling; evaluate all four models; write a `result` artifact."""
    start = time.perf_counter()
    solver, sub_opts = Solver(solver), subspace or SubspaceOptions()
    spec = sub_opts.parsed()
    pseudo = store.load(pseudo_path, "pseudolabels", what="pseudo-labels")
    made = read_record(pseudo, PseudoLabelsRecord)
    check_student_labels(solver, made.teacher.solver, hard=made.labels == "hard")
    recorded = store.resolve(made.embeddings, pseudo.path, weak)
    out = check_output(out, inputs=[pseudo_path, strong, weak, recorded])
    emb_s, emb_w = _student_embeddings(pseudo, made, strong, weak, dimensions)
    rows = _pseudo_rows(pseudo, emb_s)
    if solver == Solver.logistic and emb_s.labels is None:
        raise W2SError("--solver logistic needs a classification dataset; this one has numeric targets")
    design, basis_s, basis_record, keep_rows = _student_design(
        solver, spec, sub_opts.energy, pseudo, emb_s, emb_w, rows
    )
    heads = _fit_heads(solver, design, pseudo, rows, emb_s.n_classes, keep_rows)
    outputs, truth, metrics = _evaluate(pseudo, emb_s, rows.test, design, heads)
    seconds = {**made.seconds, "fit_student": round(time.perf_counter() - start, 3)}
    analysis, why_not = None, _why_no_analysis(made, solver, emb_w, dimensions)
    if why_not is None:
        begin = time.perf_counter()
        noise = LabelNoise(made.label_noise.rate, emb_s.n_classes)
        fits = {k: h.fit for k, h in heads.items()}
        analysis = analyse(design, outputs, truth, fits, noise, made.combination)
        seconds["analysis"] = round(time.perf_counter() - begin, 3)
    elif dimensions:
        stderr.print(f"note: no theory analysis: {why_not}")
    trial = Trial(
        metrics,
        seed=made.seed,
        n_labeled=len(rows.labeled),
        n_pseudo=len(rows.pseudo),
        pseudo_label_accuracy=made.pseudo_label_accuracy,
        analysis=analysis,
        members=member_errors(pseudo, truth, emb_s.labels[rows.test] if emb_s.labels is not None else None),
    )
    record = result_meta(
        pseudo,
        emb_s,
        out,
        student=solver.value,
        strong_subspace=Basis(requested=sub_opts.subspace, **basis_record),
        fits={k: h.record() for k, h in heads.items()},
        trial=trial,
        seconds=seconds,
        analysis_note=why_not,
    )
    return _write_result(record, outputs, rows.test, basis_s, out)


def _student_embeddings(
    pseudo: store.Artifact,
    made: PseudoLabelsRecord,
    strong: str | os.PathLike,
    weak: str | os.PathLike | None,
    dimensions: bool,
) -> tuple[EmbeddingSet, EmbeddingSet | None]:
    """The strong embeddings (of the pseudo-labels' samples) and, when asked for and found, the teacher's."""
    emb_s = EmbeddingSet(strong, "strong embeddings")
    store.require_same_samples(
        pseudo.meta, emb_s.meta, f"pseudo-labels {printable(pseudo.path)}", f"strong embeddings {printable(strong)}"
    )
    weak_sig, strong_sig = made.embeddings["signature"], emb_s.signature()
    if all(weak_sig.get(k) == strong_sig.get(k) for k in ("state_dict_sha256", "input_size", "stage")):
        stderr.print("[yellow]note:[/] strong and weak embeddings come from the same model and input size")
    emb_w = _weak_embeddings(pseudo, made, weak, dimensions)
    for e in [] if emb_w is None else emb_w if isinstance(emb_w, list) else [emb_w]:
        if not np.array_equal(e.values(), emb_s.values()):
            raise W2SError(
                f"weak {printable(e.path)} and strong {printable(emb_s.path)} embeddings disagree on the labels "
                "of the same samples (one of them was altered)"
            )
    return emb_s, emb_w


def weak_bases(pseudo: store.Artifact) -> PrincipalBasis | list[PrincipalBasis]:
    """The teacher's weak basis, or (combined teachers) each member's."""
    if not pseudo.has("member0_basis_mean"):
        return PrincipalBasis(pseudo["weak_basis_mean"], pseudo["weak_basis"] if pseudo.has("weak_basis") else None)
    members = []
    while pseudo.has(f"member{len(members)}_basis_mean"):
        k = len(members)
        members.append(
            PrincipalBasis(
                pseudo[f"member{k}_basis_mean"], pseudo[f"member{k}_basis"] if pseudo.has(f"member{k}_basis") else None
            )
        )
    return members


def _pseudo_rows(pseudo: store.Artifact, emb_s: EmbeddingSet) -> PseudoRows:
    """The rows the teacher's split drew, the training labels; the pseudo-labels' shape checked."""
    test, labeled, rows = (np.asarray(pseudo[k]) for k in ("test_rows", "labeled_rows", "pseudo_rows"))
    N, C = len(rows), emb_s.n_outputs
    Y_L = as_targets(pseudo["labeled_observed"], emb_s.n_classes)
    observed_P = np.asarray(pseudo["pseudo_observed"])
    shape = pseudo.shape("pseudo_labels")
    if shape != (N, C):
        raise W2SError(f"pseudo-labels {printable(pseudo.path)}: labels of shape {shape}, expected {(N, C)}")
    return PseudoRows(test, labeled, rows, Y_L, observed_P)


def _student_design(
    solver: Solver,
    spec: str | int | None,
    energy: float,
    pseudo: store.Artifact,
    emb_s: EmbeddingSet,
    emb_w: EmbeddingSet | None,
    rows: PseudoRows,
) -> tuple[Design, PrincipalBasis, dict[str, Any], bool]:
    """The design in the strong shared basis (d_s) and the weak one (d_w), the strong basis and its record,
    and whether the heads need the rows of the design (not only its moments)."""
    n, N, n_classes = len(rows.labeled), len(rows.pseudo), emb_s.n_classes

    def targets_P(pos: np.ndarray) -> np.ndarray:
        """[pseudo-labels | observed labels] of the pseudo rows at positions pos, read and built per chunk."""
        return np.hstack(
            [pseudo.rows("pseudo_labels", pos).astype(np.float64), as_targets(rows.observed_P[pos], n_classes)]
        )

    basis_w = weak_bases(pseudo) if emb_w is not None else None
    found: dict[str, Any] = {}

    def strong_basis(train: Moments) -> PrincipalBasis:
        """The strong shared basis, from the moments of the n + N training rows (found in gather's pass)."""
        found["basis"], found["record"], _ = basis_of(train, spec, energy, n)
        return found["basis"]

    # ridgeless heads: one pass, the strong basis found from the moments gathered with the design. Ridge and
    # logistic heads fit on the N rows, kept projected (d_s wide, not full width): a first pass finds the basis
    one_pass = solver == Solver.ridgeless
    basis = (
        strong_basis if one_pass else strong_basis(train_moments(emb_s, np.concatenate([rows.labeled, rows.pseudo])))
    )
    keep = not one_pass or N <= emb_s.width + 1
    design = gather(
        emb_s, emb_w, basis, basis_w, rows.labeled, rows.pseudo, rows.test, rows.Y_L, targets_P, keep_pseudo_rows=keep
    )
    # whenever the pseudo rows are kept, their targets are too: a ridgeless fit refits from the rows where its
    # moments cannot resolve the design (a fit's own rows can lack directions the basis's n + N rows have)
    keep_rows = solver != Solver.ridgeless or keep
    return design, found["basis"], found["record"], keep_rows


def _fit_heads(
    solver: Solver, design: Design, pseudo: store.Artifact, rows: PseudoRows, n_classes: int | None, keep_rows: bool
) -> dict[str, FittedHead]:
    """The W2S student (on the pseudo-labels), strong SFT (on the n labels) and the ceiling (on n + N labels),
    from the moments of the design, and from its rows when `keep_rows` (heads that need them: ridge,
    logistic, or fewer rows than coordinates)."""
    Y_L, zs, y, d_s = rows.Y_L, design.zs, design.y, design.d_s
    if keep_rows:
        targets, Y_P = np.asarray(pseudo["pseudo_labels"], np.float64), as_targets(rows.observed_P, n_classes)
        Zs_LP, Y_LP = np.vstack([design.Zs_L, design.Zs_P]), np.vstack([Y_L, Y_P])
    else:
        targets = Zs_LP = Y_LP = None
    return {
        "w2s": fit_head(solver, design.Zs_P, targets, _cols(design.P, zs, y), d_s),
        "strong_sft": fit_head(solver, design.Zs_L, Y_L, _cols(design.L, zs, y), d_s),
        "ceiling": fit_head(solver, Zs_LP, Y_LP, _cols(design.train, zs, y), d_s),
    }


def _evaluate(
    pseudo: store.Artifact, emb_s: EmbeddingSet, test: np.ndarray, design: Design, heads: dict[str, FittedHead]
) -> tuple[dict[str, np.ndarray], np.ndarray, Metrics]:
    """The four models' outputs on the test rows (the teacher's from the pseudo-labels), the truth, the metrics."""
    outputs = {"weak": np.asarray(pseudo["weak_test_output"], np.float64)}
    outputs.update({k: h.outputs(design.Zs_test) for k, h in heads.items()})
    truth = emb_s.truth(test)
    metrics = evaluate(outputs, truth, emb_s.labels[test] if emb_s.labels is not None else None)
    return outputs, truth, metrics


def _write_result(
    record: ResultRecord, outputs: dict[str, np.ndarray], test: np.ndarray, basis_s: PrincipalBasis, out: Path
) -> Path:
    """Save the `result` artifact: the record, the four models' test outputs, the test rows, the strong basis."""
    tensors: dict[str, Any] = {f"test_output_{k}": np.asarray(v, np.float64) for k, v in outputs.items()}
    tensors.update({"test_rows": test, "strong_basis_mean": basis_s.mean})
    if basis_s.components is not None:
        tensors["strong_basis"] = basis_s.components
    return main_writes(lambda: store.save(store.Artifact("result", record.to_json(), tensors), out), out)


def result_meta(
    pseudo: store.Artifact,
    emb_s: EmbeddingSet,
    out: Path,
    *,
    student: str,
    strong_subspace: Basis,
    fits: dict[str, FitRecord | dict[str, Any]],  # a finetuned fit: its JSON (finetuning/job.py)
    trial: Trial,
    seconds: dict[str, float],
    analysis_note: str | None,
    student_record: StudentRecord | None = None,
) -> ResultRecord:
    """The record of a `result` artifact (a linear or a finetuned student): where its inputs came from, the
    experiment, each fit's record and the one trial."""
    made = read_record(pseudo, PseudoLabelsRecord)  # checked when the stage read it
    weak_sig = made.embeddings["signature"]
    provenance = store.base_meta("result", made.seed)
    provenance.update(
        {
            "pseudolabels": store.reference(pseudo, out),
            # the pseudo-labels' references, their relative paths made relative to this result
            "teacher": store.rebase(made.teacher.to_json(), pseudo.path, out),
            "weak_embeddings": store.rebase(made.embeddings, _weak_owner(pseudo, made), out),
            "strong_embeddings": emb_s.reference(out),
            "sample_ids_sha256": emb_s.record.sample_ids_sha256,
            "split": made.split.to_json(),
        }
    )
    return ResultRecord(
        trials=(trial,),
        dataset=emb_s.record.dataset,
        n_labeled=trial.n_labeled,
        n_pseudo=trial.n_pseudo,
        n_test=trial.metrics.n_test,
        task=emb_s.task,
        # NAME:stageK for a cut teacher; rule(MEMBER+MEMBER...) for combined teachers
        weak_model=model_label(weak_sig["model"], weak_sig.get("stage"))
        if made.combination is None
        else made.combination.label,
        weak_input_size=weak_sig["input_size"] if made.combination is None else None,
        strong_model=model_label(emb_s.record.model["name"], emb_s.record.stage),
        strong_input_size=emb_s.record.preprocessing["input_size"],
        solver={"teacher": made.teacher.solver, "student": student},
        labels=made.labels,
        subspace={"weak": made.teacher.subspace, "strong": strong_subspace},
        label_noise=made.label_noise,
        fits={"weak": made.teacher.fit, **fits},
        seconds=seconds,
        student=student_record,
        analysis_note=analysis_note,
        provenance=provenance,
    )


def _weak_owner(pseudo: store.Artifact, made: PseudoLabelsRecord) -> Path:
    """The artifact the pseudo-labels' weak-embeddings reference is relative to: their teacher (pseudolabel
    copies the teacher's reference as it is)."""
    return store.resolve(made.teacher.to_json(), pseudo.path)


def _cols(m: Moments, x: np.ndarray, y: np.ndarray) -> Moments:
    """The moments of columns x then y (a head's [Z | Y])."""
    return select(m, np.concatenate([x, y]))


def _weak_embeddings(
    pseudo: store.Artifact, made: PseudoLabelsRecord, weak: str | os.PathLike | None, dimensions: bool
) -> EmbeddingSet | list[EmbeddingSet] | None:
    """The teacher's embeddings, or each combined teacher's (for d_sw, the W2S variance and the label-light
    predictions), when asked for and found; a missing file is a note unless the user named it."""
    if not dimensions and weak is None:
        return None
    if made.combination is not None and weak is not None:
        raise W2SError("--weak names one teacher's embeddings; combined pseudo-labels find each member's")
    try:
        if made.combination is not None:
            return [
                emb_store.find(m.embeddings, pseudo.path, None, f"weak embeddings of {m.label}")
                for m in made.combination.members
            ]
        return emb_store.find(made.embeddings, pseudo.path, weak, "weak embeddings")
    except W2SError as exc:
        if weak is not None:
            raise
        stderr.print(f"note: {exc.message}")
        return None


def _why_no_analysis(
    made: PseudoLabelsRecord, solver: Solver, emb_w: EmbeddingSet | None, dimensions: bool
) -> str | None:
    if not dimensions:
        return "--no-dimensions"
    if emb_w is None:
        return "the weak embeddings were not found"
    if solver != Solver.ridgeless or made.teacher.solver != "ridgeless":
        return "the variance law is about ridgeless (linear) heads"
    if made.labels != "soft":
        return "hard pseudo-labels are not linear in the teacher's labels"
    if made.combination is not None and made.combination.weights is None:
        return f"a per-sample rule ({made.combination.rule}) is not linear in the teachers' labels"
    return None
