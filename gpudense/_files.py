"""Files written and read whole: where one may be written, writing it atomically, reading an ``.npz``.

:mod:`gpudense.checkpoint` keeps the checkpoint format (what the file holds
and how it is checked against a model); this module keeps what any file of
that kind needs:

- :func:`regular_target`: a file is written only to a regular file or a new
  path; a symbolic link is followed, and anything else (a directory, FIFO,
  socket or device) is refused, naming it;
- :func:`atomic_write`: written to a temporary sibling, fsync'ed and renamed
  over the target, so an error or a signal leaves the old file and no
  temporary behind, and a failure names the file;
- :func:`read_npz`: every array of an ``.npz``, each ``.npy`` header checked
  against the bytes the archive holds before anything is allocated.

Errors about what a file *is* or *holds* are :class:`FileRefused` (a
``ValueError``); errors of the system (a missing folder, a full disk) stay
``OSError`` with one line naming the file.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import stat
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np


class FileRefused(ValueError):
    """A path is not a place to write a file to, or a file does not hold what it claims."""


#: What a path that is not a regular file is, for messages.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_MAX_LINKS = 40  # as the kernel's limit on symbolic links in one lookup


def regular_target(path: str | os.PathLike[str], what: str = "target") -> Path:
    """The file a write to ``path`` replaces: ``path``, or the path its symbolic links lead to.

    Args:
        path: The path as given.
        what: How messages name it, e.g. ``"checkpoint target"``.

    Raises:
        FileRefused: the path (or what it links to) is a directory, a FIFO,
            a socket or a device, or its links loop.
        FileNotFoundError: the folder the file would go in does not exist.

    Example:
        >>> import os, tempfile
        >>> regular_target(os.path.join(tempfile.mkdtemp(), "new.npz")).name
        'new.npz'
    """
    given = Path(path)
    target = given
    for _ in range(_MAX_LINKS):
        if not target.is_symlink():
            break
        link = Path(os.readlink(target))
        target = link if link.is_absolute() else target.parent / link
    else:
        raise FileRefused(f"{what} {given}: too many levels of symbolic links (a loop?)")
    named = f"{given}" if target == given else f"{given} (a link to {target})"
    try:
        mode: int | None = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise FileRefused(f"cannot use {what} {named}: {exc.strerror or exc}") from exc
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise FileRefused(
            f"{what} {named} is {kind}, not a regular file; a file is written only to a regular "
            "file or a new path"
        )
    folder = target.parent
    if not folder.is_dir():
        missing = FileNotFoundError(f"{what} {named}: directory {folder} does not exist")
        missing.errno = errno.ENOENT
        raise missing
    return target


def atomic_write(path: Path, write: Callable[[BinaryIO], None], what: str = "file") -> None:
    """Write through ``write(file)`` into a temporary sibling, fsync, rename over ``path``, fsync the dir.

    The temporary file is created inside the ``try``, so an exception at any
    point (a ``KeyboardInterrupt`` from a signal included) removes it; the
    file at ``path`` is then as it was.

    Args:
        path: The file to replace (a regular file or a new path: see :func:`regular_target`).
        write: Writes the whole content to the binary file it is given.
        what: How a failure names the file, e.g. ``"checkpoint"``.

    Raises:
        OSError: of the type and errno that came (a full disk: ENOSPC), as
            one line naming the file.
    """
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # The file was created 0600; give it the mode a plain open() would.
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException as exc:
        if not isinstance(exc, FileExistsError):  # that one is not ours to remove
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError):
            raise _write_error(what, path, exc) from exc
        raise
    _fsync_dir(directory)


def _write_error(what: str, path: Path, exc: OSError) -> OSError:
    """``exc`` as one line naming the file (a bare ``[Errno 28]`` names none); type and errno kept."""
    advice = "; free some space or choose another path" if exc.errno == errno.ENOSPC else ""
    err = type(exc)(f"cannot write {what} {path}: {exc.strerror or exc}{advice}; the file there is unchanged")
    err.errno = exc.errno
    return err


def _default_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_MAX_DEFLATE_RATIO = 1032  # the most deflate can shrink data


def read_npz(f: BinaryIO, where: str) -> dict[str, np.ndarray]:
    """Every ``<name>.npy`` entry of the ``.npz`` open as ``f``, as ``{name: array}``, pickles refused.

    A header is trusted only as far as the archive backs it: the bytes it
    claims must be the bytes the entry holds (and no more than its stored
    size can expand to), so a corrupt or forged header is one error naming
    the entry, not an attempt to allocate what it claims.

    Args:
        f: The file, opened for binary reading at its start.
        where: How messages name it, e.g. ``"checkpoint run.npz"``.

    Raises:
        FileRefused: a single ``.npy`` rather than an ``.npz``, bytes that are
            no zip archive, an entry that is no ``.npy``, holds Python
            objects, or claims more (or less) than it holds.
        zipfile.BadZipFile, zlib.error, EOFError, ValueError: the archive is
            truncated or corrupt in a way the zip and npy readers find.
    """
    head = f.read(8)
    if head.startswith(_NPY_MAGIC):
        raise FileRefused(f"{where} is a single .npy array, not an .npz archive")
    if not head.startswith(_ZIP_MAGIC):
        starts = f"starts with {head!r}" if head else "is empty"
        raise FileRefused(f"{where} is truncated or corrupt: not a .npz file (a zip archive); it {starts}")
    f.seek(0)
    data: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(f) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                raise FileRefused(f"{where}: unexpected entry {info.filename!r}")
            key = info.filename[: -len(".npy")]
            with z.open(info) as entry:
                data[key] = _read_entry(where, key, info, entry)
    return data


def _read_entry(where: str, key: str, info: zipfile.ZipInfo, entry: Any) -> np.ndarray:
    version = np.lib.format.read_magic(entry)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(entry)
    header = entry.tell()
    if dtype.hasobject:
        raise FileRefused(
            f"{where} is truncated or corrupt: entry {key} holds Python objects; only plain numeric "
            "arrays are read"
        )
    claimed = math.prod(shape) * dtype.itemsize
    held = info.file_size - header
    # The most bytes the entry's stored size can expand to (a forged file_size is no proof).
    most = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
            else _MAX_DEFLATE_RATIO * info.compress_size + 1024)
    if claimed != held or info.file_size > most:
        raise FileRefused(
            f"{where} is truncated or corrupt: entry {key} claims shape {tuple(shape)} of {dtype} "
            f"({_bytes(claimed)}) but holds {held} bytes"
        )
    entry.seek(0)
    return np.lib.format.read_array(entry, allow_pickle=False)


def _bytes(n: int) -> str:
    """``4398046511104`` as ``"4 TiB"``."""
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.3g} {unit}"
