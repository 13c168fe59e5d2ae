"""The weak teacher: draw and store the split, fit on n true labels (`train-weak`), then label N
samples of the pool (`pseudolabel`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from w2s_cli import artifacts
from w2s_cli.dimension import parse_subspace
from w2s_cli.embeddings import dataset_split, load_embeddings, reference, signature, truth
from w2s_cli.errors import W2SError
from w2s_cli.metrics import accuracy, one_hot, squared_errors
from w2s_cli.solvers import SOLVERS, make_solver
from w2s_cli.splits import draw_pseudo, draw_split


def linear_model(coef: np.ndarray, intercept: np.ndarray, solver: str) -> Any:
    """Rebuild a fitted solver from stored coefficients."""
    model = make_solver(solver)
    model.coef_, model.intercept_ = coef, intercept
    return model


def train_weak(
    weak: str | os.PathLike,
    out: str | os.PathLike,
    n_labeled: int = 1000,
    n_test: int = 2000,
    seed: int = 0,
    test_seed: int = 0,
    solver: str = "ridgeless",
    subspace: str | int = "none",
    energy: float = 0.99,
) -> Path:
    """Draw the split of the weak embeddings' rows and fit the teacher; write a `teacher` artifact."""
    start = time.perf_counter()
    if solver not in SOLVERS:
        raise W2SError(f"--solver must be one of {', '.join(SOLVERS)}, not '{solver}'")
    spec = parse_subspace(subspace)
    emb = load_embeddings(weak, "weak embeddings")
    Y, labels = truth(emb)
    if solver == "logistic" and labels is None:
        raise W2SError("--solver logistic needs a classification dataset; this one has numeric targets")
    split = draw_split(len(Y), dataset_split(emb), n_test, n_labeled, seed, test_seed)
    X_l = emb["embeddings"][split.labeled].astype(np.float64)
    model = make_solver(solver, spec, energy).fit(X_l, Y[split.labeled])
    test_out = model.predict(emb["embeddings"][split.test])
    meta = artifacts.base_meta("teacher", seed)
    meta.update(
        {
            "embeddings": reference(emb),
            "dataset": emb.meta["dataset"],
            "sample_ids_sha256": emb.meta["sample_ids_sha256"],
            "task": emb.meta["dataset"]["task"],
            "solver": solver,
            "subspace": {"requested": str(subspace), "dim": model.subspace_dim_, "energy": energy},
            "split": {
                "seed": seed,
                "test_seed": test_seed,
                "n_test": n_test,
                "n_labeled": n_labeled,
                "n_pool": len(split.pool),
                "test_from_dataset_split": dataset_split(emb) is not None,
            },
            "test_error": float(squared_errors(test_out, Y[split.test]).mean()),
            "test_accuracy": accuracy(test_out, labels[split.test]) if labels is not None else None,
            "seconds": round(time.perf_counter() - start, 3),
        }
    )
    tensors = {
        "coef": model.coef_,
        "intercept": np.atleast_1d(model.intercept_),
        "test_rows": split.test,
        "labeled_rows": split.labeled,
        "pool_rows": split.pool,
    }
    return artifacts.save(artifacts.Artifact("teacher", meta, tensors), out)


def find_weak_embeddings(teacher: artifacts.Artifact, embeddings: str | os.PathLike | None) -> artifacts.Artifact:
    """The weak embeddings a teacher was fit on: `embeddings` if given, else the path in its record."""
    recorded = teacher.meta["embeddings"]
    path = Path(embeddings) if embeddings is not None else Path(recorded["path"])
    if not path.exists():
        raise W2SError(f"weak embeddings {path} (recorded by the teacher) not found; pass --embeddings FILE")
    emb = load_embeddings(path, "weak embeddings")
    if signature(emb.meta) != recorded["signature"]:
        raise W2SError(
            f"{path}: not the embeddings this teacher was fit on "
            f"(teacher: {recorded['signature']['model']} on {teacher.meta['dataset']['name']})"
        )
    return emb


def pseudolabel(
    teacher_path: str | os.PathLike,
    out: str | os.PathLike,
    n_pseudo: int = 8000,
    hard: bool = False,
    embeddings: str | os.PathLike | None = None,
) -> Path:
    """Label N pool samples with the teacher; write a `pseudolabels` artifact carrying the split."""
    start = time.perf_counter()
    teacher = artifacts.load(teacher_path, "teacher")
    emb = find_weak_embeddings(teacher, embeddings)
    Y, labels = truth(emb)
    if hard and labels is None:
        raise W2SError("--hard needs a classification dataset; this one has numeric targets")
    seed = teacher.meta["seed"]
    rows = draw_pseudo(teacher["pool_rows"], n_pseudo, seed)
    model = linear_model(teacher["coef"], teacher["intercept"], teacher.meta["solver"])
    soft = model.predict(emb["embeddings"][rows])
    pseudo = one_hot(soft.argmax(axis=1), soft.shape[1]) if hard else soft
    meta = artifacts.base_meta("pseudolabels", seed)
    meta.update(
        {
            "teacher": {
                "path": str(Path(teacher.path).resolve()),
                "artifact_id": teacher.meta["artifact_id"],
                "solver": teacher.meta["solver"],
                "subspace": teacher.meta["subspace"],
            },
            "embeddings": teacher.meta["embeddings"],
            "dataset": teacher.meta["dataset"],
            "sample_ids_sha256": teacher.meta["sample_ids_sha256"],
            "task": teacher.meta["task"],
            "split": {**teacher.meta["split"], "n_pseudo": n_pseudo},
            "labels": "hard" if hard else "soft",
            "pseudo_label_accuracy": accuracy(soft, labels[rows]) if labels is not None else None,
            "seconds": {"train_weak": teacher.meta["seconds"], "pseudolabel": round(time.perf_counter() - start, 3)},
        }
    )
    tensors = {
        "pseudo_rows": rows,
        "pseudo_labels": pseudo,
        "test_rows": teacher["test_rows"],
        "labeled_rows": teacher["labeled_rows"],
        "weak_test_output": model.predict(emb["embeddings"][teacher["test_rows"]]),
    }
    return artifacts.save(artifacts.Artifact("pseudolabels", meta, tensors), out)
