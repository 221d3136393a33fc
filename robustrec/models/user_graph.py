"""The user-user co-occurrence graph of DualGNN and DRAGON, built in memory or read safely from MMRec.

MMRec's DualGNN and DRAGON read ``user_graph_dict.npy`` from the dataset folder. MMRec's preprocessing
script (``preprocessing/dualgnn-gen-u-u-matrix.py``) writes it: for every user, the other users who
share at least one TRAINING item with them, ordered by the number of items they share (``torch.topk``
of a dense users x users count matrix), at most 200, saved as a pickled dict
``{user: [neighbour ids, shared-item counts]}``. Users of MMRec ask where that file comes from;
here it is:

- :func:`cooccurrence_graph` builds the same graph from the training matrix, in memory and in row
  chunks of a sparse ``A @ A.T`` (never a dense users x users matrix). Ties in the count are ordered
  by the lower user id first; ``torch.topk`` leaves the order of ties unspecified, so MMRec's file may
  order tied neighbours differently (the same neighbours and counts otherwise) and, where the 200-th
  place falls inside a tie, keep other neighbours of the same count. On ml100k-mm (943 users) both
  lists are, for every user, a top 200 of the same counts; 890 users have their 200th place inside a
  tie, and no user's tied neighbours come in the same order (``torch.topk``'s is arbitrary);
- :func:`read_user_graph_dict` reads MMRec's file WITHOUT unpickling it (see its docstring);
- :func:`user_graph` picks one of the two for a dataset (the file when the dataset folder has one)
  and caches the result, since DualGNN/DRAGON rebuild their graphs on every ``with_features()``;
- :func:`sample_neighbours` is MMRec's per-epoch ``topk_sample`` (identical in dualgnn.py and
  dragon.py); :func:`expected_neighbours` is its deterministic counterpart for inference;
- :func:`aggregation_matrix` / :func:`aggregation_matrices` turn either into a sparse users x users
  matrix (COO; or CSR with its transpose) for ``graph.spmm``.
"""

from __future__ import annotations

import math
import pickletools
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp
import torch
from numpy.lib import format as npy_format

from robustrec import checks
from robustrec.data.dataset import Dataset
from robustrec.errors import DataError, first_line

#: MMRec's file name (its ``user_graph_dict_file`` setting).
USER_GRAPH_FILE = "user_graph_dict.npy"
#: The user aggregation modes of MMRec's ``topk_sample``.
USER_AGGR_MODES = ("softmax", "mean")
_ROWS_PER_CHUNK = 2048


