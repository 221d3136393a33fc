"""The user-user co-occurrence graph (DualGNN, DRAGON): building, reading MMRec's file safely, sampling."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from numpy.lib import format as npy_format

from robustrec.errors import ConfigError, DataError
from robustrec.models import user_graph as ug
from robustrec.models.graph import spmm
from robustrec.models.user_graph import (
    UserGraph,
    aggregation_matrices,
    aggregation_matrix,
    cooccurrence_graph,
    expected_neighbours,
    read_user_graph_dict,
    sample_neighbours,
    user_graph,
)
from tests.conftest import make_tiny_dataset

#: 4 users x 5 items. Shared items: (0,1) 2, (0,2) 1, (1,2) 2, (0,3) 0, (1,3) 0, (2,3) 1.
INTERACTIONS = np.array([
    [1, 1, 1, 0, 0],
    [1, 1, 0, 1, 0],
    [0, 1, 0, 1, 1],
    [0, 0, 0, 0, 1],
], dtype=np.float32)


def as_lists(graph: UserGraph) -> list[tuple[list[int], list[float]]]:
    return [(n.tolist(), c.tolist()) for n, c in zip(graph.neighbours, graph.counts)]


# ---- building ------------------------------------------------------------------------------------


def test_cooccurrence_graph_of_a_hand_computed_example():
    graph = cooccurrence_graph(sp.csr_matrix(INTERACTIONS))
    # by count, then (ties) lower id first; no self loops; user 3 only meets user 2
    assert as_lists(graph) == [
        ([1, 2], [2.0, 1.0]),
        ([0, 2], [2.0, 2.0]),
        ([1, 0, 3], [2.0, 1.0, 1.0]),
        ([2], [1.0]),
    ]
    assert graph.source == "built from 10 training interactions"
    assert all(n.dtype == np.int64 and c.dtype == np.float32 for n, c in zip(graph.neighbours, graph.counts))


def test_cooccurrence_graph_keeps_the_top_limit_and_counts_interactions_once():
    matrix = sp.csr_matrix(INTERACTIONS * 3.0)  # weights other than 1 are still one interaction
    graph = cooccurrence_graph(matrix, limit=1)
    assert as_lists(graph) == [([1], [2.0]), ([0], [2.0]), ([1], [2.0]), ([2], [1.0])]


def test_an_explicitly_stored_zero_is_no_interaction():
    rows, cols = INTERACTIONS.nonzero()
    # stored, but zero: user 3 did not interact with item 0
    matrix = sp.csr_matrix((np.r_[np.ones(len(rows)), 0.0], (np.r_[rows, 3], np.r_[cols, 0])), shape=(4, 5))
    assert matrix.nnz == 11
    graph = cooccurrence_graph(matrix)
    assert as_lists(graph) == as_lists(cooccurrence_graph(sp.csr_matrix(INTERACTIONS)))


def test_a_user_without_co_interactions_has_no_neighbours():
    matrix = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32))
    graph = cooccurrence_graph(matrix)
    assert [len(n) for n in graph.neighbours] == [0, 1, 1, 0]


def dense_reference(matrix: sp.csr_matrix, limit: int) -> list[tuple[list[int], list[float]]]:
    """MMRec's preprocessing restated on a dense matrix, ties broken by the lower id."""
    binary = (matrix.toarray() > 0).astype(np.int64)
    shared = binary @ binary.T
    np.fill_diagonal(shared, 0)
    out = []
    for row in shared:
        users = [u for u in sorted(range(len(row)), key=lambda u: (-row[u], u)) if row[u] > 0][:limit]
        out.append((users, [float(row[u]) for u in users]))
    return out


def test_cooccurrence_graph_equals_the_dense_reference_in_any_chunking(tiny, monkeypatch):
    expected = dense_reference(tiny.train_matrix, limit=7)
    assert as_lists(cooccurrence_graph(tiny.train_matrix, limit=7)) == expected
    monkeypatch.setattr(ug, "_ROWS_PER_CHUNK", 3)  # 40 users in 14 chunks
    assert as_lists(cooccurrence_graph(tiny.train_matrix, limit=7)) == expected


