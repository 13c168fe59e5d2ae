"""fit-student's one pass over the strong rows: the strong basis found in the pass that gathers the design,
the moments projected on it afterwards, give the design a first pass for the basis and a second for the
design give."""

import numpy as np
import pytest
from conftest import embeddings_artifact, latent_embeddings

from w2s_cli.numerics.moments import Moments, project
from w2s_cli.numerics.stats import as_targets
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.stages.design import gather
from w2s_cli.stages.heads import basis_of, shared_basis
from w2s_cli.store.embeddings import EmbeddingSet


@pytest.mark.parametrize("k", [None, 7])
def test_projected_moments_are_the_moments_of_the_projected_rows(k):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 12)).astype(np.float32) * 3 + 5
    rest = rng.normal(size=(500, 3))
    mean = rng.normal(size=12)
    V = None if k is None else np.linalg.qr(rng.normal(size=(12, k)))[0]
    basis = PrincipalBasis(mean, V)
    want = Moments.of(np.hstack([basis.transform(X), rest]))
    got = project(Moments.of(np.hstack([X, rest])), 12, mean, V)
    assert got.count == want.count
    np.testing.assert_allclose(got.mean, want.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.cross, want.cross, rtol=1e-12, atol=1e-9)
    assert np.array_equal(got.cross, got.cross.T)


def test_one_pass_gives_the_two_pass_design_and_reads_the_strong_rows_once(tmp_path, monkeypatch):
    S, W, z = latent_embeddings(900, 8, 10, 4, 40, 30, seed=5)
    labels = np.argmax(z[:, :3], axis=1)
    strong = EmbeddingSet(embeddings_artifact(tmp_path / "s.safetensors", S, labels, "s"), "strong embeddings")
    weak = EmbeddingSet(embeddings_artifact(tmp_path / "w.safetensors", W, labels, "w"), "weak embeddings")
    rows = np.random.default_rng(1).permutation(900)
    test, labeled, pseudo = (np.sort(r) for r in (rows[:200], rows[200:300], rows[300:800]))
    Y_L, C = as_targets(labels[labeled], 3), 3
    basis_w, _, _ = shared_basis(weak, np.concatenate([labeled, pseudo]), 6, 0.9, len(labeled))
    targets = np.random.default_rng(2).normal(size=(len(pseudo), 2 * C))

    def targets_P(pos):
        return targets[pos]

    basis_s, _, _ = shared_basis(strong, np.concatenate([labeled, pseudo]), "auto", 0.9, len(labeled))
    two = gather(strong, weak, basis_s, basis_w, labeled, pseudo, test, Y_L, targets_P, keep_pseudo_rows=True)
    read, original = [], EmbeddingSet.rows

    def counted(self, idx):
        read.append((self.role, len(idx)))
        return original(self, idx)

    monkeypatch.setattr(EmbeddingSet, "rows", counted)
    found = []

    def make(train: Moments) -> PrincipalBasis:
        found.append(basis_of(train, "auto", 0.9, len(labeled))[0])
        return found[-1]

    one = gather(strong, weak, make, basis_w, labeled, pseudo, test, Y_L, targets_P, keep_pseudo_rows=True)
    assert sum(n for role, n in read if role == "strong embeddings") == 800  # L + P + test, once each
    assert one.d_s == two.d_s == found[0].components.shape[1]
    np.testing.assert_allclose(found[0].mean, basis_s.mean, rtol=0, atol=1e-12)
    sign = np.sign((found[0].components * basis_s.components).sum(axis=0))  # eigenvectors: up to a sign
    np.testing.assert_allclose(found[0].components * sign, basis_s.components, rtol=0, atol=1e-9)
    for name in ("Zs_L", "Zs_test", "Zs_P", "Zw_L"):
        a, b = getattr(one, name), getattr(two, name)
        if name.startswith("Zs"):
            a = a * sign
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    flip = np.concatenate([sign, np.ones(one.P.cross.shape[0] - len(sign))])
    np.testing.assert_allclose(one.P.cross * np.outer(flip, flip), two.P.cross, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(one.P.mean * flip, two.P.mean, rtol=0, atol=1e-9)