@dataclass(frozen=True, eq=False)
class UserGraph:
    """Per user: neighbour ids (most shared items first) and the matching counts (float32).

    The arrays are read-only views of one flat array each, since one graph is shared (cached) by
    every model built on the same interactions. ``source`` says where the graph came from, e.g.
    ``"built from 79,790 training interactions"`` or ``"read from /data/x/user_graph_dict.npy"``.
    """

    neighbours: tuple[np.ndarray, ...]
    counts: tuple[np.ndarray, ...]
    source: str

    @classmethod
    def from_flat(cls, indptr: np.ndarray, neighbours: np.ndarray, counts: np.ndarray, source: str) -> UserGraph:
        """A graph from CSR-like arrays: user ``u``'s neighbours are ``neighbours[indptr[u]:indptr[u+1]]``."""
        neighbours = np.ascontiguousarray(neighbours, dtype=np.int64)
        counts = np.ascontiguousarray(counts, dtype=np.float32)
        neighbours.flags.writeable = False
        counts.flags.writeable = False
        cuts = indptr[1:-1]
        return cls(tuple(np.split(neighbours, cuts)), tuple(np.split(counts, cuts)), source)

    @property
    def n_users(self) -> int:
        return len(self.neighbours)

    @cached_property
    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, neighbours, counts)``: the graph as three flat arrays (what the samplers use)."""
        lengths = np.array([len(n) for n in self.neighbours], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        empty_ids, empty_counts = np.zeros(0, np.int64), np.zeros(0, np.float32)
        neighbours = np.concatenate([empty_ids, *self.neighbours]).astype(np.int64, copy=False)
        counts = np.concatenate([empty_counts, *self.counts]).astype(np.float32, copy=False)
        return indptr, neighbours, counts

    def truncated(self, limit: int) -> UserGraph:
        """At most ``limit`` neighbours per user (the first ones)."""
        if all(len(n) <= limit for n in self.neighbours):
            return self
        return UserGraph(tuple(n[:limit] for n in self.neighbours), tuple(c[:limit] for c in self.counts),
                         self.source)


# ---- building -------------------------------------------------------------------------------------


def cooccurrence_graph(train_matrix: sp.spmatrix, limit: int = 200) -> UserGraph:
    """Every user's ``limit`` users with the most training items in common (MMRec's preprocessing).

    The count of shared items is ``A @ A.T`` of the binary user x item matrix A, diagonal removed;
    users sharing nothing are no neighbours. Neighbours are ordered by count, ties by the lower user
    id first (deterministic; MMRec's ``torch.topk`` leaves ties unordered). Rows are done in chunks of
    a sparse product, so memory follows the number of co-occurring pairs, not users squared.
    """
    limit = checks.count("user graph", "limit", limit)
    binary = sp.csr_matrix(train_matrix, dtype=np.int32, copy=True)
    binary.sum_duplicates()
    binary.eliminate_zeros()  # an explicit zero is no interaction
    binary.data[:] = 1
    transposed = binary.T.tocsr()
    n_users = binary.shape[0]
    lengths, neighbours, counts = [], [], []
    for start in range(0, n_users, _ROWS_PER_CHUNK):
        stop = min(start + _ROWS_PER_CHUNK, n_users)
        rows, cols, shared = _top_shared(binary[start:stop] @ transposed, start, limit)
        lengths.append(np.bincount(rows - start, minlength=stop - start))
        neighbours.append(cols)
        counts.append(shared)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths or [np.zeros(0, np.int64)]))])
    return UserGraph.from_flat(
        indptr.astype(np.int64),
        np.concatenate(neighbours or [np.zeros(0, np.int64)]),
        np.concatenate(counts or [np.zeros(0, np.float32)]),
        f"built from {binary.nnz:,} training interactions",
    )


def _top_shared(block: sp.spmatrix, offset: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, neighbour, count) of one row block of ``A @ A.T``: no self pairs, per user the ``limit``
    largest counts, sorted by user, then count (descending), then neighbour id."""
    block = block.tocsr()
    n_rows, n_cols = block.shape
    local = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(block.indptr))
    cols = block.indices.astype(np.int64)
    shared = block.data.astype(np.int64)
    keep = local + offset != cols
    local, cols, shared = local[keep], cols[keep], shared[keep]
    # one integer sort key for (row, -count, col): (row, col) pairs are unique, so no ties remain
    top = int(shared.max()) if len(shared) else 0
    if float(n_rows) * (top + 1) * max(n_cols, 1) < 2**62:
        order = np.argsort((local * (top + 1) + (top - shared)) * n_cols + cols)
    else:
        order = np.lexsort((cols, -shared, local))
    local, cols, shared = local[order], cols[order], shared[order]
    per_row = np.bincount(local, minlength=n_rows)
    rank = np.arange(len(local)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    keep = rank < limit
    return local[keep] + offset, cols[keep], shared[keep].astype(np.float32)


# ---- reading MMRec's file without unpickling it ------------------------------------------------------


def read_user_graph_dict(path: Path, n_users: int) -> UserGraph:
    """MMRec's ``user_graph_dict.npy``, read WITHOUT unpickling it.

    The file is a ``.npy`` of a 0-d object array whose payload is a pickle of
    ``{user: [neighbour ids, counts]}``. ``pickle.load`` would run whatever callable the file names
    (``os.system`` included), so instead the pickle's opcodes are walked with ``pickletools.genops``,
    which only decodes them, and the few that ``np.save`` writes for such a dict are interpreted here.
    numpy's ``_reconstruct`` / ``ndarray`` / ``dtype`` / ``scalar`` are accepted as names, never
    imported or called: they only mark where an array, a dtype or a numpy number (e.g. an ``int64``
    in the lists) is built, from plain bytes of a numeric type. Any other opcode or global, a user id
    out of range, users missing, mismatched list lengths, or a NaN/inf count is a one-line
    :class:`DataError` naming the file. The order of each user's list is kept as the file has it.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            _check_npy_header(stream, path)
            value = _PickleInterpreter(path).run(stream)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {first_line(exc)}") from None
    return _graph_from_dict(_unwrap_0d(value, path), n_users, path)


def _check_npy_header(stream: BinaryIO, path: Path) -> None:
    """Read the ``.npy`` header (numpy's own parser evaluates literals only) and require a 0-d object array."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise DataError(f"{path}: not a .npy file numpy writes: {first_line(exc, 200)}") from None
    if dtype != np.dtype(object) or shape != ():
        raise DataError(f"{path}: expected a pickled dict (a 0-d object array), got dtype {dtype} and shape {shape}")


#: The globals np.save writes for an object array holding numbers, lists and dicts (numpy 1 and 2 names).
_NUMPY_NAMES = {
    "numpy.core.multiarray _reconstruct": "reconstruct",
    "numpy._core.multiarray _reconstruct": "reconstruct",
    "numpy ndarray": "ndarray",
    "numpy dtype": "dtype",
    "numpy.core.multiarray scalar": "scalar",
    "numpy._core.multiarray scalar": "scalar",
}
#: Plain numeric dtypes (bool, signed and unsigned integers, floats), the only ones decoded from bytes.
_NUMERIC_DTYPE = re.compile(r"[biuf][1248]")


class _Malformed(Exception):
    """Raised inside the interpreter; turned into a DataError naming the file."""


@dataclass(frozen=True)
class _NumpyName:
    """A global that names one of numpy's functions: a marker, never called."""

    role: str


class _DType:
    """A numpy dtype being unpickled: ``dtype(descr, align, copy)`` then a BUILD with its byte order."""

    def __init__(self, descr: str) -> None:
        self.descr = descr
        self.byteorder = "|"

    def numpy(self) -> np.dtype:
        if not _NUMERIC_DTYPE.fullmatch(self.descr):
            raise _Malformed(f"numbers of dtype {self.descr!r} are not supported")
        order = self.byteorder if self.byteorder in ("<", ">") else "="
        return np.dtype(order + self.descr)


class _Array:
    """An ndarray being unpickled: ``_reconstruct(ndarray, (0,), b'b')`` then a BUILD with its state."""

    value: Any = None
    built = False


#: Opcodes that push their decoded argument (numbers, strings, bytes), by far the most frequent.
_PUSH_ARGUMENT = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE",
                            "SHORT_BINUNICODE", "SHORT_BINBYTES", "BINBYTES"})
