"""Reading an ``.npz`` with bounded memory: the zip's directory and each ``.npy`` header checked first.

:class:`NpzReader` reads one entry at a time, each checked against the
bytes the archive holds before anything is decompressed or allocated;
:func:`read_npz` reads every array of one. Refusals are
:class:`~gpudense._files.FileRefused` (a ``ValueError``) of one line naming
the file and the entry.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from gpudense._files import FileRefused

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_MAX_DEFLATE_RATIO = 1032  # the most deflate can shrink data
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_NAME = re.compile(r"[^\x00-\x1f\x7f]+\.npy")  # any printable name of an .npy entry
_MAX_NAME = 200
_HEADER_MOST = 10_000  # NumPy's own limit on an .npy header it reads without being told to trust it
_CHUNK = 1 << 20


class NpzReader:
    """An ``.npz`` read one entry at a time, each bounded before it is decompressed.

    Opening reads only the zip's directories: at most ``max_entries``
    entries, each a ``<name>.npy`` (printable, at most 200 characters)
    named once, stored or deflated, not encrypted, its compressed bytes
    inside the file and overlapping no other entry, its declared size no
    more than its compressed bytes can expand to. :meth:`header` then
    decompresses only an entry's ``.npy`` header, which must claim exactly
    the bytes the zip declares; :meth:`read` streams the data into an array
    of the claimed shape, so reading an entry takes the memory of its array
    and a 1 MiB buffer, whatever the file holds.

    Args:
        f: The file, opened for binary reading at its start.
        where: How messages name it, e.g. ``"checkpoint run.npz"``.
        max_entries: The most entries accepted.

    Raises:
        FileRefused: a single ``.npy`` rather than an ``.npz``, bytes that are
            no zip archive, or a directory that breaks a rule above.
        zipfile.BadZipFile, zlib.error, EOFError, ValueError: the archive is
            truncated or corrupt in a way the zip and npy readers find.

    Example:
        >>> import io, numpy as np
        >>> buf = io.BytesIO(); np.savez(buf, x=np.arange(3.0)); _ = buf.seek(0)
        >>> z = NpzReader(buf, "example"); z.keys, z.header("x"), z.read("x")
        (['x'], ((3,), dtype('float64'), 24), array([0., 1., 2.]))
    """

    def __init__(self, f: BinaryIO, where: str, *, max_entries: int = 4096) -> None:
        self.where = where
        head = f.read(8)
        if head.startswith(_NPY_MAGIC):
            raise FileRefused(f"{where} is a single .npy array, not an .npz archive")
        if not head.startswith(_ZIP_MAGIC):
            starts = f"starts with {head!r}" if head else "is empty"
            raise FileRefused(f"{where} is truncated or corrupt: not a .npz file (a zip archive); it {starts}")
        size = f.seek(0, os.SEEK_END)
        count, dir_size = _directory_size(f, size, where)
        if count > max_entries:
            raise FileRefused(f"{where} holds {count} entries; at most {max_entries} are read")
        if dir_size > max_entries * (46 + _MAX_NAME + 64):
            raise FileRefused(f"{where} is truncated or corrupt: its zip directory claims {_bytes(dir_size)}")
        f.seek(0)
        self._zip = zipfile.ZipFile(f)
        self._infos: dict[str, zipfile.ZipInfo] = {}
        spans = []
        for info in self._zip.infolist():
            name = info.filename
            if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
                raise FileRefused(f"{where}: unexpected entry {name[:_MAX_NAME]!r}")
            key = name[: -len(".npy")]
            if key in self._infos:
                raise FileRefused(f"{where} is truncated or corrupt: entry {key} appears twice")
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise FileRefused(f"{where}: entry {key} is encrypted or compressed in a way .npz files are not")
            most = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
                    else _MAX_DEFLATE_RATIO * info.compress_size + 1024)
            if info.file_size > most:
                raise FileRefused(
                    f"{where} is truncated or corrupt: entry {key} declares {_bytes(info.file_size)}, more "
                    f"than its {info.compress_size} stored bytes can hold"
                )
            spans.append((_data_start(f, info, where, key), info.compress_size, key))
            self._infos[key] = info
        spans.sort()
        for (start, length, key), (next_start, _, next_key) in zip(spans, spans[1:] + [(size, 0, None)]):
            if start + length > next_start:
                other = f"entry {next_key}" if next_key else "the end of the file"
                raise FileRefused(f"{where} is truncated or corrupt: entry {key} runs into {other}")
        self.keys = list(self._infos)
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        self._fortran: dict[str, bool] = {}

    def declared_size(self, key: str) -> int:
        """The bytes the zip directory declares entry ``key`` expands to (nothing is decompressed)."""
        return self._infos[key].file_size

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """``(shape, dtype, nbytes)`` from entry ``key``'s ``.npy`` header: only the header is decompressed.

        Raises:
            FileRefused: the entry holds Python objects, or its header claims
                more (or fewer) bytes than the zip declares.
        """
        if key in self._headers:
            return self._headers[key]
        info, where = self._infos[key], self.where
        with self._zip.open(info) as entry:
            version = np.lib.format.read_magic(entry)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(entry, max_header_size=_HEADER_MOST)
            length = entry.tell()
        if dtype.hasobject:
            raise FileRefused(
                f"{where} is truncated or corrupt: entry {key} holds Python objects; only plain numeric "
                "arrays are read"
            )
        claimed = math.prod(shape) * dtype.itemsize
        held = info.file_size - length
        if claimed != held:
            raise FileRefused(
                f"{where} is truncated or corrupt: entry {key} claims shape {tuple(shape)} of {dtype} "
                f"({_bytes(claimed)}) but holds {held} bytes"
            )
        self._headers[key] = (tuple(shape), dtype, claimed)
        self._fortran[key] = fortran
        return self._headers[key]

    def read(self, key: str) -> np.ndarray:
        """Entry ``key`` as an array, streamed in 1 MiB pieces into an array of its header's shape."""
        shape, dtype, nbytes = self.header(key)
        out = np.empty(shape, dtype, order="F" if self._fortran[key] else "C")
        view = out.reshape(-1, order="A").view(np.uint8) if nbytes else np.empty(0, np.uint8)
        with self._zip.open(self._infos[key]) as entry:
            entry.seek(self._infos[key].file_size - nbytes)
            done = 0
            while done < nbytes:
                chunk = entry.read(min(_CHUNK, nbytes - done))
                if not chunk:
                    raise EOFError(f"entry {key} ends after {done} of {nbytes} bytes")
                view[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
            entry.read(1)  # at the declared end: the zip reader checks the CRC here
        return out

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _directory_size(f: BinaryIO, size: int, where: str) -> tuple[int, int]:
    """``(entries, bytes)`` of the zip's central directory, from its end records (nothing else is read)."""
    tail_at = max(0, size - (_EOCD.size + 65535))
    f.seek(tail_at)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise FileRefused(f"{where} is truncated or corrupt: its zip directory is missing")
    _, _, _, _, count, dir_size, _, _ = _EOCD.unpack_from(tail, at)
    locator_at = tail_at + at - _ZIP64_LOCATOR.size
    if locator_at >= 0:
        f.seek(locator_at)
        locator = f.read(_ZIP64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            f.seek(_ZIP64_LOCATOR.unpack(locator)[2])
            record = f.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                raise FileRefused(f"{where} is truncated or corrupt: its zip64 directory is missing")
            count, dir_size = _ZIP64_EOCD.unpack(record)[7:9]
    return count, dir_size


def _data_start(f: BinaryIO, info: zipfile.ZipInfo, where: str, key: str) -> int:
    """Where entry ``key``'s compressed bytes start, from its local header."""
    f.seek(info.header_offset)
    local = f.read(_LOCAL_HEADER.size)
    if len(local) < _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
        raise FileRefused(f"{where} is truncated or corrupt: entry {key} has no local header")
    name_length, extra_length = _LOCAL_HEADER.unpack(local)[-2:]
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def read_npz(f: BinaryIO, where: str) -> dict[str, np.ndarray]:
    """Every ``<name>.npy`` entry of the ``.npz`` open as ``f``, as ``{name: array}``, pickles refused.

    Each entry is checked as :class:`NpzReader` checks it before it is read,
    so a corrupt or forged header is one error naming the entry, not an
    attempt to allocate what it claims.

    Args:
        f: The file, opened for binary reading at its start.
        where: How messages name it, e.g. ``"checkpoint run.npz"``.

    Raises:
        FileRefused, zipfile.BadZipFile, zlib.error, EOFError, ValueError: as
            :class:`NpzReader`.

    Example:
        >>> import io, numpy as np
        >>> buf = io.BytesIO(); np.savez(buf, x=np.ones(2, np.float32)); _ = buf.seek(0)
        >>> read_npz(buf, "example")
        {'x': array([1., 1.], dtype=float32)}
    """
    with NpzReader(f, where) as z:
        for key in z.keys:
            z.header(key)
        return {key: z.read(key) for key in z.keys}


def _bytes(n: int) -> str:
    """``4398046511104`` as ``"4 TiB"``."""
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.3g} {unit}"
