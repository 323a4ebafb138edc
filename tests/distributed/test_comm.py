"""The communicator seam without MPI: the split rule, the argument checks, the local world."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gpudense.distributed import CollectiveError, LocalCommunicator, MismatchError, split_rows


def load_fakes():
    spec = importlib.util.spec_from_file_location("fakes", Path(__file__).with_name("fakes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n", [0, 1, 2, 5, 32, 33, 37, 100])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_split_rows_covers_every_row_once_in_rank_order(n, size):
    parts = [split_rows(n, size, r) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(parts[r][1] == parts[r + 1][0] for r in range(size - 1))  # contiguous, in rank order
    counts = [stop - start for start, stop in parts]
    assert max(counts) - min(counts) <= 1
    assert counts == sorted(counts, reverse=True)  # the remainder goes to the lower ranks
    assert counts == [len(a) for a in np.array_split(np.arange(n), size)]


def test_split_rows_gives_nothing_to_ranks_beyond_a_small_batch():
    assert [split_rows(2, 4, r) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]


@pytest.mark.parametrize("args, word", [((-1, 2, 0), "n"), ((4, 0, 0), "size"), ((4, 2, 2), "rank"),
                                        ((4, 2, -1), "rank"), ((True, 2, 0), "n"), ((4.0, 2, 0), "n")])
def test_split_rows_rejects_bad_arguments(args, word):
    with pytest.raises(ValueError, match=word):
        split_rows(*args)


def test_local_world_leaves_arrays_as_they_are():
    comm = LocalCommunicator()
    a = np.array([1.5, -2.0])
    assert comm.allreduce(a) is a and a.tolist() == [1.5, -2.0]
    assert comm.allreduce(a, op="mean").tolist() == [1.5, -2.0]
    assert comm.broadcast(a, root=0) is a
    assert comm.allgather_object({"x": 1}) == [{"x": 1}]
    assert comm.broadcast_object("y") == "y"
    comm.barrier()
    assert (comm.rank, comm.size, comm.kind) == (0, 1, "local")
    assert "local, 1 rank" == comm.describe()


def test_sum_and_mean_over_mirrored_ranks():
    comm = load_fakes().Mirror(size=3)
    a = np.array([1.0, 2.0])
    assert comm.allreduce(a).tolist() == [3.0, 6.0]
    b = np.array([1.0, 2.0])
    assert comm.allreduce(b, op="mean").tolist() == [1.0, 2.0]
    empty = np.zeros(0)
    comm.allreduce(empty)
    assert not any(x is empty for x in comm.seen)  # nothing to send: no collective


def test_collectives_check_their_arguments():
    comm = load_fakes().Mirror(size=2)
    with pytest.raises(ValueError, match="op must be one of"):
        comm.allreduce(np.ones(2), op="max")
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(np.ones((3, 4))[:, ::2])
    with pytest.raises(TypeError, match="floating"):
        comm.allreduce(np.ones(2, np.int64), op="mean")
    with pytest.raises(TypeError, match="numpy.ndarray"):
        comm.allreduce([1.0, 2.0])
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 2\)"):
        comm.broadcast(np.ones(2), root=2)
    with pytest.raises(ValueError, match="root"):
        comm.broadcast_object(1, root=-1)


def test_an_engine_that_takes_only_cupy_arrays_says_so():
    fakes = load_fakes()

    class GpuOnly(fakes.Mirror):
        kind = "nccl"
        array_kinds = ("cupy",)

    with pytest.raises(TypeError, match="the nccl communicator's allreduce takes a cupy.ndarray; got numpy"):
        GpuOnly().allreduce(np.ones(2))


def test_integer_sums_are_allowed():
    a = np.array([1, 2], np.int64)
    assert load_fakes().Mirror(size=2).allreduce(a).tolist() == [2, 4]


def test_a_mismatch_is_a_collective_value_error():
    assert issubclass(MismatchError, CollectiveError) and issubclass(MismatchError, ValueError)
    assert issubclass(CollectiveError, RuntimeError)


@pytest.mark.parametrize("comm", [LocalCommunicator(), load_fakes().Mirror(size=2)], ids=["local", "mirror"])
@pytest.mark.parametrize("call", ["allreduce", "broadcast"])
def test_a_read_only_array_is_refused_in_words(comm, call):
    a = np.ones(3)
    a.flags.writeable = False
    with pytest.raises(ValueError, match=rf"^{call} writes its result into the array it is given, which is "
                                         r"read-only; got a read-only .*\(pass a writable copy, a.copy\(\)\)$"):
        getattr(comm, call)(a)