_CONSTANTS = {"NEWTRUE": True, "NEWFALSE": False, "NONE": None, "EMPTY_TUPLE": ()}


class _PickleInterpreter:
    """Interprets the opcodes ``np.save`` writes for a dict of lists of numbers: a stack machine that
    builds only ints, floats, strings, bytes, bools, None, tuples, lists, dicts and numeric arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.handlers = {
            "PROTO": self.ignore, "FRAME": self.ignore, "MARK": self.mark,
            "TUPLE1": self.tuple_of, "TUPLE2": self.tuple_of, "TUPLE3": self.tuple_of, "TUPLE": self.tuple_of,
            "EMPTY_LIST": self.empty_list, "APPEND": self.append, "APPENDS": self.appends,
            "EMPTY_DICT": self.empty_dict, "SETITEM": self.setitems, "SETITEMS": self.setitems,
            "MEMOIZE": self.put, "BINPUT": self.put, "LONG_BINPUT": self.put,
            "BINGET": self.get, "LONG_BINGET": self.get,
            "GLOBAL": self.global_name, "STACK_GLOBAL": self.global_name,
            "REDUCE": self.reduce, "BUILD": self.build,
        }

    def run(self, stream: BinaryIO) -> Any:
        try:
            # genops only decodes the opcodes and their arguments; it runs nothing
            for opcode, arg, _ in pickletools.genops(stream.read()):
                name = opcode.name
                if name in _PUSH_ARGUMENT:
                    self.stack.append(arg)
                elif name in _CONSTANTS:
                    self.stack.append(_CONSTANTS[name])
                elif name == "STOP":
                    if len(self.stack) != 1 or self.marks:
                        raise _Malformed("the pickle ends with an unbalanced stack")
                    return self.stack[0]
                elif name in self.handlers:
                    self.handlers[name](name, arg)
                else:
                    raise _Malformed(f"opcode {name} is not one np.save writes for a dict of numbers")
        except _Malformed as exc:
            raise DataError(f"{self.path}: refused: {exc} (robustrec reads this file without unpickling it)") from None
        except (ValueError, IndexError, KeyError, TypeError) as exc:  # genops on bad bytes; a bad stack
            raise DataError(f"{self.path}: not a pickle np.save writes: {first_line(exc, 200)}") from None
        raise DataError(f"{self.path}: not a pickle np.save writes: no STOP opcode")

    # ---- opcodes ----------------------------------------------------------------------------------
    def ignore(self, name: str, arg: Any) -> None:
        """PROTO and FRAME: framing only."""

    def mark(self, name: str, arg: Any) -> None:
        self.marks.append(len(self.stack))

    def tuple_of(self, name: str, arg: Any) -> None:
        values = self.pop_mark() if name == "TUPLE" else self.pop(int(name[-1]))
        self.stack.append(tuple(values))

    def empty_list(self, name: str, arg: Any) -> None:
        self.stack.append([])

    def append(self, name: str, arg: Any) -> None:
        (value,) = self.pop(1)
        self.top(list).append(value)

    def appends(self, name: str, arg: Any) -> None:
        values = self.pop_mark()
        self.top(list).extend(values)

    def empty_dict(self, name: str, arg: Any) -> None:
        self.stack.append({})

    def setitems(self, name: str, arg: Any) -> None:
        flat = self.pop(2) if name == "SETITEM" else self.pop_mark()
        if len(flat) % 2:
            raise _Malformed("SETITEMS with an odd number of values")
        target = self.top(dict)
        for key, value in zip(flat[::2], flat[1::2]):
            if not isinstance(key, (int, float, str, bool, type(None))):
                raise _Malformed(f"a dict key of type {type(key).__name__}")
            target[key] = value

    def put(self, name: str, arg: Any) -> None:
        self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.stack[-1]

    def get(self, name: str, arg: Any) -> None:
        self.stack.append(self.memo[arg])

    def global_name(self, name: str, arg: Any) -> None:
        self.stack.append(self.numpy_name(arg if name == "GLOBAL" else self.stack_global()))

    def reduce(self, name: str, arg: Any) -> None:
        func, args = self.pop(2)
        self.stack.append(self.call(func, args))

    def build(self, name: str, arg: Any) -> None:
        (state,) = self.pop(1)
        self.set_state(self.top(object), state)

    # ---- stack helpers -----------------------------------------------------------------------
    def pop(self, count: int) -> list[Any]:
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < count:
            raise _Malformed("the stack underflows")
        values = self.stack[-count:]
        del self.stack[-count:]
        return values

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise _Malformed("a MARK is missing")
        start = self.marks.pop()
        values = self.stack[start:]
        del self.stack[start:]
        return values

    def top(self, kind: type) -> Any:
        if not self.stack or not isinstance(self.stack[-1], kind):
            raise _Malformed(f"expected a {kind.__name__} on the stack")
        return self.stack[-1]

    def stack_global(self) -> str:
        module, qualname = self.pop(2)
        if not isinstance(module, str) or not isinstance(qualname, str):
            raise _Malformed("STACK_GLOBAL without two names")
        return f"{module} {qualname}"

    # ---- numpy's names, interpreted -----------------------------------------------------------
    def numpy_name(self, name: str) -> _NumpyName:
        if name not in _NUMPY_NAMES:
            raise _Malformed(f"the pickle names {name.replace(' ', '.')!r}, which is not numpy's array, dtype or scalar")
        return _NumpyName(_NUMPY_NAMES[name])

    def call(self, func: Any, args: Any) -> Any:
        """REDUCE: numpy's names, interpreted (never called)."""
        if not isinstance(func, _NumpyName) or not isinstance(args, tuple):
            raise _Malformed("a call of something other than numpy's array, dtype or scalar")
        if func.role == "reconstruct" and len(args) == 3 and args[0] == _NumpyName("ndarray"):
            return _Array()
        if func.role == "dtype" and len(args) == 3 and isinstance(args[0], str):
            return _DType(args[0])
        if func.role == "scalar" and len(args) == 2 and isinstance(args[0], _DType) and isinstance(args[1], bytes):
            dtype = args[0].numpy()
            if len(args[1]) != dtype.itemsize:
                raise _Malformed(f"a {dtype} scalar of {len(args[1])} bytes")
            return np.frombuffer(args[1], dtype=dtype)[0].item()
        raise _Malformed(f"numpy's {func.role} called with arguments it never gets from np.save")

    def set_state(self, target: Any, state: Any) -> None:
        """BUILD: a dtype's byte order, or an array's shape, dtype and data."""
        if isinstance(target, _DType) and isinstance(state, tuple) and len(state) >= 2:
            target.byteorder = state[1] if isinstance(state[1], str) else "|"
        elif isinstance(target, _Array) and not target.built and isinstance(state, tuple) and len(state) == 5:
            target.value = _array_value(state)
            target.built = True
        else:
            raise _Malformed("a BUILD np.save never writes")


