"""EASE, the embarrassingly shallow autoencoder (Steck 2019), in numpy and scipy (no TensorFlow).

Given a playlists x items matrix ``X`` (binary, or weighted), restricted to its ``N`` most frequent item
columns, EASE's item-item weights are the closed form of a ridge regression of every item on all the
others with a zero diagonal::

    G = X^T X + lambda * I        # [N, N]
    P = G^-1                      # [N, N]
    B = -P / diag(P)              # column j divided by P[j, j]; diag(B) = 0

and a query row ``q`` (the items a playlist holds, [N]) scores every kept item as ``q @ B``.

``G`` is made dense: ``N = 20,000`` is 3.2 GB in float64. Up to :data:`FLOAT64_LIMIT` columns the
inverse is computed in float64; above it in float32: half the memory (20,000 columns: 1.6 GB, which is
also the peak, as the inverse and ``B`` are made in place), hardly quicker (8,000 columns on the shared
2-core machine: 6.9 s against 7.8 s), and accurate enough, ``G`` being well conditioned for any ``lambda``
worth using (condition number at most ``(largest eigenvalue + lambda) / lambda``). ``B`` is kept as float32
either way. The inverse is LAPACK's Cholesky inverse (``potrf`` + ``potri``, about ``N^3`` flops, in place),
half the work of an LU inverse.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

FLOAT64_LIMIT = 10_000  # above this many kept columns, G and its inverse are float32


def frequent_columns(x: sp.spmatrix, n_items: int) -> np.ndarray:
    """The ``n_items`` columns of ``x`` nonzero in the most rows, most frequent first, ties by smaller column.

    Args:
      x: [rows, items] sparse matrix.
      n_items: how many columns to keep (all of them, if ``x`` has fewer).

    Returns:
      [min(n_items, items)] int64 column indices.
    """
    x = sp.csr_matrix(x)
    counts = np.bincount(x.indices[x.data != 0], minlength=x.shape[1])  # stored zeros do not count
    order = np.argsort(-counts, kind="stable")
    return order[:n_items].astype(np.int64)


def gram(x: sp.spmatrix, columns: np.ndarray) -> np.ndarray:
    """Dense ``X^T X`` over ``columns`` (float64 up to :data:`FLOAT64_LIMIT` columns, float32 above).

    Args:
      x: [rows, items] sparse matrix.
      columns: [N] the item columns to keep.

    Returns:
      [N, N] C-contiguous float64 or float32.
    """
    dtype = np.float64 if len(columns) <= FLOAT64_LIMIT else np.float32
    kept = sp.csc_matrix(x)[:, columns].astype(dtype)
    return np.ascontiguousarray((kept.T @ kept).toarray())


def _symmetrise_from_upper(a: np.ndarray, block: int = 2048) -> None:
    """Copy ``a``'s upper triangle onto its lower triangle, in place, a block column at a time."""
    n = len(a)
    for start in range(0, n, block):
        end = min(start + block, n)
        a[end:, start:end] = a[start:end, end:].T
        square = a[start:end, start:end]
        square[...] = np.triu(square) + np.triu(square, 1).T


def weights(g: np.ndarray, lam: float) -> np.ndarray:
    """EASE's ``B`` from the Gram matrix ``g``; ``g`` is overwritten (pass a copy to keep it).

    Args:
      g: [N, N] float64 or float32 ``X^T X``, C-contiguous.
      lam: the L2 penalty, > 0.

    Returns:
      [N, N] float32 ``B``, zero diagonal: ``B[i, j]`` is item i's weight in item j's score.
    """
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    g[np.diag_indices_from(g)] += lam
    potrf, potri = (lapack.dpotrf, lapack.dpotri) if g.dtype == np.float64 else (lapack.spotrf, lapack.spotri)
    a = g.T  # the Fortran-ordered view of the same (symmetric) memory: LAPACK works on it in place
    c, info = potrf(a, lower=False, clean=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"potrf failed ({info}): X^T X + lambda I is not positive definite")
    p, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"potri failed ({info})")
    _symmetrise_from_upper(p)  # potri writes only the upper triangle
    b = p.T  # C-ordered view: P again, P being symmetric (so no float32 copy is made)
    b /= -np.diag(b).copy()[None, :]  # B[i, j] = -P[i, j] / P[j, j]
    b[np.diag_indices_from(b)] = 0.0
    return np.ascontiguousarray(b, dtype=np.float32)


class EASE:
    """Item-item weights ``B`` over the kept columns of a playlists x items matrix.

    Attributes:
      columns: [N] int64, the kept item columns of the fitted matrix, most frequent first.
      B: [N, N] float32, zero diagonal; row i is kept item i's weights on every kept item.
    """

    def __init__(self, columns: np.ndarray, b: np.ndarray):
        if b.shape != (len(columns), len(columns)):
            raise ValueError(f"B is {b.shape}, expected {(len(columns), len(columns))}")
        self.columns, self.B = np.asarray(columns, dtype=np.int64), b

    @classmethod
    def fit(cls, x: sp.spmatrix, n_items: int, lam: float) -> "EASE":
        """Fit on ``x`` ([rows, items], binary or weighted) restricted to its ``n_items`` most frequent columns."""
        columns = frequent_columns(x, n_items)
        return cls(columns, weights(gram(x, columns), lam))

    def scores(self, q: sp.spmatrix) -> np.ndarray:
        """Scores of every kept item for each query row.

        Args:
          q: [rows, items] sparse queries over the same item columns as the fitted matrix (columns not kept
            are ignored).

        Returns:
          [rows, N] float32 dense ``q[:, columns] @ B``; column k is item ``columns[k]``.
        """
        kept = sp.csc_matrix(q)[:, self.columns].astype(np.float32).tocsr()
        return np.asarray(kept @ self.B, dtype=np.float32)