def test_the_graph_is_read_only():
    graph = cooccurrence_graph(sp.csr_matrix(INTERACTIONS))
    with pytest.raises(ValueError):
        graph.neighbours[0][0] = 3
    with pytest.raises(ValueError):
        graph.counts[0][0] = 3.0


def test_bad_limit_is_a_config_error():
    with pytest.raises(ConfigError, match="limit must be an integer >= 1"):
        cooccurrence_graph(sp.csr_matrix(INTERACTIONS), limit=0)


# ---- reading MMRec's file ----------------------------------------------------------------------------

MMREC_DICT = {0: [[1, 2], [2.0, 1.0]], 1: [[0, 2], [2.0, 2.0]], 2: [[1, 0, 3], [2.0, 1.0, 1.0]], 3: [[2], [1.0]]}


def save(path: Path, content) -> Path:
    """What ``np.save(path, content, allow_pickle=True)`` writes for a dict: a 0-d object array."""
    array = np.empty((), dtype=object)
    array[()] = content
    np.save(path, array, allow_pickle=True)
    return path


def save_with_protocol(path: Path, content, protocol: int, numpy1_names: bool = False) -> Path:
    """An .npy file as numpy 1.x wrote it: pickle protocol 3 and the ``numpy.core`` module names."""
    array = np.empty((), dtype=object)
    array[()] = content
    payload = pickle.dumps(array, protocol=protocol)
    if numpy1_names:
        assert protocol <= 3  # GLOBAL opcodes: names in plain text, no length prefixes to fix
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with path.open("wb") as stream:
        npy_format.write_array_header_1_0(stream, npy_format.header_data_from_array_1_0(array))
        stream.write(payload)
    return path


def test_reads_the_dict_np_save_writes(tmp_path):
    graph = read_user_graph_dict(save(tmp_path / "g.npy", MMREC_DICT), 4)
    assert as_lists(graph) == [(v[0], v[1]) for _, v in sorted(MMREC_DICT.items())]
    assert graph.source == f"read from {tmp_path / 'g.npy'}"


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_reads_other_pickle_protocols_and_numpy1_names(tmp_path, protocol):
    path = save_with_protocol(tmp_path / "g.npy", MMREC_DICT, protocol, numpy1_names=protocol == 3)
    if protocol == 3:
        assert b"numpy.core.multiarray" in path.read_bytes()
    assert as_lists(read_user_graph_dict(path, 4)) == [(v[0], v[1]) for _, v in sorted(MMREC_DICT.items())]


def test_reads_numpy_numbers_and_arrays_in_the_lists(tmp_path):
    content = {
        np.int64(0): [[np.int64(1), np.int32(2)], [np.float32(2.0), np.float64(1.5)]],
        1: [np.array([0], dtype=np.int64), np.array([2.0], dtype=np.float32)],
        2: [np.array([0, 1], dtype=">i4"), [np.int16(3), 1]],  # big-endian, ints as counts
        3: [[], []],
    }
    graph = read_user_graph_dict(save(tmp_path / "g.npy", content), 4)
    assert as_lists(graph) == [([1, 2], [2.0, 1.5]), ([0], [2.0]), ([0, 1], [3.0, 1.0]), ([], [])]


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_calls_os_system_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = save(tmp_path / "evil.npy", {0: [[1], [1.0]], 1: [[0], [_RunsACommand(marker)]]})
    # the file really is an attack: numpy's loader with pickles allowed would run it
    assert b"system" in path.read_bytes()
    with pytest.raises(DataError) as error:
        read_user_graph_dict(path, 2)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "system" in message
    assert not marker.exists()


class _CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


class _NumpyOtherFunction:
    def __reduce__(self):
        return np.load, ("/etc/passwd",)


@pytest.mark.parametrize("payload", [_CallsEval(), _NumpyOtherFunction(), {1, 2}, bytearray(b"x")],
                         ids=["builtins.eval", "numpy.load", "a set", "a bytearray"])
