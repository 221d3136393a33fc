"""Graph helpers shared by every graph model: normalised adjacency, kNN item graphs, edge weights.

Everything here is rebuilt from what it is given (interactions, features); nothing is cached on disk,
so a model handed perturbed features always gets graphs built from those features.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from robustrec.errors import ConfigError

EPS = 1e-7


def sparse(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A coalesced sparse COO tensor (convert with :func:`to_csr` for fast products with :func:`spmm`)."""
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


def prune_edges(
    edge_values: torch.Tensor, n_keep: int, generator: torch.Generator | None, degree_sensitive: bool = True
) -> torch.Tensor:
    """The indices of ``n_keep`` distinct edges drawn without replacement: with probability proportional
    to ``edge_values`` (degree-sensitive pruning, FREEDOM's and LayerGCN's) or uniformly (LayerGCN's
    other epochs)."""
    if n_keep <= 0:
        return torch.zeros(0, dtype=torch.long, device=edge_values.device)
    if degree_sensitive:
        return torch.multinomial(edge_values, n_keep, replacement=False, generator=generator)
    return torch.randperm(len(edge_values), generator=generator, device=edge_values.device)[:n_keep]


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


def mixed_knn_graph(
    image: torch.Tensor | None, text: torch.Tensor | None, knn_k: int, image_weight: float
) -> torch.Tensor:
    """The frozen multimodal item-item graph of FREEDOM and DRAGON: per-modality kNN graphs, mixed as
    ``image_weight * image + (1 - image_weight) * text`` (one graph when one modality is present)."""
    graphs = {
        name: knn_graph(feat, knn_k) for name, feat in (("image", image), ("text", text)) if feat is not None
    }
    if not graphs:
        raise ConfigError("a kNN item graph needs image or text features")
    if len(graphs) == 1:
        return next(iter(graphs.values()))
    return (image_weight * graphs["image"] + (1.0 - image_weight) * graphs["text"]).coalesce()


def user_item_graph(train_matrix: sp.csr_matrix, aggr_mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (users + items) square user-item graph as CSR, and its transpose (``None`` when symmetric):
    D^-1/2 A D^-1/2 for "add", the mean over a node's neighbours for "mean" (no self loops)."""
    if aggr_mode == "add":
        return to_csr(normalized_adjacency(train_matrix)), None
    users, items = user_item_edges(train_matrix)
    edges = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
    mean = mean_aggregation(edges, sum(train_matrix.shape))
    return to_csr(mean), to_csr(mean.t())


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


def to_csr(adj: torch.Tensor) -> torch.Tensor:
    """The CSR layout of a sparse COO matrix: for :func:`spmm`, several times faster than COO on CPU.

    Indices are int32 where they fit, which the CPU sparse kernels (MKL) take as they are; with int64
    every product first copies them (about 12% of a product on ml100k's graph).
    """
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = adj.coalesce().to_sparse_csr()
        if csr.values().numel() >= 2**31 - 1 or max(csr.shape) >= 2**31 - 1:
            return csr
        return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(),
                                       csr.shape, check_invariants=False)


class _SparseMatmul(torch.autograd.Function):
    """``adj @ x`` for a constant sparse ``adj``; the backward multiplies by the given transpose."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None, torch.Tensor | None]:
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, torch.sparse.mm(ctx.adj_t, grad.contiguous())


def spmm(adj: torch.Tensor, x: torch.Tensor, adj_t: torch.Tensor | None = None) -> torch.Tensor:
    """``adj @ x`` for a constant sparse graph (no gradient into ``adj``), differentiable in ``x``.

    ``adj_t`` is the transpose of ``adj`` (``None``: ``adj`` is symmetric); with both in CSR
    (:func:`to_csr`) forward and backward are CSR products, which on CPU is several times faster than
    ``torch.sparse.mm`` on COO, whose backward transposes the matrix at every call.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.sparse.mm(adj, x)
    return _SparseMatmul.apply(adj, adj if adj_t is None else adj_t, x)


def layer_mean(
    adj: torch.Tensor, x: torch.Tensor, n_layers: int, adj_t: torch.Tensor | None = None
) -> torch.Tensor:
    """LightGCN propagation: the mean of ``x, A x, ..., A^n_layers x`` (BM3, FREEDOM's user-item graph)."""
    total = x
    for _ in range(n_layers):
        x = spmm(adj, x, adj_t)
        total = total + x
    return total / (n_layers + 1)


