"""One pass over the rows of a W2S experiment: the strong and weak embeddings projected on their shared
bases, gathered into the moments (and the few row blocks) that every fit and every analysis needs. The
strong basis may be found in the same pass, from the moments of the strong training rows (fit-student).

Columns of the moment matrices: [z_s (d_s) | z_w (d_w) | targets...]. The labelled rows L and the test rows
are kept as rows too (n and n_test are small); the N pseudo rows only when a head needs them (ridge,
logistic, or fewer rows than coordinates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from w2s_cli.distributed import CHUNK_ROWS
from w2s_cli.numerics.moments import Moments, project, select
from w2s_cli.numerics.subspaces import PrincipalBasis
from w2s_cli.store.embeddings import EmbeddingSet


@dataclass
class Design:
    d_s: int
    d_w: int  # 0 without weak embeddings
    n_outputs: int
    P: Moments  # [z_s | z_w | pseudo targets | observed labels] over the N pseudo rows
    L: Moments  # [z_s | z_w | observed labels] over the n labelled rows
    test: Moments  # [z_s | z_w] over the test rows
    Zs_L: np.ndarray
    Zw_L: np.ndarray | None
    Y_L: np.ndarray
    Zs_test: np.ndarray
    Zw_test: np.ndarray | None
    Zs_P: np.ndarray | None  # only when asked for
    w_blocks: tuple[int, ...] = ()  # several teachers combined: each member's number of weak coordinates

    @property
    def members(self) -> list[slice]:
        """The weak coordinates of each combined teacher, within z_w (one slice per member)."""
        edges = np.cumsum((0, *self.w_blocks))
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=False)]

    @property
    def zs(self) -> np.ndarray:
        return np.arange(self.d_s)

    @property
    def zw(self) -> np.ndarray:
        return np.arange(self.d_s, self.d_s + self.d_w)

    @property
    def y(self) -> np.ndarray:
        """Columns of the observed training labels in L (and in `train()`); of the pseudo targets in P."""
        start = self.d_s + self.d_w
        return np.arange(start, start + self.n_outputs)

    @property
    def y_observed_P(self) -> np.ndarray:
        """Columns of the observed (true, after label noise) labels in P."""
        return self.y + self.n_outputs

    @cached_property
    def train(self) -> Moments:
        """[z_s | z_w | observed] over the n + N training rows."""
        P = select(self.P, np.concatenate([np.arange(self.d_s + self.d_w), self.y_observed_P]))
        return self.L.merge(P)


def gather(
    strong: EmbeddingSet,
    weak: EmbeddingSet | list[EmbeddingSet] | None,
    basis_s: PrincipalBasis | Callable[[Moments], PrincipalBasis],
    basis_w: PrincipalBasis | list[PrincipalBasis] | None,
    labeled: np.ndarray,
    pseudo: np.ndarray,
    test: np.ndarray,
    Y_L: np.ndarray,
    targets_P: Callable[[np.ndarray], np.ndarray],
    *,
    keep_pseudo_rows: bool = False,
) -> Design:
    """Read the rows L, P and test once (strong and weak side by side) and gather the design.

    Row sets sorted; Y_L aligned with `labeled`; targets_P(positions in `pseudo`) gives those rows' (k, 2C)
    [pseudo targets | observed labels], built per chunk. Under torchrun every rank reads its own chunks
    and the moments and rows are combined, so every rank holds the design a single process would.
    basis_s: the strong basis, or a function making it from the moments of the strong rows L + P: then the
    pass gathers the raw strong columns and projects moments and rows on the basis afterwards (one pass
    over the strong embeddings instead of one for the basis and one for the design).
    weak, basis_w as lists: several teachers' embeddings and bases (a combination), their coordinates side by
    side in z_w (Design.members).
    """
    C = Y_L.shape[1]
    later = callable(basis_s)
    d_s = strong.width if later else basis_dim(basis_s, strong)
    several = isinstance(weak, list)
    weaks = [] if weak is None else (weak if several else [weak])
    bases = basis_w if several else [basis_w]
    blocks = tuple(basis_dim(b, e) for b, e in zip(bases, weaks, strict=False))
    d_w = sum(blocks)

    def coordinates(idx: np.ndarray) -> np.ndarray:
        """[z_s | z_w] of rows idx (z_s: the raw strong columns while the strong basis is still to be made)."""
        z = strong.rows(idx) if later else basis_s.transform(strong.rows(idx))
        if weaks:
            z = np.hstack([z, *(b.transform(e.rows(idx)) for b, e in zip(bases, weaks, strict=False))])
        return z

    rows = (labeled, pseudo, test)
    P, ZL, Zt, ZP = _one_pass(coordinates, strong.n_rows, rows, targets_P, d_s + d_w + 2 * C, d_s, keep_pseudo_rows)
    if later:
        basis_s, P, ZL, Zt, ZP = _in_strong_basis(basis_s, P, ZL, Zt, ZP, d_s)
        d_s = basis_dim(basis_s, strong)
    return Design(
        d_s=d_s,
        d_w=d_w,
        n_outputs=C,
        P=P,
        L=Moments.of(np.hstack([ZL, Y_L])),
        test=Moments.of(Zt),
        Zs_L=ZL[:, :d_s],
        Zw_L=ZL[:, d_s:] if weak is not None else None,
        Y_L=Y_L,
        Zs_test=Zt[:, :d_s],
        Zw_test=Zt[:, d_s:] if weak is not None else None,
        Zs_P=ZP,
        w_blocks=blocks if several else (),
    )


def _one_pass(
    coordinates: Callable[[np.ndarray], np.ndarray],
    n_rows: int,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    targets_P: Callable[[np.ndarray], np.ndarray],
    width: int,
    d_s: int,
    keep_pseudo_rows: bool,
) -> tuple[Moments, np.ndarray, np.ndarray, np.ndarray | None]:
    """Read the sorted rows (labelled L, pseudo P, test) in chunks, this rank's only: the moments of
    [z | targets] over P (`width` columns), the coordinates z of the rows L and test and, when kept, the
    z_s (first d_s) columns of the rows P; combined over the ranks, in row order."""
    from w2s_cli.distributed import all_reduce_moments, gather_rows, mine

    labeled, pseudo, test = rows
    code = np.zeros(n_rows, dtype=np.int8)  # 1: labelled, 2: pseudo, 3: test
    code[labeled], code[pseudo], code[test] = 1, 2, 3
    parts: dict[str, list] = {"L": [], "test": [], "P": []}
    P = Moments.empty(width)
    order = np.sort(np.concatenate([labeled, pseudo, test]))
    for k, start in enumerate(range(0, len(order), CHUNK_ROWS)):
        if not mine(k):
            continue
        idx = order[start : start + CHUNK_ROWS]
        z = coordinates(idx)
        where = code[idx]
        in_p = where == 2
        if in_p.any():
            P = P.merge(Moments.of(np.hstack([z[in_p], targets_P(np.searchsorted(pseudo, idx[in_p]))])))
            if keep_pseudo_rows:
                parts["P"].append((idx[in_p], z[in_p, :d_s]))
        for name, value in (("L", 1), ("test", 3)):
            mask = where == value
            if mask.any():
                parts[name].append((idx[mask], z[mask]))
    P = all_reduce_moments(P)
    gathered = {name: gather_rows(pieces) for name, pieces in parts.items()}
    # pieces come in ascending row order and L, P, test are sorted: the gathered rows are in their order
    ZL = np.vstack([z for _, z in gathered["L"]])
    Zt = np.vstack([z for _, z in gathered["test"]])
    ZP = np.vstack([z for _, z in gathered["P"]]) if keep_pseudo_rows else None
    return P, ZL, Zt, ZP


def _in_strong_basis(
    make: Callable[[Moments], PrincipalBasis],
    P: Moments,
    ZL: np.ndarray,
    Zt: np.ndarray,
    ZP: np.ndarray | None,
    width: int,
) -> tuple[PrincipalBasis, Moments, np.ndarray, np.ndarray, np.ndarray | None]:
    """The strong basis, made from the moments of the raw strong columns (the first `width`) over L + P, and
    the moments and rows with those columns projected on it (d_s columns)."""
    basis_s = make(Moments.of(ZL[:, :width]).merge(select(P, np.arange(width))))
    P = project(P, width, basis_s.mean, basis_s.components)
    ZL, Zt = (np.hstack([basis_s.transform(Z[:, :width]), Z[:, width:]]) for Z in (ZL, Zt))
    ZP = None if ZP is None else basis_s.transform(ZP)
    return basis_s, P, ZL, Zt, ZP


def basis_dim(basis: PrincipalBasis, emb: EmbeddingSet) -> int:
    """Number of coordinates of a basis (the embedding width when there is none)."""
    return emb.width if basis.components is None else basis.components.shape[1]
