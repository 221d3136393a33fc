"""EdgeGraph (graph.py): message passing with learnt edge values, checked by hand and by gradcheck."""

from __future__ import annotations

import torch

from robustrec.models.graph import EdgeGraph, segment_softmax

# Edges j -> i on 3 nodes: 1->0, 2->0, 0->1, 0->2, and a duplicate 2->0 that counts once.
SRC = torch.tensor([1, 2, 0, 0, 2])
DST = torch.tensor([0, 0, 1, 2, 0])


def test_edges_sorted_and_deduplicated():
    graph = EdgeGraph(SRC, DST, 3)
    assert graph.dst.tolist() == [0, 0, 1, 2]
    assert graph.src.tolist() == [1, 2, 0, 0]
    assert graph.n_edges == 4


def test_propagate_edge_dot_softmax_by_hand():
    graph = EdgeGraph(SRC, DST, 3)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    values = torch.tensor([0.5, 2.0, 1.0, -1.0])  # on (1->0, 2->0, 0->1, 0->2)
    expected = torch.tensor([[0.5 * 0 + 2 * 3, 0.5 * 2 + 2 * 1], [1.0, 0.0], [-1.0, 0.0]])
    torch.testing.assert_close(graph.propagate(x, values), expected)
    # a[dst] . b[src]
    torch.testing.assert_close(graph.edge_dot(x, x), torch.tensor([0.0, 3.0, 0.0, 3.0]))
    scores = torch.tensor([0.0, 1.0, 5.0, -2.0])
    e = torch.e
    torch.testing.assert_close(graph.softmax(scores), torch.tensor([1 / (1 + e), e / (1 + e), 1.0, 1.0]))
    torch.testing.assert_close(graph.softmax(scores), segment_softmax(scores, graph.dst, 3))
    # mean over in-neighbours
    torch.testing.assert_close(
        graph.propagate(x, graph.mean_values()), torch.tensor([[1.5, 1.5], [1.0, 0], [1.0, 0]])
    )


def test_rectangular_graph_by_hand():
    # 2 destinations, 3 sources: dst 0 <- src 0, 2; dst 1 <- src 1.
    graph = EdgeGraph(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]), n_dst=2, n_src=3)
    x = torch.tensor([[1.0], [10.0], [100.0]])
    torch.testing.assert_close(graph.propagate(x, torch.ones(3)), torch.tensor([[101.0], [10.0]]))
    a = torch.tensor([[2.0], [3.0]])
    torch.testing.assert_close(graph.edge_dot(a, x), torch.tensor([2.0, 200.0, 30.0]))


def test_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, 5, (12,), generator=gen)
    dst = torch.randint(0, 4, (12,), generator=gen)
    graph = EdgeGraph(src, dst, n_dst=4, n_src=5)
    x = torch.randn(5, 3, dtype=torch.double, generator=gen, requires_grad=True)
    a = torch.randn(4, 3, dtype=torch.double, generator=gen, requires_grad=True)
    values = torch.rand(graph.n_edges, dtype=torch.double, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, y: graph.propagate(y, v), (values, x))
    assert torch.autograd.gradcheck(lambda p, y: graph.edge_dot(p, y), (a, x))


def test_gradients_equal_gather_scatter():
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, 6, (20,), generator=gen)
    dst = torch.randint(0, 6, (20,), generator=gen)
    graph = EdgeGraph(src, dst, 6)
    x = torch.randn(6, 4, generator=gen, requires_grad=True)
    values = graph.softmax(graph.edge_dot(x, x))
    out = graph.propagate(x, values).pow(2).sum()
    grad = torch.autograd.grad(out, x)[0]
    x2 = x.detach().clone().requires_grad_()
    s, d = graph.src, graph.dst
    values2 = segment_softmax((x2[d] * x2[s]).sum(-1), d, 6)
    out2 = torch.zeros(6, 4).index_add(0, d, x2[s] * values2[:, None]).pow(2).sum()
    grad2 = torch.autograd.grad(out2, x2)[0]
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(grad, grad2)


def test_follows_the_module_device_and_dtype():
    graph = EdgeGraph(SRC, DST, 3)
    assert graph.state_dict() == {}  # index buffers are not checkpointed
    graph = graph.double()
    assert graph.src.dtype == torch.int64