def test_anything_np_save_does_not_write_for_numbers_is_refused(tmp_path, payload):
    path = save(tmp_path / "g.npy", {0: [[1], [1.0]], 1: [[0], [payload]]})
    with pytest.raises(DataError, match="refused"):
        read_user_graph_dict(path, 2)


@pytest.mark.parametrize(("content", "reason"), [
    ({0: [[1], [1.0]], 1: [[5], [1.0]]}, "neighbour id 5 is out of range"),
    ({0: [[1], [1.0]], 1: [[-1], [1.0]]}, "neighbour id -1 is out of range"),
    ({0: [[1], [1.0]], 7: [[0], [1.0]]}, "user id 7 is out of range"),
    ({0: [[1], [1.0]]}, "has 1 users but the dataset has 2"),
    ({0: [[1], [1.0, 2.0]], 1: [[0], [1.0]]}, "user 0 has 1 neighbours but 2 counts"),
    ({0: [[1], [float("nan")]], 1: [[0], [1.0]]}, "NaN or inf"),
    ({0: [[1], [float("inf")]], 1: [[0], [1.0]]}, "NaN or inf"),
    ({0: [[1], [1e300]], 1: [[0], [1.0]]}, "NaN or inf"),
    ({0: [[1.0], [1.0]], 1: [[0], [1.0]]}, "neighbour ids must be integers"),
    ({0: [[True], [1.0]], 1: [[0], [1.0]]}, "expected lists of numbers"),
    ({0: [[1], ["2"]], 1: [[0], [1.0]]}, "expected lists of numbers"),
    ({0: [[1]], 1: [[0], [1.0]]}, "expected \\[neighbours, counts\\]"),
    ({"0": [[1], [1.0]], 1: [[0], [1.0]]}, "user ids must be integers"),
    ([[1], [1.0]], "expected a dict"),
])
def test_inconsistent_content_is_a_one_line_data_error(tmp_path, content, reason):
    path = save(tmp_path / "g.npy", content)
    with pytest.raises(DataError, match=reason) as error:
        read_user_graph_dict(path, 2)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_files_that_are_not_a_pickled_dict_are_refused(tmp_path):
    numeric = tmp_path / "numeric.npy"
    np.save(numeric, np.arange(3))
    with pytest.raises(DataError, match="expected a pickled dict"):
        read_user_graph_dict(numeric, 2)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="not a .npy file"):
        read_user_graph_dict(garbage, 2)
    good = save(tmp_path / "good.npy", {0: [[1], [1.0]], 1: [[0], [1.0]]}).read_bytes()
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good[:-20])
    with pytest.raises(DataError, match="not a pickle"):
        read_user_graph_dict(truncated, 2)
    with pytest.raises(DataError, match="cannot read"):
        read_user_graph_dict(tmp_path / "absent.npy", 2)


