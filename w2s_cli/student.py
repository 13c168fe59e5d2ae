"""The W2S student and its two references, fit on the strong embeddings with one solver (`fit-student`):

* W2S student: the N pseudo-labelled samples, with the teacher's labels;
* strong SFT:  the same n labelled samples the teacher saw, with true labels;
* ceiling:     those n + N samples, with true labels.
All four models (with the weak teacher) are evaluated on the same test rows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from w2s_cli import artifacts
from w2s_cli.dimension import covariance_spectrum, energy_dimension, parse_subspace, subspace_overlap
from w2s_cli.embeddings import load_embeddings, reference, signature, truth
from w2s_cli.errors import W2SError
from w2s_cli.metrics import evaluate
from w2s_cli.progress import stderr
from w2s_cli.solvers import make_solver
from w2s_cli.teacher import find_weak_embeddings

STUDENT_SOLVERS = ("ridgeless", "ridge")


def fit_student(
    pseudo_path: str | os.PathLike,
    strong: str | os.PathLike,
    out: str | os.PathLike,
    solver: str = "ridgeless",
    subspace: str | int = "none",
    energy: float = 0.99,
    dimensions: bool = True,
) -> Path:
    """Fit student, strong SFT and ceiling; evaluate all four models; write a `result` artifact."""
    start = time.perf_counter()
    if solver not in STUDENT_SOLVERS:
        raise W2SError(f"--solver for the student must be one of {', '.join(STUDENT_SOLVERS)}, not '{solver}'")
    spec = parse_subspace(subspace)
    pseudo = artifacts.load(pseudo_path, "pseudolabels")
    emb = load_embeddings(strong, "strong embeddings")
    artifacts.require_same_samples(pseudo.meta, emb.meta, f"pseudo-labels {pseudo.path}", f"strong embeddings {strong}")
    weak_sig, strong_sig = pseudo.meta["embeddings"]["signature"], signature(emb.meta)
    if all(weak_sig[k] == strong_sig[k] for k in ("state_dict_sha256", "input_size")):
        stderr.print("[yellow]note:[/] strong and weak embeddings come from the same model and input size")
    Y, labels = truth(emb)
    Z = emb["embeddings"]
    test, labeled, rows = pseudo["test_rows"], pseudo["labeled_rows"], pseudo["pseudo_rows"]
    both = np.concatenate([labeled, rows])
    fits = {}
    for name, train_rows, targets in (
        ("w2s", rows, pseudo["pseudo_labels"]),
        ("strong_sft", labeled, Y[labeled]),
        ("ceiling", both, Y[both]),
    ):
        X = Z[train_rows].astype(np.float64)  # the ceiling's X (all n + N rows) stays for sigma^2 below
        fits[name] = make_solver(solver, spec, energy).fit(X, targets)
    subspace_dims = {name: m.subspace_dim_ for name, m in fits.items()}
    X_test = Z[test].astype(np.float64)
    outputs = {"weak": pseudo["weak_test_output"], **{k: m.predict(X_test) for k, m in fits.items()}}
    trial = evaluate(outputs, Y[test], labels[test] if labels is not None else None)
    split = pseudo.meta["split"]
    trial.update(
        {
            "seed": pseudo.meta["seed"],
            "n_labeled": len(labeled),
            "n_pseudo": len(rows),
            "pseudo_label_accuracy": pseudo.meta.get("pseudo_label_accuracy"),
        }
    )
    seconds = {**pseudo.meta["seconds"], "fit_student": round(time.perf_counter() - start, 3)}
    dims = None
    if dimensions:
        start = time.perf_counter()
        teacher_dim = pseudo.meta["teacher"]["subspace"]["dim"]
        # the ceiling was fit on these same rows: reuse its covariance spectrum when it computed one
        dims = measure_dimensions(pseudo, X, both, teacher_dim, subspace_dims["w2s"], energy, fits["ceiling"].spectrum_)
        if dims is not None:
            dims["sigma2"] = noise_variance(fits["ceiling"], X, Y[both])
        seconds["dimensions"] = round(time.perf_counter() - start, 3)
    meta = artifacts.base_meta("result", pseudo.meta["seed"])
    meta.update(
        {
            "pseudolabels": {"path": str(Path(pseudo.path).resolve()), "artifact_id": pseudo.meta["artifact_id"]},
            "teacher": pseudo.meta["teacher"],
            "weak_embeddings": pseudo.meta["embeddings"],
            "strong_embeddings": reference(emb),
            "weak_model": pseudo.meta["embeddings"]["signature"]["model"],
            "weak_input_size": pseudo.meta["embeddings"]["signature"]["input_size"],
            "strong_model": emb.meta["model"]["name"],
            "strong_input_size": emb.meta["preprocessing"]["input_size"],
            "dataset": emb.meta["dataset"],
            "sample_ids_sha256": emb.meta["sample_ids_sha256"],
            "task": emb.meta["dataset"]["task"],
            "split": split,
            "labels": pseudo.meta["labels"],
            "solver": {"teacher": pseudo.meta["teacher"]["solver"], "student": solver},
            "subspace": {
                "teacher": pseudo.meta["teacher"]["subspace"],
                "student": {"requested": str(subspace), "dim": subspace_dims, "energy": energy},
            },
            "n_labeled": len(labeled),
            "n_pseudo": len(rows),
            "n_test": len(test),
            "trials": [trial],
            "dimensions": dims,
            "seconds": seconds,
        }
    )
    tensors = {f"test_output_{k}": np.asarray(v, np.float64) for k, v in outputs.items()}
    tensors["test_rows"] = test
    return artifacts.save(artifacts.Artifact("result", meta, tensors), out)


def noise_variance(ceiling, X: np.ndarray, Y: np.ndarray) -> float:
    """sigma^2 from the ceiling's training residuals, per output column: RSS / (m - p - 1), p its fitted dimension."""
    residual = Y - ceiling.predict(X)
    p = ceiling.subspace_dim_ or getattr(ceiling, "rank_", X.shape[1])
    dof = max(len(X) - p - 1, 1)
    return float((residual**2).sum(axis=0).mean() / dof)


def measure_dimensions(
    pseudo: artifacts.Artifact,
    strong_train: np.ndarray,
    rows: np.ndarray,
    teacher_dim: int | None,
    student_dim: int | None,
    energy: float,
    strong_spectrum: tuple | None = None,
) -> dict | None:
    """d_w, d_s and d_sw on the n + N training samples: the fitted subspace dimensions when a subspace was
    used, else the spectral dimension at `energy`. None (with a note) when the weak embeddings are gone."""
    try:
        weak = find_weak_embeddings(pseudo, None)
    except W2SError as exc:
        stderr.print(f"note: d_w and d_sw not measured: {exc.message}")
        return None
    weak_train = weak["embeddings"][rows]
    eig_w = covariance_spectrum(weak_train)
    eig_s = strong_spectrum if strong_spectrum is not None else covariance_spectrum(strong_train)
    d_w = teacher_dim or energy_dimension(eig_w[0], energy)
    d_s = student_dim or energy_dimension(eig_s[0], energy)
    overlap = subspace_overlap(strong_train, weak_train, d_s, d_w, True, eig_s, eig_w)
    source = "fitted subspaces" if teacher_dim and student_dim else f"spectral at energy {energy}"
    return {
        **{k: overlap[k] for k in ("d_s", "d_w", "d_sw", "d_sw_null", "d_sw_corrected", "m")},
        "energy": energy,
        "source": f"{source}, on the {len(rows)} training samples",
    }
