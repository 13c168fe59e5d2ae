"""Designs the float64 moments cannot resolve, fed to every head and solver path: a basis wider than the rank
of a fit's own rows, a full-width basis on few rows. Every fit finishes (ridgeless refits from its rows where
it has them, as lstsq does), agrees with lstsq, and quantities the design does not fix are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import embeddings_artifact, w2s

M, WIDTH, C = 420, 256, 3


def rare_direction_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strong and weak embeddings where a block of directions is present in only a few rows: the basis over
    the n + N rows holds them, while the N pseudo rows alone (or the n labelled ones) span fewer, so the
    W2S fit's moments are rank-deficient inside that basis (the fit-student crash of issue 25). The strong
    embedding is wider than the N rows (the stage then keeps them) and zero-padded, so that the missing
    directions are exact zeros, not float32 rounding: the design is rank-deficient but determined."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=M)
    common = rng.normal(size=(M, 12)) + labels[:, None] * 0.7
    rare = np.zeros((M, 8))
    few = rng.choice(M, size=10, replace=False)
    rare[few] = rng.normal(size=(10, 8)) * 3
    S = np.hstack([common, rare, np.zeros((M, WIDTH - 20))])
    W = np.hstack([common[:, :9], rng.normal(size=(M, 3))]) @ np.linalg.qr(rng.normal(size=(48, 12)))[0].T
    return S, W, labels


@pytest.fixture(scope="module")
def rare(tmp_path_factory):
    d = tmp_path_factory.mktemp("ill")
    S, W, labels = rare_direction_embeddings()
    weak = embeddings_artifact(d / "weak.safetensors", W, labels, "weak-net")
    strong = embeddings_artifact(d / "strong.safetensors", S, labels, "strong-net")
    teacher = d / "teacher.safetensors"
    r = w2s("train-weak", weak, "--n-labeled", 100, "--n-pseudo", 200, "--n-test", 100, "--subspace", 10, "-o", teacher)
    assert r.exit_code == 0, r.output
    pseudo = d / "pseudo.safetensors"
    assert w2s("pseudolabel", teacher, "-o", pseudo).exit_code == 0
    hard = d / "hard.safetensors"
    assert w2s("pseudolabel", teacher, "--hard", "-o", hard).exit_code == 0
    return d, strong, pseudo, hard


def report(path) -> dict:
    r = w2s("report", path, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("subspace", ["20", "auto", "none"])
def test_ridgeless_student_with_a_basis_wider_than_its_rows_rank(rare, subspace):
    """The W2S fit's 200 pseudo rows lack directions the basis over 300 rows holds: it refits from its rows
    (the old code handed fit_ridgeless rows without targets and crashed) and equals lstsq on those rows."""
    from w2s_cli.store import artifact as store

    d, strong, pseudo, _ = rare
    out = d / f"ridgeless-{subspace}.safetensors"
    r = w2s("fit-student", pseudo, "--strong", strong, "--subspace", subspace, "-o", out)
    assert r.exit_code == 0, r.output
    art, p = store.load(out), store.load(pseudo)
    basis_mean = np.asarray(art["strong_basis_mean"])
    V = np.asarray(art["strong_basis"]) if art.has("strong_basis") else np.eye(WIDTH)
    S = np.asarray(store.load(strong)["embeddings"], np.float64)
    Z = (S - basis_mean) @ V
    rows, test = np.asarray(p["pseudo_rows"]), np.asarray(p["test_rows"])
    Y = np.asarray(p["pseudo_labels"], np.float64)
    x_mean, y_mean = Z[rows].mean(axis=0), Y.mean(axis=0)  # the intercept is not part of the minimum norm
    coef = np.linalg.lstsq(Z[rows] - x_mean, Y - y_mean, rcond=None)[0]
    expected = y_mean + (Z[test] - x_mean) @ coef
    assert np.allclose(np.asarray(art["test_output_w2s"]), expected, atol=1e-8)
    fit = report(out)["fits"]["w2s"]
    assert not fit["ill_determined"]  # rank-deficient with exact zeros: determined (lstsq's own answer)
    if subspace != "auto":  # auto keeps 90% of the variance: the common directions only
        assert fit["rank"] < min(fit["rows"] - 1, Z.shape[1])


@pytest.mark.parametrize("solver,labels", [("ridge", "soft"), ("logistic", "hard")])
def test_other_heads_with_the_same_basis(rare, solver, labels):
    d, strong, pseudo, hard = rare
    src = hard if labels == "hard" else pseudo
    out = d / f"{solver}.safetensors"
    r = w2s("fit-student", src, "--strong", strong, "--subspace", 20, "--solver", solver, "-o", out)
    assert r.exit_code == 0, r.output
    assert all(np.isfinite(v) for v in report(out)["error"].values())


def test_teacher_with_a_basis_wider_than_its_rows_rank(rare, tmp_path):
    """train-weak on the strong embeddings (rare directions) with --subspace 20: the teacher's 100 rows lack
    some of them; it fits from its rows, as lstsq."""
    from w2s_cli.store import artifact as store

    _, strong, _, _ = rare
    out = tmp_path / "t.safetensors"
    r = w2s("train-weak", strong, "--n-labeled", 100, "--n-pseudo", 200, "--n-test", 100, "--subspace", 20, "-o", out)
    assert r.exit_code == 0, r.output
    assert np.isfinite(store.read_meta(out)["test_error"])


def test_a_full_width_design_on_few_rows_flags_what_it_does_not_determine(tmp_path):
    """--subspace none with fewer rows than columns on both sides, and a near-duplicate column pair that the
    moments cannot separate: errors are reported; the decomposition's parts, which move with rounding in the
    fits' weakest directions, are left out with the reason instead of printed with digits they lack."""
    rng = np.random.default_rng(1)
    m, width = 260, 96
    labels = rng.integers(0, C, size=m)
    base = rng.normal(size=(m, width)) + labels[:, None] * 0.5
    base[:, -1] = base[:, -2] + 1e-9 * rng.normal(size=m)  # resolved by the rows, not by their Gram
    weak = embeddings_artifact(tmp_path / "w.safetensors", base[:, :80], labels, "w")
    strong = embeddings_artifact(tmp_path / "s.safetensors", base, labels, "s")
    t, p, out = (tmp_path / f"{k}.safetensors" for k in "tpr")
    sizes = ["--n-labeled", 60, "--n-pseudo", 120, "--n-test", 80, "--subspace", "none"]
    assert w2s("train-weak", weak, *sizes, "-o", t).exit_code == 0
    assert w2s("pseudolabel", t, "-o", p).exit_code == 0
    r = w2s("fit-student", p, "--strong", strong, "--subspace", "none", "-o", out)
    assert r.exit_code == 0, r.output
    j = report(out)
    ill = [k for k, f in j["fits"].items() if f.get("ill_determined")]
    assert ill, j["fits"]
    assert j["decomposition"] == {}
    assert "not determined" in j["decomposition_note"]
    text = w2s("report", out)
    assert "decomposition: not determined by this design" in text.stdout
