"""Intrinsic dimension, the weak-strong overlap d_sw, and fitting inside the intrinsic subspace, on
synthetic embeddings whose structure is known."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from w2s_cli import W2SError, artifacts
from w2s_cli.cli import app
from w2s_cli.dimension import covariance_spectrum, energy_dimension, participation_ratio, subspace_overlap
from w2s_cli.intrinsic import intrinsic_dim
from w2s_cli.report import load_result, summary
from w2s_cli.student import fit_student
from w2s_cli.teacher import pseudolabel, train_weak


def latent_embeddings(m, d_s, d_w, shared, width_s, width_w, noise=0.01, seed=0):
    """Strong and weak embeddings of the same m samples: `shared` latent directions in common, the rest
    independent, each embedded by a random isometry into a wider space, plus small isotropic noise."""
    rng = np.random.default_rng(seed)
    z_shared = rng.normal(size=(m, shared))
    z_s = np.hstack([z_shared, rng.normal(size=(m, d_s - shared))])
    z_w = np.hstack([z_shared, rng.normal(size=(m, d_w - shared))])
    embed_s = np.linalg.qr(rng.normal(size=(width_s, d_s)))[0].T
    embed_w = np.linalg.qr(rng.normal(size=(width_w, d_w)))[0].T
    S = z_s @ embed_s + noise * rng.normal(size=(m, width_s))
    W = z_w @ embed_w + noise * rng.normal(size=(m, width_w))
    return S, W, z_shared


def test_spectral_dimension_and_overlap_recover_the_truth():
    S, W, _ = latent_embeddings(4000, d_s=20, d_w=40, shared=8, width_s=300, width_w=200)
    d_s = energy_dimension(covariance_spectrum(S)[0], 0.99)
    d_w = energy_dimension(covariance_spectrum(W)[0], 0.99)
    assert abs(d_s - 20) <= 0.05 * 20 and abs(d_w - 40) <= 0.05 * 40
    ov = subspace_overlap(S, W, d_s, d_w)
    assert ov["d_sw_null"] == pytest.approx(d_s * d_w / 4000)
    assert abs(ov["d_sw_corrected"] - 8) <= 0.1 * 8
    assert sum(c > 0.99 for c in ov["canonical_correlations"]) == 8
    # the same overlap from an explicit m x m computation (small case only)
    Us = np.linalg.svd(S - S.mean(0), full_matrices=False)[0][:, :d_s]
    Uw = np.linalg.svd(W - W.mean(0), full_matrices=False)[0][:, :d_w]
    assert ov["d_sw"] == pytest.approx(np.linalg.norm(Us.T @ Uw) ** 2, rel=1e-8)


def test_unrelated_subspaces_sit_at_the_null_value():
    S, W, _ = latent_embeddings(3000, d_s=30, d_w=30, shared=0, width_s=100, width_w=100, seed=1)
    ov = subspace_overlap(S, W, 30, 30)
    assert abs(ov["d_sw"] - ov["d_sw_null"]) < 0.5 * ov["d_sw_null"] and ov["d_sw_corrected"] < 0.3


def test_participation_ratio_by_hand():
    assert participation_ratio(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4)
    assert participation_ratio(np.array([3.0, 1.0])) == pytest.approx(16 / 10)


def test_twonn_on_a_known_manifold():
    skdim = pytest.importorskip("skdim")
    rng = np.random.default_rng(0)
    ball = skdim.datasets.hyperBall(n=3000, d=3, radius=1, random_state=0)
    X = np.hstack([ball, np.zeros((3000, 27))]) @ np.linalg.qr(rng.normal(size=(30, 30)))[0]
    from w2s_cli.dimension import nearest_neighbour_dimension

    assert abs(nearest_neighbour_dimension(X, "twonn", 5000, 0) - 3) < 0.45
    assert abs(nearest_neighbour_dimension(X, "mle", 5000, 0) - 3) < 0.45


def test_intrinsic_dim_cli_on_plain_matrices(tmp_path):
    S, W, _ = latent_embeddings(2000, d_s=10, d_w=16, shared=5, width_s=64, width_w=48)
    np.save(tmp_path / "w.npy", W.astype(np.float32))
    np.savez(tmp_path / "s.npz", embeddings=S)
    r = CliRunner().invoke(
        app,
        [
            "intrinsic-dim",
            str(tmp_path / "w.npy"),
            str(tmp_path / "s.npz"),
            "--json",
            "--plot",
            str(tmp_path / "spectra.png"),
            "-o",
            str(tmp_path / "id.safetensors"),
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["weak"]["d"] == 16 and s["strong"]["d"] == 10
    assert {"participation_ratio", "twonn", "mle"} <= set(s["weak"])
    assert abs(s["d_sw_corrected"] - 5) < 0.5 and s["d_sw_null"] == pytest.approx(160 / 2000)
    assert (tmp_path / "spectra.png").read_bytes()[:4] == b"\x89PNG"
    art = artifacts.load(tmp_path / "id.safetensors", "intrinsic_dim")
    assert art["spectrum_weak"].shape == (48,) and art["spectrum_weak"].dtype == np.float64
    one = CliRunner().invoke(app, ["intrinsic-dim", str(tmp_path / "w.npy"), "--json", "--estimator", "spectral"])
    assert set(json.loads(one.stdout)) >= {"weak"} and "strong" not in json.loads(one.stdout)
    authors = CliRunner().invoke(
        app,
        [
            "intrinsic-dim",
            str(tmp_path / "w.npy"),
            str(tmp_path / "s.npz"),
            "--json",
            "--estimator",
            "spectral",
            "--method",
            "authors",
        ],
    )
    assert json.loads(authors.stdout)["method"].startswith("authors")
    raw = CliRunner().invoke(
        app, ["intrinsic-dim", str(tmp_path / "w.npy"), "--json", "--estimator", "spectral", "--no-center"]
    )
    assert json.loads(raw.stdout)["center"] is False and raw.exit_code == 0


def test_intrinsic_dim_refuses_bad_inputs(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((10, 3)))
    np.save(tmp_path / "b.npy", np.ones((12, 3)))
    bad = np.ones((10, 3))
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(W2SError, match="same samples"):
        intrinsic_dim(tmp_path / "a.npy", tmp_path / "b.npy", estimators="spectral")
    with pytest.raises(W2SError, match="NaN"):
        intrinsic_dim(tmp_path / "nan.npy")
    with pytest.raises(W2SError, match="expected a .npy"):
        intrinsic_dim(tmp_path / "x.txt")
    with pytest.raises(W2SError, match="unknown estimator"):
        intrinsic_dim(tmp_path / "a.npy", estimators="spectral,magic")


def _embeddings_artifact(path, X, labels, name):
    """An embeddings artifact for synthetic features (same record fields as `w2s extract` writes)."""
    meta = artifacts.base_meta("embeddings", 0)
    ids = np.arange(len(X), dtype=np.int64)
    meta.update(
        {
            "model": {"name": name, "weights": {"source": "synthetic", "state_dict_sha256": name}, "width": X.shape[1]},
            "preprocessing": {"input_size": [3, 0, 0]},
            "dataset": {"name": "synthetic", "fingerprint": "s" * 64, "task": "classification", "classes": None},
            "sample_ids_sha256": artifacts.ids_sha256(ids),
        }
    )
    tensors = {"embeddings": X.astype(np.float32), "sample_ids": ids, "labels": labels.astype(np.int64)}
    return artifacts.save(artifacts.Artifact("embeddings", meta, tensors), path)


def test_full_width_ridgeless_collapses_near_the_width_and_the_subspace_student_does_not(tmp_path):
    width, m = 200, 2000
    S, W, z = latent_embeddings(m, d_s=16, d_w=20, shared=6, width_s=width, width_w=150, noise=0.02, seed=3)
    labels = np.argmax(z[:, :4], axis=1)
    strong = _embeddings_artifact(tmp_path / "strong.safetensors", S, labels, "strong")
    weak = _embeddings_artifact(tmp_path / "weak.safetensors", W, labels, "weak")
    teacher = train_weak(weak, tmp_path / "t.safetensors", n_labeled=150, n_test=1000, subspace="auto")
    pseudo = pseudolabel(teacher, tmp_path / "p.safetensors", n_pseudo=int(1.2 * width))
    full = summary(load_result(fit_student(pseudo, strong, tmp_path / "full.safetensors", subspace="none")))
    sub = summary(load_result(fit_student(pseudo, strong, tmp_path / "sub.safetensors", subspace="auto")))
    assert sub["subspace"]["student"]["dim"]["w2s"] == 16
    # measured: full width 0.147, subspace 0.102, subspace ceiling 0.102 (test MSE vs one-hot)
    assert full["error"]["w2s"] > 1.3 * sub["error"]["w2s"]
    assert sub["error"]["w2s"] < 1.1 * sub["error"]["ceiling"]
    assert sub["theory"]["available"] and sub["theory"]["inputs"]["d_s"] == 16