def _array_value(state: tuple) -> Any:
    """An ndarray's pickled state ``(version, shape, dtype, fortran, data)`` as a list (object
    arrays) or a numpy array (numeric ones, decoded from bytes)."""
    _, shape, dtype, _, data = state
    if not isinstance(dtype, _DType) or not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape):
        raise _Malformed("an array without a valid shape and dtype")
    size = math.prod(shape)
    if dtype.descr == "O8":
        if not isinstance(data, list) or len(data) != size:
            raise _Malformed("an object array whose items do not match its shape")
        return list(data)
    if not isinstance(data, bytes):
        raise _Malformed("a numeric array without its bytes")
    numeric = dtype.numpy()
    if len(data) != size * numeric.itemsize:
        raise _Malformed(f"an array of shape {shape} with {len(data)} bytes")
    return np.frombuffer(data, dtype=numeric).reshape(shape)


def _resolved(value: Any) -> Any:
    """The value of an unpickled ndarray (the stack and the lists hold its :class:`_Array`)."""
    return value.value if isinstance(value, _Array) else value


def _unwrap_0d(value: Any, path: Path) -> dict:
    if not (isinstance(value, _Array) and isinstance(value.value, list) and len(value.value) == 1):
        raise DataError(f"{path}: the pickle does not hold a 0-d object array")
    content = _resolved(value.value[0])
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a dict {{user: [neighbours, counts]}}, got a {type(content).__name__}")
    return content