def test_the_interpreter_never_calls_pickle(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    graph = read_user_graph_dict(save(tmp_path / "g.npy", MMREC_DICT), 4)
    assert graph.n_users == 4


def test_reading_what_building_gives(tmp_path):
    """The file MMRec's script would write for a graph reads back as that graph."""
    built = cooccurrence_graph(sp.csr_matrix(INTERACTIONS))
    content = {u: [n.tolist(), c.tolist()] for u, (n, c) in enumerate(zip(built.neighbours, built.counts))}
    assert as_lists(read_user_graph_dict(save(tmp_path / "g.npy", content), 4)) == as_lists(built)


# ---- which graph a dataset uses ----------------------------------------------------------------------


def test_user_graph_builds_without_a_file_and_caches_across_feature_copies(tiny):
    graph = user_graph(tiny)
    assert graph.source.startswith("built from") and graph.n_users == tiny.n_users
    assert user_graph(tiny.with_features(tiny.features.replace(text=None))) is graph
    assert user_graph(tiny, limit=3) is not graph
    assert max(len(n) for n in user_graph(tiny, limit=3).neighbours) == 3


def test_user_graph_reads_the_dataset_folders_file(tmp_path):
    dataset = make_tiny_dataset(root=tmp_path, n_users=4, n_items=10)
    built = user_graph(dataset)
    assert built.source.startswith("built from")
    # a file that differs from the built graph (only user 0's neighbours are swapped)
    content = {u: [n.tolist(), c.tolist()] for u, (n, c) in enumerate(zip(built.neighbours, built.counts))}
    content[0] = [[3, 2], [9.0, 8.0]]
    save(tmp_path / "user_graph_dict.npy", content)
    graph = user_graph(dataset)
    assert graph.source == f"read from {tmp_path / 'user_graph_dict.npy'}"
    assert as_lists(graph)[0] == ([3, 2], [9.0, 8.0])
    assert as_lists(user_graph(dataset, limit=1))[0] == ([3], [9.0])
    # a changed file is read again
    content[0] = [[1], [5.0]]
    save(tmp_path / "user_graph_dict.npy", content)
    os.utime(tmp_path / "user_graph_dict.npy", ns=(1, 10**18))
    assert as_lists(user_graph(dataset))[0] == ([1], [5.0])


def test_user_graph_refuses_a_bad_file_in_the_dataset_folder(tmp_path):
    dataset = make_tiny_dataset(root=tmp_path, n_users=4, n_items=10)
    save(tmp_path / "user_graph_dict.npy", {0: [[1], [1.0]]})
    with pytest.raises(DataError, match="has 1 users but the dataset has 4"):
        user_graph(dataset)


# ---- MMRec's per-epoch sample ----------------------------------------------------------------------

#: user 0: 3 neighbours, user 1: 1, user 2: none, user 3: 5 (more than k = 4), users 4 and 5: 1
SAMPLING = UserGraph(
    neighbours=tuple(np.array(x, dtype=np.int64) for x in ([1, 3, 2], [0], [], [0, 1, 5, 4, 2], [3], [3])),
    counts=tuple(np.array(x, dtype=np.float32) for x in ([3.0, 2.0, 1.0], [3.0], [], [4.0, 3.0, 2.0, 1.0, 1.0],
                                                          [1.0], [2.0])),
    source="test",
)


def mmrec_topk_sample(graph: UserGraph, k: int, mode: str, uniform: np.ndarray):
    """MMRec's topk_sample restated literally, its np.random.randint(0, len(list)) replaced by
    floor(uniform[u, len(list)] * len(list)) (the draws sample_neighbours makes)."""
    index, weights = [], torch.zeros(graph.n_users, k)
    for u in range(graph.n_users):
        sample, counts = graph.neighbours[u].tolist()[:k], graph.counts[u].tolist()[:k]
        if not sample:
            index.append([0] * k)
            continue
        while len(sample) < k:
            r = int(uniform[u, len(sample)] * len(sample))
            sample.append(sample[r])
            counts.append(counts[r])
        index.append(sample)
        weights[u] = torch.softmax(torch.tensor(counts), 0) if mode == "softmax" else torch.ones(k) / k
    return torch.tensor(index), weights


@pytest.mark.parametrize("mode", ["softmax", "mean"])
def test_sample_neighbours_is_mmrecs_topk_sample(mode):
    k = 7  # user 0 pads 4 slots: copies of copies can be drawn
    for seed in range(10):
        index, weights = sample_neighbours(SAMPLING, k, mode, torch.Generator().manual_seed(seed))
        uniform = torch.rand((SAMPLING.n_users, k), generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64).numpy()
        expected_index, expected_weights = mmrec_topk_sample(SAMPLING, k, mode, uniform)
        assert index.dtype == torch.int64 and index.shape == (6, k) and weights.shape == (6, k)
        assert torch.equal(index, expected_index)
        torch.testing.assert_close(weights, expected_weights)


def test_sample_neighbours_invariants():
    k = 6
    for seed in range(20):
        index, weights = sample_neighbours(SAMPLING, k, "softmax", torch.Generator().manual_seed(seed))
        for u in range(SAMPLING.n_users):
            own = SAMPLING.neighbours[u].tolist()
            if not own:  # MMRec's zero row: neighbour 0, weight 0
                assert index[u].tolist() == [0] * k and weights[u].tolist() == [0.0] * k
                continue
            assert index[u, : min(len(own), k)].tolist() == own[:k]  # the list itself comes first
            assert set(index[u].tolist()) <= set(own)  # padding repeats its own neighbours only
            torch.testing.assert_close(weights[u].sum(), torch.tensor(1.0))
            count_of = dict(zip(own, SAMPLING.counts[u].tolist()))
            torch.testing.assert_close(weights[u], torch.softmax(torch.tensor([count_of[n] for n in index[u].tolist()]), 0))


def test_the_padding_comes_from_the_generator():
    def draw(seed):
        return sample_neighbours(SAMPLING, 8, "softmax", torch.Generator().manual_seed(seed))

    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1)))
    assert not torch.equal(draw(1)[0], draw(2)[0])
    # users with at least k neighbours are not random
    assert len({tuple(draw(s)[0][3, :4].tolist()) for s in range(5)}) == 1
    global_state = torch.random.get_rng_state()
    draw(3)
    assert torch.equal(torch.random.get_rng_state(), global_state)


