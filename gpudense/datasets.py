"""Your own data: features and labels from ``.npz`` or ``.npy`` files, checked, memory-mapped where they can be.

A data source (``gpudense train --data``, :func:`load_arrays`, :func:`load_dataset`) is one of:

- ``data.npz``: an archive with arrays ``x`` (features, 2-D) and ``y``
  (integer labels, 1-D); read whole into memory (a zip entry cannot be
  memory-mapped);
- ``x.npy,y.npy``: two ``.npy`` files, comma-separated; both are opened
  memory-mapped (``numpy.load(mmap_mode="r")``), so features larger than
  memory are read batch by batch, never whole;
- a directory holding ``x.npy`` and ``y.npy``: the same as the pair.

Files are never unpickled (``allow_pickle=False``; arrays of Python objects
are refused). Everything is checked before anything trains, each problem
reported on one line naming the file: a missing key or file, an empty or
truncated file, wrong ``ndim``, features and labels of different lengths,
labels that are not integers or lie below 0, NaN or inf features (checked a
chunk at a time, after the cast to the training dtype, so a value that
overflows it is caught too).

Memory-mapped features stay :class:`Rows`: a view of the file's rows (a
subset of them after a split) that reads and casts only the rows a batch
asks for. The labels are read into memory (8 bytes a sample).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from gpudense._checks import float_dtype, is_float_dtype
from gpudense._files import FileRefused
from gpudense._npz import read_npz
from gpudense.data import Dataset, stratified_split

__all__ = ["DataError", "Rows", "check_finite_rows", "load_arrays", "load_dataset", "take_rows"]

#: Bytes of features checked (and cast) at once.
CHUNK_BYTES = 16 * 2**20


class DataError(ValueError):
    """A data file cannot be read or does not hold what a dataset needs (one line naming the file)."""


class Rows:
    """Rows of a 2-D host array (a memory-mapped ``.npy``), read and cast to ``dtype`` only when indexed.

    ``rows[key]`` (a slice or an integer index array) returns a NumPy array
    of those rows in ``dtype`` (a read-only view of the file where no copy is
    needed: a slice of all rows, in the file's dtype); nothing else reads the
    file. ``rows[:]`` gives them all.

    Args:
        base: The 2-D array, e.g. ``numpy.load(path, mmap_mode="r")``.
        index: Which rows of ``base`` (an int array, in order), or None for all.
        dtype: The dtype rows are returned in (default ``base``'s).

    Example:
        >>> rows = Rows(np.arange(12).reshape(6, 2), index=np.array([1, 4]), dtype="float32")
        >>> rows.shape, rows[:].tolist()
        ((2, 2), [[2.0, 3.0], [8.0, 9.0]])
    """

    ndim = 2

    def __init__(self, base: Any, index: Any = None, dtype: Any = None) -> None:
        if getattr(base, "ndim", None) != 2:
            raise ValueError(f"Rows needs a 2-D array; got {type(base).__name__} of ndim {getattr(base, 'ndim', None)}")
        self.base = base
        self.index = None if index is None else np.asarray(index, np.int64)
        self.dtype = np.dtype(base.dtype if dtype is None else dtype)
        n = base.shape[0] if self.index is None else self.index.shape[0]
        self.shape = (int(n), int(base.shape[1]))

    @property
    def nbytes(self) -> int:
        """Bytes of the rows in ``dtype``."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key if self.index is None else self.index[key]
        return np.asarray(self.base[rows], dtype=self.dtype)

    def to(self, backend: Any) -> Any:
        """These rows on ``backend``: ``self`` on NumPy (read from the file batch by batch), else a device copy.

        The copy is filled a chunk at a time, so host memory holds one chunk.

        Raises:
            MemoryError: the device has no room (CuPy's ``OutOfMemoryError`` is one).
        """
        if backend.name == "numpy":
            return self
        out = backend.xp.empty(self.shape, self.dtype)
        step = max(1, CHUNK_BYTES // max(1, self.shape[1] * self.dtype.itemsize))
        for start in range(0, self.shape[0], step):
            out[start:start + step] = backend.asarray(self[start:start + step])
        return out

    def __repr__(self) -> str:
        return f"Rows(shape={self.shape}, dtype={self.dtype}, of {type(self.base).__name__} {tuple(self.base.shape)})"


def _sources(source: str | os.PathLike[str], what: str) -> tuple[str, Path, Path | None]:
    """``("npz", path, None)`` or ``("npy", x_path, y_path or None)`` for a source as given."""
    text = os.fspath(source)
    if not text.strip():
        raise DataError(f"{what}: expected a path (data.npz, x.npy,y.npy or a directory); got an empty value")
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"{what}: expected two .npy files as X.npy,Y.npy; got {text!r}")
        return "npy", Path(parts[0]), Path(parts[1])
    path = Path(text)
    if path.is_dir():
        x_path, y_path = path / "x.npy", path / "y.npy"
        if not x_path.is_file():
            raise DataError(f"{what} {path}: a data directory must hold x.npy (and y.npy); found no x.npy")
        return "npy", x_path, (y_path if y_path.is_file() else None)
    if text.lower().endswith(".npy"):
        return "npy", path, None
    return "npz", path, None


def _regular_size(path: Path, where: str) -> int:
    """The size of the regular file ``path``; a directory, FIFO or device is refused before it is opened."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise DataError(f"{where} is {kind}; expected a .npy or .npz file")
    return info.st_size


def _open_npy(path: Path, what: str) -> np.ndarray:
    """``path`` memory-mapped read-only, after checking its header against its size; no pickles."""
    where = f"{what} {path}"
    try:
        size = _regular_size(path, where)
        if size == 0:
            raise DataError(f"{where} is empty (0 bytes); expected a .npy array")
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
            except (ValueError, EOFError) as exc:
                raise DataError(f"{where} is not a .npy array (or is truncated): {exc}") from None
            header = f.tell()
    except FileNotFoundError:
        raise DataError(f"{where} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}); only numeric arrays are read, never pickles")
    claimed = math.prod(shape) * dtype.itemsize
    if header + claimed > size:
        raise DataError(f"{where} is truncated: its header claims shape {tuple(shape)} of {dtype} "
                        f"({claimed} bytes) but {size - header} bytes follow it")
    if claimed == 0:
        return np.empty(shape, dtype)  # an empty array cannot be memory-mapped
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    where = f"{what} {path}"
    try:
        if _regular_size(path, where) == 0:
            raise DataError(f"{where} is empty (0 bytes); expected a .npz archive with arrays x and y")
        with open(path, "rb") as f:
            return read_npz(f, where)
    except FileNotFoundError:
        raise DataError(f"{where} does not exist") from None
    except FileRefused as exc:
        raise DataError(str(exc)) from None
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, EOFError, ValueError from a corrupt archive
        raise DataError(f"{where} is truncated or corrupt (not a readable .npz): {exc}") from None


def load_arrays(source: str | os.PathLike[str], *, labels: bool = True,
                what: str = "data") -> tuple[Any, np.ndarray | None]:
    """Features and labels from a data source, checked; features memory-mapped where they come from a ``.npy``.

    Args:
        source: ``data.npz`` (arrays ``x``, ``y``), ``x.npy,y.npy``, a
            directory holding ``x.npy`` and ``y.npy``, or (with
            ``labels=False``) a single ``x.npy``.
        labels: Whether labels are required. Without, a missing ``y`` is
            allowed and None is returned for it (a present one is still checked).
        what: How messages name the source, e.g. ``"--data"``.

    Returns:
        ``(x, y)``: ``x`` 2-D with at least one row and one column, a
        read-only memory map for ``.npy`` (an in-memory array for ``.npz``);
        ``y`` int64 ``(n,)`` with every label >= 0, or None.

    Raises:
        DataError: one line naming the file and what is wrong (a ``ValueError``).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(path, x=np.ones((4, 3), np.float32), y=np.array([0, 1, 1, 0]))
        >>> x, y = load_arrays(path)
        >>> x.shape, y.tolist()
        ((4, 3), [0, 1, 1, 0])
    """
    kind, x_path, y_path = _sources(source, what)
    if kind == "npz":
        arrays = _read_npz(x_path, what)
        where_x = where_y = f"{what} {x_path}"
        if "x" not in arrays or (labels and "y" not in arrays):
            need = "x and y" if labels else "x"
            raise DataError(f"{where_x}: expected arrays {need}; the archive holds "
                            f"{', '.join(sorted(arrays)) or 'no arrays'}")
        x, y = arrays["x"], arrays.get("y")
        where_y = f"{where_x}: y"
        where_x = f"{where_x}: x"
    else:
        if y_path is None and labels:
            raise DataError(f"{what} {x_path}: expected labels too, as X.npy,Y.npy (or a directory with x.npy and "
                            "y.npy, or a .npz with x and y)")
        x = _open_npy(x_path, what)
        y = None if y_path is None else _open_npy(y_path, what)
        where_x, where_y = f"{what} {x_path}", f"{what} {y_path}"
    if x.ndim != 2:
        raise DataError(f"{where_x}: features must be 2-D (samples, features); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{where_x}: features hold no data; got shape {tuple(x.shape)}")
    if not (x.dtype.kind in "iuf" or is_float_dtype(x.dtype)):
        raise DataError(f"{where_x}: features must be numbers (float or integer); got dtype {x.dtype}")
    if y is None:
        return x, None
    if y.ndim != 1:
        raise DataError(f"{where_y}: labels must be 1-D (one class per sample); got shape {tuple(y.shape)}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where_y}: labels must be integers (class ids); got dtype {y.dtype}; "
                        "convert them with y.astype(numpy.int64)")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{what}: features and labels differ in length: {x.shape[0]} samples of features, "
                        f"{y.shape[0]} labels")
    y = np.array(y, np.int64)
    if y.min() < 0:
        raise DataError(f"{where_y}: labels must be class ids >= 0; got {int(y.min())} "
                        f"(at sample {int(np.argmin(y))})")
    return x, y


def check_finite_rows(x: Any, dtype: Any, what: str) -> None:
    """Raise :class:`DataError` unless every feature is finite once cast to ``dtype``; reads ``x`` in chunks.

    Example:
        >>> check_finite_rows(np.array([[1.0], [1e300]]), "float32", "x")
        Traceback (most recent call last):
        ...
        gpudense.datasets.DataError: x: features must be finite; sample 1 holds a value too large for float32
    """
    dt = np.dtype(dtype)
    step = max(1, CHUNK_BYTES // max(1, x.shape[1] * max(dt.itemsize, x.dtype.itemsize)))
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, x.shape[0], step):
            chunk = np.asarray(x[start:start + step]).astype(dt, copy=False)
            ok = np.isfinite(chunk).all(axis=1)
            if not ok.all():
                row = start + int(np.argmin(ok))
                source_ok = np.isfinite(np.asarray(x[row], np.float64)).all()
                why = f"a value too large for {dt.name}" if source_ok else "NaN or inf"
                raise DataError(f"{what}: features must be finite; sample {row} holds {why}")


def load_dataset(
    data: str | os.PathLike[str],
    val_data: str | os.PathLike[str] | None = None,
    *,
    dtype: Any = "float32",
    seed: int = 0,
    test_fraction: float = 0.2,
    what: str = "--data",
) -> Dataset:
    """The :class:`~gpudense.data.Dataset` that :func:`~gpudense.training.fit` trains on, from your files.

    With ``val_data`` the whole of ``data`` trains and ``val_data`` is the
    test set; without, ``test_fraction`` of every class is held out by
    :func:`~gpudense.data.stratified_split` with a generator seeded by
    ``seed``. ``n_classes`` is the largest label (of both sets) + 1.

    Features from ``.npy`` files stay memory-mapped, as :class:`Rows` that
    read (and cast to ``dtype``) only the rows a batch needs; features from
    an ``.npz`` are cast and split in memory. Every feature is checked finite
    in ``dtype`` first, a chunk at a time.

    Args:
        data: A source as :func:`load_arrays` takes.
        val_data: A second source for the test set, or None.
        dtype: The training dtype: float16, bfloat16, float32 or float64.
        seed: Seeds the split.
        test_fraction: In (0, 1), without ``val_data``.
        what: How messages name ``data`` (``val_data`` is ``--val-data``).

    Raises:
        DataError: a problem with a file (one line naming it).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> np.save(os.path.join(folder, "x.npy"), np.random.default_rng(0).normal(size=(50, 3)))
        >>> np.save(os.path.join(folder, "y.npy"), np.arange(50) % 2)
        >>> ds = load_dataset(folder)
        >>> ds.x_train.shape, ds.x_test.shape, ds.n_classes
        ((40, 3), (10, 3), 2)
    """
    dt = float_dtype(dtype)
    x, y = load_arrays(data, what=what)
    check_finite_rows(x, dt, f"{what} {data}")
    if val_data is not None:
        xv, yv = load_arrays(val_data, what="--val-data")
        if xv.shape[1] != x.shape[1]:
            raise DataError(f"--val-data {val_data}: {xv.shape[1]} features per sample; {what} has {x.shape[1]}")
        check_finite_rows(xv, dt, f"--val-data {val_data}")
    n_classes = int(max(y.max(), -1 if val_data is None else yv.max())) + 1
    if n_classes < 2:
        raise DataError(f"{what} {data}: the labels hold one class only (0); a classifier needs at least two")
    if val_data is None:
        train, test = stratified_split(y, test_fraction=test_fraction, rng=np.random.default_rng(seed))
        parts = (take_rows(x, train, dt), y[train], take_rows(x, test, dt), y[test])
    else:
        parts = (take_rows(x, None, dt), y, take_rows(xv, None, dt), yv)
    return Dataset(os.fspath(data), *parts, n_classes=n_classes)


def take_rows(x: Any, index: Any, dtype: Any) -> Any:
    """Rows ``index`` (None: all) of ``x`` in ``dtype``: an array for in-memory ``x``, :class:`Rows` for a memory map.

    Example:
        >>> take_rows(np.arange(6).reshape(3, 2), np.array([2]), "float32").tolist()
        [[4.0, 5.0]]
    """
    dt = np.dtype(dtype)
    if isinstance(x, np.memmap):
        return Rows(x, index, dt)
    part = x if index is None else x[index]
    return part.astype(dt, copy=False)
