"""Graph helpers shared by every graph model: normalised adjacency, kNN item graphs, edge weights.

Everything here is rebuilt from what it is given (interactions, features); nothing is cached on disk,
so a model handed perturbed features always gets graphs built from those features.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

EPS = 1e-7


def sparse(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A coalesced sparse COO tensor (the layout torch.sparse.mm differentiates fastest on CPU)."""
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def symmetric_norm_values(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Edge weights 1/sqrt(deg(row) * deg(col)) of a bipartite edge list (degrees counted on it)."""
    row_deg = torch.bincount(rows, minlength=n_rows).to(torch.float32) + EPS
    col_deg = torch.bincount(cols, minlength=n_cols).to(torch.float32) + EPS
    return row_deg.pow(-0.5)[rows] * col_deg.pow(-0.5)[cols]


def bipartite_adjacency(
    rows: torch.Tensor, cols: torch.Tensor, n_users: int, n_items: int, values: torch.Tensor | None = None
) -> torch.Tensor:
    """The symmetric (users + items) square adjacency of user->item edges, items offset by n_users.

    With ``values=None`` the edges get the symmetric normalisation D^-1/2 A D^-1/2 (LightGCN, BM3,
    FREEDOM); otherwise the given per-edge values are used for both directions.
    """
    if values is None:
        values = symmetric_norm_values(rows, cols, n_users, n_items)
    n = n_users + n_items
    index = torch.cat([torch.stack([rows, cols + n_users]), torch.stack([cols + n_users, rows])], dim=1)
    return sparse(index, torch.cat([values, values]), (n, n))


def normalized_adjacency(train_matrix: sp.csr_matrix) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the user-item graph given as a binary user x item matrix."""
    coo = train_matrix.tocoo()
    rows = torch.from_numpy(coo.row.astype(np.int64))
    cols = torch.from_numpy(coo.col.astype(np.int64))
    return bipartite_adjacency(rows, cols, *train_matrix.shape)


def knn_graph(features: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Item-item kNN graph by cosine similarity (self included, as in LATTICE/FREEDOM), normalised
    as D^-1/2 A D^-1/2 with row degrees. Computed in row chunks so memory stays O(chunk x n)."""
    n = features.shape[0]
    k = min(k, n)
    normed = features / features.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-12)
    neighbours = []
    for start in range(0, n, chunk):
        sim = normed[start : start + chunk] @ normed.T
        neighbours.append(torch.topk(sim, k, dim=-1).indices)
    cols = torch.cat(neighbours).flatten()
    rows = torch.arange(n, device=features.device).repeat_interleave(k)
    degree = torch.bincount(rows, minlength=n).to(features.dtype) + EPS
    inv_sqrt = degree.pow(-0.5)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return sparse(torch.stack([rows, cols]), values, (n, n))


def mean_aggregation(edge_index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Row-normalised adjacency: (A @ x)[i] is the mean of x over i's in-neighbours (0 if none).

    ``edge_index`` is ``[2, E]`` with rows (source, target); messages flow source -> target.
    """
    src, dst = edge_index
    degree = torch.bincount(dst, minlength=n_nodes).to(torch.float32)
    values = 1.0 / degree[dst]
    return sparse(torch.stack([dst, src]), values, (n_nodes, n_nodes))


def segment_softmax(scores: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` within each group of equal ``segments`` id (e.g. edges by target node)."""
    maxima = torch.full((n_segments,), float("-inf"), dtype=scores.dtype, device=scores.device)
    maxima = maxima.scatter_reduce(0, segments, scores, reduce="amax", include_self=True)
    exp = (scores - maxima[segments]).exp()
    totals = torch.zeros(n_segments, dtype=scores.dtype, device=scores.device).index_add(0, segments, exp)
    return exp / (totals[segments] + 1e-16)