def test_expected_neighbours_counts_each_neighbour_once():
    index, weights = expected_neighbours(SAMPLING, 4, "softmax")
    assert index.tolist() == [[1, 3, 2, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 5, 4], [3, 3, 3, 3], [3, 3, 3, 3]]
    expected = torch.zeros(6, 4)
    expected[0, :3] = torch.softmax(torch.tensor([3.0, 2.0, 1.0]), 0)
    expected[[1, 4, 5], 0] = 1.0
    expected[3] = torch.softmax(torch.tensor([4.0, 3.0, 2.0, 1.0]), 0)
    torch.testing.assert_close(weights, expected)
    _, mean = expected_neighbours(SAMPLING, 4, "mean")
    one = [1.0, 0, 0, 0]
    torch.testing.assert_close(mean, torch.tensor([[1 / 3] * 3 + [0], one, [0] * 4, [0.25] * 4, one, one]))


def test_expected_neighbours_is_the_sample_for_users_with_k_neighbours():
    sampled = sample_neighbours(SAMPLING, 3, "softmax", torch.Generator().manual_seed(0))
    expected = expected_neighbours(SAMPLING, 3, "softmax")
    for s, e in zip(sampled, expected):
        assert torch.equal(s[[0, 2, 3]], e[[0, 2, 3]])  # users 0 and 3 have >= 3 neighbours, 2 none


@pytest.mark.parametrize(("k", "mode", "message"), [
    (0, "softmax", "k must be an integer >= 1"),
    (2.5, "softmax", "k must be an integer >= 1"),
    (4, "max", "mode must be one of softmax, mean"),
])
def test_bad_sampling_options_are_config_errors(k, mode, message):
    with pytest.raises(ConfigError, match=message):
        sample_neighbours(SAMPLING, k, mode, torch.Generator())
    with pytest.raises(ConfigError, match=message):
        expected_neighbours(SAMPLING, k, mode)


def test_aggregation_matrices_compute_mmrecs_weighted_gather():
    index, weights = sample_neighbours(SAMPLING, 6, "softmax", torch.Generator().manual_seed(4))
    x = torch.randn(SAMPLING.n_users, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    reference = torch.matmul(weights.unsqueeze(1), x[index]).squeeze(1)  # MMRec's User_Graph_sample
    adj, adj_t = aggregation_matrices(index, weights)
    out = spmm(adj, x, adj_t)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(torch.sparse.mm(aggregation_matrix(index, weights), x), reference)
    torch.testing.assert_close(adj_t.to_dense(), adj.to_dense().T)
    g = torch.randn_like(reference)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(reference, x, g)[0])
    # repeated neighbours are summed into one entry, zero weights dropped
    assert adj.values().numel() == len({(u, n) for u in range(6) for n, w in zip(index[u].tolist(), weights[u].tolist()) if w})

