"""Label-light predictions of finetuned students: the probe's machinery (exact leave-one-out on the n labelled
rows, the variance law for the ceiling; stages/analysis.py) applied in the kernel a W2S finetune ends in.

The after-kernel of the W2S fit (docs/theory.md, "Beyond the start"): its network's own embeddings at the
chosen weights (`embeddings`, the tangent kernel of its head) or its gradient features there (`grad`). On it,
fit-student's analysis predicts the test errors of the W2S student, strong SFT and the ceiling, PGR and OPR,
from the n labels and unlabelled rows alone: no label of the N pool or of the test rows enters (the kernel's
own fit-student result, written beside the finetune, measures its heads on the test rows, as any result
does; its predictions do not read them). The finetune's W2S fit is the full one (after the fact) or a short
proxy (`proxy_finetune`: one W2S fit, a few epochs, before spending the three finetunes).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from w2s_cli.errors import W2SError, printable
from w2s_cli.options import ExtractOptions, SubspaceOptions
from w2s_cli.progress import stderr
from w2s_cli.store import artifact as store
from w2s_cli.store.records import Predicted, ResultRecord, read_record

KERNELS = ("embeddings", "grad")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise W2SError(f"--kernel must be one of {', '.join(KERNELS)}, not '{printable(kernel)}'")


def after_kernel(
    result: str | os.PathLike,
    *,
    kernel: str = "embeddings",
    epoch: str | int = "final",
    extract: ExtractOptions | None = None,
    proj_dim: int = 2048,
) -> Path:
    """The after-kernel features of the W2S fit of the finetune `result` at `epoch`, an embeddings artifact
    of every sample of its strong embeddings, written (or reused) beside its weights."""
    from w2s_cli.diagnostics.grad_features import extract_finetuned, extract_gradients
    from w2s_cli.finetuning.network import spec_from_record
    from w2s_cli.finetuning.prefix import data_options
    from w2s_cli.store.embeddings import find

    check_kernel(kernel)
    rec = _finetune_record(result)
    emb_s = find(rec.provenance["strong_embeddings"], result, None, "strong embeddings")
    spec, seed = spec_from_record(emb_s.meta)
    out = Path(f"{result}.fits") / "w2s" / f"after-kernel-{kernel}-{epoch}.safetensors"
    common = dict(init=result, init_fit="w2s", init_epoch=epoch, limit=emb_s.record.limit, seed=seed)
    options = extract or ExtractOptions(quiet=True)
    data = data_options(emb_s.record)
    if kernel == "embeddings":
        return extract_finetuned(data, spec, out, options, **common)
    train = rec.student.recipe["train"]
    return extract_gradients(data, spec, out, options, train=train, proj_dim=proj_dim, **common)


def predict_finetune(
    result: str | os.PathLike,
    *,
    kernel: str = "embeddings",
    epoch: str | int = "final",
    extract: ExtractOptions | None = None,
) -> tuple[Predicted, dict[str, Any]]:
    """The label-light predictions of the finetune `result` from the after-kernel of its W2S fit at `epoch`,
    and where they came from (the features, the kernel's own fit-student result, the seconds spent)."""
    from w2s_cli.diagnostics.grad_features import epoch_weights_file

    begin = time.perf_counter()
    rec = _finetune_record(result)
    check_kernel(kernel)
    weights = epoch_weights_file(result, rec, "w2s", epoch, option="--epoch")  # one it did not keep: said as typed
    if weights is not None and not weights.is_file():
        raise W2SError(f"{printable(result)}: the weights of its W2S fit ({epoch}) are gone ({printable(weights)})")
    features = after_kernel(result, kernel=kernel, epoch=epoch, extract=extract)
    pseudo = store.resolve(rec.provenance["pseudolabels"], result)
    kernel_result = Path(f"{features}".removesuffix(".safetensors") + ".result.safetensors")
    predicted = predict_from_kernel(pseudo, features, kernel_result)
    kernel_art = store.load(kernel_result, "result")
    s_dim = read_record(kernel_art, ResultRecord).subspace["strong"].dim
    predicted = replace(predicted, method=kernel_method(s_dim, kernel, epoch))
    where = {
        "kernel": kernel,
        "epoch": epoch,
        "w2s_by_capture": w2s_by_capture(result, features) if kernel == "embeddings" and epoch == "final" else None,
        "features": store.reference(store.load(features), result),
        "result": store.reference(kernel_art, result),
        "seconds": round(time.perf_counter() - begin, 3),
    }
    return predicted, where


def kernel_method(s_dim: int | float, kernel: str = "embeddings", epoch: str | int = "final") -> str:
    """How predictions in an after-kernel were made (their record's `method`)."""
    return (
        f"the probe's leave-one-out and variance law in the after-kernel of the W2S finetune ({kernel} of its "
        f"network at epoch {epoch}, K = {s_dim:g})"
    )


def predict_from_kernel(pseudo: str | os.PathLike, features: str | os.PathLike, out: str | os.PathLike) -> Predicted:
    """The label-light predictions in a kernel (`features`: an embeddings artifact of the pseudo-labels'
    samples): fit-student's analysis on them, its own result written at `out`. They read the n labelled rows'
    labels and the features; no label of the pool or of the test rows."""
    from w2s_cli.stages.student import fit_student
    from w2s_cli.stages.summary import load_result, summary

    fit_student(pseudo, features, out, subspace=SubspaceOptions("auto"))
    s = summary(load_result(out))
    if s.theory is None:
        raise W2SError(f"{printable(features)}: no label-light predictions in this kernel ({s.analysis_note})")
    return s.theory.predicted


def attach_predictions(result: str | os.PathLike, predicted: Predicted, where: dict[str, Any]) -> Path:
    """Rewrite the finetune `result` with its trial's predictions (its tensors, hence its artifact_id, unchanged)."""
    art = store.load(result, "result")
    rec = read_record(art, ResultRecord)
    if len(rec.trials) != 1:
        raise W2SError(f"{printable(result)}: a result of {len(rec.trials)} trials; predict each trial's result")
    trial = replace(rec.trials[0], predicted=predicted, after_kernel=where)
    tensors = {name: art[name] for name in art.names()}
    meta = {k: v for k, v in replace(rec, trials=(trial,)).to_json().items() if k not in ("artifact_id",)}
    return store.save(store.Artifact("result", meta, tensors), result)


def _finetune_record(result: str | os.PathLike) -> ResultRecord:
    rec = read_record(store.load(result, "result", what="finetune result"), ResultRecord)
    if rec.student is None or rec.student.kind != "finetune":
        raise W2SError(f"{printable(result)}: not a finetune result (made by w2s fit-student, not w2s finetune)")
    return rec


def predict_and_attach(
    result: str | os.PathLike, *, extract: ExtractOptions | None = None, quiet: bool = False
) -> Path:
    """What `w2s finetune` and `w2s run --student finetune` do after the three fits: the predictions from the
    W2S fit's after-kernel, written into its result."""
    predicted, where = predict_finetune(result, extract=extract)
    if not quiet:
        stderr.print(f"label-light predictions from the W2S finetune's after-kernel ({where['seconds']:.0f} s)")
    return attach_predictions(result, predicted, where)


def predicted_along_epochs(
    result: str | os.PathLike, *, kernel: str = "embeddings", extract: ExtractOptions | None = None
) -> list[dict[str, Any]]:
    """When to stop: the predicted test errors (W2S student, PGR) of the finetune `result`'s W2S fit after each
    epoch it kept, from the after-kernel there; the stopping rule keeps the epoch of the lowest predicted W2S
    error (`stop_epoch`), a choice made on the n labelled rows through the teacher's leave-one-out, never on a
    label of the pool or of the test rows."""
    rec = _finetune_record(result)
    kept = rec.fits["w2s"].extra.get("epoch_weights") or []
    if not kept:
        raise W2SError(f"{printable(result)}: its W2S fit kept no epoch weights (made by an older w2s)")
    rows = []
    for epoch in range(1, len(kept) + 1):
        predicted, _ = predict_finetune(result, kernel=kernel, epoch=epoch, extract=extract)
        rows.append({"epoch": epoch, "error_w2s": predicted.error["w2s"], "pgr": predicted.pgr, "opr": predicted.opr})
    return rows


def stop_epoch(rows: list[dict[str, Any]]) -> int:
    """The epoch of the lowest predicted W2S error (the earliest on a tie)."""
    return min(rows, key=lambda r: (r["error_w2s"], r["epoch"]))["epoch"]


def w2s_by_capture(result: str | os.PathLike, features: str | os.PathLike) -> dict[str, Any]:
    """The W2S finetune's own test error from the n labelled rows, corrected for its teacher's in-sample fit.

    On a labelled row i the teacher is fitted in-sample: f_w(x_i) = f_w^(-i)(x_i) + d_i (d_i its exact
    leave-one-out shift), and the student, which learned the teacher's function, follows a share c of it:
    f_s(x_i) = f_s^(-i)(x_i) + c d_i. Its leave-one-out residual is then y_i - f_s(x_i) + c d_i. The share c
    needs no label: the student's misfit to the teacher with row i left out, f_s^(-i) - f_w^(-i) =
    (f_s - f_w) + (1 - c) d_i on the labelled rows, is exchangeable with its misfit f_s - f_w on rows neither
    saw (the test rows' inputs), whose mean square is measured; c solves the quadratic that equates the two.
    Reads the n labels, the inputs of the test rows and no label of the pool or of the test rows."""
    import numpy as np

    from w2s_cli.numerics.solvers import fit_rows
    from w2s_cli.numerics.stats import as_targets
    from w2s_cli.store.embeddings import find

    rec = _finetune_record(result)
    art, pseudo = store.load(result, "result"), store.load(store.resolve(rec.provenance["pseudolabels"], result))
    made = read_record(pseudo, _pseudo_kind())
    if made.combination is not None:
        return {"error_w2s": None, "capture": None, "why": "the capture estimate is one teacher's (combined here)"}
    emb_w = find(made.embeddings, pseudo.path, None, "weak embeddings")
    weights = Path(result).resolve().parent / rec.fits["w2s"].extra["weights"]
    from w2s_cli.finetuning.network import read_tensors

    head, _ = read_tensors(weights, "the W2S fit's final weights")
    W, b = head["head.weight"].double().numpy(), head["head.bias"].double().numpy()
    feats = store.load(features, "embeddings")
    labeled, test = np.asarray(pseudo["labeled_rows"]), np.asarray(art["test_rows"])
    f_L = np.asarray(feats.rows("embeddings", labeled), np.float64) @ W.T + b
    f_T = np.asarray(feats.rows("embeddings", test), np.float64) @ W.T + b
    Y = as_targets(pseudo["labeled_observed"], emb_w.n_classes)
    mean, basis = np.asarray(pseudo["weak_basis_mean"]), pseudo["weak_basis"] if pseudo.has("weak_basis") else None
    Z = np.asarray(emb_w.rows(labeled), np.float64) - mean
    Z = Z if basis is None else Z @ np.asarray(basis)
    teacher = fit_rows(Z, Y)
    Zc = Z - teacher.x_mean
    h = 1.0 / teacher.rows + np.einsum("ij,jk,ik->i", Zc, teacher.gram_pinv, Zc)
    shift = (h / (1 - h))[:, None] * (Y - teacher.predict(Z))
    m = f_L - teacher.predict(Z)
    misfit_test = float(((f_T - np.asarray(pseudo["weak_test_output"], np.float64)) ** 2).mean())
    a, bq = float((shift**2).mean()), 2 * float((m * shift).mean())
    c0 = float((m**2).mean()) - misfit_test
    disc = bq * bq - 4 * a * c0
    if a <= 0 or disc < 0:
        return {"error_w2s": None, "capture": None, "why": "no share c equates the two misfits"}
    roots = [1 - (-bq + s * disc**0.5) / (2 * a) for s in (1, -1)]
    inside = [c for c in roots if -0.05 <= c <= 1.05]
    if not inside:
        return {"error_w2s": None, "capture": None, "why": f"shares {roots} outside [0, 1]"}
    c = min(max(min(inside, key=lambda v: abs(v - 0.5)), 0.0), 1.0)
    rows = ((Y - f_L + c * shift) ** 2).mean(axis=1)
    return {
        "error_w2s": float(rows.mean()),
        "error_w2s_stderr": float(rows.std(ddof=1) / np.sqrt(len(rows))),
        "capture": c,
        "misfit_test": misfit_test,
        "misfit_labeled": float((m**2).mean()),
    }


def _pseudo_kind():
    from w2s_cli.store.records import PseudoLabelsRecord

    return PseudoLabelsRecord
