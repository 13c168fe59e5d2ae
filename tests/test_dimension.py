"""Intrinsic dimension, the weak-strong overlap d_sw, and fitting inside the shared subspaces, on synthetic
embeddings whose structure is known."""

import json

import numpy as np
import pytest
from conftest import embeddings_artifact, latent_embeddings, w2s

from w2s_cli import W2SError
from w2s_cli.diagnostics.intrinsic import intrinsic_dim
from w2s_cli.numerics.moments import Moments
from w2s_cli.numerics.spectra import Spectrum, energy_dimension, participation_ratio
from w2s_cli.numerics.subspaces import overlap
from w2s_cli.options import SplitOptions, SubspaceOptions
from w2s_cli.stages.student import fit_student
from w2s_cli.stages.summary import load_result, summary
from w2s_cli.stages.teacher import pseudolabel, train_weak
from w2s_cli.store import artifact as store


@pytest.mark.slow
def test_spectral_dimension_and_overlap_recover_the_truth():
    S, W, _ = latent_embeddings(4000, d_s=20, d_w=40, shared=8, width_s=300, width_w=200)
    sp_s, sp_w = Spectrum.of(Moments.of(S)), Spectrum.of(Moments.of(W))
    d_s, d_w = energy_dimension(sp_s.values, 0.99), energy_dimension(sp_w.values, 0.99)
    assert abs(d_s - 20) <= 1 and abs(d_w - 40) <= 2
    Zs, Zw = (S - sp_s.mean) @ sp_s.vectors[:, :d_s], (W - sp_w.mean) @ sp_w.vectors[:, :d_w]
    ov = overlap(Moments.of(np.hstack([Zs, Zw])).cross, 4000, slice(0, d_s), slice(d_s, None))
    assert ov["d_sw_null"] == pytest.approx(d_s * d_w / 3999)
    assert abs(ov["d_sw_corrected"] - 8) <= 0.1 * 8
    assert sum(c > 0.99 for c in ov["canonical_correlations"]) == 8
    # the same overlap from an explicit m x m computation (small case only)
    Us = np.linalg.svd(S - S.mean(0), full_matrices=False)[0][:, :d_s]
    Uw = np.linalg.svd(W - W.mean(0), full_matrices=False)[0][:, :d_w]
    assert ov["d_sw"] == pytest.approx(np.linalg.norm(Us.T @ Uw) ** 2, rel=1e-8)


def test_participation_ratio_by_hand():
    assert participation_ratio(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4)
    assert participation_ratio(np.array([3.0, 1.0])) == pytest.approx(16 / 10)


def test_twonn_on_a_known_manifold():
    skdim = pytest.importorskip("skdim")
    from w2s_cli.numerics.spectra import nearest_neighbour_dimension

    rng = np.random.default_rng(0)
    ball = skdim.datasets.hyperBall(n=3000, d=3, radius=1, random_state=0)
    X = np.hstack([ball, np.zeros((3000, 27))]) @ np.linalg.qr(rng.normal(size=(30, 30)))[0]
    assert abs(nearest_neighbour_dimension(X, "twonn", 5000, 0) - 3) < 0.45
    assert abs(nearest_neighbour_dimension(X, "mle", 5000, 0) - 3) < 0.45


def test_intrinsic_dim_cli_on_plain_matrices(tmp_path):
    S, W, _ = latent_embeddings(2000, d_s=10, d_w=16, shared=5, width_s=64, width_w=48)
    np.save(tmp_path / "w.npy", W.astype(np.float32))
    np.savez(tmp_path / "s.npz", embeddings=S)
    w, s = str(tmp_path / "w.npy"), str(tmp_path / "s.npz")
    r = w2s("intrinsic-dim", w, s, "--json", "--plot", tmp_path / "spectra.png", "-o", tmp_path / "id.safetensors")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["weak"]["d"] == 16 and out["strong"]["d"] == 10
    assert {"participation_ratio", "twonn", "mle"} <= set(out["weak"])
    assert abs(out["d_sw_corrected"] - 5) < 0.5 and out["d_sw_null"] == pytest.approx(160 / 1999)
    assert (tmp_path / "spectra.png").read_bytes()[:4] == b"\x89PNG"
    art = store.load(tmp_path / "id.safetensors", "intrinsic_dim")
    assert art["spectrum_weak"].shape == (48,) and art["spectrum_weak"].dtype == np.float64
    one = json.loads(w2s("intrinsic-dim", w, "--json", "--estimator", "spectral").stdout)
    assert "weak" in one and "strong" not in one
    authors = json.loads(w2s("intrinsic-dim", w, s, "--json", "--estimator", "spectral", "--method", "authors").stdout)
    assert authors["method"].startswith("authors")
    raw = w2s("intrinsic-dim", w, "--json", "--estimator", "spectral", "--no-center")
    assert raw.exit_code == 0 and json.loads(raw.stdout)["center"] is False
    # the table's columns stay aligned whatever --energy is (0.99 is one of the listed ones)
    for energy, header in (("0.99", "d@0.99"), ("0.8", "d@0.8")):
        table = w2s("intrinsic-dim", w, s, "--estimator", "spectral,pr", "--energy", energy).stdout
        head = next(line for line in table.splitlines() if "samples" in line)
        row = next(line for line in table.splitlines() if line.strip("│┃ ").startswith("weak"))
        assert head.count("┃") == row.count("│") and header in head


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
    with pytest.raises(W2SError, match="--max-samples must be at least 3"):
        intrinsic_dim(tmp_path / "a.npy", max_samples=0)


def test_full_width_collapses_near_the_width_and_the_shared_subspace_does_not(tmp_path):
    width, m = 200, 2000
    S, W, z = latent_embeddings(m, d_s=16, d_w=20, shared=6, width_s=width, width_w=150, noise=0.02, seed=3)
    labels = np.argmax(z[:, :4], axis=1)
    strong = embeddings_artifact(tmp_path / "strong.safetensors", S, labels, "strong")
    weak = embeddings_artifact(tmp_path / "weak.safetensors", W, labels, "weak")
    split = SplitOptions(n_labeled=150, n_test=1000, n_pseudo=int(1.2 * width))
    teacher = train_weak(weak, tmp_path / "t.safetensors", split=split, subspace=SubspaceOptions("20"))
    pseudo = pseudolabel(teacher, tmp_path / "p.safetensors")
    full = summary(
        load_result(fit_student(pseudo, strong, tmp_path / "full.safetensors", subspace=SubspaceOptions("none")))
    )
    sub = summary(
        load_result(fit_student(pseudo, strong, tmp_path / "sub.safetensors", subspace=SubspaceOptions("16")))
    )
    assert sub.theory.dimensions.d_s == 16 and full.theory.dimensions.d_s == 200
    # measured: full width 0.146, subspace 0.102, subspace ceiling 0.102 (test MSE vs one-hot)
    assert full.metrics.error["w2s"] > 1.3 * sub.metrics.error["w2s"]
    assert sub.metrics.error["w2s"] < 1.1 * sub.metrics.error["ceiling"]
    assert "w2s" in full.theory.near_interpolation and not sub.theory.near_interpolation
    assert not full.theory.theory.available and "d_s" in full.theory.theory.note
    assert full.theory.predicted.error["strong_sft"] is None  # SFT interpolates its 150 labels: no leave-one-out