# ---- message passing with learnt edge weights (GRCN) ------------------------------------------------


def _row_pointers(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row pointers of sorted row indices."""
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class EdgeGraph(torch.nn.Module):
    """Directed edges ``src -> dst`` whose per-edge values may be learnt (attention, GRCN's edge weights).

    - ``propagate(x, values)[i] = sum over edges e into i of values[e] * x[src[e]]`` (PyG's "add"
      aggregation of ``values * x_j`` messages);
    - ``edge_dot(a, b)[e] = a[dst[e]] . b[src[e]]`` (PyG's ``(x_i * x_j).sum(-1)``);
    - ``softmax(scores)`` normalises per-edge scores over the edges into each node.

    Both products are sparse matrix products (CSR by destination; the backward pass multiplies by the
    transposed CSR and samples dense products on the edges with ``torch.sparse.sampled_addmm``), and
    both are differentiable in every tensor argument (first order only). Edges are deduplicated and
    sorted by (dst, src): a per-edge tensor follows ``self.src`` / ``self.dst``. Node ids are
    ``0..n_dst-1`` on the destination side and ``0..n_src-1`` on the source side (``n_src`` defaults
    to ``n_dst``: one node set). The index tensors are non-persistent buffers, so the graph follows
    ``.to(device)`` and stays out of checkpoints.
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_dst: int, n_src: int | None = None) -> None:
        super().__init__()
        n_src = n_dst if n_src is None else n_src
        key = torch.unique(dst.long() * n_src + src.long())  # sorted by (dst, src), duplicates merged
        dst, src = key // n_src, key % n_src
        transpose = torch.argsort(src * n_dst + dst)
        self.shape = (n_dst, n_src)
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        self.register_buffer("crow", _row_pointers(dst, n_dst), persistent=False)
        self.register_buffer("transpose", transpose, persistent=False)
        self.register_buffer("t_crow", _row_pointers(src[transpose], n_src), persistent=False)
        self.register_buffer("t_col", dst[transpose].contiguous(), persistent=False)

    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The ``n_dst x n_src`` CSR matrix with ``values`` on the edges."""
        return _csr(self.crow, self.src, values, self.shape)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The ``n_src x n_dst`` CSR transpose of :meth:`matrix`."""
        return _csr(self.t_crow, self.t_col, values[self.transpose], (self.shape[1], self.shape[0]))

    def mean_values(self) -> torch.Tensor:
        """Edge values ``1 / in-degree(dst)``: :meth:`propagate` then averages over in-neighbours."""
        degree = torch.bincount(self.dst, minlength=self.shape[0]).to(torch.float32)
        return 1.0 / degree[self.dst]

    def propagate(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return _EdgePropagate.apply(self, values, x)

    def edge_dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _EdgeDot.apply(self, a, b)

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return segment_softmax(scores, self.dst, self.shape[0])

    def sampled_dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a[dst[e]] . b[src[e]]`` for every edge, without autograd (an SDDMM)."""
        pattern = self.matrix(torch.zeros(self.n_edges, dtype=a.dtype, device=a.device))
        return torch.sparse.sampled_addmm(pattern, a.contiguous(), b.contiguous().T, beta=0.0).values()


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _EdgePropagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graph: EdgeGraph, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.graph = graph
        ctx.save_for_backward(values, x)
        return graph.matrix(values) @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        values, x = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        grad = grad.contiguous()
        grad_values = graph.sampled_dot(grad, x) if ctx.needs_input_grad[1] else None
        grad_x = graph.transposed(values) @ grad if ctx.needs_input_grad[2] else None
        return None, grad_values, grad_x


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graph: EdgeGraph, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.graph = graph
        ctx.save_for_backward(a, b)
        return graph.sampled_dot(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        grad_a = graph.matrix(grad) @ b if ctx.needs_input_grad[1] else None
        grad_b = graph.transposed(grad) @ a if ctx.needs_input_grad[2] else None
        return None, grad_a, grad_b


def user_item_edges(train_matrix: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, n_users + item) node ids of the distinct interactions of a user x item matrix."""
    coo = train_matrix.tocoo()
    users = torch.from_numpy(coo.row.astype(np.int64))
    items = torch.from_numpy(coo.col.astype(np.int64)) + train_matrix.shape[0]
    return users, items
