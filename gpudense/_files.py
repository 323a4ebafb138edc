"""Files written whole: where one may be written, writing it atomically, the temporaries of killed writers.

:mod:`gpudense.checkpoint` keeps the checkpoint format (what the file holds
and how it is checked against a model); this module keeps what any file of
that kind needs:

- :func:`regular_target`: a file is written only to a regular file or a new
  path; a symbolic link is followed, and anything else (a directory, FIFO,
  socket or device) is refused, naming it;
- :func:`atomic_write`: written to a temporary sibling, fsync'ed and renamed
  over the target, so an error or a signal leaves the old file and no
  temporary behind, and a failure names the file;
- :func:`sweep_orphans`: the temporary files that writers killed outright
  left beside a path, removed by the next write to it.

Reading an ``.npz`` is :mod:`gpudense._npz`.

Errors about what a file *is* or *holds* are :class:`FileRefused` (a
``ValueError``); errors of the system (a missing folder, a full disk) stay
``OSError`` with one line naming the file.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import BinaryIO, Callable


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
        FileRefused: the path ends in a path separator, or it (or what it
            links to) is a directory, a FIFO, a socket or a device, or its
            links loop.
        FileNotFoundError: the folder the file would go in does not exist.

    Example:
        >>> import os, tempfile
        >>> regular_target(os.path.join(tempfile.mkdtemp(), "new.npz")).name
        'new.npz'
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or (os.altsep and text.endswith(os.altsep)):
        raise FileRefused(f"{what} {text} ends in a path separator: that names a folder; a file path is expected")
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
    file at ``path`` is then as it was. A process killed outright (SIGKILL,
    out of memory) cannot remove its temporary file: the next write to the
    same path removes it (:func:`sweep_orphans`).

    Args:
        path: The file to replace (a regular file or a new path: see :func:`regular_target`).
        write: Writes the whole content to the binary file it is given.
        what: How a failure names the file, e.g. ``"checkpoint"``.

    Raises:
        OSError: of the type and errno that came (a full disk: ENOSPC), as
            one line naming the file.
    """
    directory = path.parent if str(path.parent) else Path(".")
    sweep_orphans(path)
    tmp = directory / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
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


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_ORPHAN_AGE_S = 3600.0  # a temporary file of another machine untouched this long is an orphan


def sweep_orphans(path: Path) -> list[Path]:
    """Remove the temporary files that writers of ``path`` killed mid-write left beside it.

    A temporary file of :func:`atomic_write` is named
    ``.<name>.<host>.<pid>.<random>.tmp``. One is an orphan when its process
    is gone: its host is this machine and no process ``<pid>`` runs here,
    or (another machine's, on a shared file system) it has not been written
    to for an hour. A file of a live writer is left alone, and so is every
    file that is not named so.

    Returns:
        The files removed.

    Example:
        >>> import os, tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / f".ck.npz.{_HOST}.999999999.0123abcd.tmp").write_bytes(b"half")
        >>> len(sweep_orphans(folder / "ck.npz")), os.listdir(folder)
        (1, [])
    """
    directory = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        found = pattern.fullmatch(name)
        if found is None:
            continue
        tmp = directory / name
        try:
            if found["host"] == _HOST:
                if int(found["pid"]) == os.getpid() or _alive(int(found["pid"])):
                    continue
            elif time.time() - tmp.lstat().st_mtime < _ORPHAN_AGE_S:
                continue
            tmp.unlink()
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # a process of another user, or a pid this system cannot hold: leave its file
    return True


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