def _graph_from_dict(content: dict, n_users: int, path: Path) -> UserGraph:
    """Validate ``{user: [neighbours, counts]}`` against ``n_users`` and flatten it."""
    users = set(content)
    if not all(isinstance(u, int) and not isinstance(u, bool) for u in users):
        raise DataError(f"{path}: user ids must be integers")
    outside = sorted(u for u in users if not 0 <= u < n_users)
    if outside:
        raise DataError(f"{path}: user id {outside[0]} is out of range for {n_users} users")
    if len(users) != n_users:
        missing = min(set(range(n_users)) - users)
        raise DataError(f"{path}: has {len(users)} users but the dataset has {n_users} (user {missing} is missing)")
    lengths, all_neighbours, all_counts = [], [], []
    for user in range(n_users):
        neighbours, counts = _user_entry(content[user], user, n_users, path)
        lengths.append(len(neighbours))
        all_neighbours.append(neighbours)
        all_counts.append(counts)
    indptr = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return UserGraph.from_flat(
        indptr,
        np.concatenate([np.zeros(0, np.int64), *all_neighbours]),
        np.concatenate([np.zeros(0, np.float32), *all_counts]),
        f"read from {path}",
    )


def _user_entry(entry: Any, user: int, n_users: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _resolved(entry)
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise DataError(f"{path}: user {user}: expected [neighbours, counts]")
    neighbours, counts = (_numbers(part, user, path) for part in entry)
    if len(neighbours) != len(counts):
        raise DataError(f"{path}: user {user} has {len(neighbours)} neighbours but {len(counts)} counts")
    if neighbours.dtype.kind not in "iu":
        raise DataError(f"{path}: user {user}: neighbour ids must be integers")
    if len(neighbours) and (neighbours.min() < 0 or neighbours.max() >= n_users):
        bad = int(neighbours[(neighbours < 0) | (neighbours >= n_users)][0])
        raise DataError(f"{path}: user {user}: neighbour id {bad} is out of range for {n_users} users")
    with np.errstate(over="ignore", invalid="ignore"):
        counts32 = counts.astype(np.float32)
    if not np.isfinite(counts32).all():
        raise DataError(f"{path}: user {user}: counts contain NaN or inf (or exceed float32)")
    return neighbours.astype(np.int64), counts32


def _numbers(part: Any, user: int, path: Path) -> np.ndarray:
    """A list/tuple of plain numbers, or a 1-d numeric array, as a numpy array (bools refused)."""
    part = _resolved(part)
    if isinstance(part, np.ndarray):
        if part.ndim != 1 or part.dtype.kind == "b":
            raise DataError(f"{path}: user {user}: expected 1-d numeric arrays")
        return part
    if not isinstance(part, (list, tuple)):
        raise DataError(f"{path}: user {user}: expected lists of numbers, got a {type(part).__name__}")
    kinds = set(map(type, part))  # exact types: bool (a subclass of int) is no number here
    if not kinds <= {int, float}:
        raise DataError(f"{path}: user {user}: expected lists of numbers")
    if kinds <= {int}:
        if any(abs(x) >= 2**63 for x in part):
            raise DataError(f"{path}: user {user}: a number out of range")
        return np.array(part, dtype=np.int64)
    return np.array(part, dtype=np.float64)


# ---- which graph a dataset uses --------------------------------------------------------------------

_CACHE: OrderedDict[tuple, UserGraph] = OrderedDict()
_CACHE_SIZE = 4


def user_graph(dataset: Dataset, limit: int = 200) -> UserGraph:
    """The user-user graph of ``dataset``: MMRec's ``user_graph_dict.npy`` from the dataset folder when
    it has one (read safely, then cut to ``limit``), else built from the training interactions.

    Cached (the last few) by the interactions, ``limit`` and the file's identity (path, size, mtime),
    so the copies that ``with_features()`` builds, which share the interactions, share the graph.
    """
    limit = checks.count("user graph", "limit", limit)
    path = dataset.root / USER_GRAPH_FILE if dataset.root is not None else None
    file_key = None
    if path is not None and path.is_file():
        stat = path.stat()
        file_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    key = (dataset.interactions_fingerprint, dataset.n_users, limit, file_key)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    if file_key is not None:
        graph = read_user_graph_dict(path, dataset.n_users).truncated(limit)
    else:
        graph = cooccurrence_graph(dataset.train_matrix, limit)
    _CACHE[key] = graph
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return graph


# ---- MMRec's per-epoch neighbour sample ----------------------------------------------------------------


def sample_neighbours(
    graph: UserGraph, k: int, mode: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MMRec's ``topk_sample`` (the same in its dualgnn.py and dragon.py): ``[n_users, k]`` neighbour
    ids and weights.

    Each user takes their first ``k`` neighbours. A user with fewer (``m``) is padded to ``k`` as MMRec
    does: for each free slot ``j = m .. k-1`` in turn, a copy of a uniformly drawn earlier slot
    (``np.random.randint(0, j)`` over the list as it grows, so copies can be copied again). The weights
    are the softmax of the ``k`` counts, copies included (``mode="softmax"``), or ``1/k``
    (``"mean"``). A user with no neighbour gets neighbour 0 with weight 0, as in MMRec (its zero row).
    The random numbers come from ``generator`` (MMRec: the global numpy RNG), on its device: one
    uniform ``[n_users, k]`` draw per call, whatever needs padding. The results are CPU tensors.
    """
    k, mode = _check_sampling(k, mode)
    slots, length = _first_slots(graph, k)
    device = generator.device if generator is not None else None  # the trainer's is on the model's device
    uniform = torch.rand((graph.n_users, k), generator=generator, dtype=torch.float64, device=device).cpu().numpy()
    rows = np.arange(graph.n_users)
    for j in range(1, k):  # a loop over the k slots, not over users
        pad = (length <= j) & (length > 0)
        drawn = np.minimum((uniform[:, j] * j).astype(np.int64), j - 1)
        slots[pad, j] = slots[rows[pad], drawn[pad]]
    return _slot_weights(graph, slots, length, mode, count_copies=True)


def expected_neighbours(graph: UserGraph, k: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic counterpart of :func:`sample_neighbours`, for inference.

    Users with ``k`` neighbours or more get exactly the sampled graph (there is nothing random for
    them). A user with ``m < k`` neighbours gets them once each, weighted as if the padding had copied
    each equally often, which is its expected composition (the padding is symmetric in the ``m``
    slots): softmax of the ``m`` counts, or ``1/m``. The unused slots hold the first neighbour with
    weight 0, and a user without neighbours has neighbour 0 with weight 0, as in MMRec.
    """
    k, mode = _check_sampling(k, mode)
    slots, length = _first_slots(graph, k)
    return _slot_weights(graph, slots, length, mode, count_copies=False)


def _check_sampling(k: Any, mode: Any) -> tuple[int, str]:
    k = checks.count("user graph", "k", k)
    return k, checks.choice("user graph", "mode", mode, USER_AGGR_MODES)


def _first_slots(graph: UserGraph, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``slots[u, j]``: the position in user u's list of slot j (j for the first ``min(m, k)`` slots,
    0 elsewhere), and ``length = min(m, k)``."""
    indptr, _, _ = graph.flat
    length = np.minimum(np.diff(indptr), k)
    slots = np.tile(np.arange(k, dtype=np.int64), (graph.n_users, 1))
    slots[slots >= length[:, None]] = 0
    return slots, length


def _slot_weights(
    graph: UserGraph, slots: np.ndarray, length: np.ndarray, mode: str, count_copies: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour ids and weights of the slots. ``count_copies``: every one of the k slots counts (the
    sample); otherwise only the first ``length`` (each neighbour once)."""
    indptr, neighbours, counts = graph.flat
    k = slots.shape[1]
    has_any = length > 0
    position = np.where(has_any[:, None], indptr[:-1, None] + slots, 0)
    index = torch.from_numpy(np.where(has_any[:, None], neighbours[position] if len(neighbours) else 0, 0))
    live = np.broadcast_to(has_any[:, None], slots.shape)
    if not count_copies:
        live = live & (np.arange(k)[None, :] < length[:, None])
    live = torch.from_numpy(np.ascontiguousarray(live))
    if mode == "softmax":
        values = torch.from_numpy(counts[position] if len(counts) else np.zeros(slots.shape, np.float32))
        values = values.masked_fill(~live, float("-inf"))
        weights = torch.softmax(values, dim=1).nan_to_num(0.0)  # a row without neighbours: all -inf
    else:
        per_row = live.sum(1, keepdim=True).clamp_min(1).to(torch.float32)
        weights = live.to(torch.float32) / per_row
    return index.long(), weights.to(torch.float32)


def aggregation_matrix(index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The sparse ``n_users x n_users`` matrix G with ``(G @ x)[u] = sum_j weights[u, j] * x[index[u, j]]``
    (MMRec's ``User_Graph_sample``: ``matmul(weights, x[index])``) as a coalesced COO tensor on the
    CPU: repeated neighbours add up, zero weights are dropped. :func:`aggregation_matrices` gives it
    (and its transpose) as CSR directly, which is faster than ``graph.to_csr`` of this."""
    coo = _scipy_aggregation(index, weights).tocoo()
    indices = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data.astype(np.float32)), coo.shape,
                                   is_coalesced=True, check_invariants=False)


def aggregation_matrices(index: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`aggregation_matrix` and its transpose, both CSR on the CPU, for ``graph.spmm(G, x, G_t)``
    (the matrix is not symmetric, so the backward pass needs the transpose)."""
    matrix = _scipy_aggregation(index, weights)
    return _torch_csr(matrix), _torch_csr(matrix.T.tocsr())


def _scipy_aggregation(index: torch.Tensor, weights: torch.Tensor) -> sp.csr_matrix:
    """G as scipy CSR, whose duplicate summing and transposition are linear-time C++ (torch's COO
    coalescing sorts all ``n_users * k`` entries: about a second per epoch at 40k users)."""
    n_users, k = index.shape
    matrix = sp.csr_matrix(
        (weights.detach().cpu().numpy().reshape(-1).astype(np.float32),
         index.cpu().numpy().reshape(-1), np.arange(0, n_users * k + 1, k)),
        shape=(n_users, n_users),
    )
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor (int32 indices, as ``graph.to_csr`` makes them)."""
    index_type = np.int32 if matrix.nnz < 2**31 - 1 and max(matrix.shape) < 2**31 - 1 else np.int64
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index_type)),
            torch.from_numpy(matrix.indices.astype(index_type)),
            torch.from_numpy(matrix.data.astype(np.float32)),
            matrix.shape,
            check_invariants=False,
        )
